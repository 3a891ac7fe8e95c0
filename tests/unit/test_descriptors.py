"""Clean Descriptors and the identifier scrub: what goes, what stays."""

from __future__ import annotations

import pytest

from gateway.deidentify.descriptors import Identifiers, date_forms
from gateway.deidentify.pseudonyms import normalise_name, patient_key


@pytest.fixture
def ids() -> Identifiers:
    found = Identifiers()
    found.add_name("O'Brien^Mary-Kate^^Dr")
    found.add_id("MRN0042817")
    found.add_id("1")  # a study counter, too short to be an identifier
    found.add_phrase("Royal  Free Hospital")
    found.add_date("19580307")
    return found


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("CT HEAD O'Brien", "CT HEAD O'"),  # name parts as words, any case
        ("mary kate obrien knee", "obrien knee"),  # not a word of the name: kept
        ("Royal Free Hospital MR knee", "MR knee"),  # institution as a phrase
        ("royal free hospital", ""),
        ("Free radicals study", "Free radicals study"),  # one word of a phrase is not it
        ("T1 SAG 3.0 1.5T series 1", "T1 SAG 3.0 1.5T series 1"),  # short numbers stay
        ("born 07/03/1958 knee", "born knee"),
        ("born 1958-03-07", "born"),
        ("ref MRN0042817 and 2021.11.05", "ref and"),
        ("call +44 (20) 7946 0958 now", "call now"),
        ("accession 88812345X", "accession"),  # 5+ digits in a word
    ],
)
def test_clean(ids: Identifiers, text: str, cleaned: str) -> None:
    assert ids.clean(text)[0] == cleaned


@pytest.mark.parametrize(
    ("name", "text", "cleaned"),
    [
        ("Müller^Jörg", "MUELLER knee", "knee"),  # German transliteration
        ("Müller^Jörg", "MULLER knee", "knee"),  # accents dropped
        ("Müller^Jörg", "Mu\u0308ller knee", "knee"),  # decomposed (NFD) umlaut
        ("Παπαδόπουλος^Γιώργος", "ΠΑΠΑΔΟΠΟΥΛΟΣ θώρακας", "θώρακας"),  # Greek capitals
        ("ヤマダ^タロウ", "ﾔﾏﾀﾞﾀﾛｳ 胸部CT", "胸部CT"),  # half-width katakana
        (  # full-width Latin
            "Yamada^Taro=山田^太郎",
            "\uff39\uff21\uff2d\uff21\uff24\uff21\u3000\uff34\uff21\uff32\uff2f 胸部",
            "胸部",
        ),
        ("Röntgen^Wilhelm", "Röntgen Thorax", "Thorax"),
        ("Other^Person", "Röntgen Thorax", "Röntgen Thorax"),  # untouched when no match
    ],
)
def test_names_match_whatever_the_case_accents_and_width(
    name: str, text: str, cleaned: str
) -> None:
    found = Identifiers()
    found.add_name(name)
    assert found.clean(text)[0] == cleaned


@pytest.mark.parametrize(
    "text",
    ["Royal Free  Hospital", "royal free\r\nhospital", "ROYAL\tFREE HOSPITAL"],
)
def test_phrases_match_across_any_whitespace(ids: Identifiers, text: str) -> None:
    assert ids.scrub(text) == ("", 1)


@pytest.mark.parametrize(
    "text", ["born 07-MAR-1958", "born 7 March 1958", "born 07MAR58", "born March 7, 1958"]
)
def test_dates_with_month_names_go(ids: Identifiers, text: str) -> None:
    assert ids.clean(text)[0] == "born"
    assert ids.scrub(text)[0] == "born"  # the birth date itself, in any of these forms


def test_scrub_removes_identifiers_but_keeps_numbers(ids: Identifiers) -> None:
    assert ids.scrub("Scanner 64 v12345 MARY") == ("Scanner 64 v12345", 1)
    assert ids.scrub("nothing to do") == ("nothing to do", 0)


def test_written_forms_of_a_date() -> None:
    forms = date_forms("19580307")
    assert {"1958-03-07", "07/03/1958", "03/07/1958", "07.03.58", "7.3.1958"} <= forms
    assert date_forms("1958") == set()


def test_one_patient_whatever_the_spelling_of_the_name() -> None:
    assert normalise_name("Doe^John^^^") == normalise_name("DOE^JOHN") == "doe^john"
    assert normalise_name("Doe ^ John") != normalise_name("Doe^Jon")
    a = patient_key("", "P1", "Doe^John", "1.2.3")
    assert a == patient_key(" ", "P1 ", "DOE^JOHN^^", "4.5.6")
    assert a != patient_key("", "P1", "Roe^Jane", "1.2.3")  # same ID, other patient
    assert a != patient_key("HOSP-B", "P1", "Doe^John", "1.2.3")  # other issuer
    # nothing to go on: a patient of its own study, never linked to other anonymous studies
    assert patient_key("", "", "", "1.2.3") != patient_key("", "", "", "4.5.6")
