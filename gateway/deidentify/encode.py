"""Encode de-identified elements: the bytes of untouched elements are copied as read.

pydicom's writer handles every element through a general path (a buffer per element, value
validation), which cost more than all of the de-identification on a CT with a few hundred
elements. Here an element still in its raw form (never decoded, or re-made from ASCII bytes) is
written as its header plus its value bytes, in the transfer syntax it was read in; sequences
are written with undefined lengths around items encoded the same way; only elements the engine
built as `DataElement`s go through pydicom's element writer (character sets, VR rules).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element

_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD

Encodings = str | list[str]


@dataclass(frozen=True)
class Item:
    """One sequence item: its elements and the character set its text is written in."""

    elements: list[Out]
    encodings: Encodings


@dataclass(frozen=True)
class Seq:
    tag: int
    items: list[Item]


Out = RawDataElement | DataElement | Seq


class Encoder:
    def __init__(self, *, implicit: bool, little: bool) -> None:
        self.implicit = implicit
        self.little = little
        self.endian = "<" if little else ">"

    def encode(self, elements: list[Out], encodings: Encodings) -> bytes:
        out = bytearray()
        for elem in sorted(elements, key=lambda e: e.tag):
            if isinstance(elem, RawDataElement):
                self._raw(out, elem)
            elif isinstance(elem, Seq):
                self._sequence(out, elem)
            else:
                out += self._pydicom(elem, encodings)
        return bytes(out)

    def _tag(self, tag: int) -> bytes:
        return struct.pack(f"{self.endian}HH", tag >> 16, tag & 0xFFFF)

    def _header(self, tag: int, vr: str | None, length: int) -> bytes:
        if self.implicit:
            return self._tag(tag) + struct.pack(f"{self.endian}I", length)
        if vr is None or len(vr) != 2:
            raise ValueError("an element without a VR cannot be written in explicit VR")
        if vr in _LONG_VRS:
            return self._tag(tag) + vr.encode() + struct.pack(f"{self.endian}HI", 0, length)
        return self._tag(tag) + vr.encode() + struct.pack(f"{self.endian}H", length)

    def _raw(self, out: bytearray, elem: RawDataElement) -> None:
        value = elem.value or b""
        if elem.length == _UNDEFINED:  # encapsulated pixel data: fragments, then the end mark
            out += self._header(elem.tag, elem.VR, _UNDEFINED) + value
            out += self._tag(_SEQUENCE_END) + b"\0\0\0\0"
            return
        out += self._header(elem.tag, elem.VR, len(value)) + value

    def _sequence(self, out: bytearray, seq: Seq) -> None:
        out += self._header(seq.tag, "SQ", _UNDEFINED)
        for item in seq.items:
            out += self._tag(_ITEM) + struct.pack(f"{self.endian}I", _UNDEFINED)
            out += self.encode(item.elements, item.encodings)
            out += self._tag(_ITEM_END) + b"\0\0\0\0"
        out += self._tag(_SEQUENCE_END) + b"\0\0\0\0"

    def _pydicom(self, elem: DataElement, encodings: Encodings) -> bytes:
        buffer = DicomBytesIO()
        buffer.is_little_endian = self.little
        buffer.is_implicit_VR = self.implicit
        write_data_element(buffer, elem, encodings)
        return buffer.getvalue()
