"""Reading and re-making single elements, for the actions, the walker and the engine.

Most values the engine changes are ASCII (UIDs, dates, ages, pseudonyms): they are read
straight from an element's bytes and written back as ready-encoded bytes (`ascii_map`,
`ascii_element`), the same in every transfer syntax and character set (PS3.5 6.1.2.3). Only
what is read for a decision goes through pydicom (`peek`), without changing the data set: what
is only read stays raw, and is written from its bytes.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from typing import cast

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_has_tag, dictionary_keyword, dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from gateway.deidentify.encode import Encodings, Out, Seq
from gateway.errors import Unprocessable

Element = RawDataElement | DataElement

PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020
ACCESSION_NUMBER, STUDY_ID = 0x00080050, 0x00200010
STUDY_INSTANCE_UID, SOP_INSTANCE_UID, SOP_CLASS_UID = 0x0020000D, 0x00080018, 0x00080016
SERIES_INSTANCE_UID = 0x0020000E
PIXEL_DATA, MODALITY = 0x7FE00010, 0x00080060
BODY_PART_EXAMINED, SERIES_DESCRIPTION = 0x00180015, 0x0008103E
#: PatientIdentityRemoved, DeidentificationMethod (and its code sequence),
#: LongitudinalTemporalInformationModified: written afresh for every instance
PROVENANCE = (0x00120062, 0x00120063, 0x00120064, 0x00280303)

DEFAULT_CHARSET = "iso8859"  # pydicom's name for the default repertoire
TEXT = frozenset({"SH", "LO", "ST", "LT", "UT", "UC"})
FREE_TEXT = frozenset({"ST", "LT", "UT", "UC"})
SINGLE_VALUED = frozenset({"ST", "LT", "UT"})  # a backslash there is text (PS3.5 6.2)
CODED = frozenset({"CS", "AE"})  # kept whole (a defined term) or emptied, never in part
UNDEFINED_LENGTH = 0xFFFFFFFF
_TEXT_LIKE = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_GRAMMAR = {  # PS3.5 Table 6.2-1 character repertoires, with NUL and space padding
    "DS": re.compile(rb"[0-9+\-.eE \\\0]*"),
    "IS": re.compile(rb"[0-9+\- \\\0]*"),
    "TM": re.compile(rb"[0-9.: \\\0]*"),
    "CS": re.compile(rb"[A-Z0-9_ \\\0]*"),
    "UI": re.compile(rb"[0-9. \\\0]*"),
}
_BINARY_SIZE = {"AT": 4, "FL": 4, "FD": 8, "SL": 4, "SS": 2, "SV": 8, "UL": 4, "US": 2, "UV": 8}
_CHARSET_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN", "UN"})  # PS3.5 6.1.2.3


def dictionary_vr(tag: int) -> str | None:
    """The VR the DICOM dictionary gives a public tag; None for a tag it does not know."""
    if not dictionary_has_tag(tag):
        return None
    vr = dictionary_VR(tag)
    return "OB" if " or " in vr else vr  # US or SS, OB or OW: binary for our purposes


def keyword(tag: int) -> str:
    return dictionary_keyword(tag) if dictionary_has_tag(tag) else f"({tag >> 16:04X},xxxx)"


def peek(ds: Dataset, tag: int) -> DataElement | None:
    """An element decoded without changing `ds`: what is only read stays raw in it (and is
    written from its bytes)."""
    if tag not in ds:
        return None
    elem = ds.get_item(tag)
    if isinstance(elem, RawDataElement):
        encoding = None  # only text of the VRs below depends on the character set
        if tag != 0x00080005 and (elem.VR or dictionary_vr(tag)) in _CHARSET_VRS:
            encoding = convert_encodings(encodings(ds, DEFAULT_CHARSET))
        return convert_raw_data_element(elem, encoding=encoding, ds=ds)
    return elem


def text(ds: Dataset, tag: int) -> str:
    """A string element's value (multi-values joined with backslashes), "" when absent."""
    elem = peek(ds, tag)
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    if isinstance(value, MultiValue | list):
        return "\\".join(str(v) for v in value)
    return str(value).strip("\0 ")


def values(ds: Dataset, tag: int) -> list[str]:
    """A string element's non-blank values; none when absent."""
    elem = peek(ds, tag)
    if elem is None or elem.value is None:
        return []
    value = elem.value
    items = value if isinstance(value, MultiValue | list) else [value]
    return [str(v) for v in items if str(v).strip()]


def text_values(ds: Dataset, elem: Element) -> tuple[list[str], str]:
    """A text element's values and VR: ASCII read straight from its bytes (most values),
    anything else through pydicom in the character set in force."""
    if isinstance(elem, RawDataElement) and elem.VR in TEXT | CODED:
        raw = elem.value or b""
        if raw.isascii() and b"\x1b" not in raw:
            decoded = raw.decode("ascii").rstrip("\0 ")
            if elem.VR in SINGLE_VALUED:
                return [decoded], elem.VR
            return [p.strip("\0 ") for p in decoded.split("\\")], elem.VR
    converted = ds[elem.tag]
    value = converted.value
    items = list(value) if isinstance(value, MultiValue | list) else [value]
    return ["" if v is None else str(v) for v in items], converted.VR


def encodings(ds: Dataset, parent: Encodings) -> Encodings:
    """The character set of a data set's text: its own SpecificCharacterSet, else its parent's."""
    charset = peek(ds, 0x00080005)
    if charset is None or not charset.value:
        return parent
    value = charset.value
    return [str(v) for v in value] if isinstance(value, MultiValue | list) else str(value)


def ascii_element(tag: int, vr: str, value: str) -> RawDataElement:
    """An element of ASCII text as ready-encoded bytes: the same in every transfer syntax and
    every character set (PS3.5 6.1.2.3: the default repertoire is always available)."""
    data = value.encode("ascii")
    if len(data) % 2:
        data += b"\0" if vr == "UI" else b" "
    return RawDataElement(BaseTag(tag), vr, len(data), data, 0, False, True, True, False)


def ascii_text(elem: Out) -> str | None:
    """The text of an element holding ASCII (UIDs, dates, ages), read from its bytes."""
    if isinstance(elem, RawDataElement):
        try:
            return (elem.value or b"").decode("ascii").rstrip("\0 ")
        except UnicodeDecodeError:
            return None
    if isinstance(elem, DataElement):
        value = elem.value
        if isinstance(value, MultiValue | list):
            return "\\".join(str(v) for v in value)
        return "" if value is None else str(value).rstrip("\0 ")
    return None


def ascii_map(ds: Dataset, elem: Element, fn: Callable[[str], str], pad: bytes) -> Out:
    """Apply `fn` to an ASCII value (multi-values joined by backslashes) and re-make the
    element as ready-encoded ASCII bytes."""
    value = ascii_text(elem)
    new = fn(text(ds, elem.tag) if value is None else value)
    if isinstance(elem, RawDataElement):
        data = new.encode("ascii")
        if len(data) % 2:
            data += pad
        return elem._replace(value=data, length=len(data))
    return ascii_element(elem.tag, elem.VR, new)


def emptied(elem: Element) -> Out:
    if isinstance(elem, RawDataElement):
        return elem._replace(value=b"", length=0)
    return ascii_element(elem.tag, elem.VR, "")


def is_empty(elem: Element) -> bool:
    if isinstance(elem, RawDataElement):
        return not elem.value or not elem.value.strip(b"\0 ")
    return bool(elem.is_empty)


def has_items(elem: Out) -> bool:
    """Whether a sequence element (as an action left it) has any item."""
    if isinstance(elem, Seq):
        return bool(elem.items)
    if isinstance(elem, RawDataElement):
        return bool(elem.value)
    return bool(elem.value)


def undefined_length(elem: Element) -> bool:
    if isinstance(elem, RawDataElement):
        return elem.length == UNDEFINED_LENGTH
    return elem.is_undefined_length


def plausible(elem: RawDataElement, vr: str | None) -> bool:
    """False for a value that cannot be what its attribute holds: text in an element whose VR
    says number or binary, or characters a DS, IS or TM never has (a name, say)."""
    actual = elem.VR
    mismatch = actual not in (None, "UN") and vr is not None and actual not in vr.split(" or ")
    if mismatch and (actual in _TEXT_LIKE or vr in _TEXT_LIKE):
        return False
    grammar = _GRAMMAR.get(actual if actual not in (None, "UN") else vr or "")
    if grammar is not None and not grammar.fullmatch(elem.value or b""):
        return False
    binary = _BINARY_SIZE.get(actual if actual not in (None, "UN") else vr or "")
    return binary is None or len(elem.value or b"") % binary == 0


def undefer(ds: Dataset, key: int, data: bytes) -> Element:
    """The element at `key`, its value taken from `data` if parsing left it there (values of
    64 KiB and more, at the top level): pixel data as a view, without a copy. A value that
    runs past the end is a truncated file."""
    elem = ds.get_item(key, keep_deferred=True)
    if not isinstance(elem, RawDataElement) or elem.value is not None or not elem.length:
        return elem
    if elem.length == UNDEFINED_LENGTH:
        end = _fragments_end(data, elem.value_tell)
    else:
        end = elem.value_tell + elem.length
    if end > len(data):
        raise Unprocessable("truncated-element")
    view = memoryview(data)[elem.value_tell : end]
    value = cast(bytes, view) if int(key) == PIXEL_DATA else bytes(view)  # bytes-like
    elem = elem._replace(value=value)
    ds[key] = elem
    return elem


def _fragments_end(data: bytes, start: int) -> int:
    """Where encapsulated pixel data's items end (at its Sequence Delimitation Item); always
    little endian (PS3.5 A.4)."""
    position = start
    while position + 8 <= len(data):
        group, element, length = struct.unpack_from("<HHI", data, position)
        if (group, element) == (0xFFFE, 0xE0DD):
            return position
        if (group, element) != (0xFFFE, 0xE000) or length == UNDEFINED_LENGTH:
            break
        position += 8 + length
    raise Unprocessable("truncated-element")
