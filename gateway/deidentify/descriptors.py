"""Clean Descriptors (PS3.15 E.3.5), and a scrub of every other text value kept.

`Identifiers` gathers, from one original instance, what identifies its patient, staff and site:
name parts, IDs, the accession number, the birth date in the ways people write dates, the
institution's name, address and department, station name and device serial number.

- `clean()` is for descriptors the profile keeps cleaned (StudyDescription, SeriesDescription,
  ProtocolName, ...): it removes every token or phrase that matches an identifier, and every
  digit run that looks like an ID, a date or a telephone number.
- `scrub()` is for other text values the allow-list keeps (Manufacturer, BodyPartExamined, ...):
  it removes identifier matches only, so model numbers and software versions survive.

Both return the new text and how many pieces they removed. Matching is on whole words, in any
order, blind to case, accents, width and script ("DOE^JOHN" removes "John" and "doe"; "Müller"
removes "MULLER" and "MUELLER"; "Sørbøe" removes "SORBOE"; "Иванов" removes "IVANOV"; half-width
and full-width forms match their usual ones); phrases
match across any whitespace; names in Han, kana or Hangul match anywhere. A text from which
something was removed comes back in Unicode NFKC form.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from anyascii import anyascii

_WORD = re.compile(r"[^\W_]+")
_SPACES = re.compile(r"\s{2,}")
# Dates written with separators: 2021-03-04, 04/03/2021, 4.3.21, 2021/3/4; and with a month
# name: 07-MAR-1958, 7 March 1958, 07MAR58, March 7, 1958
_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
_DATE = re.compile(
    r"(?<![\w])\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}(?![\w])"
    rf"|(?<![\w])\d{{1,2}}[-\s./]?(?:{_MONTHS})[a-z]*\.?[-\s./,]*\d{{2,4}}(?![\w])"
    rf"|(?<![\w])(?:{_MONTHS})[a-z]*\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}(?![\w])",
    re.IGNORECASE,
)
_MONTH_NAMES = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
# Telephone numbers: 7+ digits (counted on the match), with +, brackets, spaces, dots, dashes
_PHONE = re.compile(r"(?<![\w])\+?\(?\d[\d\s().-]{5,}\d(?![\w])")
# A word holding 5 or more digits (MRNs, accession numbers, compact dates, ...)
_DIGITS = re.compile(r"\d")
_PHONE_DIGITS = 7
_ID_DIGITS = 5
_MIN_ID = 3  # shorter IDs ("1", "12") are study or series counters, not identifiers
_MIN_NAME_PART = 2
# Han, kana, Hangul: names are written without spaces, and a surname may be one character
_CJK = re.compile("[\u1100-\u11ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f]")
_GERMAN = str.maketrans(
    {"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue", "ß": "ss"}
)


def _fold(text: str) -> str:
    """Case, accents, width and script do not make another word: every letter transliterated
    to ASCII (anyascii: also Ø, Ł, Æ, Đ, Þ, ß, Cyrillic, Greek, kana), then case-folded."""
    return anyascii(unicodedata.normalize("NFKC", text)).casefold()


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def date_forms(value: str) -> set[str]:
    """The common written forms of a DA value (YYYYMMDD): ISO, European, US, compact."""
    if len(value) != 8 or not value.isdigit():
        return set()
    y, m, d = value[:4], value[4:6], value[6:8]
    yy = y[2:]
    forms = {value, f"{d}{m}{y}", f"{m}{d}{y}"}
    for sep in "-/.":
        forms |= {f"{y}{sep}{m}{sep}{d}", f"{d}{sep}{m}{sep}{y}", f"{m}{sep}{d}{sep}{y}"}
        forms |= {f"{d}{sep}{m}{sep}{yy}", f"{m}{sep}{d}{sep}{yy}"}
        forms |= {f"{int(d)}{sep}{int(m)}{sep}{y}", f"{int(m)}{sep}{int(d)}{sep}{y}"}
    if 1 <= int(m) <= 12:
        month = _MONTH_NAMES[int(m) - 1]
        short = month[:3]
        for name in (month, short):
            forms |= {f"{d} {name} {y}", f"{int(d)} {name} {y}", f"{name} {int(d)}, {y}"}
            forms |= {f"{name} {int(d)} {y}", f"{d}-{name}-{y}", f"{d}-{name}-{yy}"}
        forms |= {f"{d}{short}{y}", f"{d}{short}{yy}"}
    return {_nfkc(form) for form in forms}


class Identifiers:
    """What identifies this instance's patient, staff and site, ready for matching."""

    def __init__(self) -> None:
        self.words: set[str] = set()  # single words: name parts, IDs
        self.phrases: set[str] = set()  # multi-word values and written dates
        self.substrings: set[str] = set()  # CJK name parts: no spaces between words there
        self._changed()

    def _changed(self) -> None:
        self._pattern: re.Pattern[str] | None = None
        self._inside: re.Pattern[str] | None = None
        self._needles: list[bytes] | None = None  # None: some identifier is not ASCII
        self._needles_ready = False

    def add_name(self, value: str) -> None:
        """A person name (PN, any component groups) or free-text name."""
        for part in _WORD.findall(unicodedata.normalize("NFKC", value)):
            if _CJK.search(part):
                self.substrings.add(_nfkc(part))  # one character can be a whole surname
            elif len(part) >= _MIN_NAME_PART and not part.isdigit():
                self.words.add(_fold(part))
                self.words.add(_fold(part.translate(_GERMAN)))  # Müller, MUELLER
        self._changed()

    def add_id(self, value: str) -> None:
        value = value.strip()
        if len(value) < _MIN_ID:
            return
        words = _WORD.findall(value)
        if len(words) == 1 and words[0] == value:
            self.words.add(_fold(value))
        else:
            self.phrases.add(_nfkc(value))
            self.words.update(_fold(w) for w in words if len(w) >= _MIN_ID and _has_digit(w))
        self._changed()

    def add_phrase(self, value: str) -> None:
        """An institution name, address or department: matched as a whole phrase."""
        value = " ".join(value.split())
        if len(value) >= _MIN_ID:
            self.phrases.add(_nfkc(value))  # matched on NFKC text, accents as written
            self._changed()

    def add_date(self, value: str) -> None:
        for form in date_forms(value.strip()):
            self.phrases.add(form)
        self._changed()

    def may_match(self, raw: bytes, digits: bool) -> bool:
        """False only when the encoded value `raw` cannot hold anything `scrub` (or, with
        `digits`, `clean`) would remove, which spares decoding it. Identifiers are ASCII for
        this test to apply: ASCII text is encoded as ASCII bytes in every DICOM character set
        (multi-byte sets only add false alarms)."""
        if digits and any(48 <= b <= 57 for b in raw):
            return True
        if not raw.isascii():
            return True  # case folding may turn non-ASCII letters into ASCII ones (long s)
        if not self._needles_ready:
            phrase_words = {w for p in self.phrases for w in p.split() if len(w) >= _MIN_ID}
            texts = self.words | phrase_words | self.substrings | self.phrases
            needles = [w.encode() for w in texts if " " not in w]
            self._needles = needles if all(n.isascii() for n in needles) else None
            self._needles_ready = True
        if self._needles is None:
            return True
        lowered = raw.lower()
        return any(needle in lowered for needle in self._needles)

    def _phrase_pattern(self) -> re.Pattern[str] | None:
        if self._pattern is None and self.phrases:
            alternatives = sorted(self.phrases, key=len, reverse=True)
            body = "|".join(r"\s+".join(map(re.escape, p.split())) for p in alternatives)
            self._pattern = re.compile(rf"(?<![^\W_])(?:{body})(?![^\W_])", re.IGNORECASE)
        return self._pattern

    def scrub(self, text: str) -> tuple[str, int]:
        """Remove identifier matches (CJK name parts anywhere, phrases, then words)."""
        original, text = text, unicodedata.normalize("NFKC", text)
        removed = 0
        if self.substrings:
            if self._inside is None:
                parts = sorted(self.substrings, key=len, reverse=True)
                self._inside = re.compile("|".join(map(re.escape, parts)), re.IGNORECASE)
            text, removed = self._inside.subn(" ", text)
        pattern = self._phrase_pattern()
        if pattern is not None:
            text, n = pattern.subn(" ", text)
            removed += n
        if self.words:
            words = self.words

            def drop(match: re.Match[str]) -> str:
                nonlocal removed
                if _fold(match.group(0)) in words:
                    removed += 1
                    return " "
                return match.group(0)

            text = _WORD.sub(drop, text)
        return (_tidy(text), removed) if removed else (original, 0)

    def clean(self, text: str) -> tuple[str, int]:
        """Scrub, then remove what looks like a date, a telephone number or an ID."""
        text, removed = self.scrub(text)
        text, n = _DATE.subn(" ", text)
        removed += n

        def drop(minimum: int) -> Callable[[re.Match[str]], str]:
            def replace(match: re.Match[str]) -> str:
                nonlocal removed
                if len(_DIGITS.findall(match.group(0))) >= minimum:
                    removed += 1
                    return " "
                return match.group(0)

            return replace

        text = _PHONE.sub(drop(_PHONE_DIGITS), text)
        text = _WORD.sub(drop(_ID_DIGITS), text)
        return (_tidy(text), removed) if removed else (text, 0)


def _has_digit(word: str) -> bool:
    return any(ch.isdigit() for ch in word)


def _tidy(text: str) -> str:
    return _SPACES.sub(" ", text).strip(" ,;:-/")
