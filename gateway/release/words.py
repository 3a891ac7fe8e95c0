"""The release check's own reading of the vocabulary: is every token of a text value allowed?

The de-identifier cleans text by an allow-list of words; this module verifies the result
without its code (the release check never imports `gateway.deidentify`). It reads the same
word files, by path, and its own rules decide. A value passes only when none of these is in it:

- an e-mail address (text@text) or a URL (scheme:// or www.); more than 65,536 characters;
- digit groups joined by ':' '_' or an ISO 'T'; three joined groups that read as a day,
  month and year in some order (14.03.2019, 2019/3/14; a version 2.1.0 passes); two (12/03,
  14.03, 5-10) that read as a day and a month, unless a unit word follows; two joined by - or
  / holding 6 or more digits (an ID, a telephone number); a Japanese era date (H30.3.14);
  a telephone-like run (7+ digits in groups after a '+' or between spaces); 5+ digits in a run;
- three numbers in a row, a Roman numeral month allowed, that read as a date ("14 III 58");
- a 4-digit number from 1900 to 2039 (a year); a number or ordinal beside a month or weekday;
  a letters-and-digits code holding a month (14MAR); an age over 89 ("age 94", "94yo");
- an ordinal that does not stand before an ordinary word (4th ventricle passes, 14th of ...
  does not);
- a word that is not in the vocabulary (after transliteration to ASCII and case folding); a
  single letter passes; letters glued to digits pass when each letter run is a word or at most
  two letters, with at most 4 digits;
- a word that is also a name or a place (names.txt, rare_names.txt, places.txt) one to three
  words after a title or relation word (except MR or DR in capitals before a body part); and,
  for a common name or a place outside a clinical phrase (phrases.txt) and not a body part,
  before a post-nominal (MD), within three words of an institution word (Hospital), beside an
  initial or another name or place word, or capitalised among lower-case words.

Coded values (CS) pass whole when they are a defined term (coded.json), else token by token.
The code of a coded entry passes by its shape: letters, digits and . _ : - only, any digits,
letter runs of 3 letters or words that are no common name or place, no time, not a date as a
whole.
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
_LETTER_RUN = re.compile(r"[a-z]+")
_CJK = "\u1100-\u11ff\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f"
_SCRIPT_RUN = re.compile(rf"[{_CJK}]+|[^{_CJK}]+")
_CJK_PART = re.compile(rf"[{_CJK}]+")
_MAIL = re.compile(r"\S@\S")
_LINK = re.compile(r"(?i)[a-z][a-z0-9+.-]*://|www\.")
_POSTCODE = re.compile(  # UK, Canada, Ireland
    r"(?<![^\W_])(?:[A-Z]{1,2}\d[A-Z\d]?\s*\d(?!ST|ND|RD|TH)[A-Z]{2}|[A-Z]\d[A-Z]\s?\d[A-Z]\d"
    r"|[A-Z]\d{2}\s?(?=[A-Z\d]{0,3}[A-Z])[A-Z\d]{4})(?![^\W_])"
)
_ERA_DATE = re.compile(r"(?<![^\W_])[MTSHR]\d{1,2}[./-]\d{1,2}[./-]\d{1,2}(?![^\W_])")
_GROUPS = re.compile(r"(?<![^\W_])(\d+)((?:(?:[-/._:]|T(?=\d))\d+)+)(\.?)")
_PLUS_DIGITS = re.compile(r"\+\s*\d[\d\s()./-]*")
_SPACED_DIGITS = re.compile(r"(?<![^\W_])\(?\d+\)?(?:[\s/-]+\(?\d+\)?)+")
_ORDINAL_SUFFIX = re.compile(r"(?i)(\d+)(st|nd|rd|th|e|er|eme|ème|º|ª)")
_CODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
_OF = frozenset({"of", "de", "du", "des"})
_ROMAN = dict(
    zip(
        ("i", "ii", "iii", "iv", "v", "vi", "vii", "viii", "ix", "x", "xi", "xii"),
        range(1, 13),
        strict=True,
    )
)
#: Age words: "age 94", "94 yo", "94 Jahre"
_AGES = frozenset({"age", "aged", "y", "yo", "yr", "yrs", "year", "years", "old"}) | frozenset(
    {"ans", "jahre", "jahr", "anni", "anos", "jaar", "ar", "lat"}
    | {"m", "f", "male", "female", "man", "woman", "w"}  # the sex beside an age: 94M
)
_CAPITAL_MODALITIES = frozenset({"MR", "DR"})  # MR BRAIN, DR CHEST: no Mr, no Dr
YEARS = (1900, 2039)  # a 4-digit number from here to there reads as a year
LONGEST = 65_536  # characters of one text value read word by word
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
    year_first = (len(first) == 4 and year(first)) or (len(first) == 2 and int(first) > 31)
    return (year(third) and (day_first or (month(first) and day(second)))) or (
        year_first and month(second) and day(third)
    )


def _telephone(numbers: list[str]) -> bool:
    """555.867.5309, 020.7946.0958: the last groups are shaped as a telephone number."""
    return tuple(len(n) for n in numbers[-3:]) in {(3, 3, 4), (4, 3, 4), (3, 4, 4), (2, 4, 4)}


def _month_and_year(numbers: list[str]) -> bool:
    """03/2019, 2019.03, 03/58 (a two-digit year that cannot be a day)."""
    if len(numbers) != 2:
        return False
    first, second = numbers

    def month(g: str) -> bool:
        return len(g) <= 2 and 1 <= int(g) <= 12

    def year(g: str) -> bool:
        return len(g) == 4 and YEARS[0] <= int(g) <= YEARS[1]

    short_year = month(first) and len(second) == 2 and int(second) > 31
    return (month(first) and year(second)) or (year(first) and month(second)) or short_year


def _any_date(numbers: list[str]) -> bool:
    return any(_reads_as_date(*numbers[i : i + 3]) for i in range(len(numbers) - 2))


def _ascii(text: str) -> str:
    return anyascii(unicodedata.normalize("NFKC", text)).casefold()


def _runs(text: str) -> list[str]:
    """Letter and digit runs, transliterated; Han, kana and Hangul as written, marked ("~李"):
    what they transliterate to may spell a short word by chance."""
    out: list[str] = []
    for part in _SCRIPT_RUN.findall(text):
        if _CJK_PART.fullmatch(part):
            out.append("~" + unicodedata.normalize("NFKC", part))
        else:
            out += _ASCII_RUN.findall(_ascii(part))
    return out


def _case_words(token: str) -> list[str]:
    """A token cut before each capital that follows a small letter, or that starts a word after
    capitals (PRVSpinalCord -> PRV Spinal Cord)."""
    words, start = [], 0
    for i in range(1, len(token)):
        after_small = token[i - 1].islower() and token[i].isupper()
        new_word = token[i - 1].isupper() and token[i].isupper() and token[i + 1 : i + 2].islower()
        if after_small or new_word:
            words.append(token[start:i])
            start = i
    return [*words, token[start:]]


def _letters(token: str) -> str:
    """A token's letter runs ("胸部CT" -> "~胸部 ct")."""
    return " ".join(r for r in _runs(token) if not r.isdigit())


def _lines(name: str) -> list[str]:
    out = []
    for line in (VOCABULARY / name).read_text(encoding="utf-8").splitlines():
        body = line.partition("#")[0].strip()
        if body:
            out.append(body)
    return out


def _several(name: str) -> frozenset[str]:
    return frozenset(w for line in _lines(name) for w in line.split())


@dataclass(frozen=True)
class Lexicon:
    words: frozenset[str]
    names: frozenset[str]  # common personal names
    rare_names: frozenset[str]  # other personal names: a name only after a title
    places: frozenset[str]
    phrases: frozenset[str]  # words joined by one space
    months: frozenset[str]
    titles: frozenset[str]
    institutions: frozenset[str]
    post_nominals: frozenset[str]
    units: frozenset[str]
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
                words.update(_runs(line.partition("#")[0]))
        raw_terms = json.loads((VOCABULARY / "coded.json").read_text(encoding="utf-8"))
        terms: dict[int, frozenset[str]] = {}
        for keyword, values in raw_terms.items():
            tag = tag_for_keyword(keyword)
            if tag is not None:
                terms[int(tag)] = frozenset(values)
        return cls(
            words=frozenset(words),
            names=frozenset(_lines("names.txt")),
            rare_names=frozenset(_lines("rare_names.txt")),
            places=frozenset(_lines("places.txt")),
            phrases=frozenset(" ".join(line.split()) for line in _lines("phrases.txt")),
            months=_several("months.txt"),
            titles=_several("name_context.txt"),
            institutions=_several("institutions.txt"),
            post_nominals=_several("post_nominals.txt"),
            units=_several("units.txt"),
            terms=terms,
            body_parts=frozenset(t.lower() for t in terms.get(0x00180015, ())),
            any_term=frozenset().union(*terms.values()) if terms else frozenset(),
        )

    def is_term(self, tag: int, value: str) -> bool:
        value = value.strip("\0 ")
        return value in self.terms.get(tag, ()) or value in self.any_term

    def code_allowed(self, tag: int, value: str) -> bool:
        """A coded string: a defined term, or tokens that each pass; the code of a coded entry
        (CODES): by its shape."""
        if self.is_term(tag, value):
            return True
        if tag in CODES:
            return self._code_shape(value)
        return self.text_allowed(value)  # underscores part words; 3_14 is a date

    def _code_shape(self, value: str) -> bool:
        if _CODE.fullmatch(value) is None or re.search(r"\d[:T_]\d", value):
            return False
        for run in _LETTER_RUN.findall(value.lower()):
            common = run in self.names or run in self.places
            if len(run) > 3 and (run not in self.words or common):
                return False
        numbers = re.findall(r"\d+", value)
        return not (len(numbers) == 3 and _reads_as_date(*numbers))  # a date as a whole

    def text_allowed(self, value: str) -> bool:
        if len(value) > LONGEST:
            return False
        text = unicodedata.normalize("NFKC", value)
        if any(p.search(text) for p in (_MAIL, _LINK, _ERA_DATE, _POSTCODE)):
            return False
        if any(not self._groups_ok(m, text) for m in _GROUPS.finditer(text)):
            return False
        for run in (*_PLUS_DIGITS.finditer(text), *_SPACED_DIGITS.finditer(text)):
            if sum(c.isdigit() for c in run.group(0)) >= 7:
                return False
        found = list(_SPLIT.finditer(text))
        glued = [m.start() > 0 and text[m.start() - 1] in "+-" for m in found]  # +C: no initial
        return self._tokens_ok([m.group(0) for m in found], glued)

    def _groups_ok(self, match: re.Match[str], text: str) -> bool:
        """Joined digit groups: a decimal, a measurement or a version; never a date, a time,
        an ID, a telephone number or an ID-length run."""
        head, tail, dot = match.group(1), match.group(2), match.group(3)
        numbers = [head, *re.findall(r"\d+", tail)]
        if max(len(n) for n in numbers) > 4 or re.search(r"[:_T]", tail):
            return False
        if _telephone(numbers) or _any_date(numbers) or _month_and_year(numbers):
            return False
        if "." not in tail and sum(map(len, numbers)) >= 6:
            return False  # an ID or a telephone number
        if len(numbers) > 2:
            return True  # a version
        unit = re.match(r"\s*([^\W\d_]+)", text[match.end() :])
        unit_words = _ASCII_RUN.findall(_ascii(unit[1])) if unit is not None else []
        if unit_words and not dot and "/" not in tail and set(unit_words) <= self.units:
            return True  # a measurement with its unit: 1.5 mm, 5-10 mm
        a, b = int(head), int(numbers[1])
        if tail.startswith(".") and not dot:
            return not (1 <= a <= 31 and 1 <= b <= 12 and len(numbers[1]) == 2)
        return not ((1 <= a <= 31 and 1 <= b <= 12) or (1 <= a <= 12 and 1 <= b <= 31))

    def _tokens_ok(self, tokens: list[str], glued: list[bool]) -> bool:
        letters = [_letters(t) for t in tokens]
        shapes = [self._shape(t) for t in tokens]
        for i, shape in enumerate(shapes):
            if shape == "bad":
                return False
            if shape in ("number", "ordinal") and self._beside_month(letters, i):
                return False
            if shape == "ordinal" and not self._ordinal_ok(letters, shapes, i):
                return False
            if shape == "name" and self._reads_as_name(tokens, letters, shapes, glued, i):
                return False
        return not (self._date_in_a_row(tokens, letters) or self._old_age(tokens, letters))

    def _shape(self, token: str) -> str:
        """bad, number, ordinal, code, word or name (a word that is also a name or a place)."""
        if _ORDINAL_SUFFIX.fullmatch(token):
            return "ordinal" if len(token) <= 4 else "bad"
        parts = [len(run) for run in re.findall(r"\d+", token)]
        digits = max(parts, default=0) if "." in token else sum(parts)  # 1.5: each part
        if digits > 4:
            return "bad"
        if token.isdigit():
            return "bad" if len(token) == 4 and YEARS[0] <= int(token) <= YEARS[1] else "number"
        if re.fullmatch(r"\d+\.\d+", token):
            return "number"  # a decimal
        letters = [r for r in _runs(token) if not r.isdigit()]
        if parts:
            ok = all(  # SAT2 passes (a word, one digit), 14MAR does not
                (r in self.words or (len(r) <= 2 and not r.startswith("~")))
                and (r not in self.months or (r in self.words and digits == 1))
                for r in letters
            )
            return "code" if ok else "bad"
        if len(letters) == 1 and len(letters[0]) == 1:
            return "word"
        letters = self._split_case(token, letters)
        if not letters or not all(r in self.words for r in letters):
            return "bad"
        glued = len(letters) > 1 and any(
            r in self.titles or r in self.names or r in self.places for r in letters
        )
        if glued:
            return "bad"  # DrBrown, BrownFat
        return "name" if any(self._name_or_place(r) for r in letters) else "word"

    def _split_case(self, token: str, letters: list[str]) -> list[str]:
        """A word written in camel case (SpinalCord) read as its words, unless whole it is one
        (mpMRI)."""
        if all(r in self.words for r in letters):
            return letters
        return [r for w in _case_words(token) for r in _runs(w) if not r.isdigit()]

    def _name_or_place(self, word: str) -> bool:
        return word in self.names or word in self.rare_names or word in self.places

    def _beside_month(self, letters: list[str], i: int) -> bool:
        near = letters[max(i - 2, 0) : i] + letters[i + 1 : i + 3]
        return any(r in self.months for text in near for r in text.split())

    def _ordinal_ok(self, letters: list[str], shapes: list[str], i: int) -> bool:
        if i + 1 >= len(letters) or shapes[i + 1] not in ("word", "name"):
            return False
        return letters[i + 1] not in _OF

    def _reads_as_name(
        self, tokens: list[str], letters: list[str], shapes: list[str], glued: list[bool], i: int
    ) -> bool:
        word = letters[i]
        for j in range(max(i - 3, 0), i):
            modality = tokens[j] in _CAPITAL_MODALITIES and word in self.body_parts
            if letters[j] in self.titles and not modality:
                return True
        if word in self.body_parts or not (word in self.names or word in self.places):
            return False
        if i + 1 < len(tokens) and letters[i + 1] in self.post_nominals:
            return True
        if any(
            letters[j] in self.institutions for j in range(max(i - 3, 0), min(i + 4, len(letters)))
        ):
            return True
        for size in (2, 3, 4):
            for start in range(max(i - size + 1, 0), i + 1):
                if " ".join(letters[start : start + size]) in self.phrases:
                    return False
        neighbours = [j for j in (i - 1, i + 1) if 0 <= j < len(tokens)]
        for j in neighbours:
            initial = shapes[j] == "word" and len(letters[j]) == 1 and not glued[j]
            common = letters[j] in self.names or letters[j] in self.places
            if initial or (shapes[j] == "name" and common):
                return True
        capital = tokens[i][:1].isupper() and not tokens[i].isupper()
        return capital and any(tokens[j].isalpha() and tokens[j].islower() for j in neighbours)

    def _date_in_a_row(self, tokens: list[str], letters: list[str]) -> bool:
        parts: list[str | None] = []
        for token, text in zip(tokens, letters, strict=True):
            roman = _ROMAN.get(text) if token.isalpha() else None
            parts.append(token if token.isdigit() else (str(roman) if roman else None))
        for i in range(len(parts) - 2):
            window = parts[i : i + 3]
            if all(p is not None for p in window) and _reads_as_date(*[p or "" for p in window]):
                return True
        return False

    def _old_age(self, tokens: list[str], letters: list[str]) -> bool:
        for i, token in enumerate(tokens):
            digits = re.match(r"\d+", token)
            if digits is None or not 90 <= int(digits.group(0)) <= 150:
                continue
            near = [letters[j] for j in (i - 1, i + 1) if 0 <= j < len(tokens)]
            if letters[i] in _AGES or any(w in _AGES for w in near):
                return True
        return False
