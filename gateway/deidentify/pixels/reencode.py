"""Write masked frames back: losslessly, in the original transfer syntax where we can encode it.

Only a masked image is re-encoded; every other image keeps its pixel bytes as received. The
target transfer syntax:

- native input (Implicit/Explicit VR Little Endian, Explicit VR Big Endian): the same syntax;
- RLE Lossless and JPEG 2000 Lossless: the same syntax, re-encoded (pydicom's encoders with
  pylibjpeg-rle and pylibjpeg-openjpeg), frame by frame;
- any other compressed syntax (JPEG baseline/extended/lossless, JPEG-LS, lossy JPEG 2000,
  HTJ2K, MPEG...): no lossless encoder for it here, so Explicit VR Little Endian, native.

1-bit frames (a binary segmentation, PS3.5 8.1.1) are packed again as they came: bit after bit
in little-endian bit order across frames, a frame ending mid-byte where it does; only native
Little Endian carries them here (any other 1-bit image stays unprocessable).

Frames are decoded to RGB when they were YBR (pydicom converts), so the header says RGB then;
palette colour stays palette colour (indices are masked, not colours). Once lossy, always lossy:
LossyImageCompression stays "01" (and is set to "01" with its method when the source syntax is
always lossy - JPEG baseline and extended - and the header did not say so), so nobody takes a
decoded JPEG for an original.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels.encoders.base import get_encoder
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from gateway.deidentify.failures import guard
from gateway.deidentify.pixels.containers import clean_j2k
from gateway.deidentify.pixels.frames import PIXEL_DATA
from gateway.errors import Unprocessable

_UNDEFINED = 0xFFFFFFFF
_REENCODABLE = {RLELossless, JPEG2000Lossless}
# Syntaxes that are always lossy, with their Lossy Image Compression Method (PS3.3
# C.7.6.1.1.5.1). JPEG-LS near-lossless, JPEG 2000 and HTJ2K may be lossless too: for them the
# header's own LossyImageCompression is what we know (and YBR_ICT, which only lossy JPEG 2000
# uses).
_LOSSY_METHOD = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",  # JPEG baseline
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",  # JPEG extended
}
_YBR = ("YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "YBR_PARTIAL_422")


@dataclass(frozen=True)
class Rewritten:
    """The new pixel data element, the header elements that change with it, the syntax."""

    transfer_syntax: str
    elements: dict[int, DataElement | RawDataElement]


def target_syntax(source: str) -> str:
    syntax = UID(source)
    if not syntax.is_compressed:
        return source
    return source if source in _REENCODABLE else ExplicitVRLittleEndian


class Rewriter:
    """Collects masked frames, in order, and builds the new pixel data from them."""

    def __init__(self, ds: Dataset, source_syntax: str) -> None:
        self.ds = ds
        self.source = source_syntax
        self.syntax = target_syntax(source_syntax)
        photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
        self.source_photometric = photometric
        self.photometric = "RGB" if photometric in _YBR else photometric
        self.samples = int(ds.get("SamplesPerPixel", 1) or 1)
        self.bits_allocated = int(ds.get("BitsAllocated", 8) or 8)
        self.bits_stored = int(ds.get("BitsStored", self.bits_allocated) or self.bits_allocated)
        self.signed = int(ds.get("PixelRepresentation", 0) or 0)
        self.rows, self.columns = int(ds.Rows), int(ds.Columns)
        self.little = UID(self.syntax).is_little_endian
        packed = self.bits_allocated == 1 and self.syntax not in _REENCODABLE and self.little
        if self.bits_allocated not in (8, 16, 32) and not packed:
            raise Unprocessable("cannot-reencode-bits-allocated")
        frames = max(int(ds.get("NumberOfFrames", 1) or 1), 1)
        self._frame_bits = self.rows * self.columns * self.samples * self.bits_allocated
        self._frame_bytes = self._frame_bits // 8
        total = (self._frame_bits * frames + 7) // 8
        self._native = bytearray()  # native frames go into one buffer: no list, no join
        if self.syntax not in _REENCODABLE:
            self._native = bytearray(total + total % 2)
        self._written = 0
        self._bits = np.zeros(0, np.uint8)  # 1-bit: the pixels not yet packed (fewer than 8)
        self._encoded: list[bytes] = []

    def add(self, frame: np.ndarray) -> None:
        expected = (self.rows, self.columns) + ((self.samples,) if self.samples > 1 else ())
        bits = 8 if self.bits_allocated == 1 else self.bits_allocated
        if frame.shape != expected or frame.dtype.itemsize * 8 != bits:
            raise Unprocessable("cannot-reencode-layout")
        if self.bits_allocated == 1:
            self._pack(frame)
            return
        if self.syntax in _REENCODABLE:
            with guard("reencode-failed:"):
                self._encoded.append(self._encode(frame))
            return
        dtype = frame.dtype.newbyteorder("<" if self.little else ">")
        start, end = self._written, self._written + self._frame_bytes
        if end > len(self._native):
            raise Unprocessable("frame-count-mismatch")
        self._native[start:end] = np.ascontiguousarray(frame, dtype=dtype).data.cast("B")
        self._written = end

    def _pack(self, frame: np.ndarray) -> None:
        """A 1-bit frame's pixels packed after the previous frame's, eight to a byte, the
        first in the lowest bit; a last few that fill no byte wait for the next frame."""
        bits = np.concatenate((self._bits, (frame.reshape(-1) != 0).astype(np.uint8)))
        whole = bits.size - bits.size % 8
        packed = np.packbits(bits[:whole], bitorder="little")
        start, end = self._written, self._written + packed.size
        if end > len(self._native):
            raise Unprocessable("frame-count-mismatch")
        self._native[start:end] = packed.data
        self._written, self._bits = end, bits[whole:]

    def _encode(self, frame: np.ndarray) -> bytes:
        options: dict[str, object] = {
            "rows": self.rows,
            "columns": self.columns,
            "number_of_frames": 1,
            "samples_per_pixel": self.samples,
            "bits_allocated": self.bits_allocated,
            "bits_stored": self.bits_stored,
            "pixel_representation": self.signed,
            "photometric_interpretation": self.photometric,
            "planar_configuration": 0,
        }
        if self.syntax == JPEG2000Lossless and self.samples == 3:
            options["use_mct"] = True  # RGB in, YBR_RCT out: what the source most likely was
        encoded = get_encoder(self.syntax).encode(frame, **options)  # type: ignore[arg-type]
        if self.syntax == JPEG2000Lossless:  # OpenJPEG signs its work in a COM segment
            encoded = clean_j2k(encoded).data
        return encoded

    def finish(self) -> Rewritten:
        ds = self.ds
        elements: dict[int, DataElement | RawDataElement] = {}
        photometric = self.photometric
        if self.syntax in _REENCODABLE:
            value = encapsulate(self._encoded, has_bot=len(self._encoded) > 1)
            pixels = RawDataElement(BaseTag(PIXEL_DATA), "OB", _UNDEFINED, value, 0, False, True)
            if self.syntax == JPEG2000Lossless and self.samples == 3:
                photometric = "YBR_RCT"
        else:
            native = self._native  # padded to even length when it was made
            if self._bits.size:  # 1-bit: the last pixels, the rest of their byte zero
                last = np.packbits(self._bits, bitorder="little")
                native[self._written : self._written + 1] = last.data
                self._written, self._bits = self._written + 1, np.zeros(0, np.uint8)
            frames = max(int(ds.get("NumberOfFrames", 1) or 1), 1)
            if self._written != (self._frame_bits * frames + 7) // 8:
                raise Unprocessable("frame-count-mismatch")
            vr = "OB" if self.bits_allocated <= 8 else "OW"
            value = cast(bytes, native)  # bytes-like: the encoder joins it with the rest
            pixels = RawDataElement(
                BaseTag(PIXEL_DATA), vr, len(value), value, 0, False, self.little
            )
        self._native, self._encoded = bytearray(), []
        elements[PIXEL_DATA] = pixels
        elements[0x00280004] = DataElement(0x00280004, "CS", photometric)
        if self.samples > 1:
            elements[0x00280006] = DataElement(0x00280006, "US", 0)  # PlanarConfiguration
        method = _LOSSY_METHOD.get(self.source)
        if self.source_photometric == "YBR_ICT":  # the irreversible transform: lossy JPEG 2000
            method = "ISO_15444_1"
        was_lossy = str(ds.get("LossyImageCompression", "") or "").strip() == "01"
        if method is not None or was_lossy:
            elements[0x00282110] = DataElement(0x00282110, "CS", "01")
            if method is not None and "LossyImageCompressionMethod" not in ds:
                elements[0x00282114] = DataElement(0x00282114, "CS", method)
        return Rewritten(self.syntax, elements)
