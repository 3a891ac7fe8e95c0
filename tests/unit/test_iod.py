"""De-identification keeps the IOD (issue 16): what it requires present stays present, what it
requires valued keeps a fixed dummy, an optional sequence without items goes; retired date and
time forms are written in the current one. Real engine, real vault, real release check; the
whole shared material against dciodvfy is tests/integration/test_valid_dicom.py."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from gateway.deidentify import iod
from gateway.deidentify.engine import Engine
from gateway.deidentify.explain import explain
from gateway.deidentify.iod import Kind, Requirements
from gateway.release import PixelEvidence, ReleaseCheck
from gateway.release.allowed import FIXED_DUMMIES
from gateway.settings import DeidentifySettings
from gateway.vault.sqlite import SqliteVault
from tests.dicom_builders import item, part10, synthetic

CT = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"
PRIVATE_SOP_CLASS = "1.3.12.2.1107.5.9.1"  # a vendor's own SOP class: no IOD in PS3.3
NO_PIXELS = PixelEvidence(has_pixels=False, checked=False, masked=0, skipped_by_site=False)
UNKNOWN = "Qxzorblatt"  # no word of any vocabulary: cleaning leaves nothing of it
BUILD = Path(iod.__file__).parent / "data" / "iod" / "build.py"


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[SqliteVault]:
    store = SqliteVault(tmp_path / "vault.sqlite3", b"i" * 32)
    yield store
    store.close()


@dataclasses.dataclass(frozen=True)
class Run:
    original: bytes
    data: bytes  # the output
    output: Dataset
    counts: dict[str, int]
    findings: list[str]


def run(vault: SqliteVault, ds: Dataset, **options: Any) -> Run:
    settings = dataclasses.replace(DeidentifySettings(site_code="UT"), **options)
    data = part10(ds)
    done = Engine(settings, vault, ae_title="GATEWAY_UT").run(data)
    found = ReleaseCheck(settings).check(data, done.data, NO_PIXELS)
    return Run(
        data,
        done.data,
        pydicom.dcmread(io.BytesIO(done.data)),
        done.counts,
        [f"{f.reason} {f.where}" for f in found],
    )


def instance(sop_class: str, **values: Any) -> Dataset:
    """A synthetic instance of `sop_class`; values as given, valid for their VR or not (as
    an old archive writes them)."""
    with pydicom.config.disable_value_validation():
        return synthetic(SOPClassUID=sop_class, PatientName=f"{UNKNOWN}^Jan", **values)


def joined(value: Any) -> str:
    return value if isinstance(value, str) else "\\".join(value)


def code(value: str, meaning: str) -> Dataset:
    return item(CodeValue=value, CodingSchemeDesignator="99LOCAL", CodeMeaning=meaning)


# -- the tables ---------------------------------------------------------------------------------


def test_the_shipped_tables_are_what_build_writes() -> None:
    """types.json.gz is highdicom's PS3.3 tables as build.py reads them (a new highdicom or
    pydicom, or a hand edit, fails here)."""
    done = subprocess.run(
        [sys.executable, str(BUILD), "--check"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("sop_class", "path", "kind"),
    [
        (CT, ["StudyDate"], Kind.PRESENT),  # General Study, Type 2
        (CT, ["Modality"], Kind.VALUED),  # General Series, Type 1
        (CT, ["Laterality"], Kind.PRESENT_IF),  # General Series, Type 2C
        (CT, ["KVP"], Kind.PRESENT),  # CT Image, Type 2
        (CT, ["ReferencedStudySequence"], Kind.OPTIONAL),  # General Study, Type 3
        (CT, ["PatientAlternativeCalendar"], Kind.VALUED_IF),  # Patient, Type 1C
        (CT, ["ProcedureCodeSequence", "CodeValue"], Kind.VALUED_IF),  # code macro
        (CT, ["ProcedureCodeSequence", "CodeMeaning"], Kind.VALUED),
        (ENHANCED_CT, ["Manufacturer"], Kind.VALUED),  # Enhanced General Equipment
        (RT_STRUCTURE_SET, ["StructureSetLabel"], Kind.VALUED),
        (DX, ["RescaleType"], Kind.VALUED),
        (PRIVATE_SOP_CLASS, ["StudyDate"], Kind.OPTIONAL),
    ],
)
def test_an_attribute_has_its_type_in_the_iod_of_its_sop_class(
    sop_class: str, path: list[str], kind: Kind
) -> None:
    node = Requirements.load().for_sop_class(sop_class)
    for keyword in path[:-1]:
        node = node.item(pydicom.datadict.tag_for_keyword(keyword) or 0)
    assert node.kind(pydicom.datadict.tag_for_keyword(path[-1]) or 0) is kind


def test_the_tables_cover_the_storage_sop_classes() -> None:
    requirements = Requirements.load()
    assert requirements.iod(CT) == "ct-image"
    mapped = [uid for uid in requirements._sop_classes if requirements.iod(uid)]
    assert len(mapped) >= 150
    assert (
        len(requirements.for_sop_class(ENHANCED_CT).kinds)
        > len(requirements.for_sop_class(CT).kinds) / 2
    )


# -- removed, emptied, kept present --------------------------------------------------------------


def test_a_type_3_sequence_left_without_items_goes(vault: SqliteVault) -> None:
    """Table E.1-1 says X/Z for Referenced Study Sequence: Type 3 in the General Study module
    (dciodvfy: "Bad Sequence number of Items 0"), so it goes rather than stays empty."""
    reference = item(
        ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1", ReferencedSOPInstanceUID="1.2.3"
    )
    done = run(vault, instance(CT, ReferencedStudySequence=[reference]))
    assert "ReferencedStudySequence" not in done.output
    assert done.counts["removed"] >= 1
    assert done.findings == []


def test_an_empty_optional_sequence_of_the_input_goes_too(vault: SqliteVault) -> None:
    done = run(vault, instance(CT, ReferencedImageSequence=[], ProcedureCodeSequence=[]))
    assert "ReferencedImageSequence" not in done.output
    assert "ProcedureCodeSequence" not in done.output
    assert done.counts["removed_empty_sequence"] == 2


def test_a_required_sequence_the_rules_remove_stays_without_items(vault: SqliteVault) -> None:
    """Acquisition Context Sequence: X in Table E.1-1 (its items may hold anything), Type 2
    in the DX IOD: present, with no items."""
    context = [item(ConceptNameCodeSequence=[code("QX1", "Qx")], TextValue=UNKNOWN)]
    done = run(vault, instance(DX, AcquisitionContextSequence=context))
    assert "AcquisitionContextSequence" in done.output
    assert len(done.output.AcquisitionContextSequence) == 0
    assert UNKNOWN.encode() not in done.data
    assert done.findings == []


def test_a_type_2_attribute_the_rules_remove_stays_empty(vault: SqliteVault) -> None:
    """Responsible Person and Organization (Type 2C in the Patient module, veterinary) are
    removed by the allow-list (a person, an organisation): they stay, empty."""
    ds = instance(
        CT,
        PatientSpeciesDescription="canine",
        ResponsiblePerson=f"{UNKNOWN}^Anna",
        ResponsiblePersonRole="OWNER",
        ResponsibleOrganization=f"{UNKNOWN} Kennels",
    )
    done = run(vault, ds)
    for keyword in ("ResponsiblePerson", "ResponsibleOrganization"):
        assert keyword in done.output
        assert done.output[keyword].is_empty
    assert UNKNOWN.encode() not in done.data
    assert done.counts["emptied_required"] == 2
    assert done.findings == []


def test_a_number_holding_text_is_emptied_where_required_and_removed_where_not(
    vault: SqliteVault,
) -> None:
    ds = instance(CT)
    ds.add_new(0x00180060, "UT", f"{UNKNOWN} 4471902")  # KVP (DS): Type 2 in CT Image
    ds.add_new(0x00181150, "UT", f"{UNKNOWN} 4471902")  # Exposure Time (IS): Type 3
    done = run(vault, ds)
    assert done.output["KVP"].is_empty
    assert "ExposureTime" not in done.output
    assert b"4471902" not in done.data


def test_a_type_1_value_cleaned_to_nothing_gets_a_fixed_dummy(vault: SqliteVault) -> None:
    """Manufacturer is Type 1 in the Enhanced General Equipment module and Type 2 in the
    General Equipment module: the same value cleaned to nothing is a dummy in an enhanced CT
    and empty in a CT. Never the original."""
    values = {"Manufacturer": UNKNOWN, "ManufacturerModelName": f"{UNKNOWN} Qxwimble"}
    enhanced = run(vault, instance(ENHANCED_CT, **values))
    plain = run(vault, instance(CT, **values))
    assert enhanced.output.Manufacturer == "ANONYMIZED"
    assert enhanced.output.ManufacturerModelName == "ANONYMIZED"
    assert enhanced.counts["dummy_required"] == 2
    assert plain.output["Manufacturer"].is_empty
    assert "ANONYMIZED" in FIXED_DUMMIES
    assert enhanced.findings == plain.findings == []


def test_a_code_value_cleaned_to_nothing_gets_a_fixed_dummy(vault: SqliteVault) -> None:
    """A local code value the allow-list cannot read (a name could hide in it) is Type 1C in
    the code sequence macro: the code keeps its place with a dummy value, its meaning cleaned."""
    procedure = code(f"{UNKNOWN.upper()}7", f"CT chest {UNKNOWN}")
    done = run(vault, instance(CT, ProcedureCodeSequence=[procedure]))
    kept = done.output.ProcedureCodeSequence[0]
    assert kept.CodeValue == "ANONYMIZED"
    assert kept.CodingSchemeDesignator == "99LOCAL"
    assert kept.CodeMeaning.split() == ["CT", "chest"]
    assert UNKNOWN.upper().encode() not in done.data.upper()
    assert done.findings == []


def test_a_type_1c_attribute_the_rules_remove_goes(vault: SqliteVault) -> None:
    """Patient's Alternative Calendar is required only with the alternative-calendar dates,
    which go with it (Table E.1-1 X): a dummy would be the error."""
    ds = instance(
        CT,
        PatientBirthDateInAlternativeCalendar="5784-07-01",
        PatientAlternativeCalendar="HEBREW",
    )
    done = run(vault, ds)
    assert "PatientBirthDateInAlternativeCalendar" not in done.output
    assert "PatientAlternativeCalendar" not in done.output


def test_a_private_sop_class_has_no_requirements_but_loses_empty_sequences(
    vault: SqliteVault,
) -> None:
    ds = instance(PRIVATE_SOP_CLASS, ResponsiblePerson=f"{UNKNOWN}^Anna")
    ds.ReferencedStudySequence = [item(ReferencedSOPInstanceUID="1.2.3")]
    done = run(vault, ds)
    assert "ResponsiblePerson" not in done.output
    assert "ReferencedStudySequence" not in done.output


def test_the_pseudonyms_are_written_once_whatever_the_iod_says(vault: SqliteVault) -> None:
    """Patient's Name and ID are Type 2 and removed before being written afresh: one each."""
    done = run(vault, instance(CT, PatientID="MRN-4471902"))
    names = [e for e in done.output if e.keyword in ("PatientName", "PatientID")]
    assert [e.keyword for e in names] == ["PatientName", "PatientID"]
    assert all(str(e.value).startswith("UT-") for e in names)


# -- retired forms --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "written"),
    [
        ("10:11:12", "101112"),
        ("10:11:12.250", "101112.250"),
        ("10:11", "1011"),
        ("101112", "101112"),
        ("101112.5", "101112.5"),
        ("08:00:00\\17:30:00", "080000\\173000"),
    ],
)
def test_a_time_in_the_retired_form_is_written_in_the_current_one(
    vault: SqliteVault, given: str, written: str
) -> None:
    done = run(vault, instance(CT, StudyTime=given, ContentTime=given))
    assert joined(done.output.StudyTime) == written  # Table E.1-1 C (whole days move)
    assert joined(done.output.ContentTime) == written  # not in the table: the allow-list


def test_a_date_in_the_retired_form_is_written_in_the_current_one_when_kept(
    vault: SqliteVault,
) -> None:
    done = run(vault, instance(CT, StudyDate="2001.02.03"), longitudinal_dates="full")
    assert done.output.StudyDate == "20010203"


@pytest.mark.parametrize("given", ["10h30", "25:61:00x", "1:2:3"])
def test_an_unreadable_time_is_emptied_where_required(vault: SqliteVault, given: str) -> None:
    """Study Time is Type 2 in the General Study module: present, empty, never as it was."""
    done = run(vault, instance(CT, StudyTime=given))
    assert done.output["StudyTime"].is_empty


# -- what describe-profile says -----------------------------------------------------------------


def test_describe_profile_says_what_happens_where_the_iod_requires_an_attribute() -> None:
    rows = {r.row.rule.tag: r for r in explain(DeidentifySettings())}
    assert rows["(0008,1110)"].does == (  # Referenced Study Sequence, X/Z
        "remove; kept with no items where the IOD requires the sequence"
    )
    assert "kept empty where the IOD requires it present" in rows["(0010,2297)"].does
    assert rows["(0010,1000)"].required == ""  # Other Patient IDs: Type 3 everywhere


def test_fixed_dummies_are_no_identifier(vault: SqliteVault) -> None:
    """The release check lets a fixed dummy or an empty value stand in any attribute, and
    nothing else where the attribute may not stay."""
    check = ReleaseCheck(DeidentifySettings(site_code="UT"))
    done = run(vault, instance(CT, Manufacturer=UNKNOWN))
    for value, clean in (("ANONYMIZED", True), ("", True), ("ANONYMIZED HOSPITAL", False)):
        ds = pydicom.dcmread(io.BytesIO(done.data))
        ds.OtherPatientIDs = value
        found = check.check(done.original, part10(ds), NO_PIXELS)
        assert (not found) is clean, (value, found)
