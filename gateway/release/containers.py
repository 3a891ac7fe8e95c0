"""The release check's own look at the pixel container: nothing but pixels is in it.

The pixel stage cleans every container (`deidentify/pixels/sanitise.py`, `containers.py`);
this is the second reader, written apart from it and never importing it, that does not decode
anything and answers for the output alone:

- native Pixel Data: no longer than Rows x Columns x Samples x Frames x Bits Allocated / 8
  (plus one zero pad byte for an odd length); High Bit = Bits Stored - 1; no bit above High Bit
  set (signed pixels: each such bit equal to the sign). Float and Double Float: their length.
- JPEG and JPEG-LS frames: no COM or APPn marker segment between SOI and EOI (the segments
  walked, scans skipped: ISO/IEC 10918-1 B.1.1.5 stuffs every 0xFF of entropy-coded data with
  0x00, ISO/IEC 14495-1 with a byte below 0x80), but for the canonical colour segments (APP14
  "Adobe", 12 bytes; JPEG-LS APP8 "mrfx"), and nothing after EOI but one zero pad byte.
- JPEG 2000 codestreams: no COM marker segment in the main or a tile-part header (ISO/IEC
  15444-1 A.4-A.9), and nothing after EOC but a zero pad byte.
- RLE: written fresh by the stage; other encapsulated syntaxes: not provable, a finding.

A finding names the element's tag; never a value.
"""

from __future__ import annotations

import re
import struct

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments

PIXEL_DATA, FLOAT_PIXEL_DATA, DOUBLE_PIXEL_DATA = 0x7FE00010, 0x7FE00008, 0x7FE00009
_JPEG = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57"})
_JPEG |= {"1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
_J2K = frozenset(
    {f"1.2.840.10008.1.2.4.{n}" for n in ("90", "91", "92", "93", "201", "202", "203")}
)
_RLE = "1.2.840.10008.1.2.5"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"  # Explicit VR Big Endian (retired)
_APP_OR_COM = re.compile(rb"\xff[\xe0-\xef\xfe]")
_COLOUR_SEGMENTS = (
    re.compile(rb"\xff\xee\x00\x0eAdobe\x00d\x00\x00\x00\x00[\x00-\x02]"),  # version 100
    re.compile(rb"\xff\xe8\x00\x07mrfx[\x01-\x03]"),
)
_UNDEFINED = 0xFFFFFFFF
_EOI, _SOS, _SOF55 = 0xD9, 0xDA, 0xF7
_SOT, _SOD, _EOC, _COM = 0xFF90, 0xFF93, 0xFFD9, 0xFF64
_WHERE = {
    PIXEL_DATA: "(7FE0,0010)",
    FLOAT_PIXEL_DATA: "(7FE0,0008)",
    DOUBLE_PIXEL_DATA: "(7FE0,0009)",
}


def clean(ds: Dataset, data: bytes, syntax: str) -> list[str]:
    """Where the output's pixel container holds more than pixels (tag paths)."""
    for tag, size in ((FLOAT_PIXEL_DATA, 4), (DOUBLE_PIXEL_DATA, 8)):
        if tag in ds and len(_value(ds, tag, data)) > _pixels(ds) * size:
            return [_WHERE[tag]]
    if PIXEL_DATA not in ds:
        return []
    elem = ds.get_item(PIXEL_DATA, keep_deferred=True)
    undefined = isinstance(elem, RawDataElement) and elem.length == _UNDEFINED
    value = _value(ds, PIXEL_DATA, data)
    if not undefined and syntax == _BIG_ENDIAN and elem is not None and elem.VR == "OW":
        value = np.frombuffer(value[: len(value) // 2 * 2], "<u2").byteswap().tobytes()
    proven = _encapsulated(value, syntax) if undefined else _native(ds, value)
    return [] if proven else [_WHERE[PIXEL_DATA]]


def _value(ds: Dataset, tag: int, data: bytes) -> bytes | memoryview:
    """The element's bytes, from `data` where reading left them there (a view: a cine's
    native pixel data is 100 MiB and more)."""
    elem = ds.get_item(tag, keep_deferred=True)
    if isinstance(elem, RawDataElement) and elem.value is None and elem.length:
        end = elem.value_tell + (elem.length if elem.length != _UNDEFINED else len(data))
        return memoryview(data)[elem.value_tell : end]
    value = elem.value if elem is not None else None
    return value if isinstance(value, bytes | memoryview) else b""


def _number(ds: Dataset, keyword: str, default: int) -> int:
    value = ds.get(keyword, default)
    return int(value) if value not in (None, "") else default


def _pixels(ds: Dataset) -> int:
    frames = _number(ds, "NumberOfFrames", 1) or 1
    return _number(ds, "Rows", 0) * _number(ds, "Columns", 0) * frames * _samples(ds)


def _samples(ds: Dataset) -> int:
    if str(ds.get("PhotometricInterpretation", "") or "").strip() == "YBR_FULL_422":
        return 2
    return _number(ds, "SamplesPerPixel", 1) or 1


def _native(ds: Dataset, value: bytes | memoryview) -> bool:
    """`value` in pixel order (an OW value of Explicit VR Big Endian swapped back, PS3.5 7.3:
    its words are then little endian)."""
    allocated = _number(ds, "BitsAllocated", 0)
    stored = _number(ds, "BitsStored", allocated)
    high = _number(ds, "HighBit", stored - 1)
    length = (_pixels(ds) * allocated + 7) // 8
    tail = bytes(value[length:])
    if len(tail) > length % 2 or tail.strip(b"\0") or high != stored - 1:
        return False
    if allocated not in (8, 16, 32) or stored >= allocated:
        return True  # no unused bits (1-bit data: its last byte's spare bits are not looked at)
    words = np.frombuffer(value, f"<u{allocated // 8}", length * 8 // allocated)
    above = words >> np.array(high, words.dtype)  # the sign bit and every bit above it
    if _number(ds, "PixelRepresentation", 0) == 1:
        full = np.array((1 << (allocated - high)) - 1, words.dtype)
        return bool(np.all((above == 0) | (above == full)))
    return not bool(np.any(above >> np.array(1, words.dtype)))


def _encapsulated(value: bytes | memoryview, syntax: str) -> bool:
    if syntax == _RLE:
        return True
    check = _jpeg if syntax in _JPEG else _j2k if syntax in _J2K else None
    if check is None:
        return False
    try:
        fragments = list(generate_fragments(bytes(value)))  # compressed: small
    except (ValueError, struct.error):
        return False
    return all(check(fragment) for fragment in fragments[1:] or [b""])


def _jpeg(fragment: bytes) -> bool:
    """Marker segments from SOI to EOI (10918-1 B.1.1.4; scans skipped to the next marker,
    B.1.1.5 / 14495-1 A.1): no COM or APPn among them but the colour segments, nothing after
    EOI but a zero pad byte. (Walked, not searched: a table may hold the bytes of a marker.)"""
    if fragment[:2] != b"\xff\xd8":
        return False
    position, ls = 2, False
    while (marker := _jpeg_marker(fragment, position)) != _EOI:
        if marker == 0xFF:  # a fill byte (B.1.1.2)
            position += 1
            continue
        if marker < 0 or position + 4 > len(fragment):
            return False
        end = position + 2 + struct.unpack_from(">H", fragment, position + 2)[0]
        segment = fragment[position:end]
        if _APP_OR_COM.fullmatch(segment[:2]) and not any(
            allowed.fullmatch(segment) for allowed in _COLOUR_SEGMENTS
        ):
            return False
        ls = ls or marker == _SOF55
        position = _scan_end(fragment, end, ls) if marker == _SOS else end
    tail = fragment[position + 2 :]
    return len(tail) <= 1 and not tail.strip(b"\0")


def _jpeg_marker(fragment: bytes, position: int) -> int:
    """The marker at `position`, -1 if there is none."""
    if position < 0 or position + 2 > len(fragment) or fragment[position] != 0xFF:
        return -1
    return fragment[position + 1]


def _scan_end(fragment: bytes, position: int, ls: bool) -> int:
    """Where the entropy-coded data from `position` ends: the first 0xFF not followed by a
    stuffed 0x00 (JPEG-LS: a byte below 0x80) or a restart marker; -1 if none."""
    while (position := fragment.find(b"\xff", position)) >= 0:
        following = fragment[position + 1 : position + 2]
        if not following:
            return -1
        if (following[0] < 0x80 if ls else following[0] == 0) or 0xD0 <= following[0] <= 0xD7:
            position += 2
            continue
        return position
    return -1


def _j2k(fragment: bytes) -> bool:
    """No COM in the main or any tile-part header; nothing after EOC but a zero pad byte."""
    if fragment[:2] != b"\xff\x4f":  # SOC
        return False
    position, marker = _header(fragment, 2)
    while marker == _SOT:
        start, psot = position, struct.unpack_from(">I", fragment, position + 6)[0]
        position, marker = _header(fragment, start + 12)  # after SOT and its 10 bytes
        if marker != _SOD:
            return False
        position = start + psot if psot else fragment.rfind(b"\xff\xd9")
        marker = _marker(fragment, position)
    tail = fragment[position + 2 :]
    return marker == _EOC and len(tail) <= 1 and not tail.strip(b"\0")


def _header(stream: bytes, position: int) -> tuple[int, int]:
    """Walk marker segments from `position` to the next SOT, SOD or EOC: its position and
    marker; (-1, 0) when a COM comes first, or anything that is not a marker segment."""
    while (marker := _marker(stream, position)) not in (_SOT, _SOD, _EOC):
        if marker == _COM or marker >> 8 != 0xFF or position + 4 > len(stream):
            return -1, 0
        position += 2 + struct.unpack_from(">H", stream, position + 2)[0]
    return position, marker


def _marker(stream: bytes, position: int) -> int:
    if position < 0 or position + 2 > len(stream):
        return 0
    marker: int = struct.unpack_from(">H", stream, position)[0]
    return marker
