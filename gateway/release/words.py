"""The release check's own reading of the vocabulary: is every token of a text value allowed?

The de-identifier cleans text by an allow-list of words; this module verifies the result
without its code (the release check never imports `gateway.deidentify`). It reads the same
word files, by path, and its own rules decide. A value passes only when none of these is in it:

- an e-mail address (text@text) or a URL (scheme:// or www.);
- digit groups joined by ':' '_' or an ISO 'T'; three joined groups that read as a day,
  month and year in some order (14.03.2019, 2019/3/14; a version 2.1.0 passes); two (12/03,
  14.03, 5-10) that read as a day and a month, unless a unit word follows;
  a telephone-like run (7+ digits in groups after a '+' or between spaces); 5+ digits in a run;
- a 4-digit number from 1900 to 2039 (a year); a number or ordinal beside a month or weekday;
- an ordinal that does not stand before an ordinary word (4th ventricle passes, 14th of ...
  does not);
- a word that is not in the vocabulary (after transliteration to ASCII and case folding); a
  single letter passes; letters glued to digits pass when each letter run is a word or at most
  two letters, with at most 4 digits;
- a common personal name (names.txt) outside a clinical phrase (phrases.txt) where a title or
  relation word stands before it, another name word beside it, or it is capitalised among
  lower-case words.

Coded values (CS) pass whole when they are a defined term (coded.json), else token by token.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from anyascii import anyascii
from pydicom.datadict import tag_for_keyword

#: The word files shipped beside the de-identifier, read as data (see allowed.DATA).
VOCABULARY = Path(__file__).resolve().parent.parent / "deidentify" / "data" / "vocabulary"

_SPLIT = re.compile(r"(?:\d+\.(?=\d))?[^\W_]+")  # words, numbers, codes; 1.5 is one
_ASCII_RUN = re.compile(r"[a-z]+|[0-9]+")
_CJK = "\u1100-\u11ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f"
_SCRIPT_RUN = re.compile(rf"[{_CJK}]+|[^{_CJK}]+")
_MAIL = re.compile(r"\S@\S")
_LINK = re.compile(r"(?i)[a-z][a-z0-9+.-]*://|\bwww\.")
_GROUPS = re.compile(r"(?<![^\W_])(\d+)((?:(?:[-/._:]|T(?=\d))\d+)+)(\.?)")
_PLUS_DIGITS = re.compile(r"\+\s*\d[\d\s()./-]*")
_SPACED_DIGITS = re.compile(r"\(?\d+\)?(?:[\s/-]+\(?\d+\)?){2,}")
_ORDINAL_SUFFIX = re.compile(r"(?i)(\d+)(st|nd|rd|th|e|er|eme|ème|º|ª)")
_OF = frozenset({"of", "de", "du", "des"})
YEARS = (1900, 2039)  # a 4-digit number from here to there reads as a year
#: Code Value, Coding Scheme Designator and Version, Long Code Value, Mapping Resource,
#: Context Identifier (PS3.3 8.8): codes, not words.
CODES = frozenset({0x00080100, 0x00080102, 0x00080103, 0x00080119, 0x00080105, 0x0008010F})


def _reads_as_date(first: str, second: str, third: str) -> bool:
    """Day, month and year in one of the orders people write them."""

    def year(g: str) -> bool:
        return len(g) == 2 or (len(g) == 4 and YEARS[0] <= int(g) <= YEARS[1])

    def day(g: str) -> bool:
        return len(g) <= 2 and 1 <= int(g) <= 31

    def month(g: str) -> bool:
        return len(g) <= 2 and 1 <= int(g) <= 12

    day_first = day(first) and month(second)
    return (year(third) and (day_first or (month(first) and day(second)))) or (
        year(first) and month(second) and day(third)
    )


def _ascii(text: str) -> str:
    return anyascii(unicodedata.normalize("NFKC", text)).casefold()


def _lines(name: str) -> list[str]:
    out = []
    for line in (VOCABULARY / name).read_text(encoding="utf-8").splitlines():
        body = line.partition("#")[0].strip()
        if body:
            out.append(body)
    return out


@dataclass(frozen=True)
class Lexicon:
    words: frozenset[str]
    names: frozenset[str]
    phrases: frozenset[str]  # words joined by one space
    months: frozenset[str]
    titles: frozenset[str]
    terms: dict[int, frozenset[str]]  # CS tag -> defined terms
    body_parts: frozenset[str]  # Body Part Examined terms, lower case
    any_term: frozenset[str]

    @classmethod
    def load(cls, site_file: Path | None) -> Lexicon:
        """The shipped word files and the site's word file (its words, as written, folded;
        check-config has refused a malformed one before this runs)."""
        words = set(_lines("words.txt"))
        if site_file is not None:
            for line in site_file.read_text(encoding="utf-8").splitlines():
                words.update(_ASCII_RUN.findall(_ascii(line.partition("#")[0])))
        raw_terms = json.loads((VOCABULARY / "coded.json").read_text(encoding="utf-8"))
        terms: dict[int, frozenset[str]] = {}
        for keyword, values in raw_terms.items():
            tag = tag_for_keyword(keyword)
            if tag is not None:
                terms[int(tag)] = frozenset(values)
        return cls(
            words=frozenset(words),
            names=frozenset(_lines("names.txt")),
            phrases=frozenset(" ".join(line.split()) for line in _lines("phrases.txt")),
            months=frozenset(w for line in _lines("months.txt") for w in line.split()),
            titles=frozenset(w for line in _lines("name_context.txt") for w in line.split()),
            terms=terms,
            body_parts=frozenset(t.lower() for t in terms.get(0x00180015, ())),
            any_term=frozenset().union(*terms.values()) if terms else frozenset(),
        )

    def is_term(self, tag: int, value: str) -> bool:
        value = value.strip("\0 ")
        return value in self.terms.get(tag, ()) or value in self.any_term

    def code_allowed(self, tag: int, value: str) -> bool:
        """A coded string: a defined term, or tokens that each pass; the code of a coded entry
        (CODES): a code's shape, any digits, letter runs of 4 or fewer unless words."""
        if self.is_term(tag, value):
            return True
        if tag in CODES:
            if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:-]*", value) is None:
                return False
            return all(len(r) < 5 or r in self.words for r in re.findall(r"[a-z]+", value.lower()))
        return self.text_allowed(value.replace("_", " "))

    def text_allowed(self, value: str) -> bool:
        text = unicodedata.normalize("NFKC", value)
        if _MAIL.search(text) or _LINK.search(text):
            return False
        if any(not self._groups_ok(m, text) for m in _GROUPS.finditer(text)):
            return False
        for run in (*_PLUS_DIGITS.finditer(text), *_SPACED_DIGITS.finditer(text)):
            if sum(c.isdigit() for c in run.group(0)) >= 7:
                return False
        tokens = _SPLIT.findall(text)
        return self._tokens_ok(tokens)

    def _groups_ok(self, match: re.Match[str], text: str) -> bool:
        """Joined digit groups: a decimal, a measured range or a version; never a date, a
        time or an ID-length run."""
        head, tail, dot = match.group(1), match.group(2), match.group(3)
        numbers = [head, *re.findall(r"\d+", tail)]
        if max(len(n) for n in numbers) > 4 or re.search(r"[:_T]", tail):
            return False
        if len(numbers) > 2:
            return not any(_reads_as_date(*numbers[i : i + 3]) for i in range(len(numbers) - 2))
        unit = re.match(r"\s*([^\W\d_]+)", text[match.end() :])
        if (
            not dot
            and unit is not None
            and all(w in self.words for w in _ASCII_RUN.findall(_ascii(unit[1])))
        ):
            return True
        a, b = int(head), int(numbers[1])
        if tail.startswith(".") and not dot:
            return not (1 <= a <= 31 and 1 <= b <= 12 and len(numbers[1]) == 2)
        return not ((1 <= a <= 31 and 1 <= b <= 12) or (1 <= a <= 12 and 1 <= b <= 31))

    def _tokens_ok(self, tokens: list[str]) -> bool:
        shapes = [self._shape(t) for t in tokens]
        for i, shape in enumerate(shapes):
            if shape == "bad":
                return False
            if shape in ("number", "ordinal", "code") and self._beside_month(tokens, i):
                return False
            if shape == "ordinal" and not self._ordinal_ok(tokens, shapes, i):
                return False
            if shape == "name" and self._reads_as_name(tokens, shapes, i):
                return False
        return True

    def _shape(self, token: str) -> str:
        """bad, number, ordinal, code, word or name (a word that is also a personal name)."""
        if _ORDINAL_SUFFIX.fullmatch(token):
            return "ordinal" if len(token) <= 4 else "bad"
        parts = [len(run) for run in re.findall(r"\d+", token)]
        if (max(parts, default=0) if "." in token else sum(parts)) > 4:
            return "bad"
        digits = sum(parts)
        if token.isdigit():
            return "bad" if len(token) == 4 and YEARS[0] <= int(token) <= YEARS[1] else "number"
        runs = [r for part in _SCRIPT_RUN.findall(token) for r in _ASCII_RUN.findall(_ascii(part))]
        letters = [r for r in runs if not r.isdigit()]
        if digits:
            ok = all(r in self.words or len(r) <= 2 for r in letters)
            return "code" if ok else "bad"
        if len(letters) == 1 and len(letters[0]) == 1:
            return "word"
        if not letters or not all(r in self.words for r in letters):
            return "bad"
        return "name" if any(r in self.names for r in letters) else "word"

    def _beside_month(self, tokens: list[str], i: int) -> bool:
        near = tokens[max(i - 2, 0) : i] + tokens[i + 1 : i + 3]
        return any(r in self.months for t in near for r in _ASCII_RUN.findall(_ascii(t)))

    def _ordinal_ok(self, tokens: list[str], shapes: list[str], i: int) -> bool:
        if i + 1 >= len(tokens) or shapes[i + 1] not in ("word", "name"):
            return False
        return _ascii(tokens[i + 1]) not in _OF

    def _reads_as_name(self, tokens: list[str], shapes: list[str], i: int) -> bool:
        folded = [" ".join(_ASCII_RUN.findall(_ascii(t))) for t in tokens]
        for size in (2, 3, 4):
            for start in range(max(i - size + 1, 0), i + 1):
                if " ".join(folded[start : start + size]) in self.phrases:
                    return False
        for back in (1, 2):  # Dr Brown, Dr Rose Brown, mother Ingrid Head
            if i >= back and folded[i - back] in self.titles:
                title = tokens[i - back]
                modality = title.isupper() and title.lower() in self.words
                if not (modality and folded[i] in self.body_parts):  # MR BRAIN: no Mr Brain
                    return True
        if folded[i] in self.body_parts:
            return False  # a body part is a name only after a title or relation word
        neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(tokens)]
        if any(shapes[j] == "name" for j in neighbours):
            return True
        word = tokens[i]
        capitalised = word[:1].isupper() and not word.isupper()
        return capitalised and any(tokens[j].islower() for j in neighbours)
