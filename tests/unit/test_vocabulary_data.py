"""The allow-list vocabulary shipped as data: the files are what build.py writes, they hold the
words real descriptors need, and none that write a date or are only a person's name."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

VOCABULARY = Path(__file__).resolve().parents[2] / "gateway" / "deidentify" / "data" / "vocabulary"

MONTHS = [
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
    *("jan", "feb", "apr", "jun", "jul", "aug", "sep", "nov"),
]
#: Month abbreviations that are also technical words (curated/date_homonyms.txt): words, but
#: the numbers beside them still go (tests/unit/test_words.py).
HOMONYMS = ["mar", "oct", "dec", "sat"]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def entries(name: str) -> set[str]:
    """The entries of a vocabulary file: lines without their `#` comments."""
    lines = (VOCABULARY / name).read_text(encoding="utf-8").splitlines()
    return {line.split("#", 1)[0].strip() for line in lines} - {""}


@pytest.fixture(scope="module")
def words() -> set[str]:
    return entries("words.txt")


def test_shipped_files_are_what_build_writes() -> None:
    """A curated list edited without re-running build.py, or a new pydicom, fails here."""
    result = subprocess.run(
        [sys.executable, str(VOCABULARY / "build.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_words_are_folded_tokens_without_id_length_digits(words: set[str]) -> None:
    """Lower-case ASCII letters and digits, at most 4 digits, never a bare number."""
    bad = {w for w in words if not re.fullmatch(r"[a-z0-9]+", w) or re.search(r"\d{5}", w)}
    assert bad == set()
    assert {w for w in words if w.isdigit()} == set()


@pytest.mark.parametrize("description", ["CT CHEST W CONTRAST", "T1 MPRAGE SAG", "AX DWI B1000"])
def test_common_descriptors_keep_every_token(words: set[str], description: str) -> None:
    """A mixed token is listed whole (t1, b1000) and its letter runs are words (t, b)."""
    for token in re.findall(r"[a-z0-9]+", description.casefold()):
        assert token in words
        assert set(re.findall(r"[a-z]+", token)) <= words


@pytest.mark.parametrize("word", [*MONTHS, *WEEKDAYS, "smith", "jones", "mueller", "vanderheijden"])
def test_no_date_words_or_plain_surnames(words: set[str], word: str) -> None:
    assert word not in words


def test_clinical_words_that_are_common_names_are_marked(words: set[str]) -> None:
    names = entries("names.txt")
    expected = {"brown", "white", "green", "stone", "hill", "wood", "moore", "park", "hope"}
    assert expected | {"rose", "chester"} <= names
    assert names <= words
    # only animal breeds named these: towns and people, left out with the breed groups
    assert not {"king", "lee", "boston", "cambridge", "oldenburg"} & words


def test_rarer_names_are_marked_apart_from_common_ones(words: set[str]) -> None:
    """Surnames of a red-team's leaks ("Dr Hellman", "mother Grace Nyberg"); one that is not
    a word cannot leak and need not be listed."""
    rare_names = entries("rare_names.txt")
    expected = {"hellman", "schiff", "hertz", "nyberg"} & words
    assert expected <= rare_names
    assert rare_names <= words
    assert rare_names.isdisjoint(entries("names.txt"))


def test_places_are_marked(words: set[str]) -> None:
    """Places of a red-team's leaks ("OUTSIDE STUDY MAINE MEDICAL CENTER", "CT CHEST ex
    Leicester General Hospital") and UK counties of the curated list."""
    places = entries("places.txt")
    wanted = {"leicester", "maine", "kentucky", "hereford", "pittsburgh", "osaka"}
    counties = {"dorset", "wiltshire", "yorkshire"}
    assert (wanted | counties) & words <= places
    assert places <= words
    # generic words of place names name no place: Salt Lake City, Isle of Wight, United States
    assert not {"city", "lake", "isle", "united", "states", "north", "saint"} & places


def test_phrases_give_name_and_place_words_their_clinical_context() -> None:
    """A phrase holds a name or place word and a word that is no common name or place: "white
    matter", never a name or a place alone ("new york"). A rarer name counts as such a word
    (MATTER, MARROW): the cleaner takes one for a name only after a title."""
    names_and_places = entries("names.txt") | entries("places.txt")
    marked = names_and_places | entries("rare_names.txt")
    phrases = entries("phrases.txt")
    assert {"white matter", "gray matter", "bone marrow", "new york heart"} <= phrases
    assert "new york" not in phrases
    for phrase in phrases:
        found = phrase.split()
        assert 2 <= len(found) <= 4
        assert set(found) & marked
        assert {w for w in found if not w.isdigit()} - names_and_places, phrase


def test_narrative_elements() -> None:
    expected = {
        "PatientComments",
        "AdditionalPatientHistory",
        "ImageComments",
        "Occupation",
        "ReasonForStudy",
        "ReasonForTheRequestedProcedure",
        "RequestedProcedureComments",
        "VisitComments",
    }
    narrative = entries("narrative.txt")
    assert expected <= narrative
    assert {"TextValue", "UnformattedTextValue"}.isdisjoint(narrative)


def test_body_part_examined_defined_terms() -> None:
    coded = json.loads((VOCABULARY / "coded.json").read_text(encoding="utf-8"))
    assert {"HEAD", "CHEST"} <= set(coded["BodyPartExamined"])


def test_date_homonyms_are_words_and_still_date_words(words: set[str]) -> None:
    months = entries("months.txt")
    assert set(HOMONYMS) <= words
    assert {w for line in months for w in line.split()} >= set(HOMONYMS)


def test_the_docs_list_every_narrative_attribute() -> None:
    docs = " ".join((VOCABULARY.parents[3] / "docs" / "deidentify.md").read_text().split())
    missing = [k for k in entries("narrative.txt") if f" {k}`" not in docs]
    assert missing == []
