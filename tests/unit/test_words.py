"""The allow-list of words: the de-identifier's cleaner and the release check's own verifier.

The cleaner (gateway.deidentify.words) keeps known tokens; the verifier (gateway.release.words)
says whether a text holds only allowed ones. Each class of leak is removed by the first and
refused by the second; common descriptors pass both untouched; and whatever the cleaner
returns, the verifier accepts (else every instance would be quarantined).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from anyascii import anyascii
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.deidentify.words import Cleaner, Vocabulary
from gateway.errors import VocabularyError
from gateway.release.words import Lexicon


@functools.cache
def _both() -> tuple[Cleaner, Lexicon]:
    return Cleaner(Vocabulary.load()), Lexicon.load(None)


@pytest.fixture
def cleaner() -> Cleaner:
    return _both()[0]


@pytest.fixture
def lexicon() -> Lexicon:
    return _both()[1]


KEPT = [
    "CT CHEST W CONTRAST",
    "T1 MPRAGE SAG",
    "AX DWI B1000",
    "WHITE MATTER",
    "4th ventricle",
    "Slice thickness 1.5 mm",
    "5-10 mm",
    "C3-C7",
    "FAT SAT",
    "MR BRAIN W WO CONTRAST",  # MR is no Mr, BRAIN no surname here
    "CT HEAD",
    "syngo CT VA48A 2.1.0",  # a version is no date
    "AX T1 FAT SAT POST",  # SAT is a weekday too: the code beside it stays
    "OCT 3D MACULA",
    "Bone 1.25mm",
    "CT CHEST HIGH RES",
    "512 512",
    "51.80.108.010",
    "ISOVUE300/100",
]

# Each: a text with something identifying in it, and the planted part that must not survive
LEAKS = [
    ("relative", "CT HEAD mother Ingrid Sorbøe", "Ingrid Sorbøe"),
    ("clinician", "per Dr Wojciech Łukaszewicz", "Łukaszewicz"),
    ("clinician-word-name", "seen by Dr Rose Brown", "Rose Brown"),
    ("title-word-names", "Mrs Hope King called", "Hope King"),
    ("relative-named-like-a-body-part", "mother Ingrid Head", "Head"),
    ("capitals-title", "DR BROWN", "BROWN"),
    ("hospital", "referred from St Brendanus Hospital Tralee", "Brendanus"),
    ("nickname", "pt known as Bubba", "Bubba"),
    ("address", "14 Larkspur Crescent", "Larkspur"),
    ("email", "report to m.vasquez@example-clinic.org", "vasquez@example"),
    ("url", "see https://intra.example.org/p?id=7", "intra.example.org"),
    ("o-slash", "ØSTERGÅRD CHEST", "ØSTERGÅRD"),
    ("l-stroke", "ŁUCZAK", "ŁUCZAK"),
    ("ae", "ÆRENLUND", "ÆRENLUND"),
    ("d-stroke", "ĐORĐEVIĆ", "ĐORĐEVIĆ"),
    ("thorn", "ÞÓRSDÓTTIR", "ÞÓRSDÓTTIR"),
    ("sharp-s", "GROßMANN", "GROßMANN"),
    ("glued", "VANDERHEIJDEN", "VANDERHEIJDEN"),
    ("mc", "McDonagh", "McDonagh"),
    ("apostrophe", "O'Brien", "Brien"),
    ("particle", "van der Heijden", "Heijden"),
    ("date-underscore", "CT 2019_03_14", "2019_03_14"),
    ("iso-datetime", "2019-03-14T10:22:05", "10:22"),
    ("ordinal-of", "14th of March", "14th"),
    ("month-day", "Mar 14", "Mar 14"),
    ("day-month", "14 Mar", "14 Mar"),
    ("day-mon-dash", "14-MAR", "14-MAR"),
    ("day-month-dots", "seen 14.03.", "14.03"),
    ("ordinal-date", "3rd May 2019", "2019"),
    ("mrn", "MRN 48213377", "48213377"),
    ("phone", "call +47 912 34 567", "912 34 567"),
    ("katakana", "ヤマダ", "ヤマダ"),
    ("half-width-kana", "ﾔﾏﾀﾞ", "ﾔﾏﾀﾞ"),
    ("occupation", "falconer", "falconer"),
    ("year", "CT 1958", "1958"),
    ("dotted-date", "seen 14.03.2019", "14.03.2019"),
    # found by a red team: initials, post-nominals, places, spaced and Roman dates, ages, IDs
    ("initial", "J. Brown", "Brown"),
    ("initials-after-title", "Dr J R Brown", "Brown"),
    ("pn-initial", "BROWN^J", "BROWN"),
    ("title-after", "Brown, Dr", "Brown"),
    ("post-nominal", "BROWN MD", "BROWN"),
    ("rare-surname", "seen by Dr Hellman", "Hellman"),
    ("relative-rare-surname", "mother Grace Nyberg", "Nyberg"),
    ("role-title", "ATTENDING BROWN", "BROWN"),
    ("place-hospital", "CT CHEST ex Leicester General Hospital", "Leicester"),
    ("place-center", "OUTSIDE STUDY MAINE MEDICAL CENTER", "MAINE"),
    ("id-dashed", "MRN 4821-3377", "4821-3377"),
    ("phone-two-groups", "ph 555 0199", "555 0199"),
    ("phone-dashed", "tel 555-0199", "555-0199"),
    ("spaced-date", "DOB 14 3 58", "14 3 58"),
    ("roman-month", "born 14 III 58", "14 III 58"),
    ("era-date", "seen H30.3.14", "H30.3.14"),
    ("glued-month", "CT 14MAR", "14MAR"),
    ("old-age", "age 94", "94"),
    ("old-age-glued", "94yo", "94yo"),
    ("han-surname", "CT 李", "李"),
    ("hangul-surname", "박 교수", "박"),
    ("uk-postcode", "lives LE1 5WW", "LE1 5WW"),
    ("canadian-postcode", "M5G 2C4", "M5G 2C4"),
    # found by a second red team
    ("day-month-before-a-word", "prior 3/14 study", "3/14"),
    ("dotted-day-month-before-a-word", "14.03 CT Thorax", "14.03"),
    ("cjk-date", "2019년 3월 14일 CT", "14일"),
    ("cjk-year", "1958年", "1958年"),
    ("institution-over-phrase", "Alaska Native Medical Center", "Alaska"),
    ("dotted-phone", "call 555.867.5309", "555.867.5309"),
    ("id-trailing-dot", "left 94-3377.", "94-3377"),
    ("month-year", "seen 03/2019", "03/2019"),
    ("month-short-year", "born 03/58", "03/58"),
    ("short-year-first", "58-03-14", "58-03-14"),
    ("id-three-groups", "MRN 12-34-56", "12-34-56"),
    ("age-with-sex", "94M", "94M"),
    ("role-before-name", "SONOGRAPHER HARRIS", "HARRIS"),
    ("camel-title-name", "seen DrBrown", "DrBrown"),
    ("camel-names", "JohnSmith", "JohnSmith"),
    ("us-date-short-year", "CT 3-14-19", "3-14-19"),
]


def _forms(planted: str) -> list[str]:
    return [planted.casefold(), anyascii(planted).casefold()]


@pytest.mark.parametrize("text", KEPT)
def test_common_descriptors_keep_every_token(cleaner: Cleaner, lexicon: Lexicon, text: str) -> None:
    assert cleaner.text(text) == (text, 0)
    assert lexicon.text_allowed(text)


@pytest.mark.parametrize(("text", "planted"), [c[1:] for c in LEAKS], ids=[c[0] for c in LEAKS])
def test_each_class_is_removed_by_the_cleaner_and_refused_by_the_verifier(
    cleaner: Cleaner, lexicon: Lexicon, text: str, planted: str
) -> None:
    cleaned, removed = cleaner.text(text)
    assert removed > 0
    for form in _forms(planted):
        assert form not in cleaned.casefold()
        assert form not in anyascii(cleaned).casefold()
    assert not lexicon.text_allowed(text)
    assert lexicon.text_allowed(cleaned)


def test_a_name_word_stays_in_a_clinical_phrase_and_without_name_context(
    cleaner: Cleaner, lexicon: Lexicon
) -> None:
    assert cleaner.text("brown fat")[0] == "brown fat"
    assert cleaner.text("WHITE MATTER HYPERINTENSITY")[1] == 0
    assert cleaner.text("Dr White")[0] == "Dr"
    assert lexicon.text_allowed("WHITE MATTER")
    assert not lexicon.text_allowed("Dr White")
    assert not lexicon.text_allowed("HOPE KING")


def test_coded_values_are_kept_whole_or_emptied(cleaner: Cleaner, lexicon: Lexicon) -> None:
    body_part = 0x00180015
    assert cleaner.code(body_part, "HEAD") == ("HEAD", 0)
    assert cleaner.code(body_part, "CHEST") == ("CHEST", 0)
    assert cleaner.code(body_part, "SMITHSON")[0] == ""
    assert cleaner.code(0x00080008, "ORIGINAL") == ("ORIGINAL", 0)
    assert lexicon.code_allowed(body_part, "HEAD")
    assert not lexicon.code_allowed(body_part, "SMITHSON")


def test_a_site_word_file_adds_words(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("# our scanner room names\nZYLOPHAX\nbrachy-suite # a room\n")
    assert Cleaner(Vocabulary.load()).text("ZYLOPHAX CT")[0] == "CT"
    assert Cleaner(Vocabulary.load(path)).text("ZYLOPHAX CT") == ("ZYLOPHAX CT", 0)
    assert Lexicon.load(path).text_allowed("zylophax brachy suite")


@pytest.mark.parametrize(
    ("line", "problem"),
    [("two words", "one word per line"), ("ID123456", "digits"), ("March", "month")],
)
def test_a_malformed_site_word_file_names_its_line(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "words.txt"
    path.write_text(f"# comment\nZYLOPHAX\n{line}\n")
    with pytest.raises(VocabularyError, match=rf"{path}: line 3: .*{problem}"):
        Vocabulary.load(path)


_PIECES = st.sampled_from(
    [
        "CT",
        "CHEST",
        "brown",
        "White",
        "MATTER",
        "Dr",
        "Rose",
        "mother",
        "14",
        "2019",
        "3rd",
        "ventricle",
        "Mar",
        "May",
        "1.5",
        "mm",
        "12/03",
        "T1",
        "B1000",
        "Ø",
        "ŁUCZAK",
        "x@y.z",
        "+47",
        "912",
        "34",
        "567",
        "2019-03-14T10:22",
        "of",
        "C+",
        "SAT",
        "FAT",
        "(",
        ")",
        "-",
        "ヤマダ",
        "KING",
        "HOPE",
        "14.03.",
        "5-10",
        "by",
        "Zorblat",
        "AX",
        "HEAD",
        "Brain",
        "MR",
        "Ingrid",
        "ED",
        "2.1.0",
        "14.03.2019",
        "51.80.108.010",
        "ISOVUE300/100",
        "3-14-19",
        "李",
        "J",
        "MD",
        "Hospital",
        "LE1",
        "5WW",
        "III",
        "58",
        "94",
        "age",
        "Maine",
        "Nyberg",
        "4821-3377",
        "H30.3.14",
        "+C",
        "555.867.5309",
        "03/2019",
        "年",
        "Medical",
        "SONOGRAPHER",
        "94M",
        "3/14",
        "SpinalCord",
        "DrBrown",
        "HeartRate",
        "mpMRI",
        "ÉcoleNormale",
        "PRVSpinal",
    ]
)


@settings(max_examples=2000, deadline=None)
@given(st.lists(_PIECES, min_size=1, max_size=10), st.sampled_from([" ", "", "_", "/", ", "]))
def test_the_verifier_accepts_whatever_the_cleaner_keeps(pieces: list[str], separator: str) -> None:
    cleaner, lexicon = _both()
    cleaned, _ = cleaner.text(separator.join(pieces))
    assert lexicon.text_allowed(cleaned), cleaned


@pytest.mark.parametrize(
    ("code", "kept"),
    [
        ("51185008", True),  # SNOMED CT: a long number
        ("T-D3000", True),
        ("5.6.3-9-61", True),  # SCPECG
        ("TOU0065", True),  # a local procedure code
        ("SIEMENS_RIS", True),  # a vendor's scheme (Siemens is a rarer name: only after Dr)
        ("99LOCAL", True),
        ("1958-03-14", False),  # a date
        ("2019-03-14T10:22", False),
        ("JOHN.DOE", False),  # no code has a 4-letter run that is not a word
        ("MAINE", False),  # a place
    ],
)
def test_codes_of_coded_entries_pass_by_their_shape(
    cleaner: Cleaner, lexicon: Lexicon, code: str, kept: bool
) -> None:
    code_value = 0x00080100
    assert (cleaner.code(code_value, code) == (code, 0)) is kept
    assert lexicon.code_allowed(code_value, code) is kept


def test_a_code_before_a_date_stays_and_the_date_goes(cleaner: Cleaner, lexicon: Lexicon) -> None:
    """B1000's digits and a year after it are no telephone number (found in the daemon test)."""
    assert cleaner.text("AX DWI B1000 2019_03_14") == ("AX DWI B1000", 1)
    assert cleaner.text("AX DWI B1000 2019 1234")[0] == "AX DWI B1000"
    assert lexicon.text_allowed("AX DWI B1000")
