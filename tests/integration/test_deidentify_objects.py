"""Objects that reference others keep pointing at them; veterinary, ages, descriptors, policy.

Real images from the shared material; the referencing objects (SR, GSPS, RTSTRUCT) and the
veterinary dataset are built here, since the material has no matching pairs. Everything runs
through the worker, as the daemon and `dicom-gateway deidentify` do, on a real vault.
"""

from __future__ import annotations

import io
import multiprocessing
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from gateway.settings import PolicyRule, PolicySettings
from gateway.vault.sqlite import SqliteVault
from gateway.worker import Outcome, Worker
from tests.dicom_builders import item, part10, synthetic, worker

CT = "transfer_syntaxes/pydicom_wheel__CT_small.dcm"
CR = "transfer_syntaxes/pydicom_data__RG3_J2KI.dcm"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
RTSTRUCT = "1.2.840.10008.5.1.4.1.1.481.3"


def read(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


def written(outcome: Outcome) -> Dataset:
    assert outcome.status == "written", outcome.reason
    assert outcome.result is not None
    return read(outcome.result.data)


def referencing(image: Dataset, sop_class: str) -> Dataset:
    """A new object of `sop_class` in the image's study, for the same patient."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate"):
        setattr(ds, keyword, image.get(keyword, ""))
    ds.Modality = {COMPREHENSIVE_SR: "SR", GSPS: "PR", RTSTRUCT: "RTSTRUCT"}[sop_class]
    return ds


def image_ref(image: Dataset) -> Dataset:
    return item(
        ReferencedSOPClassUID=image.SOPClassUID, ReferencedSOPInstanceUID=image.SOPInstanceUID
    )


def test_sr_gsps_and_rtstruct_point_at_the_new_uids_of_what_they_reference(
    testdata: Path, vault: SqliteVault
) -> None:
    ct_bytes, cr_bytes = (testdata / CT).read_bytes(), (testdata / CR).read_bytes()
    ct, cr = read(ct_bytes), read(cr_bytes)

    sr = referencing(ct, COMPREHENSIVE_SR)
    sr.ContentSequence = Sequence(
        [
            item(
                RelationshipType="CONTAINS",
                ValueType="IMAGE",
                ReferencedSOPSequence=[image_ref(ct)],
            )
        ]
    )
    sr.CurrentRequestedProcedureEvidenceSequence = [
        item(
            StudyInstanceUID=ct.StudyInstanceUID,
            ReferencedSeriesSequence=[
                item(SeriesInstanceUID=ct.SeriesInstanceUID, ReferencedSOPSequence=[image_ref(ct)])
            ],
        )
    ]
    gsps = referencing(cr, GSPS)
    gsps.ReferencedSeriesSequence = [
        item(SeriesInstanceUID=cr.SeriesInstanceUID, ReferencedImageSequence=[image_ref(cr)])
    ]
    rt = referencing(ct, RTSTRUCT)
    rt.ReferencedFrameOfReferenceSequence = [
        item(
            FrameOfReferenceUID=ct.FrameOfReferenceUID,
            RTReferencedStudySequence=[
                item(
                    ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1",
                    ReferencedSOPInstanceUID=ct.StudyInstanceUID,
                    RTReferencedSeriesSequence=[
                        item(
                            SeriesInstanceUID=ct.SeriesInstanceUID,
                            ContourImageSequence=[image_ref(ct)],
                        )
                    ],
                )
            ],
        )
    ]
    rt.StructureSetROISequence = [
        item(ROINumber=1, ReferencedFrameOfReferenceUID=ct.FrameOfReferenceUID, ROIName="GTV")
    ]

    w = worker(vault, clean_structured_content=True)
    new_ct, new_cr = written(w.process(ct_bytes)), written(w.process(cr_bytes))
    new_sr = written(w.process(part10(sr)))
    new_gsps = written(w.process(part10(gsps)))
    new_rt = written(w.process(part10(rt)))

    assert new_ct.SOPInstanceUID != ct.SOPInstanceUID
    ref = new_sr.ContentSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == new_ct.SOPInstanceUID
    assert ref.ReferencedSOPClassUID == ct.SOPClassUID  # SOP classes are never remapped
    evidence = new_sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == new_ct.StudyInstanceUID
    series = evidence.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == new_ct.SeriesInstanceUID
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == new_ct.SOPInstanceUID

    series = new_gsps.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == new_cr.SeriesInstanceUID
    assert series.ReferencedImageSequence[0].ReferencedSOPInstanceUID == new_cr.SOPInstanceUID

    frame = new_rt.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == new_ct.FrameOfReferenceUID != ct.FrameOfReferenceUID
    study = frame.RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == new_ct.StudyInstanceUID
    contour = study.RTReferencedSeriesSequence[0].ContourImageSequence[0]
    assert contour.ReferencedSOPInstanceUID == new_ct.SOPInstanceUID
    roi = new_rt.StructureSetROISequence[0]
    assert roi.ReferencedFrameOfReferenceUID == new_ct.FrameOfReferenceUID
    assert new_sr.PatientID == new_ct.PatientID == new_rt.PatientID


def test_sr_is_dropped_unless_structured_content_is_cleaned(
    testdata: Path, vault: SqliteVault
) -> None:
    sr = referencing(read((testdata / CT).read_bytes()), COMPREHENSIVE_SR)
    outcome = worker(vault).process(part10(sr))
    assert (outcome.status, outcome.reason) == ("dropped", "structured-report")


def vet(**values: object) -> Dataset:
    return synthetic(PatientID="VET-778812", PatientName="Rex^Fido", **values)


def test_veterinary_owner_goes_species_and_breed_stay(vault: SqliteVault) -> None:
    ds = vet(
        ResponsiblePerson="Oswald^Owner",
        ResponsiblePersonRole="OWNER",
        ResponsibleOrganization="Happy Paws Farm Ltd",
        PatientSpeciesDescription="Canine species",
        PatientBreedDescription="Border collie",
        PatientSpeciesCodeSequence=[
            item(
                CodeValue="448771007",
                CodingSchemeDesignator="SCT",
                CodeMeaning="Canis lupus familiaris",
            )
        ],
    )
    data = part10(ds)
    outcome = worker(vault).process(data)
    out = written(outcome)
    assert outcome.result is not None
    for gone in (b"Oswald", b"Owner", b"Happy Paws", b"Rex", b"778812"):
        assert gone in data
        assert gone not in outcome.result.data
    assert "ResponsiblePerson" not in out or not out.ResponsiblePerson
    assert "ResponsibleOrganization" not in out or not out.ResponsibleOrganization
    assert out.PatientSpeciesDescription == "Canine species"
    assert out.PatientBreedDescription == "Border collie"
    assert out.PatientSpeciesCodeSequence[0].CodeValue == "448771007"


def test_ages_over_89_are_aggregated_and_the_birth_date_goes(vault: SqliteVault) -> None:
    w = worker(vault)
    old = written(w.process(part10(synthetic(PatientAge="093Y", PatientBirthDate="19310212"))))
    young = written(w.process(part10(synthetic(PatientAge="045Y", PatientBirthDate="19790101"))))
    months = written(w.process(part10(synthetic(PatientAge="110M"))))
    assert old.PatientAge == "090Y"
    assert young.PatientAge == "045Y"
    assert months.PatientAge == "110M"
    assert not old.get("PatientBirthDate")
    assert not young.get("PatientBirthDate")


def test_old_date_forms_are_shifted_and_unreadable_dates_emptied(vault: SqliteVault) -> None:
    """ACR-NEMA dates (YYYY.MM.DD, older archives) are read and written in the current form; a
    date nobody can read is emptied, not dropped (Study Date is Type 2: it stays present)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom: not a valid DA (as the sender wrote it)
        ds = synthetic(StudyDate="2021.03.04", SeriesDate="20210304", ContentDate="yesterday")
        data = part10(ds)
    outcome = worker(vault).process(data)
    out = written(outcome)
    assert out.StudyDate == out.SeriesDate != "20210304"
    assert len(out.StudyDate) == 8
    assert out.StudyDate.isdigit()
    assert "ContentDate" in out
    assert out.ContentDate == ""
    assert outcome.counts["emptied_unreadable"] == 1


def test_year_only_dates_for_strict_safe_harbor(vault: SqliteVault) -> None:
    ds = synthetic(StudyDate="20210304", AcquisitionDateTime="20210304101500", StudyTime="101500")
    out = written(worker(vault, longitudinal_dates="year").process(part10(ds)))
    assert out.StudyDate == "2021"
    assert out.AcquisitionDateTime == "2021"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_descriptors_keep_their_meaning_and_lose_identifiers(vault: SqliteVault) -> None:
    ds = synthetic(
        PatientName="Kowalski^Jan",
        PatientBirthDate="19610524",
        AccessionNumber="ACC99812",
        InstitutionName="St Elsewhere Hospital",
        StudyDescription="CT CHEST kowalski JAN 24.05.1961 ACC99812",
        SeriesDescription="AX 5MM St Elsewhere Hospital call 555-123-4567",
        ProtocolName="LUNG SCREEN MRN 8812345",
        Manufacturer="ACME Kowalski Imaging",  # kept attribute: scrubbed, numbers stay
        ManufacturerModelName="Scanner 64",
    )
    outcome = worker(vault).process(part10(ds))
    out = written(outcome)
    assert out.StudyDescription == "CT CHEST"
    assert out.SeriesDescription == "AX 5MM"  # a word outside the vocabulary goes too (call)
    assert out.ProtocolName == "LUNG SCREEN"
    assert out.Manufacturer == "ACME Imaging"
    assert out.ManufacturerModelName == "Scanner 64"
    counts = outcome.counts
    # words outside the vocabulary: call and the telephone number; the date, the accession, the
    # name's parts; MRN and its number; Kowalski in a kept attribute
    assert counts["words_removed:SeriesDescription"] == 2
    assert counts["words_removed:StudyDescription"] == 4
    assert counts["words_removed:ProtocolName"] == 2
    assert counts["words_removed:Manufacturer"] == 1
    # then the instance's identifiers: "St Elsewhere Hospital" is all words, and the institution
    assert counts["descriptor_parts_removed"] == 1


def test_policy_site_rules_come_first_and_every_drop_has_a_reason(vault: SqliteVault) -> None:
    rules = PolicySettings(
        rules=(
            PolicyRule(action="drop", reason="no-mammo", modalities=("MG",)),
            PolicyRule(action="process", reason="ok-photos", peers=("photo-archive",)),
        )
    )
    w = worker(vault, rules)
    mammo = part10(synthetic(Modality="MG"))
    photo = part10(synthetic(SOPClassUID="1.2.840.10008.5.1.4.1.1.77.1.4", Modality="XC"))
    pdf = part10(synthetic(SOPClassUID="1.2.840.10008.5.1.4.1.1.104.1", Modality="DOC"))
    private = part10(synthetic(SOPClassUID="1.3.12.2.1107.5.9.1"))
    assert (w.process(mammo).status, w.process(mammo).reason) == ("dropped", "no-mammo")
    assert w.process(photo).reason == "photograph"
    assert w.process(photo, peer="photo-archive").status == "written"
    assert w.process(pdf).reason == "encapsulated-document"
    assert w.process(private).reason == "private-sop-class"
    assert w.process(b"not dicom at all" * 20).reason == "not-dicom"


_PROCESS_WORKER: list[Worker] = []  # one per pool process (test helper state)


def _start_worker(vault_path: str) -> None:
    vault = SqliteVault(Path(vault_path), b"k" * 32)
    _PROCESS_WORKER.append(worker(vault))


def _process(data: bytes) -> tuple[str, str, str]:
    out = written(_PROCESS_WORKER[0].process(data))
    return str(out.PatientID), str(out.StudyInstanceUID), str(out.SOPInstanceUID)


def test_worker_processes_side_by_side_agree_on_pseudonyms(tmp_path: Path) -> None:
    """Two processes de-identify one study at once: one patient, one study, distinct
    instances, as a process pool in the daemon would."""
    study, patient = generate_uid(), "P-4711"
    instances = [
        part10(synthetic(StudyInstanceUID=study, PatientID=patient, PatientName="Same^Person"))
        for _ in range(24)
    ]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        2, mp_context=context, initializer=_start_worker, initargs=(str(tmp_path / "v.db"),)
    ) as pool:
        results = list(pool.map(_process, instances))
    assert len({r[0] for r in results}) == 1
    assert len({r[1] for r in results}) == 1
    assert len({r[2] for r in results}) == len(instances)
    assert results[0][0].startswith("UT-")
