"""Which attributes an outgoing object may carry, and how (the release check's own allow-list).

Built from the standard and the site's options, not from the de-identifier's decisions: the
PS3.15 Table E.1-1 rows and the Table E.3.10-1 safe-private list are read as data from the
files shipped beside the de-identifier (by path: importing `gateway.deidentify` would break the
independence this check exists for), and every rule here is this module's own.

Each public tag gets a `Permission`: what its presence in the output may be.

- A Table E.1-1 row allows the union of what its codes may leave behind: X nothing, Z an empty
  value, D/U/K/C a value (a dummy, a new UID, the kept or cleaned original). A compound code
  (X/Z, X/Z/D, ...) allows each of its codes; an option column the site turned on (K or C)
  allows a value. Values are not trusted for that: the identifier and UID searches read them.
- The gateway's pseudonyms (DESIGN 3): PatientName, PatientID, AccessionNumber and StudyID
  carry a vault pseudonym where the table says Z.
- Never allowed whatever the table says (DESIGN 3, "allow-list at the end"): overlay and curve
  groups (60xx, 50xx: bitmaps and annotations nobody checked for text), icon images, data set
  trailing padding; graphic annotations unless Clean Graphics, SR content items unless Clean
  Structured Content. An encapsulated document (PDF, CDA) may be there only empty.
- Free narrative (comments, histories, reasons, occupation: `vocabulary/narrative.txt`, read as
  data) is never allowed, unless the site keeps the attribute cleaned (`keep_cleaned`).
- A public attribute the table does not name may carry a value when the DICOM dictionary knows
  it, it is not retired, it holds neither a person name (PN) nor a URL (UR), its keyword does
  not say it names a person or an organisation (`_WHO`), and, for dates, longitudinal temporal
  information is retained in some form.
- Group lengths carry only lengths; group 0002 may hold only the File Meta elements a Part 10
  writer needs (PS3.10 7.1): no sending/receiving AE titles, addresses or private meta.

Private attributes: only with the Retain Safe Private Option, only data elements on the
safe-private list under their own private creator, only of a VR whose whole value this check
can read (numbers, codes, dates, text, UIDs: never sequences or binary payloads), and their
creator elements.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydicom.datadict import (
    dictionary_has_tag,
    dictionary_is_retired,
    dictionary_keyword,
    dictionary_VR,
    tag_for_keyword,
)

from gateway.settings import DeidentifySettings

#: The de-identifier's package data, read as data (never imported: see the module docstring).
DATA = Path(__file__).resolve().parent.parent / "deidentify" / "data"
TABLE_E1_1 = DATA / "ps3.15_table_e1-1_rev2024b.json"
SAFE_PRIVATE = DATA / "safe_private.json"
NARRATIVE = DATA / "vocabulary" / "narrative.txt"


#: The values the de-identifier writes where an attribute its IOD requires valued (Type 1, 1C)
#: keeps nothing of its own (PS3.5 7.4): they say nothing, so any attribute may hold them.
FIXED_DUMMIES = frozenset({"ANONYMIZED", "ANONYMOUS", "19000101", "19000101000000", "000000", "0"})


class Permission(enum.IntEnum):
    """What an attribute's presence in the output may be; higher allows more."""

    ABSENT = 0
    EMPTY = 1
    VALUE = 2


_CODE = {"X": Permission.ABSENT, "Z": Permission.EMPTY}  # D, U, K, C: a value
# Table E.1-1 option columns and whether the site's options turn them on.
_COLUMNS: dict[str, Callable[[DeidentifySettings], bool]] = {
    "rtnSafePrivOpt": lambda o: o.retain_safe_private,
    "rtnUIDsOpt": lambda o: o.retain_uids,
    "rtnDevIdOpt": lambda o: o.retain_device_identity,
    "rtnInstIdOpt": lambda o: o.retain_institution_identity,
    "rtnPatCharsOpt": lambda o: o.retain_patient_characteristics,
    "rtnLongFullDatesOpt": lambda o: o.longitudinal_dates == "full",
    "rtnLongModifDatesOpt": lambda o: o.longitudinal_dates in ("modified", "year"),
    "cleanDescOpt": lambda o: o.clean_descriptors,
    "cleanStructContOpt": lambda o: o.clean_structured_content,
    "cleanGraphOpt": lambda o: o.clean_graphics,
}
#: The gateway writes a vault pseudonym into these wherever they occur (DESIGN 3).
PSEUDONYMS = frozenset({0x00100010, 0x00100020, 0x00080050, 0x00200010})
_NEVER = frozenset(
    {
        0x00880200,  # IconImageSequence: a small copy of the image, text and all
        0xFFFCFFFC,  # DataSetTrailingPadding: bytes nobody reads
    }
)
_AT_MOST_EMPTY = frozenset({0x00420011})  # EncapsulatedDocument: a PDF or CDA holds anything
_UNLESS = {
    0x00700001: "clean_graphics",  # GraphicAnnotationSequence
    0x0040A730: "clean_structured_content",  # ContentSequence
}
_OVERLAY_OR_CURVE = frozenset({0x5000, 0x6000})  # group & 0xFF00
_FILE_META = frozenset(
    {
        0x00020000,  # FileMetaInformationGroupLength
        0x00020001,  # FileMetaInformationVersion
        0x00020002,  # MediaStorageSOPClassUID
        0x00020003,  # MediaStorageSOPInstanceUID
        0x00020010,  # TransferSyntaxUID
        0x00020012,  # ImplementationClassUID
        0x00020013,  # ImplementationVersionName
        0x00020016,  # SourceApplicationEntityTitle (the gateway's own)
    }
)
# Keywords of attributes that say who did, asked for, owns, issued or signed something, or
# where to reach them: a person or an organisation, whatever the VR.
_WHO = re.compile(
    r"Physician|Operator|Institution|Person|Observer|Issuer|Author|Owner|Responsible"
    r"|Requesting|Address|Telephone|Mail|Signature|Encrypted|ContactDisplayName|ContactURI"
)
_DATES = frozenset({"DA", "DT"})
#: Private VRs whose whole value the release check reads (the others may hide anything).
PRIVATE_READABLE = frozenset(
    {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "SH", "SL", "SS"}
    | {"ST", "SV", "TM", "UC", "UI", "UL", "US", "UT", "UV"}
)


@cache
def _table() -> tuple[dict[str, Any], ...]:
    rows: list[dict[str, Any]] = json.loads(TABLE_E1_1.read_text(encoding="utf-8"))
    return tuple(rows)


@cache
def _safe_private() -> dict[tuple[str, int, int], str | None]:
    rows = json.loads(SAFE_PRIVATE.read_text(encoding="utf-8"))["entries"]
    return {
        (creator_key(row["creator"]), int(row["group"], 16), int(row["element"], 16)): row["vr"]
        for row in rows
    }


@cache
def _narrative() -> dict[str, int]:
    """Free-narrative attributes (keyword -> tag), from the list shipped as data."""
    out: dict[str, int] = {}
    for line in NARRATIVE.read_text(encoding="utf-8").splitlines():
        keyword = line.partition("#")[0].strip()
        tag = tag_for_keyword(keyword) if keyword else None
        if tag is not None:
            out[keyword] = int(tag)
    return out


def creator_key(name: str) -> str:
    """Private creator names compare without padding or case (PS3.5 7.8.1: vendors vary)."""
    return name.strip(" \0").upper()


def _exact_tag(text: str) -> int | None:
    """ "(0010,0010)" -> 0x00100010; None for the table's wildcard rows (50XX, 60XX, GGGG),
    which the rules of this module cover on their own (overlay/curve groups, private tags)."""
    try:
        group, element = (int(part, 16) for part in text.strip("()").split(","))
    except ValueError:
        return None
    return (group << 16) | element


def _row_permission(row: dict[str, Any], options: DeidentifySettings) -> Permission:
    codes = [code.rstrip("*") for code in str(row["basicProfile"]).split("/")]
    codes += [row[column] for column, on in _COLUMNS.items() if column in row and on(options)]
    return max(_CODE.get(code, Permission.VALUE) for code in codes)


def table_permissions(options: DeidentifySettings) -> dict[int, Permission]:
    """Table E.1-1 under the site's options: tag -> what the output may hold."""
    out: dict[int, Permission] = {}
    for row in _table():
        tag = _exact_tag(str(row["tag"]))
        if tag is not None:
            out[tag] = max(out.get(tag, Permission.ABSENT), _row_permission(row, options))
    return out


@dataclass(frozen=True)
class SafePrivate:
    """The safe-private entries in force: (creator, group, element byte) -> listed VR."""

    entries: Mapping[tuple[str, int, int], str | None]
    creators: frozenset[tuple[str, int]]

    @classmethod
    def for_options(cls, options: DeidentifySettings) -> SafePrivate:
        if not options.retain_safe_private:
            return cls({}, frozenset())
        entries = {k: vr for k, vr in _safe_private().items() if vr in PRIVATE_READABLE}
        return cls(entries, frozenset((creator, group) for creator, group, _ in entries))

    def allows_creator(self, creator: str, group: int) -> bool:
        return (creator_key(creator), group) in self.creators

    def vr(self, creator: str, tag: int) -> str | None:
        """The VR the list gives a private data element (None: not listed)."""
        return self.entries.get((creator_key(creator), tag >> 16, tag & 0xFF))

    def allows(self, creator: str, tag: int, vr: str | None) -> bool:
        """Whether a private data element may stay: listed, and of the VR the list gives
        (None or UN: the output does not say, as in implicit VR)."""
        listed = self.entries.get((creator_key(creator), tag >> 16, tag & 0xFF))
        return listed is not None and vr in (None, "UN", listed)


class Allowed:
    """The release check's allow-list for one site's options; per-tag answers are cached."""

    def __init__(self, options: DeidentifySettings) -> None:
        self.options = options
        self.table = table_permissions(options)
        self.private = SafePrivate.for_options(options)
        self.narrative = frozenset(
            tag for keyword, tag in _narrative().items() if keyword not in options.keep_cleaned
        )
        self.dummies = frozenset(
            tag
            for row in _table()
            if (tag := _exact_tag(str(row["tag"]))) is not None
            and "D" in str(row["basicProfile"]).split("/")
        )
        self._cache: dict[int, Permission] = {}

    def permission(self, tag: int) -> Permission:
        """What a public (even group) attribute may be in the output, at any depth."""
        found = self._cache.get(tag)
        if found is None:
            found = self._cache[tag] = self._decide(tag)
        return found

    def _decide(self, tag: int) -> Permission:
        group, element = tag >> 16, tag & 0xFFFF
        if group == 0x0002:
            return Permission.VALUE if tag in _FILE_META else Permission.ABSENT
        if element == 0x0000:
            return Permission.VALUE if group not in (0x0000, 0xFFFE) else Permission.ABSENT
        if group in (0x0000, 0xFFFE) or (group & 0xFF00) in _OVERLAY_OR_CURVE:
            return Permission.ABSENT  # command group, item tags, overlays and curves
        if tag in _NEVER:
            return Permission.ABSENT
        if tag in _UNLESS and not getattr(self.options, _UNLESS[tag]):
            return Permission.ABSENT
        if tag in PSEUDONYMS:
            return Permission.VALUE
        if tag in self.narrative:
            return Permission.ABSENT  # prose about a patient: never, unless kept cleaned
        found = self.table.get(tag)
        if found is None:
            found = Permission.VALUE if self._outside_table(tag) else Permission.ABSENT
        return min(found, Permission.EMPTY) if tag in _AT_MOST_EMPTY else found

    def _outside_table(self, tag: int) -> bool:
        """A public attribute Table E.1-1 does not name: known, current, and not a name,
        a link, somebody's or an organisation's details, or a date when dates go."""
        if not dictionary_has_tag(tag) or dictionary_is_retired(tag):
            return False
        vr = dictionary_VR(tag)
        if vr in ("PN", "UR") or _WHO.search(dictionary_keyword(tag)):
            return False
        return not (vr in _DATES and self.options.longitudinal_dates == "off")
