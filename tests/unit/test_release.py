"""The release check: the de-identifier's real output passes; planted leaks are quarantined.

Every test de-identifies a synthetic instance with the real engine on a real vault. Clean
outputs must come back with no finding (no false alarm on the pseudonyms, shifted dates, new
UIDs, provenance); then a leak is planted in the output, as a de-identifier bug or a careless
option would leave it, and the check must name it with its reason code and tag path, and
never with the planted value. The last tests run the check over the whole shared test material.
"""

from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from gateway.deidentify.engine import Engine
from gateway.deidentify.policy import Policy
from gateway.errors import Unprocessable
from gateway.release import REASONS, Finding, PixelEvidence, ReleaseCheck
from gateway.settings import DeidentifySettings, PolicySettings
from gateway.vault.sqlite import SqliteVault
from tests.dicom_builders import greyscale, item, part10, synthetic

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
NO_PIXELS = PixelEvidence(has_pixels=False, checked=False, masked=0, skipped_by_site=False)
CHECKED = PixelEvidence(has_pixels=True, checked=True, masked=0, skipped_by_site=False)
UNCHECKED = PixelEvidence(has_pixels=True, checked=False, masked=0, skipped_by_site=False)
SKIPPED = PixelEvidence(has_pixels=True, checked=False, masked=0, skipped_by_site=True)
SAFE_CREATOR, SAFE_GROUP = "Philips PET Private Group", 0x7053  # (7053,xx00) DS: SUV factor
IDENTIFIER, WORD = "release-identifier-in-value", "release-word-not-allowed"
ALLOW_LIST = ("release-attribute-not-allowed", "release-attribute-not-empty", "release-private-tag")
#: Narrative attributes the planted leaks go into: kept (cleaned) by the site, so that the
#: attribute itself is allowed and what is tested is the search of its value.
COMMENTS = ("ImageComments", "PatientComments")

Edit = Callable[[Dataset], None]


def patient(**values: Any) -> Dataset:
    """A CT of one identifiable patient, with references, descriptors and a nested item."""
    return synthetic(
        **{
            "SOPClassUID": CT_IMAGE,
            "Modality": "CT",
            "PatientName": "Kowalczyk^Jadwiga",
            "PatientID": "MRN-4471902",
            "PatientBirthDate": "19610312",
            "PatientSex": "F",
            "AccessionNumber": "ACC99172",
            "StudyID": "S7781",
            "InstitutionName": "Bielanski Hospital Warsaw",
            "ReferringPhysicianName": "Nowak^Piotr",
            "StudyDate": "20240105",
            "SeriesDate": "20240105",
            "StudyDescription": "CT chest for Kowalczyk",
            "FrameOfReferenceUID": generate_uid(),
            "WindowWidth": "400",
            "ReferencedImageSequence": [
                item(ReferencedSOPClassUID=CT_IMAGE, ReferencedSOPInstanceUID=generate_uid())
            ],
            "RequestAttributesSequence": [
                item(RequestedProcedureID="RP-55120", RequestedProcedureDescription="CT chest")
            ],
            **values,
        }
    )


@dataclasses.dataclass(frozen=True)
class Case:
    """One de-identified instance: the check for its options, its original and its output."""

    check: ReleaseCheck
    original: bytes
    output: bytes

    def findings(
        self,
        edit: Edit | None = None,
        pixels: PixelEvidence = NO_PIXELS,
        reasons: Collection[str] = REASONS,
    ) -> set[str]:
        """`reason where` of every finding for the output, after `edit` (the planted leak),
        of the given reasons only (all by default)."""
        output = self.output if edit is None else edited(self.output, edit)
        found = self.check.check(self.original, output, pixels)
        return {f"{f.reason} {f.where}" for f in found if f.reason in reasons}


def deidentify(vault: SqliteVault, ds: Dataset, **options: Any) -> Case:
    settings = dataclasses.replace(DeidentifySettings(site_code="UT"), **options)
    data = part10(ds)
    output = Engine(settings, vault, ae_title="GATEWAY_UT").run(data).data
    return Case(ReleaseCheck(settings), data, output)


def edited(output: bytes, edit: Edit) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(output))
    edit(ds)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def setting(**values: Any) -> Edit:
    def edit(ds: Dataset) -> None:
        for keyword, value in values.items():
            setattr(ds, keyword, value)

    return edit


@pytest.fixture
def case(vault: SqliteVault) -> Case:
    return deidentify(vault, patient())


@pytest.fixture
def comments(vault: SqliteVault) -> Case:
    """The same patient for a site that keeps ImageComments and PatientComments, cleaned."""
    return deidentify(vault, patient(), keep_cleaned=COMMENTS)


# -- the de-identifier's own output passes -----------------------------------------------------


def test_the_deidentifiers_output_is_proven_clean(case: Case) -> None:
    out = pydicom.dcmread(io.BytesIO(case.output))
    assert str(out.PatientName).startswith("UT-")  # the pseudonym is not taken for a leak
    assert out.StudyDate != "20240105"  # dates shifted
    assert case.findings() == set()


@pytest.mark.parametrize(
    "options",
    [
        {"retain_uids": True},
        {"longitudinal_dates": "full"},
        {"longitudinal_dates": "year"},
        {"longitudinal_dates": "off"},
        {"retain_institution_identity": True, "retain_device_identity": True},
        {"clean_descriptors": False, "retain_patient_characteristics": False},
        {"retain_safe_private": True, "clean_graphics": True, "clean_structured_content": True},
    ],
)
def test_no_false_alarm_under_any_option(vault: SqliteVault, options: dict[str, Any]) -> None:
    ds = patient(StationName="CTROOM7", DeviceSerialNumber="SN88213", Manufacturer="ACME")
    assert deidentify(vault, ds, **options).findings() == set()


def test_a_study_on_the_day_of_birth_keeps_its_date_when_dates_are_kept(
    vault: SqliteVault,
) -> None:
    newborn = patient(PatientBirthDate="20240105", StudyDate="20240105")
    case = deidentify(vault, newborn, longitudinal_dates="full")
    assert pydicom.dcmread(io.BytesIO(case.output)).StudyDate == "20240105"
    assert case.findings() == set()
    assert deidentify(vault, newborn).findings() == set()  # shifted: not the birth date


def test_the_gateways_own_ae_title_sharing_a_word_with_the_name_is_not_a_leak(
    vault: SqliteVault,
) -> None:
    """The Source AE Title in the file meta is the configured AE title of the gateway."""
    ds = patient(PatientName="Bench^Synthetic")
    data = part10(ds)
    settings = DeidentifySettings(site_code="UT", keep_cleaned=("ImageComments",))
    output = Engine(settings, vault, ae_title="BENCH_GW").run(data).data
    assert pydicom.dcmread(io.BytesIO(output)).file_meta.SourceApplicationEntityTitle == "BENCH_GW"
    assert ReleaseCheck(settings).check(data, output, NO_PIXELS) == []
    # The same word anywhere else is the name: the identifier search finds it (whether the
    # word check also flags it depends on the vocabulary, which is not what this is about).
    leak = edited(output, setting(ImageComments="bench"))
    found = ReleaseCheck(settings).check(data, leak, NO_PIXELS)
    assert [f for f in found if f.reason == IDENTIFIER] == [Finding(IDENTIFIER, "(0020,4000)")]


def test_short_and_placeholder_identifiers_are_not_searched(vault: SqliteVault) -> None:
    """A 4-digit ID equal to a window width, a 2-letter name, a placeholder name: chance.

    Only the identifier search is asked: the planted words are the name itself and cannot
    be swapped for others, and whether LI is a vocabulary word is the word check's business."""
    ds = patient(PatientName="Li^Anonymous", PatientID="4095", WindowWidth="4095")
    case = deidentify(vault, ds, keep_cleaned=COMMENTS)
    found = case.findings(setting(ImageComments="LI anonymous"), reasons=(IDENTIFIER,))
    assert found == set()


def test_safe_private_elements_kept_by_the_deidentifier_pass(vault: SqliteVault) -> None:
    ds = patient()
    ds.private_block(SAFE_GROUP, SAFE_CREATOR, create=True).add_new(0x00, "DS", "1.5")
    case = deidentify(vault, ds, retain_safe_private=True)
    assert pydicom.dcmread(io.BytesIO(case.output)).get((SAFE_GROUP, 0x1000)) is not None
    assert case.findings() == set()


# -- planted leaks -------------------------------------------------------------------------


def test_a_kept_patient_name_is_quarantined(case: Case) -> None:
    """The acceptance case: as if a profile kept PatientName. The name is found, and it is
    neither the gateway's pseudonym nor vocabulary words: the word check names it too."""
    found = case.findings(setting(PatientName="Kowalczyk^Jadwiga"))
    assert found == {f"{IDENTIFIER} (0010,0010)", f"{WORD} (0010,0010)"}


def _private_name(ds: Dataset) -> None:
    ds.private_block(0x0011, "ACME 1.0", create=True).add_new(0x01, "LO", "Jadwiga Kowalczyk")


def test_a_private_tag_with_the_patients_name_is_quarantined(case: Case) -> None:
    assert case.findings(_private_name) == {
        "release-private-tag (0011,0010)",
        "release-private-tag (0011,1001)",
        "release-identifier-in-value (0011,1001)",
        "release-word-not-allowed (0011,1001)",  # an LO in explicit VR: its words are read
    }


def test_a_private_tag_off_the_safe_list_is_quarantined(vault: SqliteVault) -> None:
    ds = patient()
    ds.private_block(SAFE_GROUP, SAFE_CREATOR, create=True).add_new(0x00, "DS", "1.5")
    case = deidentify(vault, ds, retain_safe_private=True)

    def plant(out: Dataset) -> None:
        out.private_block(SAFE_GROUP, SAFE_CREATOR).add_new(0x99, "DS", "2.5")

    assert case.findings(plant) == {"release-private-tag (7053,1099)"}


TEXT_AND_WORDS = (IDENTIFIER, WORD)  # a name, an ID or a place is no vocabulary word


@pytest.mark.parametrize(
    ("edit", "where", "reasons"),
    [
        # reversed, cases
        (setting(ImageComments="seen with jadwiga KOWALCZYK"), "(0020,4000)", TEXT_AND_WORDS),
        (setting(ImageComments="JadwigaKowalczyk"), "(0020,4000)", TEXT_AND_WORDS),  # together
        (setting(PatientComments="old MRN 4471902, MRN-4471902"), "(0010,4000)", TEXT_AND_WORDS),
        # accession, other separator
        (setting(ImageComments="acc 99172 done"), "(0020,4000)", TEXT_AND_WORDS),
        (
            setting(StudyDescription="CT at Bielanski Hospital, Warsaw"),
            "(0008,1030)",
            TEXT_AND_WORDS,
        ),
        # referring physician
        (setting(ContentDescription="ref. dr nowak"), "(0070,0081)", TEXT_AND_WORDS),
        # a long numeric run of the ID, in a DS: a number, no words to check
        (setting(WindowCenter="4471902"), "(0028,1050)", (IDENTIFIER,)),
        (setting(Manufacturer="KOWALCZYK"), "(0008,0070)", TEXT_AND_WORDS),
    ],
    ids=[
        "reversed",
        "run-together",
        "patient-id",
        "accession",
        "institution",
        "referring",
        "number",
        "code",
    ],
)
def test_identifiers_in_any_text_are_found(
    comments: Case, edit: Edit, where: str, reasons: tuple[str, ...]
) -> None:
    assert comments.findings(edit) == {f"{reason} {where}" for reason in reasons}


@pytest.mark.parametrize(
    "written",
    [
        "12/03/1961",
        "03/12/1961",
        "1961-03-12",
        "12.03.1961",
        "12-03-61",
        "19610312",
        "12 March 1961",
        "12th march 1961",
        "March 12, 1961",
        "12-MAR-1961",
        "12MAR1961",
    ],
)
def test_the_birth_date_is_found_in_its_written_forms(comments: Case, written: str) -> None:
    """Each form holds a year, or a day and month joined to one: never allowed words either."""
    found = comments.findings(setting(ImageComments=f"born {written}"))
    assert found == {f"{IDENTIFIER} (0020,4000)", f"{WORD} (0020,4000)"}


def test_the_birth_date_in_a_date_attribute_is_found(case: Case) -> None:
    found = case.findings(setting(ContentDate="19610312", AcquisitionDateTime="19610312101500"))
    assert found == {
        "release-identifier-in-value (0008,0023)",
        "release-identifier-in-value (0008,002A)",
    }


def test_identifiers_in_nested_items_are_found(case: Case) -> None:
    def plant(ds: Dataset) -> None:
        ds.RequestAttributesSequence[0].RequestedProcedureDescription = "for J. Kowalczyk"

    where = "(0040,0275)[0].(0032,1060)"
    assert case.findings(plant) == {f"{IDENTIFIER} {where}", f"{WORD} {where}"}


def test_identifiers_in_structured_content_are_found(vault: SqliteVault) -> None:
    text = item(
        RelationshipType="CONTAINS",
        ValueType="TEXT",
        ConceptNameCodeSequence=[
            item(CodeValue="121071", CodingSchemeDesignator="DCM", CodeMeaning="Finding")
        ],
        TextValue="No acute findings.",
    )
    case = deidentify(vault, patient(ContentSequence=[text]), clean_structured_content=True)
    assert case.findings() == set()

    def plant(ds: Dataset) -> None:
        ds.ContentSequence[0].TextValue = "Discussed with Mrs Jadwiga KOWALCZYK (DOB 12/03/1961)"

    where = "(0040,A730)[0].(0040,A160)"
    assert case.findings(plant) == {f"{IDENTIFIER} {where}", f"{WORD} {where}"}


def test_content_items_are_not_allowed_without_clean_structured_content(case: Case) -> None:
    plant = setting(ContentSequence=[item(ValueType="TEXT", TextValue="No acute findings.")])
    assert case.findings(plant) == {"release-attribute-not-allowed (0040,A730)"}


def test_names_match_across_accents_and_transliteration(vault: SqliteVault) -> None:
    """Only the identifier search is asked: MULLER is also a vocabulary word (PS3.16 "Müller
    Method Planning for Hip Replacement"), so for some spellings it is the only line."""
    ds = patient(SpecificCharacterSet="ISO_IR 100", PatientName="Müller^Jürgen")
    case = deidentify(vault, ds, keep_cleaned=COMMENTS)
    assert case.findings() == set()
    for written in ("MUELLER", "muller", "Jürgen", "JUERGEN"):
        found = case.findings(setting(ImageComments=f"for {written}"), reasons=(IDENTIFIER,))
        assert found == {f"{IDENTIFIER} (0020,4000)"}, written


def test_original_uids_are_found_as_values_and_in_text(comments: Case) -> None:
    original = pydicom.dcmread(io.BytesIO(comments.original))
    study, frame = original.StudyInstanceUID, original.FrameOfReferenceUID
    referenced = original.ReferencedImageSequence[0].ReferencedSOPInstanceUID

    def plant(ds: Dataset) -> None:
        ds.StudyInstanceUID = study
        ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = referenced
        ds.ImageComments = f"see frame of reference {frame}"

    assert comments.findings(plant) == {
        "release-original-uid (0020,000D)",
        "release-original-uid (0008,1140)[0].(0008,1155)",
        "release-original-uid (0020,4000)",
        "release-word-not-allowed (0020,4000)",  # a UID in text: digit groups, never words
    }


def test_original_uids_may_stay_when_the_site_keeps_uids(vault: SqliteVault) -> None:
    case = deidentify(vault, patient(), retain_uids=True)
    original = pydicom.dcmread(io.BytesIO(case.original))
    output = pydicom.dcmread(io.BytesIO(case.output))
    assert output.StudyInstanceUID == original.StudyInstanceUID  # they did stay
    assert output.FrameOfReferenceUID == original.FrameOfReferenceUID
    assert case.findings() == set()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (setting(PatientAddress="1 Main Street"), "release-attribute-not-allowed (0010,1040)"),
        (setting(ReferringPhysicianName="Someone^Else"), "release-attribute-not-empty (0008,0090)"),
        (
            setting(ReferencedStudySequence=[item(ReferencedSOPInstanceUID="2.25.1")]),
            "release-attribute-not-empty (0008,1110)",
        ),
        (
            lambda ds: ds.add_new(0x60003000, "OW", b"\0" * 8),
            "release-attribute-not-allowed (6000,3000)",
        ),
        (
            lambda ds: ds.add_new(0x00089999, "LO", "anything"),
            "release-attribute-not-allowed (0008,9999)",
        ),
        (
            lambda ds: setattr(ds.file_meta, "SendingApplicationEntityTitle", "PACS_ROOM_3"),
            "release-attribute-not-allowed (0002,0017)",
        ),
        (  # narrative: removed unless the site keeps it cleaned, whatever its words
            setting(ImageComments="No acute findings"),
            "release-attribute-not-allowed (0020,4000)",
        ),
    ],
)
def test_attributes_the_options_cannot_keep_are_quarantined(
    case: Case, edit: Edit, expected: str
) -> None:
    """Only the allow-list of attributes is asked: the planted values are stand-ins (an
    address, a name), and what the word check makes of them is tested elsewhere."""
    assert case.findings(edit, reasons=ALLOW_LIST) == {expected}


def test_a_missing_provenance_is_quarantined(case: Case) -> None:
    def remove(ds: Dataset) -> None:
        del ds.PatientIdentityRemoved
        del ds.DeidentificationMethod
        del ds.DeidentificationMethodCodeSequence

    assert case.findings(remove) == {
        "release-provenance-missing (0012,0062)",
        "release-provenance-missing (0012,0063)",
    }
    found = case.findings(setting(PatientIdentityRemoved="NO"))
    assert found == {"release-provenance-missing (0012,0062)"}


# -- pixels ------------------------------------------------------------------------------


@pytest.fixture
def image(vault: SqliteVault) -> Case:
    return deidentify(vault, greyscale(8, 8, bytes(range(64))))


def test_an_image_checked_by_the_pixel_stage_passes(image: Case) -> None:
    assert image.findings(pixels=CHECKED) == set()
    assert image.findings(setting(BurnedInAnnotation="NO"), pixels=CHECKED) == set()


def test_an_unchecked_image_is_quarantined_unless_the_site_skips_it(image: Case) -> None:
    assert image.findings(pixels=UNCHECKED) == {"release-burned-in-unproven (7FE0,0010)"}
    assert image.findings(pixels=NO_PIXELS) == {"release-burned-in-unproven (7FE0,0010)"}
    assert image.findings(pixels=SKIPPED) == set()


def test_burned_in_annotation_no_needs_detection(image: Case) -> None:
    no = setting(BurnedInAnnotation="NO")
    assert image.findings(no, pixels=UNCHECKED) == {
        "release-burned-in-unproven (0028,0301)",
        "release-burned-in-unproven (7FE0,0010)",
    }
    assert image.findings(no, pixels=SKIPPED) == {"release-burned-in-unproven (0028,0301)"}


def test_clean_pixel_data_is_claimed_only_where_detection_ran(image: Case) -> None:
    clean = item(CodeValue="113101", CodingSchemeDesignator="DCM", CodeMeaning="Clean Pixel Data")
    claims = setting(DeidentificationMethodCodeSequence=[clean])
    assert image.findings(claims, pixels=CHECKED) == set()
    assert image.findings(claims, pixels=SKIPPED) == {"release-burned-in-unproven (0012,0064)"}


def test_burned_in_annotation_yes_is_quarantined(image: Case) -> None:
    found = image.findings(setting(BurnedInAnnotation="YES"), pixels=CHECKED)
    assert found == {"release-burned-in-unproven (0028,0301)"}


def test_pixel_data_inside_an_item_is_quarantined(image: Case) -> None:
    icon = item(Rows=2, Columns=2, BitsAllocated=8, PixelData=b"\0\0\0\0")
    assert image.findings(setting(IconImageSequence=[icon]), pixels=CHECKED) == {
        "release-attribute-not-allowed (0088,0200)",
        "release-burned-in-unproven (0088,0200)[0].(7FE0,0010)",
    }


# -- unreadable input, implicit VR -----------------------------------------------------------


def test_unreadable_input_is_a_finding_not_an_exception(case: Case) -> None:
    check, original, output = case.check, case.original, case.output
    unreadable = [Finding("release-unreadable", "output")]
    assert check.check(original, b"", NO_PIXELS) == unreadable
    assert check.check(original, b"\0" * 128 + b"DICM" + b"\xff" * 64, NO_PIXELS) == unreadable
    assert check.check(original, output[: len(output) - 40], NO_PIXELS) == unreadable
    assert check.check(original, output[132:], NO_PIXELS) == unreadable  # not Part 10
    assert check.check(b"not dicom", output, NO_PIXELS) == [
        Finding("release-unreadable", "original")
    ]


def test_implicit_vr_outputs_are_read_alike(vault: SqliteVault) -> None:
    ds = patient()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    settings = DeidentifySettings(site_code="UT")
    output = Engine(settings, vault, ae_title="GATEWAY_UT").run(buffer.getvalue()).data
    case = Case(ReleaseCheck(settings), buffer.getvalue(), output)
    assert case.findings() == set()
    assert case.findings(_private_name) == {
        "release-private-tag (0011,0010)",
        "release-private-tag (0011,1001)",
        "release-identifier-in-value (0011,1001)",
    }


def test_reason_codes_are_fixed_and_where_never_holds_a_value(case: Case) -> None:
    assert all(code.startswith("release-") for code in REASONS)
    assert {IDENTIFIER, WORD, *ALLOW_LIST} <= set(REASONS)  # the filters above ask real ones

    def plant(ds: Dataset) -> None:
        _private_name(ds)
        ds.PatientName = "Kowalczyk^Jadwiga"
        ds.ImageComments = "MRN-4471902 born 12/03/1961"

    found = case.check.check(case.original, edited(case.output, plant), NO_PIXELS)
    assert found
    for finding in found:
        assert finding.reason in REASONS
        for secret in ("owalczyk", "adwiga", "4471902", "1961"):
            assert secret not in finding.where.lower()


# -- the shared test material ----------------------------------------------------------------


def _outputs(testdata: Path, settings: DeidentifySettings, vault: SqliteVault) -> Iterator[Any]:
    """(name, original, output) of every file the engine writes (headers only: pixel
    stage not run) after the built-in policy."""
    engine = Engine(settings, vault, ae_title="GATEWAY_UT")
    policy = Policy(PolicySettings(), settings)
    for path in sorted(p for p in testdata.rglob("*") if p.is_file() and p.suffix != ".json"):
        data = path.read_bytes()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # odd values in the material are not the point
            try:
                ds = engine.read(data)
                if not policy.decide(engine.facts(ds)).process:
                    continue
                yield path.name, data, engine.deidentify(ds, data).data
            except Unprocessable:
                continue


def _pixel_data_in(output: bytes) -> bool:
    ds = pydicom.dcmread(io.BytesIO(output), defer_size=1024)
    return any(tag in ds for tag in (0x7FE00010, 0x7FE00008, 0x7FE00009))


@pytest.mark.parametrize(
    "options",
    [
        {},
        {
            "retain_safe_private": True,
            "retain_uids": True,
            "retain_institution_identity": True,
            "retain_device_identity": True,
            "longitudinal_dates": "full",
            "clean_structured_content": True,
            "clean_graphics": True,
        },
        {"longitudinal_dates": "off", "clean_descriptors": False},
    ],
    ids=["defaults", "everything-kept", "strict"],
)
def test_the_deidentifiers_output_for_the_shared_material_passes(
    testdata: Path, vault: SqliteVault, options: dict[str, Any]
) -> None:
    """No finding but the honest ones: these pixels were not checked, nor their containers
    cleaned (header path only; the worker's path: tests/integration/test_deidentify.py)."""
    settings = dataclasses.replace(DeidentifySettings(site_code="UT"), **options)
    check = ReleaseCheck(settings)
    false_alarms, checked, images = [], 0, 0
    for name, original, output in _outputs(testdata, settings, vault):
        has_pixels = _pixel_data_in(output)
        evidence = PixelEvidence(has_pixels, checked=False, masked=0, skipped_by_site=False)
        found = check.check(original, output, evidence)
        pixels = {f for f in found if f.reason == "release-burned-in-unproven"}
        containers = {f for f in found if f.reason == "release-pixel-container"}
        false_alarms += [(name, f.reason, f.where) for f in found if f not in pixels | containers]
        assert bool(pixels) == has_pixels, name
        checked += 1
        images += has_pixels
    assert checked >= 120
    assert images >= 100
    assert false_alarms == []
