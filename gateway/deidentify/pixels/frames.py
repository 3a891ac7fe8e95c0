"""Frames of an image, one at a time, in every transfer syntax the gateway accepts.

Decoding goes through pydicom's pixel backends with the pylibjpeg plugins (libjpeg: JPEG
baseline/extended/lossless and JPEG-LS; openjpeg: JPEG 2000 and HTJ2K; rle: RLE Lossless) and
numpy for native data. Frames come one by one, so a 120-frame colour cine never sits in memory
whole. An image that cannot be decoded raises `Undecodable` with a fixed reason code: whoever
needed to look at it quarantines it (an image that may carry text and cannot be read is never
passed on).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.pixels.utils import iter_pixels
from pydicom.uid import UID

from gateway.deidentify.failures import guard
from gateway.errors import Unprocessable

PIXEL_DATA = 0x7FE00010
#: Pixel Data, Float Pixel Data, Double Float Pixel Data: whichever an image has
PIXEL_TAGS = (PIXEL_DATA, 0x7FE00008, 0x7FE00009)
_UNDEFINED = 0xFFFFFFFF


class Undecodable(Unprocessable):
    """The pixel data cannot be decoded; `reason` is a fixed code, never data."""


def native_length(
    pixels: int, samples: int, frames: int, bits_allocated: int, photometric: str
) -> int:
    """Bytes of native pixel data for `pixels` (Rows x Columns) per frame, before the pad
    byte of an odd length (PS3.5 8.1.1, 8.2)."""
    if photometric == "YBR_FULL_422":
        samples = 2  # native 4:2:2: two values per pixel (PS3.3 C.7.6.3.1.2)
    return (pixels * samples * frames * bits_allocated + 7) // 8


def frame_count(ds: Dataset) -> int:
    value = ds.get("NumberOfFrames", 1)
    try:
        return max(int(value or 1), 1)
    except (TypeError, ValueError):
        raise Undecodable("bad-number-of-frames") from None


def _encapsulated_as_bytes(ds: Dataset) -> None:
    """pydicom reads fragments from bytes or a file, not from a view into the received data:
    compressed pixel data (small next to its frames) is copied once."""
    elem = ds.get_item(PIXEL_DATA)
    if (
        isinstance(elem, RawDataElement)
        and elem.length == _UNDEFINED
        and isinstance(elem.value, memoryview)
    ):
        ds[PIXEL_DATA] = elem._replace(value=bytes(elem.value))


def _unaligned_bits(ds: Dataset, count: int) -> Iterator[np.ndarray] | None:
    """1-bit native frames that end mid-byte (PS3.5 8.1.1: bits run on across frames),
    unpacked here: pydicom 3.0.2 cuts such a frame short when it starts mid-byte. None for
    any other pixel data (pydicom decodes it)."""
    elem = ds.get_item(PIXEL_DATA)
    syntax = UID(str(ds.get("file_meta", Dataset()).get("TransferSyntaxUID", "") or ""))
    bits = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
    if (
        int(ds.get("BitsAllocated", 0) or 0) != 1
        or int(ds.get("SamplesPerPixel", 1) or 1) != 1
        or not bits % 8
        or elem is None
        or elem.value is None
        or not syntax.is_transfer_syntax
        or syntax.is_compressed
        or not syntax.is_little_endian
        or (isinstance(elem, RawDataElement) and elem.length == _UNDEFINED)
    ):
        return None
    data = np.frombuffer(elem.value, np.uint8)
    if data.size * 8 < bits * count:
        raise Undecodable("decode-failed:ValueError")  # what pydicom says of too few bytes
    rows, columns = int(ds.Rows), int(ds.Columns)
    return (
        np.unpackbits(data[start // 8 : -(-(start + bits) // 8)], bitorder="little")[
            start % 8 : start % 8 + bits
        ].reshape(rows, columns)
        for start in range(0, bits * count, bits)
    )


def iter_frames(ds: Dataset) -> Iterator[np.ndarray]:
    """Each frame as decoded pixels (rows x columns [x samples]), in RGB for colour images
    (YBR is converted); raises Undecodable for missing or undecodable pixel data."""
    if not any(tag in ds for tag in PIXEL_TAGS):
        raise Undecodable("no-pixel-data")
    if PIXEL_DATA in ds:
        _encapsulated_as_bytes(ds)
    expected = frame_count(ds)
    produced = 0
    frames = _unaligned_bits(ds, expected) or iter_pixels(ds)
    while True:
        # the guard wraps each decode, never a yield: its warnings filter must not stay in
        # force while the caller runs
        try:
            with guard("decode-failed:"):
                try:
                    frame = next(frames)
                except StopIteration:
                    break
        except Unprocessable as failed:
            raise Undecodable(failed.reason) from None
        produced += 1
        yield frame
    if produced != expected:
        raise Undecodable("frame-count-mismatch")
