"""Encode a de-identified data set: the bytes of untouched elements are copied as read.

pydicom's writer handles every element through a general path (a buffer per element, value
validation), which cost more than all of the de-identification on a CT with a few hundred
elements. Here an element still in its raw form (never decoded, so never changed) is written as
its header plus the value bytes it was read with, in the transfer syntax it was read in;
sequences are written with undefined lengths around items encoded the same way; only elements
the engine changed go through pydicom's element writer (character sets, VR rules).
"""

from __future__ import annotations

import struct
from typing import cast

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr_element, write_data_element

_LONG_VRS = frozenset(
    {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
)
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


class Encoder:
    def __init__(self, *, implicit: bool, little: bool) -> None:
        self.implicit = implicit
        self.endian = "<" if little else ">"
        self.little = little

    def dataset(self, ds: Dataset, encodings: str | list[str]) -> bytes:
        out = bytearray()
        charset = ds.get(0x00080005)  # SpecificCharacterSet: an item may set its own
        if charset is not None and charset.value:
            encodings = charset.value
        encodings = list(encodings) if not isinstance(encodings, str) else encodings
        for tag in sorted(ds.keys()):
            elem = ds.get_item(tag)
            if isinstance(elem, RawDataElement):
                if self.implicit or elem.VR is not None:
                    self._raw(out, elem)
                    continue
                # read as implicit VR (items of a sequence that came as UN): decode it to
                # learn its VR from the dictionary
                elem = ds[tag]
            if " or " in elem.VR:
                elem = cast(DataElement, correct_ambiguous_vr_element(elem, ds, self.little))
            if elem.VR == "SQ":
                self._sequence(out, elem, encodings)
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

    def _sequence(self, out: bytearray, elem: DataElement, encodings: str | list[str]) -> None:
        out += self._header(elem.tag, "SQ", _UNDEFINED)
        for item in elem.value:
            out += self._tag(_ITEM) + struct.pack(f"{self.endian}I", _UNDEFINED)
            out += self.dataset(item, encodings)
            out += self._tag(_ITEM_END) + b"\0\0\0\0"
        out += self._tag(_SEQUENCE_END) + b"\0\0\0\0"

    def _pydicom(self, elem: DataElement, encodings: str | list[str]) -> bytes:
        buffer = DicomBytesIO()
        buffer.is_little_endian = self.little
        buffer.is_implicit_VR = self.implicit
        write_data_element(buffer, elem, encodings)
        return buffer.getvalue()
