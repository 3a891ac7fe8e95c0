"""Free text leaves only as known words (DESIGN 3, "allow-list for words"; PS3.15 E.3.5).

Every text value the de-identifier keeps (descriptors, code meanings, ROI names, labels, kept
short strings, SR text under Clean Structured Content, safe private text) is cleaned here before
the instance's own identifiers are removed on top (`descriptors.Identifiers`). A token stays only
when it is known to be safe:

- a word of the vocabulary shipped in `data/vocabulary/words.txt` (PS3.16 code meanings from
  pydicom's concept dictionaries, and curated clinical, technical, vendor and non-English terms:
  see that file's header and `data/vocabulary/build.py`), or of the site's own word file
  (`[deidentify] vocabulary`), compared after transliteration to ASCII (anyascii: Ø, Ł, Æ, ß and
  kana have no accent-free decomposition) and case folding;
- a single letter (laterality, T for tesla, an initial carries no name);
- a number of at most 4 digits that is not a year (1900-2039), or a code of letters and digits
  with at most 4 digits whose letter runs are words or at most 2 letters long (T1, B1000, 3D,
  VE11C); a decimal, a range followed by a unit (5-10 mm), a version (2.1.0);
- an ordinal (3rd, 12th) only before a word that is neither a month nor "of" (4th ventricle).

Removed whatever the vocabulary says: e-mail addresses and URLs; anything date- or time-like in
any spelling (digit groups joined by _ : or an ISO T; by - / . when they read as day, month and
year or as day and month; the numbers next to a month or weekday name of the main European
languages, `months.txt`); telephone-like runs and any token with 5 or more digits. A vocabulary
word that is also a common personal name (`names.txt`: BROWN, WHITE, ROSE, ...) stays only
inside a known clinical phrase (`phrases.txt`: WHITE MATTER) or where no name context surrounds
it: not one or two words after a title or relation word (`name_context.txt`: Dr, Mrs, mother,
by, ...), not next to a removed unknown word or another name word, and not capitalised among
lower-case words. A body part (HEAD, BRAIN) is a name only after a title or relation word, and
MR or DR in capitals before one is no title (MR BRAIN). Removal makes new neighbours, so text is
cleaned again until nothing more goes: what leaves passes its own rules.

What is removed leaves nothing behind: the kept tokens keep their separators, runs of spaces are
collapsed and dangling punctuation is trimmed. Coded strings (CS, AE) are kept whole or not at
all: a defined term of the attribute (`coded.json`, PS3.3/PS3.16), or a value whose every token
passes; anything else becomes empty.

(Over 400 lines on purpose: the word allow-list and the cleaner that applies it are one
unit - what may leave is decided token by token in one place.)
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from importlib import resources
from pathlib import Path

from anyascii import anyascii
from pydicom.datadict import tag_for_keyword

from gateway.deidentify.profile import keep_cleaned_problems
from gateway.errors import VocabularyError
from gateway.settings import Settings

#: The packaged vocabulary (read as data; the release check reads the same files by path).
VOCABULARY = "data/vocabulary"

_CJK_CHARS = "\u1100-\u11ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f"
_TOKEN = re.compile(r"(?:\d+\.(?=\d))?[^\W_]+")  # a decimal (1.5) is one token
# A token's pieces: digit runs, runs of Han/kana/Hangul, runs of other letters
_PIECE = re.compile(rf"\d+|[{_CJK_CHARS}]+|[^\W\d_{_CJK_CHARS}]+")
_CJK_RUN = re.compile(f"[{_CJK_CHARS}]+")
_SCRIPTS = re.compile(f"[{_CJK_CHARS}]+|[^{_CJK_CHARS}]+")
# Postcodes: UK (LE1 5WW, SW1A 2AA), Canada (M5G 2C4), Ireland (D02 X285)
_POSTCODE = re.compile(
    r"(?<![^\W_])(?:[A-Z]{1,2}\d[A-Z\d]?\s*\d(?!ST|ND|RD|TH)[A-Z]{2}|[A-Z]\d[A-Z]\s?\d[A-Z]\d"
    r"|[A-Z]\d{2}\s?(?=[A-Z\d]{0,3}[A-Z])[A-Z\d]{4})(?![^\W_])"
)
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+")
_URL = re.compile(r"(?i)(?:[a-z][a-z0-9+.-]*://|www\.)\S*")
# Digit groups joined by date, time or list separators (2019_03_14, 12/03, 10:22:05, 2019-03-14T10)
_JOINED = re.compile(r"(?<![^\W_])\d+(?:(?:[-/._:]|T(?=\d))\d+)+\.?")
# Telephone-like: digit groups with spaces, brackets or a leading +
_PHONE = re.compile(r"\+\s*\d[\d\s()./-]*\d|(?<![^\W_])\(?\d+\)?(?:[\s/-]+\(?\d+\)?)+")
# A Japanese era date: H30.3.14 (Heisei 30), R1/5/1
_ERA = re.compile(r"(?<![^\W_])[MTSHR]\d{1,2}[./-]\d{1,2}[./-]\d{1,2}(?![^\W_])")
_MAX_TEXT = 65_536  # characters: longer free text is not read word by word, it goes whole
_MIN_ID_DIGITS = 6  # digit groups joined by - or / holding this many digits: an ID, a phone
_ORDINAL = re.compile(r"(?i)\d+(?:st|nd|rd|th|e|er|eme|ème|º|ª)")
_YEARS = range(1900, 2040)  # birth years and study years: a 4-digit number in here is a year
_MAX_DIGITS = 4
_MAX_CODE_LETTERS = 2  # letters glued to digits in a code (VE11C, B30f) need not be words
_MIN_PHONE_DIGITS = 7
_SPACES = re.compile(r"\s{2,}")
_BODY_PART_EXAMINED = 0x00180015
_OF = frozenset({"of", "de", "du", "des"})
_MODALITY_TITLES = frozenset({"MR", "DR"})
_ROMAN = ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii")
_ROMAN_MONTHS = {r: str(n) for n, r in enumerate(_ROMAN, start=1)}
#: Words that say a number is an age (English and the main European languages, and the sex
#: written beside an age: 94M, 94 female), folded.
_AGE_WORDS = frozenset(
    {"age", "aged", "y", "yo", "yr", "yrs", "year", "years", "old", "ans", "jahre", "jahr"}
    | {"anni", "anos", "jaar", "ar", "lat", "m", "f", "male", "female", "man", "woman", "w"}
)
_TRIM = " ,;:-/._+&@#*'\"|"


def fold(text: str) -> str:
    """One spelling for a word in any script, case or width: ASCII, case-folded."""
    return anyascii(unicodedata.normalize("NFKC", text)).casefold()


def _folded_pieces(piece: str) -> list[str]:
    """The ASCII runs a piece transliterates to ("Þór" -> "thor"); a run of Han, kana or
    Hangul stays in its script, marked ("~胸部"): its transliteration (李 -> "li") may spell a
    short word by chance, so it is known only if a site lists it as written."""
    out: list[str] = []
    for run in _SCRIPTS.findall(piece):
        if _CJK_RUN.fullmatch(run):
            out.append("~" + unicodedata.normalize("NFKC", run))
        else:
            out += re.findall(r"[a-z]+|[0-9]+", fold(run))
    return out


@dataclass(frozen=True)
class Vocabulary:
    """The words that may leave the site, and what makes a known word a name."""

    words: frozenset[str]
    names: frozenset[str]  # words that are also common personal names
    rare_names: frozenset[str]  # words that are also rarer names: names only after a title
    places: frozenset[str]  # words that are also the names of places
    institutions: frozenset[str]  # hospital, clinic, university: a name or place beside goes
    post_nominals: frozenset[str]  # MD, PhD, RN: a name stands before
    units: frozenset[str]  # mm, T, kV: numbers before them are measurements
    phrases: frozenset[tuple[str, ...]]  # clinical phrases holding such a word
    coded: dict[int, frozenset[str]]  # CS attribute tag -> its defined terms
    all_coded: frozenset[str]
    months: frozenset[str]  # month and weekday names: dates
    anatomy: frozenset[str]  # Body Part Examined terms, folded (MR BRAIN is no Mr Brain)
    titles: frozenset[str]  # titles and relations: a name follows

    @classmethod
    def load(cls, site_file: Path | None = None) -> Vocabulary:
        """The packaged vocabulary, plus the site's own words (VocabularyError: bad file)."""
        words = set(_packaged_lines("words.txt"))
        months = _months()
        if site_file is not None:
            words |= site_words(site_file, months)
        coded: dict[int, frozenset[str]] = {}
        text = resources.files("gateway.deidentify").joinpath(f"{VOCABULARY}/coded.json")
        for keyword, terms in json.loads(text.read_text(encoding="utf-8")).items():
            tag = tag_for_keyword(keyword)
            if tag is not None:
                coded[int(tag)] = frozenset(terms)
        phrases = frozenset(tuple(line.split()) for line in _packaged_lines("phrases.txt"))
        return cls(
            words=frozenset(words),
            names=frozenset(_packaged_lines("names.txt")),
            rare_names=frozenset(_packaged_lines("rare_names.txt")),
            places=frozenset(_packaged_lines("places.txt")),
            institutions=_word_set("institutions.txt"),
            post_nominals=_word_set("post_nominals.txt"),
            units=_word_set("units.txt"),
            phrases=phrases,
            coded=coded,
            all_coded=frozenset(t for terms in coded.values() for t in terms),
            months=months,
            anatomy=frozenset(t.casefold() for t in coded.get(_BODY_PART_EXAMINED, ())),
            titles=_word_set("name_context.txt"),
        )


def _months() -> frozenset[str]:
    return _word_set("months.txt")


def _word_set(name: str) -> frozenset[str]:
    """A packaged list with several words a line."""
    return frozenset(w for line in _packaged_lines(name) for w in line.split())


def _packaged_lines(name: str) -> list[str]:
    text = resources.files("gateway.deidentify").joinpath(f"{VOCABULARY}/{name}")
    return _entries(text.read_text(encoding="utf-8").splitlines())


def _entries(lines: Iterable[str]) -> list[str]:
    out = []
    for line in lines:
        entry = line.split("#", 1)[0].strip()
        if entry:
            out.append(entry)
    return out


def site_words(path: Path, months: frozenset[str]) -> set[str]:
    """A site's word file: one word per line (letters, digits, hyphen or apostrophe inside),
    `#` starts a comment. A line that is not one such word, holds 5 or more digits, or names a
    month or weekday, fails with its line number."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise VocabularyError(f"{path}: not UTF-8 text") from None
    words: set[str] = set()
    for number, line in enumerate(lines, 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        problem = _site_word_problem(entry, months)
        if problem is not None:
            raise VocabularyError(f"{path}: line {number}: {problem}")
        words.update(_folded_pieces(entry))
    return words


def _site_word_problem(entry: str, months: frozenset[str]) -> str | None:
    if not re.fullmatch(r"[^\W_]+(?:['-][^\W_]+)*", entry):
        return "one word per line (letters and digits; no spaces or punctuation)"
    if sum(ch.isdigit() for ch in entry) > _MAX_DIGITS:
        return f"a word with more than {_MAX_DIGITS} digits looks like an identifier"
    if any(piece in months for piece in _folded_pieces(entry)):
        return "month and weekday names are never kept (dates)"
    return None


@dataclass
class _Token:
    text: str
    start: int
    end: int
    folded: list[str]  # ASCII runs of its letter pieces
    kind: str  # "word", "number", "code", "ordinal"
    known: bool = False  # passes on its own
    keep: bool = False
    initial: bool = True  # a single letter not glued to + or - (+C, T-)


class Cleaner:
    """Allow-list cleaning with a cache: a series repeats its descriptors instance after
    instance, so most values are cleaned once per worker."""

    _CACHE_SIZE = 8192

    def __init__(self, vocabulary: Vocabulary) -> None:
        self.vocabulary = vocabulary
        self._text: dict[str, tuple[str, int]] = {}
        self._codes: dict[tuple[int, str], tuple[str, int]] = {}

    def text(self, value: str) -> tuple[str, int]:
        """`value` keeping only allowed tokens, and how many tokens were removed."""
        found = self._text.get(value)
        if found is None:
            found = _clean(value, self.vocabulary)
            if len(self._text) >= self._CACHE_SIZE:
                self._text.clear()
            self._text[value] = found
        return found

    def is_term(self, tag: int, value: str) -> bool:
        """A defined term of a coded attribute (of this one, or of any: a shared code)."""
        return _is_term(tag, value.strip(), self.vocabulary)

    def code(self, tag: int, value: str) -> tuple[str, int]:
        """A coded string (CS, AE): kept whole, or "" with the count of tokens it had."""
        key = (tag, value)
        found = self._codes.get(key)
        if found is None:
            found = _clean_code(tag, value, self.vocabulary)
            if len(self._codes) >= self._CACHE_SIZE:
                self._codes.clear()
            self._codes[key] = found
        return found


#: The code of a coded entry (PS3.3 8.8): CodeValue, CodingSchemeDesignator,
#: CodingSchemeVersion, LongCodeValue, MappingResource, ContextIdentifier. Codes are numbers
#: (SNOMED CT 51185008, DCM 113100) or short prefixed forms (T-D3000, RID1234, LA12345-6).
CODE_ATTRIBUTES = frozenset(
    {0x00080100, 0x00080102, 0x00080103, 0x00080119, 0x00080105, 0x0008010F}
)
_CODE_SHAPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
_MAX_CODE_PREFIX = 3  # TOU0065, SGH0101, RID1234: short prefixes of local and standard codes


def _is_term(tag: int, value: str, vocabulary: Vocabulary) -> bool:
    return value in vocabulary.coded.get(tag, ()) or value in vocabulary.all_coded


def _clean_code(tag: int, value: str, vocabulary: Vocabulary) -> tuple[str, int]:
    stripped = value.strip()
    if not stripped or _is_term(tag, stripped, vocabulary):
        return value, 0
    if tag in CODE_ATTRIBUTES:
        return (value, 0) if _code_shaped(stripped, vocabulary) else ("", 1)
    _, removed = _clean(stripped, vocabulary)  # underscores part words; 3_14 is a date
    if not removed:
        return value, 0
    return "", max(removed, 1)


def _clean(value: str, vocabulary: Vocabulary) -> tuple[str, int]:
    """Clean until nothing more goes: a removal makes new neighbours (a number now beside a
    month, two name words now side by side), and what leaves must pass its own rules."""
    if len(value) > _MAX_TEXT:
        return "", 1
    text, removed = _clean_once(value, vocabulary)
    total = removed
    while removed and text:
        text, removed = _clean_once(text, vocabulary)
        total += removed
    return (text, total) if total else (value, 0)


def _pieces(spans: list[tuple[int, int]]) -> int:
    """How many separate pieces the cut spans make (a telephone number found as a joined group
    and as a telephone-like run is one piece)."""
    count, reach = 0, -1
    for start, end in sorted(spans):
        if start >= reach:
            count += 1
        reach = max(reach, end)
    return count


def _clean_once(value: str, vocabulary: Vocabulary) -> tuple[str, int]:
    text = unicodedata.normalize("NFKC", value)
    cut: list[tuple[int, int]] = []  # spans removed before tokens are looked at
    for pattern in (_EMAIL, _URL, _ERA, _POSTCODE):
        cut += [m.span() for m in pattern.finditer(text)]
    for match in _JOINED.finditer(text):
        if _date_like(match.group(0), text[match.end() :], vocabulary):
            cut.append(match.span())
    for match in _PHONE.finditer(text):
        if sum(ch.isdigit() for ch in match.group(0)) >= _MIN_PHONE_DIGITS:
            cut.append(match.span())
    removed = _pieces(cut)
    tokens = _tokens(text, vocabulary.words)
    _judge(tokens, vocabulary, cut)
    removed += sum(not t.keep for t in tokens if not _inside(t, cut))
    if not removed:
        return value, 0
    out = list(text)
    for start, end in cut:
        out[start:end] = [" "] * (end - start)
    for token in tokens:
        if not token.keep:
            out[token.start : token.end] = [" "] * (token.end - token.start)
    return _tidy("".join(out)), removed


def _code_shaped(value: str, vocabulary: Vocabulary) -> bool:
    """A code: letters, digits and . _ : - only, any number of digits (SNOMED CT ids are long);
    letter runs of at most 3 letters or words that are no common name or place; no time, and
    not a date as a whole (1958-03-14; 5.6.3-9-61 is an SCPECG code)."""
    if not _CODE_SHAPE.fullmatch(value) or re.search(r"\d[:T_]\d", value):
        return False
    for run in re.findall(r"[a-z]+", value.casefold()):
        if len(run) > _MAX_CODE_PREFIX and (
            run not in vocabulary.words or _common_name(run, vocabulary)
        ):
            return False
    groups = re.findall(r"\d+", value)
    return not (len(groups) == 3 and _holds_date(groups))


def _date_like(joined: str, after: str, vocabulary: Vocabulary) -> bool:
    """Digit groups joined by separators: a date or a time (2019-03-14, 14.03., 10:22, 2019_03,
    12/03, 03/2019), an ID or a telephone number (4821-3377, 555.867.5309), or else a decimal,
    a measurement with its unit, a version (1.5, 5-10 mm, 2.1.0)."""
    groups = re.findall(r"\d+", joined)
    body = joined.rstrip(".")
    if any(len(g) > _MAX_DIGITS for g in groups) or re.search(r"[:_T]", joined):
        return True  # an ID-length run; times, ISO and underscore dates
    if _phone_groups(groups) or _holds_date(groups) or _month_year(groups):
        return True
    if "." not in body and sum(map(len, groups)) >= _MIN_ID_DIGITS:
        return True  # 4821-3377, 555-0199, 12-34-56: an ID or a telephone number
    if len(groups) > 2:
        return False  # a version
    unit = re.match(r"\s*([^\W\d_]+)", after)
    measured = unit is not None and fold(unit.group(1)) in vocabulary.units
    if measured and "/" not in joined and not joined.endswith("."):
        return False  # a measurement or a range with its unit: 1.5 mm, 5-10 mm
    first, second = int(groups[0]), int(groups[1])
    day_month = 1 <= first <= 31 and 1 <= second <= 12
    month_day = 1 <= first <= 12 and 1 <= second <= 31
    if joined[len(groups[0])] == "." and not joined.endswith("."):
        return day_month and len(groups[1]) == 2  # 14.03 reads as a date; 1.5 does not
    return day_month or month_day


def _phone_groups(groups: list[str]) -> bool:
    """Digit groups shaped as a telephone number: 555.867.5309, 020.7946.0958."""
    return [len(g) for g in groups][-3:] in ([3, 3, 4], [4, 3, 4], [3, 4, 4], [2, 4, 4])


def _month_year(groups: list[str]) -> bool:
    """Two groups that read as a month and a year: 03/2019, 2019.03, 03/58 (a 2-digit year
    that is no day)."""
    if len(groups) != 2:
        return False
    a, b = groups
    four = (len(b) == 4 and int(b) in _YEARS and _month(a)) or (
        len(a) == 4 and int(a) in _YEARS and _month(b)
    )
    return four or (_month(a) and len(b) == 2 and int(b) > 31)


def _holds_date(groups: list[str]) -> bool:
    """Three groups in a row that read as day, month and year in some order (14.03.2019,
    2019/3/14, 3-14-19); a version number (2.1.0, 51.80.108.010) does not."""
    for x, y, z in zip(groups, groups[1:], groups[2:], strict=False):
        if _year(z) and ((_day(x) and _month(y)) or (_month(x) and _day(y))):
            return True
        year_first = (len(x) == 4 and _year(x)) or (len(x) == 2 and int(x) > 31)
        if year_first and _month(y) and _day(z):
            return True  # 2019-3-14, 58-03-14 (5.10.3 is a version: 5 may be a day)
    return False


def _year(group: str) -> bool:
    return len(group) == 2 or (len(group) == 4 and int(group) in _YEARS)


def _day(group: str) -> bool:
    return len(group) <= 2 and 1 <= int(group) <= 31


def _month(group: str) -> bool:
    return len(group) <= 2 and 1 <= int(group) <= 12


def _inside(token: _Token, cut: list[tuple[int, int]]) -> bool:
    return any(start < token.end and token.start < end for start, end in cut)


def _camel(piece: str) -> list[str]:
    """A piece split where its case says a new word starts: SpinalCord, PRVSpinal, OpticNerve."""
    cuts = [
        i
        for i in range(1, len(piece))
        if (piece[i - 1].islower() and piece[i].isupper())
        or (piece[i - 1].isupper() and piece[i].isupper() and piece[i + 1 : i + 2].islower())
    ]
    return [piece[a:b] for a, b in zip([0, *cuts], [*cuts, len(piece)], strict=True)]


def _letter_runs(piece: str, words: frozenset[str]) -> list[str]:
    """A letter piece's folded runs: whole when it is a word (mpMRI), else split at its case
    changes (TG-263 structure names: SpinalCord -> spinal cord)."""
    whole = _folded_pieces(piece)
    if all(f in words for f in whole):
        return whole
    return [f for part in _camel(piece) for f in _folded_pieces(part)]


def _tokens(text: str, words: frozenset[str]) -> list[_Token]:
    out = []
    for match in _TOKEN.finditer(text):
        word = match.group(0)
        pieces = _PIECE.findall(word)
        digits = [p for p in pieces if p.isdigit()]
        split = _folded_pieces if digits else partial(_letter_runs, words=words)  # words only
        letters = [f for p in pieces if not p.isdigit() for f in split(p)]
        if _ORDINAL.fullmatch(word):
            kind = "ordinal"
        elif digits and letters:
            kind = "code"
        elif digits:
            kind = "number"
        else:
            kind = "word"
        glued = match.start() > 0 and text[match.start() - 1] in "+-"
        out.append(_Token(word, match.start(), match.end(), letters, kind, initial=not glued))
    return out


def _judge(tokens: list[_Token], vocabulary: Vocabulary, cut: list[tuple[int, int]]) -> None:
    """Decide each token: first on its own, then the name words, ordinals, dates and ages in
    context. A token in a span already cut (a date, an address) is unknown: a word glued to it
    goes too."""
    words = vocabulary.words
    for token in tokens:
        token.known = _known(token, vocabulary) and not _inside(token, cut)
    folded = [" ".join(t.folded) for t in tokens]
    for index, token in enumerate(tokens):
        if not token.known:
            continue
        if token.kind == "ordinal":
            after = tokens[index + 1] if index + 1 < len(tokens) else None
            token.keep = (
                after is not None
                and after.kind == "word"
                and after.known
                and folded[index + 1] not in _OF
            )
        elif token.kind == "word" and any(_name_like(f, vocabulary) for f in token.folded):
            token.keep = not _name_context(tokens, folded, index, vocabulary)
        else:
            token.keep = token.known
    for index, token in enumerate(tokens):  # the day or year beside a month name goes with it
        if any(f in vocabulary.months for f in token.folded):
            for near in range(max(index - 2, 0), min(index + 3, len(tokens))):
                if tokens[near].kind in ("number", "ordinal"):
                    tokens[near].keep = False
    _spaced_dates(tokens, folded)
    _old_ages(tokens, folded, words)


def _known(token: _Token, vocabulary: Vocabulary) -> bool:
    folded, words = token.folded, vocabulary.words
    if token.kind == "ordinal":
        return len(token.text) <= 4
    runs = re.findall(r"\d+", token.text)
    digits = max(map(len, runs), default=0) if "." in token.text else sum(map(len, runs))
    if digits > _MAX_DIGITS:
        return False  # 5 digits in a token (in each part of a decimal: 108.010 is two)
    if token.kind == "number":
        return not (token.text.isdigit() and len(token.text) == 4 and int(token.text) in _YEARS)
    if token.kind == "code":  # 14MAR is a date; T1, B1000 and SAT2 (a technical word) are not
        return all(
            (f in words or (len(f) <= _MAX_CODE_LETTERS and not f.startswith("~")))
            and (f not in vocabulary.months or (f in words and digits == 1))
            for f in folded
        )
    if len(folded) == 1 and len(folded[0]) == 1:
        return True  # a single letter
    if len(folded) > 1 and any(_glued_name(f, vocabulary) for f in folded):
        return False  # DrBrown, BrownFat: a name or a title glued to other words
    return bool(folded) and all(f in words for f in folded)


def _glued_name(word: str, vocabulary: Vocabulary) -> bool:
    return word in vocabulary.titles or _common_name(word, vocabulary)


def _name_like(word: str, vocabulary: Vocabulary) -> bool:
    return word in vocabulary.names or word in vocabulary.rare_names or word in vocabulary.places


def _common_name(word: str, vocabulary: Vocabulary) -> bool:
    return word in vocabulary.names or word in vocabulary.places


def _name_context(
    tokens: list[_Token], folded: list[str], index: int, vocabulary: Vocabulary
) -> bool:
    """Whether a known word that is also a person's or a place's name reads as one here.

    Any such word goes one to three words after a title or relation word (Dr, mother, by:
    "Dr J R Brown", "mother Grace Nyberg") unless MR or DR in capitals stands before a body part
    (MR BRAIN). Then a clinical phrase keeps it (WHITE MATTER). A body part or a rarer name is
    a name only after a title. A common name or a place also goes before a post-nominal (BROWN
    MD, "Brown, Dr"), within three words of an institution word (Maine Medical Center), beside
    an unknown word, an initial or another name or place, or capitalised among lower-case
    words."""
    word = folded[index]
    for back in range(1, 4):
        if index >= back and folded[index - back] in vocabulary.titles:
            title = tokens[index - back].text
            if not (_modality(title) and word in vocabulary.anatomy):
                return True
    if word in vocabulary.anatomy or not _common_name(word, vocabulary):
        return False  # HEAD, BRAIN; rarer surnames (Hellman): only after a title
    if _institution_or_degree(folded, index, vocabulary):
        return True  # Alaska Native Medical Center, Swann Ganz MD: no phrase saves them
    if _in_phrase(folded, index, vocabulary):
        return False
    return _common_name_context(tokens, folded, index, vocabulary)


def _institution_or_degree(folded: list[str], index: int, vocabulary: Vocabulary) -> bool:
    if index + 1 < len(folded) and folded[index + 1] in vocabulary.post_nominals:
        return True
    near = range(max(index - 3, 0), min(index + 4, len(folded)))
    return any(folded[j] in vocabulary.institutions for j in near)


def _common_name_context(
    tokens: list[_Token], folded: list[str], index: int, vocabulary: Vocabulary
) -> bool:
    neighbours = [j for j in (index - 1, index + 1) if 0 <= j < len(tokens)]
    for j in neighbours:
        other = tokens[j]
        initial = other.kind == "word" and len(folded[j]) == 1 and other.initial
        if not other.known or initial:
            return True  # an unknown word or an initial beside it (the C of +C is none)
        if other.kind == "word" and _common_name(folded[j], vocabulary):
            return True  # another common name or place (a rarer name is an everyday word)
    text = tokens[index].text
    lower_around = any(tokens[j].text.isalpha() and tokens[j].text.islower() for j in neighbours)
    return lower_around and text[:1].isupper() and not text.isupper()


def _in_phrase(folded: list[str], index: int, vocabulary: Vocabulary) -> bool:
    for size in (2, 3, 4):
        for start in range(max(index - size + 1, 0), index + 1):
            if tuple(folded[start : start + size]) in vocabulary.phrases:
                return True  # WHITE MATTER
    return False


def _modality(title: str) -> bool:
    """MR and DR in capitals before a body part are the modality, not Mr or Dr."""
    return title in _MODALITY_TITLES


def _spaced_dates(tokens: list[_Token], folded: list[str]) -> None:
    """Three numbers in a row (a Roman numeral for the month allowed) that read as a day, a
    month and a year: "14 3 58", "3 14 58", "14 III 58"."""
    for i in range(len(tokens) - 2):
        parts = [_date_part(tokens[j], folded[j]) for j in range(i, i + 3)]
        if all(p is not None for p in parts) and _holds_date([p or "" for p in parts]):
            for j in range(i, i + 3):
                tokens[j].keep = False


def _date_part(token: _Token, folded: str) -> str | None:
    if token.kind == "number" and token.text.isdigit():
        return token.text
    return _ROMAN_MONTHS.get(folded) if token.kind == "word" else None


def _old_ages(tokens: list[_Token], folded: list[str], words: frozenset[str]) -> None:
    """An age over 89 is an identifier (45 CFR 164.514(b)(2)(i)(C)): "age 94", "94 yo", "94y"."""
    for index, token in enumerate(tokens):
        digits = re.match(r"\d+", token.text)
        if digits is None or not 90 <= int(digits.group(0)) <= 150:
            continue
        suffix = folded[index]
        near = [folded[j] for j in (index - 1, index + 1) if 0 <= j < len(tokens)]
        if suffix in _AGE_WORDS or any(w in _AGE_WORDS for w in near):
            token.keep = False


def _tidy(text: str) -> str:
    return _SPACES.sub(" ", text).strip(_TRIM)


def settings_problems(settings: Settings) -> list[str]:
    """What is wrong with the site's text options: `keep_cleaned` entries that are not
    narrative attributes, a word file that cannot be read (each naming the key and file)."""
    options = settings.deidentify
    problems = [f"{settings.source}: {p}" for p in keep_cleaned_problems(options)]
    if options.vocabulary is not None:
        months = _months()
        try:
            site_words(options.vocabulary, months)
        except OSError as exc:
            problems.append(
                f"{settings.source}: deidentify.vocabulary: cannot read {options.vocabulary}: "
                f"{exc.strerror}"
            )
        except VocabularyError as exc:
            problems.append(f"{settings.source}: deidentify.vocabulary: {exc}")
    return problems
