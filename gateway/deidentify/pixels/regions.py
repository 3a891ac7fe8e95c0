"""Rectangles to keep or to black out, and blacking them out in a decoded frame.

Ultrasound: the scanner declares where its images are (Sequence of Ultrasound Regions, PS3.3
C.8.5.5); the banner with the patient's name lies outside them. When the regions are present
and sane, everything outside them is masked (pydicom/deid's `keepcoordinates`). Sane: every
region inside the image and not empty, and together they leave some of it uncovered (regions
that cover the whole image would mask nothing, and then detection must find the text). Text
inside the kept regions is still the detector's job.

"Black" is the darkest value the image can show: the minimum for MONOCHROME2 and colour, the
maximum for MONOCHROME1 (PS3.3 C.7.6.3.1.2), the darkest entry of a palette colour table.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut

from gateway.deidentify.pixels.ctp import Region

_ULTRASOUND_REGIONS = 0x00186011
_MOST_OF_IT = 0.98  # regions covering more than this share of the image mask nothing useful


def ultrasound_keep(ds: Dataset) -> list[Region] | None:
    """The image regions to keep, or None when absent or not sane."""
    items = ds.get(_ULTRASOUND_REGIONS)
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if not items or not items.value or rows <= 0 or columns <= 0:
        return None
    keep = []
    for item in items.value:
        try:
            x0, y0 = int(item.RegionLocationMinX0), int(item.RegionLocationMinY0)
            x1, y1 = int(item.RegionLocationMaxX1), int(item.RegionLocationMaxY1)
        except (AttributeError, TypeError, ValueError):
            return None
        if not (0 <= x0 <= x1 < columns and 0 <= y0 <= y1 < rows):
            return None
        keep.append(Region(x0, y0, x1 - x0 + 1, y1 - y0 + 1))
    covered = np.zeros((rows, columns), dtype=bool)
    for r in keep:
        covered[r.y : r.y + r.height, r.x : r.x + r.width] = True
    if covered.mean() > _MOST_OF_IT:
        return None
    return keep


def black(ds: Dataset, frame: np.ndarray) -> int | float:
    """The darkest value of this image's pixel values (for palette colour: the index of the
    darkest colour in its table)."""
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if photometric == "PALETTE COLOR":
        high = (1 << (frame.dtype.itemsize * 8)) - 1
        indices = np.arange(min(high + 1, 65536), dtype=frame.dtype)
        colours = apply_color_lut(indices, ds).astype(np.int64)
        return int(np.argmin(colours.reshape(len(indices), -1).sum(axis=1)))
    if frame.dtype.kind == "f":
        return float(frame.max() if photometric == "MONOCHROME1" else frame.min())
    bits = int(ds.get("BitsStored", frame.dtype.itemsize * 8) or frame.dtype.itemsize * 8)
    signed = frame.dtype.kind == "i"
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return high if photometric == "MONOCHROME1" else low


def mask(frame: np.ndarray, regions: Iterable[Region], value: int | float) -> int:
    """Black out `regions` (clipped to the frame) in place; the number of pixels changed."""
    height, width = frame.shape[:2]
    changed = 0
    for r in regions:
        x0, y0 = max(r.x, 0), max(r.y, 0)
        x1, y1 = min(r.x + r.width, width), min(r.y + r.height, height)
        if x0 < x1 and y0 < y1:
            frame[y0:y1, x0:x1] = value
            changed += (x1 - x0) * (y1 - y0)
    return changed


def mask_outside(frame: np.ndarray, keep: Iterable[Region], value: int | float) -> int:
    """Black out everything but `keep` in place; the number of pixels changed."""
    inside = np.zeros(frame.shape[:2], dtype=bool)
    for r in keep:
        inside[r.y : r.y + r.height, r.x : r.x + r.width] = True
    outside = ~inside
    frame[outside] = value
    return int(outside.sum())


def widen(box: Region, margin: int, rows: int, columns: int) -> Region:
    """`box` grown by `margin` on every side, inside the frame."""
    x0, y0 = max(box.x - margin, 0), max(box.y - margin, 0)
    x1, y1 = min(box.x + box.width + margin, columns), min(box.y + box.height + margin, rows)
    return Region(x0, y0, x1 - x0, y1 - y0)
