"""Images for people: a frame (or a strip of frames) as a small PNG, with what the pixel stage
masked drawn on it as outlines.

Frames are decoded as the pixel stage decodes them (`pixels.frames.iter_frames`: every transfer
syntax the gateway accepts, colour in RGB, one frame at a time) and shown as
`pixels.render.Renderer.picture` shows them, greyscale first through the header's Modality
LUT and VOI LUT or window (PS3.3 C.11.1, C.11.2; pydicom's implementation) when it has one
that shows more than one value. Everything happens in memory; nothing is written anywhere.

Outlines: red around a rectangle that was masked (a site's rule, or text the detector found);
green around an ultrasound region that was kept (`outside-ultrasound-regions`: everything
outside it was masked).

An image without pixel data, or whose pixel data cannot be decoded, raises `Undecodable` with
a reason code ("no-pixel-data", "decode-failed:<type>"): `has_pixels` tells the first apart
beforehand.
"""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

from gateway.deidentify.failures import guard
from gateway.deidentify.pixels.frames import PIXEL_TAGS, Undecodable, frame_count, iter_frames
from gateway.deidentify.pixels.render import Renderer
from gateway.deidentify.pixels.stage import Masked
from gateway.errors import Unprocessable

#: BGR outline colours: a masked rectangle, an ultrasound region kept
MASKED_COLOUR = (0, 0, 255)
KEPT_COLOUR = (0, 200, 0)
KEPT_SOURCE = "outside-ultrasound-regions"
#: pixels of dark grey between the frames of a strip
GAP = 4
_GAP_GREY = 48


def has_pixels(ds: Dataset) -> bool:
    return any(tag in ds for tag in PIXEL_TAGS)


def thumbnail(
    ds: Dataset, *, frame: int = 0, boxes: Iterable[Masked] = (), max_side: int = 320
) -> bytes:
    """Frame `frame` (from 0) of `ds` as PNG bytes, its longer side `max_side` pixels, with
    the `boxes` that apply to that frame outlined. Raises Undecodable (no pixel data, or not
    decodable) and IndexError (no such frame)."""
    return _png(_picture(ds, frame, _frame(ds, frame), boxes, max_side))


def strip(
    ds: Dataset, *, boxes: Iterable[Masked] = (), frames: int = 8, max_side: int = 160
) -> bytes:
    """Up to `frames` evenly spaced frames of `ds` (`spaced`: first and last included) side
    by side as one PNG, each as `thumbnail` draws it, `GAP` pixels apart."""
    wanted = spaced(frame_count(ds), frames)
    boxes = tuple(boxes)
    pictures = []
    for index, decoded in enumerate(_decoded(ds)):
        if index in wanted:
            pictures.append(_picture(ds, index, decoded, boxes, max_side))
        if index >= wanted[-1]:
            break
    gap = np.full((pictures[0].shape[0], GAP, 3), _GAP_GREY, np.uint8)
    joined = [part for picture in pictures for part in (gap, picture)][1:]
    return _png(cv2.hconcat(joined))


def spaced(count: int, frames: int) -> tuple[int, ...]:
    """Which of `count` frames a strip of at most `frames` shows: evenly spaced, the first
    and the last included."""
    if count <= 0 or frames <= 0:
        return ()
    if frames == 1 or count == 1:
        return (0,)
    shown = min(count, frames)
    return tuple(sorted({round(i * (count - 1) / (shown - 1)) for i in range(shown)}))


def _frame(ds: Dataset, index: int) -> np.ndarray:
    if index < 0:
        raise IndexError(f"frame {index}")
    for number, decoded in enumerate(_decoded(ds)):
        if number == index:
            return decoded
    raise IndexError(f"frame {index} of {frame_count(ds)}")


def _decoded(ds: Dataset) -> Iterable[np.ndarray]:
    if not has_pixels(ds):
        raise Undecodable("no-pixel-data")
    return iter_frames(ds)


def _picture(
    ds: Dataset, index: int, frame: np.ndarray, boxes: Iterable[Masked], max_side: int
) -> np.ndarray:
    picture = Renderer(ds).picture(_windowed(ds, frame))
    rows, columns = picture.shape[:2]
    scale = max_side / max(rows, columns)
    size = (max(round(columns * scale), 1), max(round(rows * scale), 1))
    shrinking = scale < 1
    picture = cv2.resize(
        picture, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_NEAREST
    )
    for box in boxes:
        if box.first_frame <= index <= box.last_frame:
            colour = KEPT_COLOUR if box.source == KEPT_SOURCE else MASKED_COLOUR
            x0, y0 = int(box.x * scale), int(box.y * scale)
            x1 = max(int((box.x + box.width) * scale) - 1, x0)
            y1 = max(int((box.y + box.height) * scale) - 1, y0)
            cv2.rectangle(picture, (x0, y0), (x1, y1), colour, 1)
    return picture


def _windowed(ds: Dataset, frame: np.ndarray) -> np.ndarray:
    """A greyscale frame through the header's Modality LUT and VOI LUT or window, if it has
    one and it leaves more than one value (a window outside the image's values shows
    nothing: the frame's own range is shown instead)."""
    if frame.ndim != 2 or not ("WindowCenter" in ds or "VOILUTSequence" in ds):
        return frame
    try:
        with guard("window"):
            windowed = apply_voi_lut(apply_modality_lut(frame, ds), ds)
    except Unprocessable:
        return frame  # a window pydicom cannot apply (a width of 0, a broken LUT)
    return windowed if float(windowed.min()) < float(windowed.max()) else frame


def _png(picture: np.ndarray) -> bytes:
    done, encoded = cv2.imencode(".png", picture)
    if not done:
        raise Undecodable("png-failed")
    return bytes(encoded.tobytes())
