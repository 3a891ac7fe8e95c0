"""Free text: identifiers the header does not name must not get through (STYLE 4a).

Each case plants one identifier of a leak class (`tests.leak_corpus`: a relative, another
clinician, a hospital, a nickname, an address, an e-mail, a URL, letters without an accent-free
decomposition, glued names, dates written otherwise, an MRN, a telephone number, the kana
reading of a kanji name, a rare occupation, a name that is also a word) inside clinical text of
one kept text attribute, at the top level, one sequence level down and three levels down. The
patient's own name shares no word with it: a deny-list of the instance's values cannot know it.

1. The engine's output holds no form of the plant (any case, accents, width, transliteration,
   words joined by " ", "^" or nothing). Narrative attributes are removed by default, and kept
   only cleaned when a site lists them in `keep_cleaned`: both are tried.
2. The release check, given an output the engine did NOT clean (its real output with the planted
   value put back at its path), holds it, naming that path: for narrative attributes under
   `keep_cleaned`, so that the attribute is allowed and the text itself must be caught.

Controls: vocabulary-only text keeps every token and passes the release check; the needles are
found in every original and in no clean output (a failure above is a leak, not a test bug).
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from gateway.deidentify.engine import Engine
from gateway.release import Finding, PixelEvidence, ReleaseCheck
from gateway.release.check import NOT_ALLOWED
from gateway.settings import DeidentifySettings
from gateway.vault.sqlite import SqliteVault
from tests.dicom_builders import part10, synthetic
from tests.leak_corpus import (
    CHARSET,
    DEPTHS,
    ELEMENTS,
    LEAK_CLASSES,
    PATIENT,
    SHORT,
    Element,
    LeakClass,
    Plant,
    chain,
    leaked,
    needles,
    plant_for,
)

SETTINGS = DeidentifySettings()
NO_PIXELS = PixelEvidence(has_pixels=False, checked=False, masked=0, skipped_by_site=False)
MAX_LENGTH = {"SH": SHORT, "CS": SHORT, "LO": 64, "ST": 1024, "LT": 10240}  # PS3.5 6.2


class Lab:
    """Engines and release checks on one vault, one of each per settings."""

    def __init__(self, vault: SqliteVault) -> None:
        self.vault = vault
        self._engines: dict[DeidentifySettings, Engine] = {}
        self._checks: dict[DeidentifySettings, ReleaseCheck] = {}

    def run(self, settings: DeidentifySettings, original: bytes) -> bytes:
        engine = self._engines.get(settings)
        if engine is None:
            engine = self._engines[settings] = Engine(settings, self.vault, ae_title="GW")
        return engine.run(original).data

    def check(self, settings: DeidentifySettings, original: bytes, output: bytes) -> list[Finding]:
        check = self._checks.get(settings)
        if check is None:
            check = self._checks[settings] = ReleaseCheck(settings)
        return check.check(original, output, NO_PIXELS)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    vault = SqliteVault(Path(tmp_path_factory.mktemp("vault")) / "v.sqlite3", b"f" * 32)
    yield Lab(vault)
    vault.close()


def keeping(element: Element) -> DeidentifySettings:
    """The defaults, and for a narrative attribute the site's choice to keep it cleaned."""
    if not element.narrative:
        return SETTINGS
    if "keep_cleaned" not in {field.name for field in dataclasses.fields(DeidentifySettings)}:
        pytest.fail("DeidentifySettings has no keep_cleaned option yet", pytrace=False)
    return dataclasses.replace(SETTINGS, keep_cleaned=(element.keyword,))


# -- placing values at a path ------------------------------------------------------------------


def put(ds: Dataset, sequences: tuple[str, ...], keyword: str, value: str) -> None:
    """Set `keyword` in the first item of the nested `sequences`, making what is missing."""
    for sequence in sequences:
        if not ds.get(sequence):
            setattr(ds, sequence, [Dataset()])
        ds = getattr(ds, sequence)[0]
    setattr(ds, keyword, value)


def value_at(data: bytes, sequences: tuple[str, ...], keyword: str) -> str | None:
    """The value at a path of a Part 10 file (multi-values joined), None when absent."""
    ds = pydicom.dcmread(io.BytesIO(data))
    for sequence in sequences:
        if not ds.get(sequence):
            return None
        ds = getattr(ds, sequence)[0]
    if keyword not in ds:
        return None
    value = ds[keyword].value
    return "\\".join(map(str, value)) if isinstance(value, list | tuple) else str(value or "")


def tag_path(sequences: tuple[str, ...], keyword: str) -> str:
    """The release check's `where` for a value in the first items of `sequences`."""

    def tag(name: str) -> str:
        number = tag_for_keyword(name)
        assert number is not None, name
        return f"({number >> 16:04X},{number & 0xFFFF:04X})"

    return "".join(f"{tag(s)}[0]." for s in sequences) + tag(keyword)


def put_back(output: bytes, sequences: tuple[str, ...], keyword: str, value: str) -> bytes:
    """An output as a de-identifier that missed `value` would have written it."""
    ds = pydicom.dcmread(io.BytesIO(output))
    ds.SpecificCharacterSet = CHARSET
    put(ds, sequences, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def instance(element: Element, depth: str, value: str, patient: str = PATIENT) -> bytes:
    """A UTF-8 secondary capture of `patient` with `value` in `element` at `depth`."""
    ds = synthetic(SpecificCharacterSet=CHARSET, PatientName=patient)
    put(ds, chain(element, depth), element.keyword, value)
    return part10(ds)


# -- the cases ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Placement:
    """One plant of a leak class in one element at one depth."""

    leak: LeakClass
    element: Element
    depth: str

    @property
    def plant(self) -> Plant:
        return plant_for(self.leak, self.element, self.depth)

    @property
    def value(self) -> str:
        return self.element.value(self.plant)

    @property
    def sequences(self) -> tuple[str, ...]:
        return chain(self.element, self.depth)

    @property
    def path(self) -> str:
        return tag_path(self.sequences, self.element.keyword)

    @property
    def needles(self) -> set[str]:
        return needles(self.plant.written(self.element.vr), self.plant)

    def original(self) -> bytes:
        return instance(self.element, self.depth, self.value, self.leak.patient)

    def __str__(self) -> str:
        return f"{self.leak.name}-{self.element.keyword}-{self.depth}"


PLACEMENTS = [
    Placement(leak, element, depth)
    for leak in LEAK_CLASSES
    for element in ELEMENTS
    for depth in DEPTHS
]
NARRATIVE_PLACEMENTS = [p for p in PLACEMENTS if p.element.narrative]
SPOTS = [(element, depth) for element in ELEMENTS for depth in DEPTHS]
NARRATIVE_SPOTS = [(element, depth) for element, depth in SPOTS if element.narrative]


def spot_id(spot: tuple[Element, str]) -> str:
    return f"{spot[0].keyword}-{spot[1]}"


def leak_message(placement: Placement, found: list[str], output: bytes) -> str:
    now = value_at(output, placement.sequences, placement.element.keyword)
    return f"{placement.value!r} at {placement.path}: output holds {found}, value now {now!r}"


# -- 1. the engine -----------------------------------------------------------------------------


@pytest.mark.parametrize("placement", PLACEMENTS, ids=str)
def test_the_engine_leaves_no_form_of_a_planted_identifier(lab: Lab, placement: Placement) -> None:
    """Narrative attributes under `keep_cleaned`: kept, so their cleaning is what is tested."""
    original = placement.original()
    assert leaked(placement.needles, original), "test bug: the plant is not in the original"
    output = lab.run(keeping(placement.element), original)
    found = leaked(placement.needles, output)
    if found:
        pytest.fail(leak_message(placement, found, output), pytrace=False)


@pytest.mark.parametrize("placement", NARRATIVE_PLACEMENTS, ids=str)
def test_narrative_is_removed_by_default(lab: Lab, placement: Placement) -> None:
    """Without `keep_cleaned` the attribute goes, whatever Clean Descriptors says."""
    output = lab.run(SETTINGS, placement.original())
    now = value_at(output, placement.sequences, placement.element.keyword)
    found = leaked(placement.needles, output)
    if now is not None or found:
        pytest.fail(leak_message(placement, found, output), pytrace=False)


# -- 2. the release check, alone ---------------------------------------------------------------


@pytest.mark.parametrize("placement", PLACEMENTS, ids=str)
def test_the_release_check_holds_a_planted_identifier_the_engine_missed(
    lab: Lab, placement: Placement
) -> None:
    """The engine's real output with the planted value put back: the check reads the text
    itself (a narrative attribute is allowed here, by `keep_cleaned`)."""
    settings = keeping(placement.element)
    original = placement.original()
    output = lab.run(SETTINGS, original)
    missed = put_back(output, placement.sequences, placement.element.keyword, placement.value)
    now = value_at(missed, placement.sequences, placement.element.keyword)
    assert now == placement.value, "test bug: the value was not put back"
    findings = lab.check(settings, original, missed)
    if not any(finding.where == placement.path for finding in findings):
        message = f"{placement.value!r} at {placement.path} passed; findings: {findings}"
        pytest.fail(message, pytrace=False)


@pytest.mark.parametrize("spot", NARRATIVE_SPOTS, ids=spot_id)
def test_the_release_check_holds_narrative_the_site_did_not_keep(
    lab: Lab, spot: tuple[Element, str]
) -> None:
    """Vocabulary-only text, but in an attribute the site's options do not allow."""
    element, depth = spot
    sequences = chain(element, depth)
    original = instance(element, depth, element.value(None))
    output = put_back(lab.run(SETTINGS, original), sequences, element.keyword, element.value(None))
    findings = lab.check(SETTINGS, original, output)
    expected = Finding(NOT_ALLOWED, tag_path(sequences, element.keyword))
    assert expected in findings


# -- controls: utility kept, no false alarm, needles that find what they should -----------------


@pytest.mark.parametrize("spot", SPOTS, ids=spot_id)
def test_vocabulary_only_text_keeps_every_token(lab: Lab, spot: tuple[Element, str]) -> None:
    """The carriers of the plants above, alone: clinical words that must stay."""
    element, depth = spot
    clean = element.value(None)
    output = lab.run(keeping(element), instance(element, depth, clean))
    now = value_at(output, chain(element, depth), element.keyword)
    assert (now or "").split() == clean.split()


@pytest.mark.parametrize("spot", SPOTS, ids=spot_id)
def test_vocabulary_only_text_passes_the_release_check(lab: Lab, spot: tuple[Element, str]) -> None:
    """No false alarm: a finding above is the plant's, not the carrier's."""
    element, depth = spot
    settings = keeping(element)
    original = instance(element, depth, element.value(None))
    assert lab.check(settings, original, lab.run(settings, original)) == []


@pytest.mark.parametrize("element", ELEMENTS, ids=lambda e: e.keyword)
def test_no_needle_is_found_in_a_clean_output(lab: Lab, element: Element) -> None:
    """The searches do not mistake the carrier, pseudonyms, UIDs or provenance for a plant."""
    output = lab.run(SETTINGS, instance(element, "deep", element.value(None)))
    for leak in LEAK_CLASSES:
        for plant in leak.plants:
            assert leaked(needles(plant.written(element.vr), plant), output) == [], plant


def test_every_planted_value_fits_its_vr() -> None:
    """An over-long value would be a reading warning (an error in tests), not a leak."""
    too_long = [str(p) for p in PLACEMENTS if len(p.value) > MAX_LENGTH[p.element.vr]]
    assert too_long == []


@dataclasses.dataclass(frozen=True)
class Kept:
    """A value that must come out as it went in, for a patient whose name may share a word."""

    name: str
    keyword: str
    value: str
    patient: str = PATIENT
    sequences: tuple[str, ...] = ()

    def original(self) -> bytes:
        ds = synthetic(SpecificCharacterSet=CHARSET, PatientName=self.patient)
        put(ds, self.sequences, self.keyword, self.value)
        return part10(ds)


KEPT = [
    Kept("series-ct-chest", "SeriesDescription", "CT CHEST W CONTRAST"),
    Kept("series-t1-mprage", "SeriesDescription", "T1 MPRAGE SAG"),
    Kept("series-ax-dwi", "SeriesDescription", "AX DWI B1000"),
    Kept("series-white-matter", "SeriesDescription", "WHITE MATTER"),
    Kept("roi-white-matter", "ROIName", "WHITE MATTER", sequences=("StructureSetROISequence",)),
    Kept("body-part-head-of-patient-head", "BodyPartExamined", "HEAD", "Head^Ingrid"),
    Kept("modality-ct", "Modality", "CT"),
    Kept("modality-mr-of-patient-mr", "Modality", "MR", "Mr^Ingrid"),
    Kept("modality-ct-of-patient-ct", "Modality", "CT", "Ct^Ingrid"),
    Kept("modality-us-of-patient-us", "Modality", "US", "Us^Ingrid"),
    Kept("modality-pt-of-patient-pt", "Modality", "PT", "Pt^Ingrid"),
]


@pytest.mark.parametrize("kept", KEPT, ids=lambda k: k.name)
def test_clinical_values_are_kept_whole(lab: Lab, kept: Kept) -> None:
    """Clinical words stay, even the ones that are also the patient's name ("Head^Ingrid")."""
    output = lab.run(SETTINGS, kept.original())
    assert value_at(output, kept.sequences, kept.keyword) == kept.value


@pytest.mark.parametrize("kept", KEPT, ids=lambda k: k.name)
def test_clinical_values_kept_pass_the_release_check(lab: Lab, kept: Kept) -> None:
    """What the engine keeps on purpose is not quarantined."""
    original = kept.original()
    assert lab.check(SETTINGS, original, lab.run(SETTINGS, original)) == []
