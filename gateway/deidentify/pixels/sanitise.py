"""Pixel data that hides nothing: every image that leaves gets a container made of known parts.

The text check looks at the pixels a decoder shows. Bytes no decoder shows can still carry a
name: bits above High Bit in each stored word (an overlay written into bit 15 of a 12-bit MR,
PS3.5 8.1.2 and the retired overlays in pixel data, PS3.5 8.1.2 note), bytes after the end of
native Pixel Data, and for compressed frames, marker segments (JPEG COM and APPn, a JPEG 2000
COM) - see `containers.py`. So for every image, masked or not, checked or skipped by the site:

- native Pixel Data (PS3.5 8.1.1, 8.2): cut to Rows x Columns x Samples x Frames x Bits
  Allocated / 8 (one zero pad byte when odd); bits above High Bit are cleared, or for signed
  pixels set to the sign (what a reader that ignores Bits Stored then sees is the same value);
  the unused bits after the last pixel of 1-bit data are cleared. A decoder that follows the
  header sees exactly the same pixels. High Bit other than Bits Stored - 1 (not allowed since
  PS3.3 C.7.6.3.1.1; decoders then read other bits than the header says) is refused.
- Float and Double Float Pixel Data: cut to their length (every bit of a float is the value).
- encapsulated Pixel Data (PS3.5 A.4): every frame through `containers.clean_frame` (JPEG and
  JPEG-LS marker segments, JPEG 2000 codestream segments and JP2 boxes, RLE rebuilt), then
  encapsulated afresh; a syntax it cannot clean (video, JPEG XL, ...) is refused.

What a masked image's writer makes (`reencode.py`) is built from decoded frames: it needs none
of this. The result says what was changed, for the report; nothing of a value is said.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.tag import BaseTag
from pydicom.uid import UID

from gateway.deidentify.failures import guard
from gateway.deidentify.pixels.containers import Geometry, clean_frame
from gateway.deidentify.pixels.frames import PIXEL_DATA, frame_count, native_length
from gateway.errors import Unprocessable

FLOAT_PIXEL_DATA, DOUBLE_PIXEL_DATA = 0x7FE00008, 0x7FE00009
_FLOAT_BYTES = {FLOAT_PIXEL_DATA: 4, DOUBLE_PIXEL_DATA: 8}
_UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True)
class Sanitised:
    """The pixel elements to write instead of the received ones (none: those are clean), and
    counts of what was cleared or cut."""

    elements: dict[int, RawDataElement] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def sanitise(ds: Dataset, transfer_syntax: str) -> Sanitised:
    """The clean container for the pixel data of `ds` (its value already loaded)."""
    little = UID(transfer_syntax).is_little_endian
    for tag, size in _FLOAT_BYTES.items():
        if tag in ds:
            return _floats(ds, tag, size, little)
    if PIXEL_DATA not in ds:
        return Sanitised()
    elem = ds.get_item(PIXEL_DATA)
    if elem is None:
        return Sanitised()
    if _undefined_length(elem):
        return _encapsulated(ds, elem, transfer_syntax)
    return _native(ds, elem, little)


def _encapsulated(
    ds: Dataset, elem: RawDataElement | DataElement, transfer_syntax: str
) -> Sanitised:
    """Each frame cleaned (`containers.clean_frame`), then encapsulated afresh (PS3.5 A.4):
    one fragment per frame, a Basic Offset Table for more than one. What the received
    container held beside its frames (offsets, extra fragments) does not come along."""
    count = frame_count(ds)
    geometry = Geometry(
        int(ds.get("Rows", 0) or 0),
        int(ds.get("Columns", 0) or 0),
        int(ds.get("SamplesPerPixel", 1) or 1),
        int(ds.get("BitsAllocated", 0) or 0),
    )
    frames, removed = [], 0
    with guard("pixel-container-frames:"):
        for frame in generate_frames(bytes(elem.value or b""), number_of_frames=count):
            cleaned = clean_frame(frame, transfer_syntax, geometry)
            frames.append(cleaned.data)
            removed += cleaned.removed
    if len(frames) != count:
        raise Unprocessable("frame-count-mismatch")
    value = encapsulate(frames, has_bot=count > 1)
    new = RawDataElement(BaseTag(PIXEL_DATA), "OB", _UNDEFINED, value, 0, False, True)
    return Sanitised({PIXEL_DATA: new}, {"container_parts_removed": removed} if removed else {})


def _undefined_length(elem: RawDataElement | DataElement) -> bool:
    if isinstance(elem, RawDataElement):
        return elem.length == _UNDEFINED
    return elem.is_undefined_length


def _element(tag: int, vr: str | None, data: bytes, little: bool) -> RawDataElement:
    """A pixel element of `data`, written as its bytes in any transfer syntax."""
    return RawDataElement(BaseTag(tag), vr, len(data), data, 0, vr is None, little)


def _native(ds: Dataset, elem: RawDataElement | DataElement, little: bool) -> Sanitised:
    value = elem.value or b""
    length = native_length(
        int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0),
        int(ds.get("SamplesPerPixel", 1) or 1),
        frame_count(ds),
        int(ds.get("BitsAllocated", 0) or 0),
        str(ds.get("PhotometricInterpretation", "") or "").strip(),
    )
    counts: dict[str, int] = {}
    # bytes of an OW value in big endian are swapped in pairs (PS3.5 7.3): 8-bit pixels are
    # in order only once swapped back
    swapped = not little and elem.VR == "OW" and len(value) % 2 == 0
    data: bytes | bytearray | memoryview = _swap_pairs(value) if swapped else value
    tail = bytes(data[length:])  # allowed: the one zero byte that pads an odd length
    if len(tail) > length % 2 or tail.strip(b"\0"):
        counts["pixel_bytes_cut"] = len(tail)
        data = bytearray(data[:length]) + b"\0" * (length % 2)
    cleared = _clear_unused_bits(ds, _swap_pairs(data) if swapped else data, length, little)
    if cleared is not None:
        data, counts["pixel_words_cleared"] = cleared
    elif swapped:
        data = _swap_pairs(data)
    if not counts:
        return Sanitised()
    new = _element(PIXEL_DATA, elem.VR, bytes(data), little)
    return Sanitised({PIXEL_DATA: new}, counts)


def _swap_pairs(data: bytes | bytearray | memoryview) -> bytes:
    return np.frombuffer(data, "<u2").byteswap().tobytes()


def _clear_unused_bits(
    ds: Dataset, data: bytes | bytearray | memoryview, length: int, little: bool
) -> tuple[bytearray, int] | None:
    """The data with every bit outside Bits Stored made what a decoder derives anyway, and
    how many words changed; None when none had such a bit."""
    allocated = int(ds.get("BitsAllocated", 0) or 0)
    if allocated == 1:
        return _clear_bit_tail(ds, data, length)
    if allocated not in (8, 16, 32):
        raise Unprocessable("pixel-container-bits-allocated")
    stored, high = check_layout(ds)
    if stored == allocated:
        return None
    order = "<" if little or allocated == 8 else ">"
    words = np.frombuffer(data, dtype=f"{order}u{allocated // 8}", count=length * 8 // allocated)
    clean = words & np.array((1 << stored) - 1, dtype=words.dtype)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        clean = _sign_extended(clean, high, allocated)
    changed = int(np.count_nonzero(clean != words))
    if not changed:
        return None
    out = bytearray(data)
    out[:length] = clean.astype(words.dtype, copy=False).tobytes()
    return out, changed


def check_layout(ds: Dataset) -> tuple[int, int]:
    """Bits Stored and High Bit, when they are what decoders read (PS3.3 C.7.6.3.1.1: High Bit
    is Bits Stored - 1; decoders read the low Bits Stored bits whatever High Bit says, so with
    another High Bit the text check would not see the bits the header names)."""
    allocated = int(ds.get("BitsAllocated", 0) or 0)
    stored = int(ds.get("BitsStored", allocated) or allocated)
    high = int(ds.get("HighBit", stored - 1) if "HighBit" in ds else stored - 1)
    if not 0 < stored <= max(allocated, 1) or high != stored - 1:
        raise Unprocessable("pixel-bits-layout")
    return stored, high


def _sign_extended(clean: np.ndarray, high: int, allocated: int) -> np.ndarray:
    """Words whose bits above High Bit repeat its sign bit (two's complement in Bits Allocated
    bits): the signed value a decoder reads from Bits Stored, also for one that does not."""
    above = np.array(((1 << allocated) - 1) ^ ((1 << (high + 1)) - 1), dtype=clean.dtype)
    negative = (clean >> np.array(high, dtype=clean.dtype)) & np.array(1, dtype=clean.dtype)
    result: np.ndarray = np.where(negative.astype(bool), clean | above, clean)
    return result


def _clear_bit_tail(
    ds: Dataset, data: bytes | bytearray | memoryview, length: int
) -> tuple[bytearray, int] | None:
    """1-bit data (PS3.5 8.1.1: packed, little-endian bit order): the bits after the last
    pixel of the last byte are no pixel."""
    bits = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0) * frame_count(ds)
    spare = length * 8 - bits
    if not spare or not length:
        return None
    last = data[length - 1]
    kept = last & ((1 << (8 - spare)) - 1)
    if kept == last:
        return None
    out = bytearray(data)
    out[length - 1] = kept
    return out, 1


def _floats(ds: Dataset, tag: int, size: int, little: bool) -> Sanitised:
    """Float or Double Float Pixel Data cut to the length its header describes."""
    elem = ds.get_item(tag)
    value = (elem.value if elem is not None else None) or b""
    pixels = int(ds.get("Rows", 0) or 0) * int(ds.get("Columns", 0) or 0)
    length = pixels * int(ds.get("SamplesPerPixel", 1) or 1) * frame_count(ds) * size
    if elem is None or len(value) <= length:
        return Sanitised()
    new = _element(tag, elem.VR, bytes(value[:length]), little)
    return Sanitised({tag: new}, {"pixel_bytes_cut": len(value) - length})
