"""What identifies this patient, read from the original instance, as patterns to search for.

`Identifiers.of(original, options)` gathers, from the instance as received:

- names: PatientName, OtherPatientNames, PatientBirthName, PatientMotherBirthName,
  ResponsiblePerson, ReferringPhysicianName. Each word of at least 3 letters is searched as a
  whole word (any order, any case, accents and German transliterations folded: "Müller" finds
  "MULLER" and "mueller"), and the words run together ("JOHNDOE", "DOEJOHN"); words in Han,
  kana or Hangul (written without spaces, a surname may be two characters) anywhere.
- IDs: PatientID, OtherPatientIDs, the IDs of OtherPatientIDsSequence, MedicalRecordLocator,
  AccessionNumber, StudyID; and phrases: PatientAddress, PatientTelephoneNumbers, and unless
  the site keeps institution identity InstitutionName, InstitutionAddress,
  InstitutionalDepartmentName and IssuerOfPatientID (top level and in OtherPatientIDsSequence:
  the hospital that assigned an ID); unless it keeps device identity StationName and
  DeviceSerialNumber. Matched whole, blind to case and to separators between their letter
  and digit runs ("P-778812" finds "p 778812" and "P778812", "ACC99172" finds "acc-99172");
  digit runs of 6 or more inside an ID are searched on their own as well.
- the birth date in the ways people write it: 19610312, 1961-03-12, 12/03/1961, 03/12/1961,
  12.03.1961, 12-03-61, 12 March 1961, 12-MAR-1961, March 12, 1961 (English month names).
- the original's instance UIDs (every UI value that is not a class UID, a transfer syntax or
  defined by the standard under 1.2.840.10008), unless the site keeps UIDs.

To spare false alarms: name words shorter than 3 characters, IDs shorter than 3 characters or
of fewer than 4 digits (leading zeros do not count), and placeholders ("anonymized",
"unknown", "test", "patient", ...: `_GENERIC`, words anonymisers and this gateway write
themselves) are not searched, nor is a placeholder birth date (before 1901). Number values (DS,
IS) are searched only for digit-only IDs of 6 significant digits or more, as whole numbers: a
shorter number there is a measurement that equals an ID by chance; times (TM) and ages (AS)
are not searched. Dates (DA, DT) are compared with the birth date unless the site keeps dates
unchanged ("full": a study on the day of birth keeps that date by design) or cuts them to the
year ("year": no day is left).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any

from anyascii import anyascii
from pydicom.datadict import dictionary_has_tag, dictionary_keyword, dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from gateway.settings import DeidentifySettings

_NAMES = (0x00100010, 0x00101001, 0x00101005, 0x00101060, 0x00102297, 0x00080090)
_IDS = (0x00100020, 0x00101000, 0x00101090, 0x00080050, 0x00200010)
_OTHER_IDS_SEQUENCE = 0x00101002  # items: PatientID, IssuerOfPatientID
_PATIENT_PHRASES = (0x00101040, 0x00102154)  # PatientAddress, PatientTelephoneNumbers
# InstitutionName, InstitutionAddress, InstitutionalDepartmentName, IssuerOfPatientID (the
# hospital that assigned the ID: an organisation, kept where the institution is kept)
_INSTITUTION = (0x00080080, 0x00080081, 0x00081040, 0x00100021)
_DEVICE = (0x00081010, 0x00181000)  # StationName, DeviceSerialNumber
_BIRTH_DATE = 0x00100030
_UID_VR = "UI"
_NOT_INSTANCE_UIDS = re.compile(r"ClassUID$|^TransferSyntaxUID$")
_DICOM_ROOT = "1.2.840.10008."
_MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003

_WORD = re.compile(r"[^\W_]+")
_RUN = re.compile(r"[^\W\d_]+|\d+")  # letters or digits: "ACC99172" is "ACC", "99172"
_CJK = re.compile("[\u1100-\u11ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f]")
_GERMAN = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})
_MIN_NAME = 3
_MIN_CJK = 2
_MIN_ID = 3
_MIN_NUMBER = 4  # digit-only IDs shorter than this are counters (series "1", study "12")
_MIN_BARE_NUMBER = 6  # digit runs searched alone, and in number VRs: long enough to mean it
#: Placeholders that sites and anonymisers write for a name or an ID; this patient's own name
#: they are not, and the de-identifier writes some of them itself.
_GENERIC = frozenset(
    {
        "anon",
        "anonymized",
        "anonymised",
        "anonymous",
        "anonimo",
        "anonyme",
        "unknown",
        "unbekannt",
        "patient",
        "test",
        "none",
        "null",
        "name",
    }
)
_MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_FIRST_BIRTH_YEAR = 1901  # 19000101 and the like are placeholders (and dummy dates)
_WORD_EDGE = (r"(?<![^\W_])", r"(?![^\W_])")
_NUMBER_EDGE = (r"(?<![^\W_])(?<!\d\.)", r"(?![^\W_])(?!\.\d)")


def fold(text: str) -> str:
    """Case, accents and script do not make another word: transliterated to ASCII by anyascii
    (Ø, Ł, Æ, ß, Cyrillic, kana too), case-folded (ASCII: lower case only, the common case)."""
    if text.isascii():
        return text.lower()
    return anyascii(unicodedata.normalize("NFKC", text)).casefold()


@dataclass(frozen=True)
class Identifiers:
    """One original's identifiers, compiled: `text` for text values, `number` for DS/IS,
    `birth_date` (YYYYMMDD or "") for DA/DT, `uids` for UI values."""

    text: re.Pattern[str] | None
    number: re.Pattern[str] | None
    birth_date: str
    uids: frozenset[str]

    @classmethod
    def of(cls, original: Dataset, options: DeidentifySettings) -> Identifiers:
        names = [v for tag in _NAMES for v in _values(original, tag)]
        ids = [v for tag in _IDS for v in _values(original, tag)]
        others = list(_items(original, _OTHER_IDS_SEQUENCE))
        ids += [v for item in others for v in _values(item, 0x00100020)]
        phrases = [v for tag in _PATIENT_PHRASES for v in _values(original, tag)]
        if not options.retain_institution_identity:
            phrases += [v for tag in _INSTITUTION for v in _values(original, tag)]
            phrases += [v for item in others for v in _values(item, 0x00100021)]
        if not options.retain_device_identity:
            phrases += [v for tag in _DEVICE for v in _values(original, tag)]
        birth = next(iter(_values(original, _BIRTH_DATE)), "").strip()
        birth = birth if _real_birth_date(birth) else ""
        id_needles = _id_needles(ids)
        text_needles = _name_needles(names) | id_needles | _id_needles(phrases)
        if birth:
            text_needles.add(_date_forms(birth))
        numbers = {n for n in id_needles if n.isdigit() and significant(n) >= _MIN_BARE_NUMBER}
        uids = frozenset() if options.retain_uids else frozenset(_instance_uids(original))
        dates_kept = options.longitudinal_dates in ("full", "year")
        return cls(
            _compile(frozenset(text_needles)),
            _compile(frozenset(numbers)),
            "" if dates_kept else birth,
            uids,
        )


def _values(ds: Dataset, tag: int) -> list[str]:
    """A string attribute's values ("" left out); other values are nothing to search for.
    ASCII is read from the bytes (most values: quick); anything else through pydicom, in the
    character set in force."""
    if tag not in ds:
        return []
    raw = ds.get_item(tag, keep_deferred=True)
    data = raw.value if isinstance(raw, RawDataElement) else None
    if isinstance(data, bytes) and data.isascii() and b"\x1b" not in data:
        items: list[Any] = data.decode("ascii").split("\\")
    else:
        value = ds[tag].value
        items = list(value) if isinstance(value, MultiValue | list) else [value]
    out = [str(v).strip("\0 ") for v in items if isinstance(v, str | PersonName)]
    return [v for v in out if v]


def _items(ds: Dataset, tag: int) -> Iterator[Dataset]:
    if tag in ds and ds[tag].VR == "SQ":
        yield from ds[tag].value or ()


def _real_birth_date(value: str) -> bool:
    if len(value) != 8 or not value.isdigit():
        return False
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:])).year >= _FIRST_BIRTH_YEAR
    except ValueError:
        return False


def _name_needles(names: Iterable[str]) -> set[str]:
    """Regex pieces for the words of person names, alone and run together."""
    out: set[str] = set()
    for name in names:
        words = _WORD.findall(unicodedata.normalize("NFKC", name))
        out |= {re.escape(fold(w)) for w in words if _CJK.search(w) and len(w) >= _MIN_CJK}
        plain = [fold(w) for w in words if not _CJK.search(w)]
        kept = plain + [fold(w.lower().translate(_GERMAN)) for w in words if _german(w)]
        if 2 <= len(plain) <= 4:  # run together, in either order of the first two
            kept += [plain[0] + plain[1], plain[1] + plain[0]]
        out |= {_edged(re.escape(w), _WORD_EDGE) for w in kept if _specific(w)}
    return out


def _specific(word: str) -> bool:
    """Long enough, not a number, not a placeholder: a name word worth searching for."""
    return len(word) >= _MIN_NAME and not word.isdigit() and word not in _GENERIC


def _german(word: str) -> bool:
    """A word with umlauts or sharp s: also written ae, oe, ue, ss (Müller, MUELLER)."""
    return len(word) >= _MIN_NAME and word.lower().translate(_GERMAN) != word.lower()


def _id_needles(values: Iterable[str]) -> set[str]:
    """Regex pieces for IDs and phrases: their letter and digit runs, any separators between."""
    out: set[str] = set()
    for value in values:
        runs = _RUN.findall(fold(unicodedata.normalize("NFKC", value)))
        whole = "".join(runs)
        if len(whole) < _MIN_ID or whole in _GENERIC:
            continue
        if whole.isdigit():
            if significant(whole) >= _MIN_NUMBER:
                out.add(whole)  # bare numbers: `_compile` puts number edges around them
            continue
        out.add(_edged(r"[\W_]*".join(map(re.escape, runs)), _WORD_EDGE))
        out |= {r for r in runs if r.isdigit() and significant(r) >= _MIN_BARE_NUMBER}
    return out


def significant(digits: str) -> int:
    """Digits that say something: "000013" is 13 (an instance number, not an ID)."""
    return len(digits.lstrip("0"))


def _edged(body: str, edges: tuple[str, str]) -> str:
    return f"{edges[0]}(?:{body}){edges[1]}"


def _date_forms(value: str) -> str:
    """One regex piece for the written forms of a birth date (YYYYMMDD)."""
    y, m, d = value[:4], int(value[4:6]), int(value[6:])
    mm, dd, yy = f"0?{m}", f"0?{d}", value[2:4]
    month = re.escape(_MONTHS[m - 1][:3]) + r"[a-z]*\.?"
    nth = r"(?:st|nd|rd|th)?"
    forms = [
        rf"{y}[-/.]?{value[4:6]}[-/.]?{value[6:]}",  # 19610312, 1961-03-12
        rf"{y}[-/. ]{mm}[-/. ]{dd}",  # 1961/3/12
        rf"{dd}[-/. ]{mm}[-/. ](?:{y}|{yy})",  # 12/03/1961, 12.03.1961, 12-03-61
        rf"{mm}[-/. ]{dd}[-/. ](?:{y}|{yy})",  # 03/12/1961
        rf"{value[6:]}{value[4:6]}{y}|{value[4:6]}{value[6:]}{y}",  # 12031961, 03121961
        rf"{dd}{nth}[-/. ]*{month}[-/., ]*(?:{y}|{yy})",  # 12 March 1961, 12-MAR-61, 12MAR1961
        rf"{month}[-/. ]*{dd}{nth},?[-/. ]*{y}",  # March 12, 1961
        rf"{y}[-/. ]{month}[-/. ]*{dd}",  # 1961-Mar-12
    ]
    return _edged("|".join(forms), _NUMBER_EDGE)


@lru_cache(maxsize=64)
def _compile(needles: frozenset[str]) -> re.Pattern[str] | None:
    """One pattern for all of an original's needles (the same patient's instances share it)."""
    if not needles:
        return None
    pieces = sorted(
        (_edged(n, _NUMBER_EDGE) if n.isdigit() else n for n in needles), key=len, reverse=True
    )
    return re.compile("|".join(pieces))


def _instance_uids(ds: Dataset) -> Iterator[str]:
    """Every UID of the original that names something of this patient: instances, series,
    studies, frames of reference, ... at any depth (and the file meta's copy)."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and _MEDIA_STORAGE_SOP_INSTANCE_UID in meta:
        yield from _uids(str(meta[_MEDIA_STORAGE_SOP_INSTANCE_UID].value or ""))
    yield from _uids_in(ds)


def _uids_in(ds: Dataset) -> Iterator[str]:
    """Only UI and SQ elements are converted: pixel data and the rest stay as read."""
    for key in list(ds.keys()):
        tag = int(key)
        if (tag >> 16) & 1 or not dictionary_has_tag(tag):
            continue  # private or unknown: their UIDs, if any, are not the patient's record
        vr = dictionary_VR(tag)
        if vr == "SQ":
            for item in _items(ds, tag):
                yield from _uids_in(item)
        elif vr == _UID_VR and not _NOT_INSTANCE_UIDS.search(dictionary_keyword(tag)):
            for value in _values(ds, tag):
                yield from _uids(value)


def _uids(value: str) -> Iterator[str]:
    for uid in value.split("\\"):
        uid = uid.strip("\0 ")
        if uid and not uid.startswith(_DICOM_ROOT):
            yield uid
