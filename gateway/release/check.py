"""The release check: one outgoing object re-read against its original; clean only if proven.

`ReleaseCheck.check(original, output, pixels)` reads both Part 10 files and returns every
`Finding`; an empty list is the only answer that lets the object be sealed (DESIGN 2, promise 3).
It walks the output once, every element at every depth, file meta included:

1. allow-list (`allowed.Allowed`): an attribute the site's options cannot leave in the output
   -> release-attribute-not-allowed; one they may leave only empty, with a value ->
   release-attribute-not-empty; a private element or creator off the safe-private list (or any,
   without the Retain Safe Private Option) -> release-private-tag.
2. words (`words.Lexicon`, this package's own reading of the shipped vocabulary): every value
   of a text VR holds only allowed words, numbers and codes (CS/AE whole: a defined term or
   allowed tokens; code values by their shape; the gateway's pseudonyms and random IDs by
   theirs) -> release-word-not-allowed.
3. values (`identifiers.Identifiers`, from the original): text of every text VR (AE CS LO LT PN
   SH ST UC UR UT; private and UN values that read as ASCII or UTF-8; a number, date or UID
   value that holds letters) searched for this patient's names, IDs, phrases and birth date
   -> release-identifier-in-value; DS/IS values for long numeric IDs, DA/DT values for the birth
   date -> release-identifier-in-value; a UI value, or a UID written in text, that is one of the
   original's instance UIDs -> release-original-uid.
4. pixels: pixel data inside a sequence item (no pixel stage saw it), BurnedInAnnotation YES,
   BurnedInAnnotation NO without evidence that detection ran over every frame, or top-level
   pixel data neither checked nor excluded by the site's [pixels] skip ->
   release-burned-in-unproven. Pixel data is never decoded here: the pixel stage did that.
5. containers (`containers`): the pixel data holds nothing but pixels - no bits above High
   Bit, no bytes past the last pixel, no JPEG COM/APPn or JPEG 2000 COM segment, no
   encapsulated syntax whose container cannot be read -> release-pixel-container.
6. provenance: PatientIdentityRemoved YES and a de-identification method (PS3.15 E.1.1,
   PS3.3 C.7.1.1) -> else release-provenance-missing.

An original or output that cannot be read is release-unreadable ("original" or "output"); an
output that is not a Part 10 file is too. `Finding.where` is a tag path, items numbered from 0
("(0040,A730)[2].(0040,A160)"): never a value. pydicom's warnings are silenced while reading,
as they may quote values (promise 4).

(Over 400 lines on purpose: the second reader is kept whole and apart from the de-identifier
it checks, so the two share no code that could carry the same mistake.)
"""

from __future__ import annotations

import io
import re
import struct
import warnings
from dataclasses import dataclass
from typing import Any

from pydicom import dcmread
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.uid import DeflatedExplicitVRLittleEndian

from gateway.release import containers
from gateway.release.allowed import FIXED_DUMMIES, PSEUDONYMS, Allowed, Permission
from gateway.release.identifiers import Identifiers, fold
from gateway.release.words import CODES, Lexicon
from gateway.settings import DeidentifySettings, Settings

IDENTIFIER = "release-identifier-in-value"
ORIGINAL_UID = "release-original-uid"
NOT_ALLOWED = "release-attribute-not-allowed"
NOT_EMPTY = "release-attribute-not-empty"
PRIVATE = "release-private-tag"
BURNED_IN = "release-burned-in-unproven"
PROVENANCE = "release-provenance-missing"
UNREADABLE = "release-unreadable"
WORD = "release-word-not-allowed"
CONTAINER = "release-pixel-container"
#: Every reason code the release check gives (fixed strings: metrics labels, reason files).
REASONS = (
    NOT_ALLOWED,
    NOT_EMPTY,
    PRIVATE,
    IDENTIFIER,
    WORD,
    ORIGINAL_UID,
    BURNED_IN,
    PROVENANCE,
    UNREADABLE,
    CONTAINER,
)

PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # Pixel, Float, Double Float
BURNED_IN_ANNOTATION = 0x00280301
PATIENT_IDENTITY_REMOVED = 0x00120062
DEIDENTIFICATION_METHOD, DEIDENTIFICATION_METHOD_CODES = 0x00120063, 0x00120064
CLEAN_PIXEL_DATA = "113101"  # CID 7050
_TEXT = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_NUMBERS = frozenset({"DS", "IS"})
_DATES = frozenset({"DA", "DT"})
_READABLE = _TEXT | _NUMBERS | _DATES | {"UI"}
_LETTER = re.compile(r"[^\W\d_]")
_UID_LIKE = re.compile(r"\d+(?:\.\d+)+")
_UNDEFINED = 0xFFFFFFFF
_DEFER = 65_536  # values this long are left in the bytes while parsing (pixel data above all)
#: What pydicom raises on data it cannot parse (no single base class covers them).
_PARSE_ERRORS = (
    InvalidDicomError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    LookupError,
    EOFError,
    OSError,
    NotImplementedError,
    OverflowError,
    RecursionError,
    struct.error,
)

Element = DataElement | RawDataElement


@dataclass(frozen=True)
class PixelEvidence:
    """What the pixel stage did for this instance."""

    has_pixels: bool  # the output carries PixelData / FloatPixelData / DoubleFloatPixelData
    checked: bool  # the pixel stage ran its detection/rules over every frame
    masked: int  # number of masked regions applied
    skipped_by_site: bool  # the site's [pixels] skip setting excluded this image category


@dataclass(frozen=True)
class Finding:
    """Why an object is not proven clean: a fixed reason code and a tag path, never a value."""

    reason: str
    where: str


class ReleaseCheck:
    """The independent second reader for one site's de-identification options."""

    def __init__(self, settings: DeidentifySettings) -> None:
        self.settings = settings
        self.allowed = Allowed(settings)
        self.lexicon = Lexicon.load(settings.vocabulary)

    @classmethod
    def for_settings(cls, settings: Settings) -> ReleaseCheck:
        return cls(settings.deidentify)

    def check(self, original: bytes, output: bytes, pixels: PixelEvidence) -> list[Finding]:
        """Empty list = proven clean. Never raises for bad input: an unreadable original or
        output gives a Finding."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's warnings may quote values
            try:
                ids = Identifiers.of(_read(original), self.settings)
            except _PARSE_ERRORS:
                return [Finding(UNREADABLE, "original")]
            try:
                return self._check_output(output, ids, pixels)
            except _PARSE_ERRORS:
                return [Finding(UNREADABLE, "output")]

    def _check_output(
        self, output: bytes, ids: Identifiers, pixels: PixelEvidence
    ) -> list[Finding]:
        if output[128:132] != b"DICM":
            return [Finding(UNREADABLE, "output")]
        ds = _read(output)
        walk = _Walk(self.allowed, ids, self.lexicon, self.settings.site_code)
        walk.dataset(ds.file_meta, "")
        walk.dataset(ds, "", top=True)
        walk.findings += _pixel_findings(ds, pixels) + _provenance_findings(ds)
        syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
        walk.findings += [Finding(CONTAINER, w) for w in containers.clean(ds, output, syntax)]
        return list(dict.fromkeys(walk.findings))  # each (reason, where) once, in order


#: File meta values the gateway writes from its own constants and configuration (its
#: implementation version name and its configured AE title as Source AE Title): a site's AE
#: title that happens to share a word with a patient's name is not a leak.
_GATEWAY_WRITTEN = frozenset({0x00020013, 0x00020016})
#: The de-identification method the gateway writes from a constant (top level).
_PROVENANCE_TEXT = frozenset({DEIDENTIFICATION_METHOD})
PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020
_CODE = "[0-9A-HJKMNP-TV-Z]"  # the pseudonyms' alphabet: Crockford base 32
_SINGLE_VALUED = frozenset({"ST", "LT", "UT"})  # a backslash there is text (PS3.5 6.2)


def _read(data: bytes) -> Dataset:
    """Parse a Part 10 file (or a bare data set); values left in `data` while parsing are
    brought in, except pixel data, which is never read here."""
    ds = dcmread(io.BytesIO(data), force=True, defer_size=_DEFER)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return dcmread(io.BytesIO(data), force=True)  # positions are in the inflated data
    for key in list(ds.keys()):
        raw = ds.get_item(key, keep_deferred=True)
        if not isinstance(raw, RawDataElement) or not _deferred(raw):
            continue
        end = raw.value_tell + raw.length
        if end > len(data):
            raise EOFError("a value runs past the end of the file")
        if int(key) not in PIXEL_TAGS:
            ds[key] = raw._replace(value=data[raw.value_tell : end])
    if not len(ds):
        raise InvalidDicomError("no data elements")
    return ds


def _deferred(elem: RawDataElement) -> bool:
    return elem.value is None and elem.length not in (0, _UNDEFINED)


class _Walk:
    """One pass over the output: the allow-list and the value searches, element by element."""

    def __init__(self, allowed: Allowed, ids: Identifiers, lexicon: Lexicon, site: str) -> None:
        self.allowed = allowed
        self.ids = ids
        self.lexicon = lexicon
        self.pseudonym = re.compile(rf"{re.escape(site)}-{_CODE}{{10}}")
        self.findings: list[Finding] = []

    def add(self, reason: str, where: str) -> None:
        self.findings.append(Finding(reason, where))

    def dataset(self, ds: Dataset, prefix: str, *, top: bool = False) -> None:
        for key in list(ds.keys()):
            tag = int(key)
            elem = ds.get_item(key, keep_deferred=True)
            where = f"{prefix}({tag >> 16:04X},{tag & 0xFFFF:04X})"
            if tag in PIXEL_TAGS:
                if not top:
                    self.add(BURNED_IN, where)  # an image no pixel stage looked at
                continue
            if not isinstance(elem, DataElement | RawDataElement):
                continue
            private = bool((tag >> 16) & 1)
            if private:
                vr = self.private(ds, elem, tag, where)
            else:
                vr = self.public(ds, elem, tag, where)
            if tag not in _GATEWAY_WRITTEN and not (top and tag in _PROVENANCE_TEXT):
                self.value(ds, elem, tag, vr, where, guess=private)

    def public(self, ds: Dataset, elem: Element, tag: int, where: str) -> str:
        """Check a public element against the allow-list; returns the VR to read it as."""
        vr = elem.VR
        if vr in (None, "UN") and dictionary_has_tag(tag):
            vr = dictionary_VR(tag)
        permission = self.allowed.permission(tag)
        if permission is Permission.VALUE or _says_nothing(ds, elem, tag, vr):
            pass  # an empty value or a fixed dummy: an attribute its IOD requires stays present
        elif permission is Permission.ABSENT:
            self.add(NOT_ALLOWED, where)
        else:
            self.add(NOT_EMPTY, where)
        return vr or "UN"

    def private(self, ds: Dataset, elem: Element, tag: int, where: str) -> str:
        """Check a private element against the safe-private list; returns the VR to read it as."""
        element = tag & 0xFFFF
        private = self.allowed.private
        name: str | None = None
        if element == 0x0000:
            allowed = True  # a group length
        elif 0x0010 <= element <= 0x00FF:
            allowed = private.allows_creator(_text(ds, elem, tag) or "", tag >> 16)
        elif element >= 0x1000:
            creator_tag = (tag & 0xFFFF0000) | (element >> 8)
            creator = ds.get_item(creator_tag) if creator_tag in ds else None
            name = _text(ds, creator, creator_tag) if creator is not None else None
            allowed = name is not None and private.allows(name, tag, elem.VR)
        else:
            allowed = False  # (gggg,0001-000F), (gggg,0100-0FFF): reserved, never written
        if not allowed:
            self.add(PRIVATE, where)
            return elem.VR or "UN"
        if elem.VR in (None, "UN") and element >= 0x1000 and name is not None:
            return private.vr(name, tag) or "UN"  # implicit VR: read it as the list says
        return elem.VR or "UN"

    def value(
        self, ds: Dataset, elem: Element, tag: int, vr: str, where: str, *, guess: bool
    ) -> None:
        """Search one value, or walk the items of a sequence. A value of unknown VR (UN), or
        with `guess` (private elements) of any binary VR, is read as text if it is text."""
        if vr == "SQ" or (isinstance(elem, DataElement) and elem.VR == "SQ"):
            items = ds[tag].value or ()
            for index, item in enumerate(items):
                self.dataset(item, f"{where}[{index}].")
        elif vr in _TEXT:
            value = _text(ds, elem, tag)
            if vr == "CS" and value:  # a defined term is no name, whoever shares it
                terms = value.split("\\")
                value = "\\".join(v for v in terms if not self.lexicon.is_term(tag, v))
            self.text(value, where)
            if not _private_creator(tag):  # creators: matched whole against the safe list
                self.words(tag, vr, _text(ds, elem, tag), where)
        elif vr in _READABLE:
            self.ascii(vr, _ascii(elem), where)
        elif vr == "UN" or guess:
            self.text(_guess_text(elem), where)

    def text(self, value: str | None, where: str) -> None:
        if not value:
            return
        pattern = self.ids.text
        if pattern is not None and pattern.search(fold(value)):
            self.add(IDENTIFIER, where)
        uids = self.ids.uids
        if uids and "." in value and any(m[0] in uids for m in _UID_LIKE.finditer(value)):
            self.add(ORIGINAL_UID, where)

    def words(self, tag: int, vr: str, value: str | None, where: str) -> None:
        """Every value of a text element holds only allowed words (words.Lexicon); the
        gateway's pseudonyms and dummy IDs have their own shape instead."""
        if not value:
            return
        parts = [value] if vr in _SINGLE_VALUED else value.split("\\")
        for part in parts:
            part = part.strip("\0 ")
            if not part or self._written_id(tag, vr, part):
                continue
            if vr in ("CS", "AE") or tag in CODES:
                allowed = self.lexicon.code_allowed(tag, part)
            else:
                allowed = self.lexicon.text_allowed(part)
            if not allowed:
                self.add(WORD, where)
                return

    def _written_id(self, tag: int, vr: str, value: str) -> bool:
        """A value the gateway draws itself: the patient's pseudonym, a random ID."""
        if tag in (PATIENT_NAME, PATIENT_ID):
            return self.pseudonym.fullmatch(value) is not None
        if vr in ("SH", "LO") and (tag in PSEUDONYMS or tag in self.allowed.dummies):
            return re.fullmatch(rf"{_CODE}{{8,16}}", value) is not None
        return False

    def ascii(self, vr: str, value: str | None, where: str) -> None:
        """A number, date or UID value; one that holds letters is read as text."""
        if not value:
            return
        if _LETTER.search(value):
            self.text(value, where)
            return
        values = [v.strip("\0 ") for v in value.split("\\")]
        if vr == "UI":
            if any(v in self.ids.uids for v in values):
                self.add(ORIGINAL_UID, where)
        elif vr in _DATES:
            birth = self.ids.birth_date
            if birth and any(v.startswith(birth) for v in values):
                self.add(IDENTIFIER, where)
        elif self.ids.number is not None and self.ids.number.search(value):
            self.add(IDENTIFIER, where)


def _private_creator(tag: int) -> bool:
    return bool((tag >> 16) & 1) and 0x0010 <= tag & 0xFFFF <= 0x00FF


def _bytes(elem: Element) -> bytes | None:
    if isinstance(elem, RawDataElement):
        return elem.value
    return None


def _text(ds: Dataset, elem: Element, tag: int) -> str | None:
    """A text value as a string in the character set in force (ASCII read directly; ISO 2022
    escapes and other bytes through pydicom)."""
    raw = _bytes(elem)
    if raw is not None and raw.isascii() and b"\x1b" not in raw:
        return raw.decode("ascii")
    if isinstance(elem, RawDataElement) and raw is None:
        return None
    return _as_text(ds[tag].value)


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return _decode_guess(value)
    if isinstance(value, MultiValue | list | tuple):
        parts = [_as_text(v) for v in value]
        return "\\".join(p for p in parts if p)
    return str(value)


def _guess_text(elem: Element) -> str | None:
    """A value of unknown or binary VR, read as text when it is ASCII or UTF-8."""
    raw = _bytes(elem)
    if raw is None:
        return _as_text(elem.value) if isinstance(elem, DataElement) else None
    return _decode_guess(raw)


def _decode_guess(raw: bytes) -> str | None:
    if raw.isascii():
        return raw.decode("ascii")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None  # binary: nothing a person would read


def _ascii(elem: Element) -> str | None:
    raw = _bytes(elem)
    if raw is not None:
        return raw.decode("latin-1")  # numbers, dates and UIDs are ASCII when well formed
    return _as_text(elem.value) if isinstance(elem, DataElement) else None


def _says_nothing(ds: Dataset, elem: Element, tag: int, vr: str | None) -> bool:
    """Empty (no value, a sequence with no items), or one of the fixed dummies (`allowed`).
    A binary value says nothing only when it has no bytes at all."""
    if vr == "SQ" or (isinstance(elem, DataElement) and elem.VR == "SQ"):
        return _is_empty(ds, elem, tag, vr)
    if vr not in _READABLE:
        return elem.length == 0 if isinstance(elem, RawDataElement) else bool(elem.is_empty)
    return _is_empty(ds, elem, tag, vr) or (_ascii(elem) or "").strip("\0 ") in FIXED_DUMMIES


def _is_empty(ds: Dataset, elem: Element, tag: int, vr: str | None) -> bool:
    if vr == "SQ" or (isinstance(elem, DataElement) and elem.VR == "SQ"):
        return not ds[tag].value
    if isinstance(elem, RawDataElement):
        return not elem.value or not elem.value.strip(b"\0 ")
    return bool(elem.is_empty)


def _pixel_findings(ds: Dataset, pixels: PixelEvidence) -> list[Finding]:
    """BurnedInAnnotation NO, or the Clean Pixel Data Option recorded, only with proof that
    detection ran; no unchecked image unless the site chose to skip its category; never an
    image the header says carries text."""
    present = [tag for tag in sorted(PIXEL_TAGS) if tag in ds]
    if not present:
        return []
    flag = _top_text(ds, BURNED_IN_ANNOTATION).upper()
    proven = pixels.has_pixels and pixels.checked
    out = []
    if flag == "YES" or (flag == "NO" and not proven):
        out.append(Finding(BURNED_IN, "(0028,0301)"))
    if not proven and not pixels.skipped_by_site:
        tag = present[-1]
        out.append(Finding(BURNED_IN, f"({tag >> 16:04X},{tag & 0xFFFF:04X})"))
    if not proven and CLEAN_PIXEL_DATA in _method_codes(ds):
        out.append(Finding(BURNED_IN, "(0012,0064)"))  # Clean Pixel Data claimed, not done
    return out


def _method_codes(ds: Dataset) -> set[str]:
    items = ds[DEIDENTIFICATION_METHOD_CODES].value if DEIDENTIFICATION_METHOD_CODES in ds else ()
    return {str(item.get("CodeValue", "")).strip() for item in items or ()}


def _provenance_findings(ds: Dataset) -> list[Finding]:
    out = []
    if _top_text(ds, PATIENT_IDENTITY_REMOVED).upper() != "YES":
        out.append(Finding(PROVENANCE, "(0012,0062)"))
    if not _top_text(ds, DEIDENTIFICATION_METHOD) and not _method_codes(ds):
        out.append(Finding(PROVENANCE, "(0012,0063)"))
    return out


def _top_text(ds: Dataset, tag: int) -> str:
    if tag not in ds:
        return ""
    return (_as_text(ds[tag].value) or "").strip("\0 ")
