"""Decoded frames as the 8-bit colour pictures a text detector reads.

Burned-in text is drawn by the modality or a workstation at a fixed, usually extreme value over
pixels whose range can be anything (12- or 16-bit CT and DX, signed values, MONOCHROME1), so
every greyscale frame is shown in four ways and the detector reads each:

- the full range, min to max (MONOCHROME1 inverted, so text is light on dark like on screen);
- the brightest values only (the top 1 % of the range as white on black): text drawn at the
  maximum over bright anatomy, invisible in the full range, stands out there;
- the darkest values only, likewise (text drawn at the minimum over a bright field);
- faint text: the full range with small local differences raised (`local_contrast`), so text
  a dozen grey levels from its background reads like text drawn at a plain contrast;
- where a few outliers far from the rest stretch the range (a hot pixel, a saturated strip),
  a fifth: the picture in its own range (`bulk`), the outliers white or black.

Colour frames are read once, with small local differences raised the same way in each channel
(a second reading would halve the rate of ultrasound and screen captures); palette colour
frames through their lookup table first.

The faint view of a greyscale frame is read a second time turned a quarter (`TURNED_VIEW`):
the detector finds lines written downwards or upwards far less often than lines across, and
turned they read across (or upside down, which it finds as well).

The brightest and darkest views hold two values only, and text in them lies where the two
meet: `parts` gives the rectangles around those edges, so the detector reads a CT slice's
brightest view (a few bone or metal pixels) as a few small crops, not a whole frame.
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut

from gateway.deidentify.pixels.ctp import Region

_TOP_SHARE = 0.01
#: `bulk`: a gap without values wider than this share of a frame's range splits off outliers;
#: every 4th row and column is looked at (with the minimum and maximum).
_GAP_SHARE = 0.5
_SAMPLE = 4
_PICTURE_VALUES = 16  # distinct values (sampled): a picture, not a background or a border
#: Which of a greyscale frame's views (full, brightest, darkest, faint) is also read turned: on
#: the validation sample 0.745 -> 0.766 of the boxes (90 degrees 0.694 -> 0.735, 270 0.589 ->
#: 0.625), no more false alarms, for a fifth reading of the frame. Colour frames (one view) are
#: not: it would halve the rate of ultrasound (docs/benchmarks.md).
TURNED_VIEW = 3
#: Faint text: differences from the neighbourhood raised 4x up to 48 levels, so text 12 levels
#: from its background shows at 48, where the detector reads it (measured: docs/pixels.md,
#: "Faint text").
_SIGMA = 3.0
_GAIN = 4.0
_CAP = 48.0
#: `parts`: edges are gathered in tiles of this many pixels, each part reaches `_PART_CONTEXT`
#: tiles beyond its edges (flat on both sides: nothing there for the detector to read), and a
#: view whose parts would cover this share of it is read whole.
_PART_TILE = 32
_PART_CONTEXT = 2
_PART_SHARE = 0.5


class Renderer:
    """One per image: what it needs from the header, read once."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
        self.palette = self.photometric == "PALETTE COLOR"

    def views(self, frame: np.ndarray) -> list[np.ndarray]:
        """The frame as one or two H x W x 3 uint8 pictures (BGR, the detector's order)."""
        frame = self.values(frame)
        if frame.ndim == 3:
            return [local_contrast(cv2.cvtColor(_to_uint8(frame), cv2.COLOR_RGB2BGR))]
        grey, low, high = self._grey(frame)
        if high <= low:
            return [np.zeros((*frame.shape, 3), np.uint8)]  # one flat value: no text
        full = _shown(grey, low, high)
        band = (high - low) * _TOP_SHARE
        bright = np.where(grey >= high - band, np.uint8(255), np.uint8(0))
        dark = np.where(grey <= low + band, np.uint8(255), np.uint8(0))
        shown = [full, bright, dark, local_contrast(full)]
        inner = bulk(grey, low, high)
        if inner != (low, high):  # outliers squash the picture: a fifth view of it alone
            shown.append(_shown(grey, *inner))
        return [cv2.cvtColor(v, cv2.COLOR_GRAY2BGR) for v in shown]

    def values(self, frame: np.ndarray) -> np.ndarray:
        """The frame's values as shown: palette colour through its lookup table."""
        return apply_color_lut(frame, self.ds) if self.palette else frame

    def picture(self, frame: np.ndarray) -> np.ndarray:
        """The frame as a person sees it, nothing raised: H x W x 3 uint8 (BGR) - colour
        scaled to 8 bits (palette colour through its table), greyscale from its minimum to
        its maximum with MONOCHROME1 inverted (the detector's full view; a windowed frame
        comes in already windowed). For people (`gateway.review`), not the detector."""
        frame = self.values(frame)
        if frame.ndim == 3:
            return cv2.cvtColor(_to_uint8(frame), cv2.COLOR_RGB2BGR)
        grey, low, high = self._grey(frame)
        return cv2.cvtColor(_shown(grey, low, high), cv2.COLOR_GRAY2BGR)

    def _grey(self, frame: np.ndarray) -> tuple[np.ndarray, float, float]:
        return lightness(frame, self.photometric)


def lightness(frame: np.ndarray, photometric: str) -> tuple[np.ndarray, float, float]:
    """A greyscale frame as float32 with its range, negated for MONOCHROME1 (PS3.3
    C.7.6.3.1.2: the minimum is white), so the largest value is always the lightest."""
    grey = frame.astype(np.float32, copy=False)
    low, high = float(grey.min()), float(grey.max())
    if photometric == "MONOCHROME1":
        return -grey, -high, -low
    return grey, low, high


def bulk(grey: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The range of a frame's picture: its minimum to its maximum, unless gaps of more than
    `_GAP_SHARE` of that range without any value split it (a hot pixel at 65535 over anatomy
    in 0..3000, a saturated strip or border, padding far below the picture): then the range
    of the part holding the most pixels among those that are a picture (`_PICTURE_VALUES`
    distinct values at least: not a flat background or border, nor text far from it). Shown
    in it, outliers do not squash the picture - and text drawn in it - into a few grey
    levels."""
    if high <= low:
        return low, high
    sample = grey[::_SAMPLE, ::_SAMPLE]
    values, counts = np.unique(sample, return_counts=True)
    values = np.concatenate(([low], values, [high]))
    counts = np.concatenate(([0], counts, [0]))
    splits = np.flatnonzero(np.diff(values) > _GAP_SHARE * (high - low))
    if not splits.size:
        return low, high
    bounds = [0, *(splits + 1).tolist(), len(values)]
    pictures = [
        (int(counts[a:b].sum()), float(values[a]), float(values[b - 1]))
        for a, b in itertools.pairwise(bounds)
        if b - a >= _PICTURE_VALUES and values[b - 1] > values[a]
    ]
    if not pictures:
        return low, high
    _, first, last = max(pictures)
    return first, last


def _shown(grey: np.ndarray, low: float, high: float) -> np.ndarray:
    """`grey` from `low` (black) to `high` (white), 8-bit, values beyond them at the ends."""
    scale = 255.0 / (high - low) if high > low else 0.0
    return np.clip((grey - low) * scale, 0, 255).astype(np.uint8)


def parts(view: np.ndarray) -> list[Region] | None:
    """Where a two-valued view (black and white only, as the brightest and darkest views are)
    can hold text: the rectangles around the places where the two values meet, with
    `_PART_CONTEXT` tiles of flat picture around them. [] when the view is one value (no
    strokes anywhere); None when it is not two-valued, or its parts would cover most of it
    (then it is read whole)."""
    grey = view[..., 0] if view.ndim == 3 else view
    if np.count_nonzero((grey != 0) & (grey != 255)) or (view.ndim == 3 and _coloured(view)):
        return None
    edges = cv2.morphologyEx(grey, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    rows, columns = grey.shape
    t = _PART_TILE
    tiles_down, tiles_across = -(-rows // t), -(-columns // t)
    padded = np.zeros((tiles_down * t, tiles_across * t), np.uint8)
    padded[:rows, :columns] = edges
    tiles = padded.reshape(tiles_down, t, tiles_across, t).max(axis=(1, 3))
    if not tiles.any():
        return []
    reach = 2 * _PART_CONTEXT + 1
    grown = cv2.dilate(tiles, np.ones((reach, reach), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    out = []
    for left, top, width, height, _ in stats[1:count]:
        x0, y0 = int(left) * t, int(top) * t
        x1, y1 = min(int(left + width) * t, columns), min(int(top + height) * t, rows)
        out.append(Region(x0, y0, x1 - x0, y1 - y0))
    if sum(r.width * r.height for r in out) >= _PART_SHARE * rows * columns:
        return None
    return out


def brightest_channel(image: np.ndarray) -> np.ndarray:
    """Per pixel, the largest of the image's channels (rows x columns x samples; OpenCV: 10x
    numpy's max(axis=2))."""
    channels = cv2.split(image)
    out = channels[0]
    for channel in channels[1:]:
        out = cv2.max(out, channel)
    return out


def _coloured(view: np.ndarray) -> bool:
    return bool(np.any(view[..., 0] != view[..., 1]) or np.any(view[..., 0] != view[..., 2]))


def local_contrast(picture: np.ndarray) -> np.ndarray:
    """`picture` (8-bit) with each pixel's difference from its neighbourhood (a Gaussian of
    `_SIGMA` pixels) multiplied by `_GAIN` while it is small, up to `_CAP` grey levels; larger
    differences (plain text, edges) stay as they are, so strokes keep their shape."""
    base = picture.astype(np.float32)
    around = cv2.GaussianBlur(base, (0, 0), _SIGMA)
    difference = base - around
    raised = np.where(
        np.abs(difference) < _CAP, np.clip(_GAIN * difference, -_CAP, _CAP), difference
    )
    return np.clip(around + raised, 0, 255).astype(np.uint8)


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    high = float(frame.max()) or 1.0
    return (frame.astype(np.float32) * (255.0 / high)).astype(np.uint8)
