"""Results come back naming the originals, at every depth - or are refused.

The source study is de-identified by the real worker into a real vault (SQLite); what it
delivered is recorded in the ledger as the daemon's manifests do. Results are made from the
de-identified images as an analysis server would: a binary SEG by highdicom (referenced
series, source images per frame, frame of reference, its own dimension organisation UID) and
a Comprehensive SR by hand (evidence sequence, image references in content items).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from gateway.errors import Unprocessable
from gateway.fate import Fate
from gateway.reidentify.restore import Reidentifier
from gateway.vault import Entry, SqliteVault
from tests.dicom_builders import part10, synthetic, worker

CT = "1.2.840.10008.5.1.4.1.1.2"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
JANE = {"SpecificCharacterSet": "ISO_IR 192", "PatientName": "Wiśniewska^Łucja^Maria",
        "PatientID": "PID-31337",
        "PatientBirthDate": "19610407", "PatientSex": "F", "AccessionNumber": "ACC-2024-881",
        "StudyID": "S-42", "StudyDate": "20240611", "StudyTime": "101500",
        "ReferringPhysicianName": "Kowalski^Jan"}  # fmt: skip
OTHER = {"PatientName": "Roe^Richard", "PatientID": "PID-5521"}


@dataclass
class Sent:
    """One original study and what the gateway made of it."""

    originals: list[Dataset]
    outputs: list[Dataset]

    def original(self, keyword: str) -> str:
        return str(self.originals[0].get(keyword))

    def output(self, keyword: str) -> str:
        return str(self.outputs[0].get(keyword))


def ct_slices(count: int, **values: Any) -> list[Dataset]:
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    slices = []
    for z in range(count):
        ds = synthetic(
            Rows=32, Columns=32, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2",
            PixelRepresentation=0, PixelData=np.full((32, 32), 100 + z, np.uint16).tobytes(),
            SOPClassUID=CT, Modality="CT", StudyInstanceUID=study, SeriesInstanceUID=series,
            FrameOfReferenceUID=frame, BitsAllocated=16, BitsStored=12, HighBit=11,
            ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], ImagePositionPatient=[0, 0, z * 2.5],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0], PixelSpacing=[0.7, 0.7],
            SliceThickness=2.5, RescaleIntercept=-1024, RescaleSlope=1, InstanceNumber=z + 1,
            **values,
        )  # fmt: skip
        slices.append(ds)
    return slices


def send(vault: SqliteVault, slices: list[Dataset]) -> Sent:
    """De-identify like a worker, and record in the ledger what was delivered."""
    w = worker(vault, pixels=None)
    outputs: list[Dataset] = []
    for ds in slices:
        outcome = w.process(part10(ds))
        assert outcome.status is Fate.WRITTEN, outcome.reason
        assert outcome.result is not None
        outputs.append(pydicom.dcmread(io.BytesIO(outcome.result.data)))
    study = str(outputs[0].StudyInstanceUID)
    vault.record_delivered(
        study,
        [Entry(str(o.SOPInstanceUID), str(o.SeriesInstanceUID), str(o.SOPClassUID), "0" * 64)
         for o in outputs],
    )  # fmt: skip
    return Sent(slices, outputs)


@pytest.fixture
def sent(vault: SqliteVault) -> Sent:
    return send(vault, ct_slices(3, **JANE))


def seg(images: list[Dataset]) -> bytes:
    """A binary SEG of one segment over the de-identified series, as highdicom writes it."""
    mask = np.zeros((len(images), 32, 32), bool)
    mask[:, 8:20, 8:20] = True
    algorithm = hd.AlgorithmIdentificationSequence(
        name="demo", version="1", family=hd.sr.CodedConcept("123109", "DCM", "Manual Processing")
    )
    altered = hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
    description = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lesion", segmented_property_category=altered,
        segmented_property_type=hd.sr.CodedConcept("4147007", "SCT", "Mass"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )  # fmt: skip
    with warnings.catch_warnings():  # highdicom on our one-component patient pseudonym
        warnings.simplefilter("ignore", UserWarning)
        result = _segmentation(images, mask, description)
    out = io.BytesIO()
    result.save_as(out)
    return out.getvalue()


def _segmentation(
    images: list[Dataset], mask: np.ndarray, description: hd.seg.SegmentDescription
) -> hd.seg.Segmentation:
    return hd.seg.Segmentation(
        source_images=images, pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description], series_instance_uid=generate_uid(),
        series_number=900, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer="Analysis Co", manufacturer_model_name="demo", software_versions="1",
        device_serial_number="0001",
    )  # fmt: skip


def sr(images: list[Dataset], **change: Any) -> Dataset:
    """A Comprehensive SR: an evidence sequence and an IMAGE content item per image."""
    first = images[0]
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = COMPREHENSIVE_SR, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = first.StudyInstanceUID, generate_uid()
    ds.PatientID, ds.PatientName = first.PatientID, first.PatientName
    ds.Modality, ds.ContentDate, ds.ContentTime = "SR", "20261206", "120000"
    ds.ValueType, ds.CompletionFlag, ds.VerificationFlag = "CONTAINER", "COMPLETE", "UNVERIFIED"
    ds.ConceptNameCodeSequence = Sequence([_code("126000", "DCM", "Imaging Measurement Report")])
    references = [
        _item(ReferencedSOPClassUID=i.SOPClassUID, ReferencedSOPInstanceUID=i.SOPInstanceUID)
        for i in images
    ]
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([_item(
        StudyInstanceUID=first.StudyInstanceUID,
        ReferencedSeriesSequence=Sequence([_item(
            SeriesInstanceUID=first.SeriesInstanceUID,
            ReferencedSOPSequence=Sequence(references))]))])  # fmt: skip
    ds.ContentSequence = Sequence(
        [_item(RelationshipType="CONTAINS", ValueType="TEXT", TextValue="Mass, 12 mm",
               ConceptNameCodeSequence=Sequence([_code("121071", "DCM", "Finding")]))]
        + [_item(RelationshipType="CONTAINS", ValueType="IMAGE",
                 ReferencedSOPSequence=Sequence([r])) for r in references]
    )  # fmt: skip
    for keyword, value in change.items():
        setattr(ds, keyword, value)
    return ds


def encode(ds: Dataset) -> bytes:
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _item(**values: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def uids(ds: Dataset, keyword: str) -> Iterator[str]:
    """Every value of `keyword` at any depth."""
    for element in ds.iterall():
        if element.keyword == keyword:
            yield str(element.value)


def test_a_seg_goes_back_to_the_original_series_at_every_depth(
    vault: SqliteVault, sent: Sent
) -> None:
    data = seg(sent.outputs)
    made = pydicom.dcmread(io.BytesIO(data))
    restored = Reidentifier(vault, "UT").restore(data)
    ds = pydicom.dcmread(io.BytesIO(restored.data))
    originals = {str(o.SOPInstanceUID) for o in sent.originals}
    assert ds.StudyInstanceUID == sent.original("StudyInstanceUID") == restored.study_instance_uid
    assert ds.FrameOfReferenceUID == sent.original("FrameOfReferenceUID")
    assert [s.SeriesInstanceUID for s in ds.ReferencedSeriesSequence] == [
        sent.original("SeriesInstanceUID")
    ]
    referenced = set(uids(ds, "ReferencedSOPInstanceUID"))
    assert referenced == originals  # the referenced series' instances and each frame's source
    assert len(list(uids(ds, "ReferencedSOPInstanceUID"))) > len(originals)
    # its own UIDs are kept: the server made them, they name nothing of the patient
    assert ds.SOPInstanceUID == made.SOPInstanceUID == restored.sop_instance_uid
    assert ds.SeriesInstanceUID == made.SeriesInstanceUID
    assert list(uids(ds, "DimensionOrganizationUID")) == list(
        uids(made, "DimensionOrganizationUID")
    )
    assert str(ds.PatientName) == JANE["PatientName"]
    for keyword in ("PatientID", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID",
                    "StudyDate", "StudyTime", "ReferringPhysicianName"):  # fmt: skip
        assert str(ds[keyword].value) == JANE[keyword], keyword
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    for output in sent.outputs:  # no pseudonym in any byte
        for keyword in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                        "FrameOfReferenceUID", "PatientID", "AccessionNumber"):  # fmt: skip
            assert str(output[keyword].value).encode() not in restored.data, keyword


def test_an_sr_goes_back_with_its_evidence_and_image_items(vault: SqliteVault, sent: Sent) -> None:
    restored = Reidentifier(vault, "UT").restore(encode(sr(sent.outputs)))
    ds = pydicom.dcmread(io.BytesIO(restored.data))
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == sent.original("StudyInstanceUID")
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == sent.original(
        "SeriesInstanceUID"
    )
    images = [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
              for i in ds.ContentSequence if i.ValueType == "IMAGE"]  # fmt: skip
    assert images == [str(o.SOPInstanceUID) for o in sent.originals]
    assert ds.ContentSequence[0].TextValue == "Mass, 12 mm"
    assert ds.ContentDate == "20261206"  # the result's own date stays
    assert str(ds.PatientName) == JANE["PatientName"]


def test_each_result_the_gateway_cannot_tie_to_one_study_is_refused(
    vault: SqliteVault, sent: Sent
) -> None:
    other = send(vault, ct_slices(1, **OTHER))
    outputs = sent.outputs
    stranger = other.output("PatientID")
    own = sent.output("PatientID")
    cases = {
        "result-unknown-study": sr(outputs, StudyInstanceUID=generate_uid()),
        "result-other-patient": sr(outputs, PatientID=stranger),
        "result-unknown-reference": _referencing(sr(outputs), generate_uid()),
        "result-reference-outside-study": _referencing(sr(outputs), other.output("SOPInstanceUID")),
        "result-reuses-uid": sr(outputs, SOPInstanceUID=sent.output("SOPInstanceUID")),
    }
    named = sr(outputs)
    named.ContentSequence[0].TextValue = f"compare with {stranger}"
    pseudonym_left = sr(outputs)
    pseudonym_left.ContentSequence[0].TextValue = f"patient {own}"
    restore = Reidentifier(vault, "UT").restore
    for reason, result in [*cases.items(), ("result-other-patient", named),
                           ("result-pseudonym-left", pseudonym_left)]:  # fmt: skip
        with pytest.raises(Unprocessable) as caught:
            restore(encode(result))
        assert caught.value.reason == reason
    with pytest.raises(Unprocessable) as caught:
        restore(b"not dicom at all")
    assert caught.value.reason.startswith("result-")


def _referencing(ds: Dataset, instance: str) -> Dataset:
    ds.ContentSequence[1].ReferencedSOPSequence[0].ReferencedSOPInstanceUID = instance
    return ds


def test_a_study_the_vault_never_saw_is_unknown_even_with_a_fresh_vault(tmp_path: Path) -> None:
    fresh = SqliteVault(tmp_path / "fresh.sqlite3", b"f" * 32)
    try:
        with pytest.raises(Unprocessable) as caught:
            Reidentifier(fresh, "UT").restore(encode(sr([pydicom.dcmread(io.BytesIO(part10(
                ct_slices(1, **JANE)[0])))])))  # fmt: skip
        assert caught.value.reason == "result-unknown-study"
    finally:
        fresh.close()
