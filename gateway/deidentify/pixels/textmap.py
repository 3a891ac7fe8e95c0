"""A text map: where in a frame burned-in text may be, from a small network of our own.

The network (`benchmarks/text_map.py` trains it on synthetic text drawn over the shared test
images and exports it to ONNX) reads two planes of a frame at its own resolution (long side at
most `MAX_SIDE`): the frame from its minimum to its maximum (MONOCHROME1 inverted, colour as
luma), and the same frame between robust percentiles (anatomy spread over the plane even when
text is drawn at an extreme value far from it; colour: its brightest channel), and gives a
probability of text per cell of `CELL` x `CELL` pixels. Cells above the threshold are grouped
(8-connected, after growing by one cell) into rectangles in frame pixels.

It is trained for what PaddleOCR's scene-text detector misses in medical images: text a
dozen grey levels from its background, text written downwards or upwards, 7-pixel
characters. It also takes some anatomy for text, so the stage only reads what it finds
(`reading.WindowReader._confirmed`). About 11 ms of one core per 512 x 512 slice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from gateway.deidentify.pixels.ctp import Region
from gateway.deidentify.pixels.render import brightest_channel, lightness

if TYPE_CHECKING:
    from gateway.deidentify.pixels.ocr import Network

CELL = 8  # the network's output stride
MAX_SIDE = 2048
_ROBUST = (0.5, 99.5)  # percentiles of the robust plane
_SAMPLE = 4  # percentiles from every 4th row and column
_LUMA = (0.299, 0.587, 0.114)  # of R, G and B: the grey plane of a colour frame


def planes(frame: np.ndarray, photometric: str) -> tuple[np.ndarray, float]:
    """The network's input for a decoded frame (rows x columns [x samples]): 1 x 2 x H x W
    float32 in 0..1, H and W multiples of `CELL`, and the scale from frame to planes."""
    full: np.ndarray
    robust: np.ndarray
    if frame.ndim == 3:
        rgb = frame.astype(np.float32)  # OpenCV: a third of numpy's time for the same sums
        top = 255.0 if frame.dtype == np.uint8 else max(float(rgb.max()), 1.0)
        full = cv2.transform(rgb, np.array([_LUMA], np.float32) / top)
        robust = brightest_channel(rgb) * (1.0 / top)
    else:
        grey, low, high = lightness(frame, photometric)
        full = (grey - low) * (1.0 / (high - low) if high > low else 0.0)
        sample = full[::_SAMPLE, ::_SAMPLE]
        a, b = (float(v) for v in np.percentile(sample, _ROBUST))
        robust = np.clip((full - a) * (1.0 / (b - a) if b > a else 0.0), 0.0, 1.0)
    rows, columns = full.shape
    scale = min(1.0, MAX_SIDE / max(rows, columns))
    if scale < 1.0:
        size = (max(1, round(columns * scale)), max(1, round(rows * scale)))
        full = cv2.resize(full, size, interpolation=cv2.INTER_AREA)
        robust = cv2.resize(robust, size, interpolation=cv2.INTER_AREA)
    h, w = full.shape
    ph, pw = -(-h // CELL) * CELL, -(-w // CELL) * CELL
    out = np.zeros((1, 2, ph, pw), np.float32)
    out[0, 0, :h, :w] = full
    out[0, 1, :h, :w] = robust
    if ph > h:  # padding repeats the last row and column: no edge for the network to see
        out[0, :, h:, :] = out[0, :, h - 1 : h, :]
    if pw > w:
        out[0, :, :, w:] = out[0, :, :, w - 1 : w]
    return out, scale


def boxes(
    probability: np.ndarray, threshold: float, scale: float, rows: int, columns: int
) -> list[tuple[Region, float]]:
    """Rectangles (frame pixels) around the cells above `threshold`, each cell grown by one,
    with the highest score of a cell in each; the most certain first, so that a stage reading
    only the first few of a frame's regions reads the likeliest text."""
    above = probability > threshold
    if not above.any():
        return []
    grown = cv2.dilate(above.astype(np.uint8), np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    peak = np.full(count, -np.inf, np.float32)
    np.maximum.at(peak, np.asarray(labels, np.intp)[above], probability[above])
    out = []
    step = CELL / scale
    for label in sorted(range(1, count), key=lambda n: -peak[n]):
        left, top, width, height, _ = stats[label]
        x0, y0 = int(left * step), int(top * step)
        x1 = min(columns, int(np.ceil((left + width) * step)))
        y1 = min(rows, int(np.ceil((top + height) * step)))
        if x1 > x0 and y1 > y0:
            out.append((Region(x0, y0, x1 - x0, y1 - y0), float(peak[label])))
    return out


class TextMap:
    """The network (an `ocr.Network`: single-threaded, like the detector); a cell holds text
    when its probability is above `threshold`."""

    def __init__(self, network: Network, threshold: float) -> None:
        self.threshold = _logit(threshold)
        self.network = network

    def find(self, frame: np.ndarray, photometric: str) -> list[tuple[Region, float]]:
        """Rectangles of `frame` (decoded values, palette colour already through its table)
        the network takes for text, each with its most certain cell's probability."""
        rows, columns = frame.shape[:2]
        if rows < CELL or columns < CELL:
            return []
        x, scale = planes(frame, photometric)
        logit = self.network.run(x)[0, 0]
        found = boxes(logit, self.threshold, scale, rows, columns)
        return [(region, _sigmoid(peak)) for region, peak in found]


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def _sigmoid(logit: float) -> float:
    return float(1.0 / (1.0 + np.exp(-logit)))
