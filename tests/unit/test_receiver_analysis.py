"""The receiver's demo analysis as pure functions: result UIDs derived from their names, the
mask, the series chosen, and SEG + SR from real files of the shared test material (multi-frame,
single-frame, compressed; a series it cannot segment gets an SR only)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import JPEG2000Lossless, RLELossless

from gateway.receiver.analysis import Names, analyse, chosen_series, disc, mask
from tests.support import shared_dir

DICOM = shared_dir() / "testdata" / "dicom"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SR_3D = "1.2.840.10008.5.1.4.1.1.88.34"


def test_result_uids_depend_on_site_study_version_and_kind_only() -> None:
    names = Names("UT", "2.25.1", "1")
    assert names.uids("seg") == Names("UT", "2.25.1", "1").uids("seg")
    others = [
        names.uids("sr"),
        Names("UT", "2.25.1", "2").uids("seg"),
        Names("XY", "2.25.1", "1").uids("seg"),
        Names("UT", "2.25.2", "1").uids("seg"),
    ]
    made = {uid for pair in [names.uids("seg"), *others] for uid in pair}
    assert len(made) == 10
    assert all(uid.startswith("2.25.") and len(uid) <= 64 for uid in made)


def test_the_mask_is_the_centred_disc_cut_at_its_mean() -> None:
    inside = disc(9, 11)
    assert inside[4, 5]
    assert not inside[0, 0]
    assert inside.sum() == inside[:, ::-1].sum()
    flat = np.full((2, 9, 11), 7.0)
    assert (mask(flat) == inside).all()
    ramp = np.broadcast_to(np.arange(11, dtype=float), (1, 9, 11))
    cut = mask(ramp)[0]
    assert (cut <= inside).all()
    assert 0 < cut.sum() < inside.sum()
    assert not cut[4, 3]  # the brighter half of the disc
    assert cut[4, 7]


def test_the_series_with_the_most_frames_is_chosen() -> None:
    def image(series: str, frames: int, number: int) -> Dataset:
        ds = Dataset()
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.Rows, ds.Columns = series, f"1.{number}", 8, 8
        ds.NumberOfFrames, ds.InstanceNumber = frames, number
        return ds

    report = Dataset()
    report.SeriesInstanceUID, report.SOPInstanceUID = "9", "9.1"
    headers = [image("1", 1, 3), image("1", 1, 1), image("2", 3, 1), report]
    assert [ds.SOPInstanceUID for ds in chosen_series(headers)] == ["1.1"]  # 3 frames, 2 files
    assert chosen_series([*headers, image("1", 1, 2)])[0].SeriesInstanceUID == "1"
    assert [ds.SOPInstanceUID for ds in chosen_series(headers[:2])] == ["1.1", "1.3"]
    assert chosen_series([report]) == []


def shared(name: str) -> Dataset:
    path = DICOM / name
    if not path.is_file():
        pytest.skip(f"shared DICOM test material not found at {DICOM}")
    return pydicom.dcmread(path)


def results(sources: list[Dataset]) -> tuple[dict[str, Dataset], list[str]]:
    names = Names("UT", str(sources[0].StudyInstanceUID), "1")
    headers = []
    for ds in sources:
        head = pydicom.dcmread(io.BytesIO(_part10(ds)), stop_before_pixels=True)
        headers.append(head)
    full = {str(ds.SOPInstanceUID): ds for ds in sources}
    made, skipped = analyse(names, headers, lambda head: full[str(head.SOPInstanceUID)])
    opened = [pydicom.dcmread(io.BytesIO(data)) for data in made]
    return {str(ds.SOPClassUID): ds for ds in opened}, skipped


def _part10(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "compress"),
    [
        ("multiframe_enhanced/pydicom_data__eCT_Supplemental.dcm", None),
        ("multiframe_enhanced/pydicom_data__eCT_Supplemental.dcm", RLELossless),
        ("multiframe_enhanced/pydicom_data__eCT_Supplemental.dcm", JPEG2000Lossless),
        ("transfer_syntaxes/pydicom_wheel__MR_small_jp2klossless.dcm", None),  # J2K
        ("transfer_syntaxes/orthanc_tests__1.2.840.10008.1.2.4.91.dcm", None),  # J2K lossy CT
        ("transfer_syntaxes/pydicom_wheel__CT_small.dcm", None),
    ],
)
def test_a_seg_and_an_sr_of_multi_frame_single_frame_and_compressed_images(
    name: str, compress: str | None
) -> None:
    source = shared(name)
    if compress is not None:
        source.compress(compress)
    made, skipped = results([source])
    assert (sorted(made), skipped) == ([SEG, SR_3D], [])
    seg, sr = made[SEG], made[SR_3D]
    frames = int(source.get("NumberOfFrames", 1))
    assert seg.pixel_array.reshape((-1, source.Rows, source.Columns)).shape[0] == frames
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert set(_all(seg, "ReferencedSOPInstanceUID")) == {source.SOPInstanceUID}
    assert set(_all(sr, "ReferencedSOPInstanceUID")) == {source.SOPInstanceUID}
    for result in (seg, sr):
        assert result.StudyInstanceUID == source.StudyInstanceUID
        assert result.PatientID == source.PatientID
        assert result.SeriesInstanceUID != source.SeriesInstanceUID


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("transfer_syntaxes/orthanc_tests__1.2.840.10008.1.2.4.51.dcm", "pixels-do-not-decode"),
        ("transfer_syntaxes/pydicom_data__693_J2KR.dcm", "no-frame-of-reference"),
    ],
)
def test_a_series_that_cannot_be_segmented_gets_an_sr_only(name: str, reason: str) -> None:
    made, skipped = results([shared(name)])
    assert (sorted(made), skipped) == ([SR_3D], [reason])


def _all(ds: Dataset, keyword: str) -> list[str]:
    return [str(e.value) for e in ds.iterall() if e.keyword == keyword]


def test_shared_material_is_not_in_the_repository() -> None:
    assert not any(Path(__file__).parents[2].glob("tests/**/*.dcm"))
