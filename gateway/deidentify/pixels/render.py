"""Decoded frames as the 8-bit colour pictures a text detector reads.

Burned-in text is drawn by the modality or a workstation at a fixed, usually extreme value over
pixels whose range can be anything (12- or 16-bit CT and DX, signed values, MONOCHROME1), so
every greyscale frame is shown in two ways and the detector reads both:

- the full range, min to max (MONOCHROME1 inverted, so text is light on dark like on screen);
- the brightest values only (the top 1 % of the range as white on black): text drawn at the
  maximum over bright anatomy, invisible in the full range, stands out there.

Colour frames are read as they are; palette colour frames through their lookup table.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut

_TOP_SHARE = 0.01


class Renderer:
    """One per image: what it needs from the header, read once."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
        self.palette = self.photometric == "PALETTE COLOR"

    def views(self, frame: np.ndarray) -> list[np.ndarray]:
        """The frame as one or two H x W x 3 uint8 pictures (BGR, the detector's order)."""
        if self.palette:
            frame = apply_color_lut(frame, self.ds)
        if frame.ndim == 3:
            return [cv2.cvtColor(_to_uint8(frame), cv2.COLOR_RGB2BGR)]
        grey = frame.astype(np.float32, copy=False)
        low, high = float(grey.min()), float(grey.max())
        if high <= low:
            return [np.zeros((*frame.shape, 3), np.uint8)]  # one flat value: no text
        if self.photometric == "MONOCHROME1":
            grey, low, high = -grey, -high, -low
        full = ((grey - low) * (255.0 / (high - low))).astype(np.uint8)
        band = (high - low) * _TOP_SHARE
        bright = np.where(grey >= high - band, np.uint8(255), np.uint8(0))
        dark = np.where(grey <= low + band, np.uint8(255), np.uint8(0))
        return [cv2.cvtColor(v, cv2.COLOR_GRAY2BGR) for v in (full, bright, dark)]


def _to_uint8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint8:
        return frame
    high = float(frame.max()) or 1.0
    return (frame.astype(np.float32) * (255.0 / high)).astype(np.uint8)
