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


def _by_tag(elem: Out) -> int:
    return int(elem.tag)  # a plain int: BaseTag compares in Python, slowly


class Encoder:
    def __init__(self, *, implicit: bool, little: bool) -> None:
        self.implicit = implicit
        self.little = little
        endian = "<" if little else ">"
        self._implicit = struct.Struct(f"{endian}HHI")
        self._short = struct.Struct(f"{endian}HH2sH")
        self._long = struct.Struct(f"{endian}HH2s2xI")
        marker = struct.Struct(f"{endian}HHI")
        self._item = marker.pack(_ITEM >> 16, _ITEM & 0xFFFF, _UNDEFINED)
        self._item_end = marker.pack(_ITEM_END >> 16, _ITEM_END & 0xFFFF, 0)
        self._sequence_end = marker.pack(_SEQUENCE_END >> 16, _SEQUENCE_END & 0xFFFF, 0)

    def encode(self, elements: list[Out], encodings: Encodings, head: bytes = b"") -> bytes:
        """`head` (the Part 10 head) followed by the elements, in tag order, in one copy."""
        parts = [head]
        self._elements(parts, elements, encodings)
        return b"".join(parts)

    def _elements(self, parts: list[bytes], elements: list[Out], encodings: Encodings) -> None:
        for elem in sorted(elements, key=_by_tag):
            if isinstance(elem, RawDataElement):
                self._raw(parts, elem)
            elif isinstance(elem, Seq):
                self._sequence(parts, elem)
            else:
                parts.append(self._pydicom(elem, encodings))

    def _header(self, tag: int, vr: str | None, length: int) -> bytes:
        group, element = tag >> 16, tag & 0xFFFF
        if self.implicit:
            return self._implicit.pack(group, element, length)
        if vr is None or len(vr) != 2:
            raise ValueError("an element without a VR cannot be written in explicit VR")
        if vr in _LONG_VRS:
            return self._long.pack(group, element, vr.encode(), length)
        return self._short.pack(group, element, vr.encode(), length)

    def _raw(self, parts: list[bytes], elem: RawDataElement) -> None:
        value = elem.value or b""
        if elem.length == _UNDEFINED:  # encapsulated pixel data: fragments, then the end mark
            parts += (self._header(elem.tag, elem.VR, _UNDEFINED), value, self._sequence_end)
            return
        parts += (self._header(elem.tag, elem.VR, len(value)), value)

    def _sequence(self, parts: list[bytes], seq: Seq) -> None:
        parts.append(self._header(seq.tag, "SQ", _UNDEFINED))
        for item in seq.items:
            parts.append(self._item)
            self._elements(parts, item.elements, item.encodings)
            parts.append(self._item_end)
        parts.append(self._sequence_end)

    def _pydicom(self, elem: DataElement, encodings: Encodings) -> bytes:
        buffer = DicomBytesIO()
        buffer.is_little_endian = self.little
        buffer.is_implicit_VR = self.implicit
        write_data_element(buffer, elem, encodings)
        return buffer.getvalue()
