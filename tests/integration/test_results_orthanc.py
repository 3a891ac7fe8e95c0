"""The whole way there and back with Orthanc as PACS (issue 21): a two-series study pushed
from Orthanc reaches the reference receiver de-identified; an SR and a SEG made from what the
receiver got come back over the results channel and are in Orthanc within the poll interval,
under the original patient and study, every reference pointing at Orthanc's own copy of the
original images, no pseudonym in any byte. Results the gateway cannot tie to exactly one
original study never reach Orthanc (checked after the first round trip, on the same gateway).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from gateway.deidentify.uids import is_standard_uid
from gateway.receiver.results import Results
from tests.dicom_builders import part10
from tests.integration.test_reidentify import JANE, _referencing, ct_slices, encode, seg, sr
from tests.orthanc import ORTHANC_AE, Orthanc, admit_orthanc
from tests.pipeline_site import Site, wait_for
from tests.support import make_keys

pytestmark = pytest.mark.timeout(300)
SITE_CODE = "SITE"  # deidentify.site_code by default
POLL_SECONDS = 0.5
RESULTS = ("SR", "SEG")
#: UIDs in a result that name something of the original study
REFERENCES = frozenset(
    {
        "StudyInstanceUID",
        "ReferencedSOPInstanceUID",
        "ReferencedSeriesInstanceUID",
        "FrameOfReferenceUID",
        "ReferencedFrameOfReferenceUID",
    }
)


def two_series() -> list[Dataset]:
    """One study of Jane's: a series of three CT slices and one of two, one frame of
    reference."""
    first, second = ct_slices(3, **JANE), ct_slices(2, **JANE)
    for ds in second:
        ds.StudyInstanceUID = first[0].StudyInstanceUID
        ds.FrameOfReferenceUID = first[0].FrameOfReferenceUID
    return first + second


def with_results(site: Site, orthanc: Orthanc) -> None:
    """The gateway stores results in Orthanc, as the AE title Orthanc knows it by."""
    keys = site.root / "keys"
    gateway_ae = site.config["ingest"]["ae_title"]
    pacs = {"ae_title": ORTHANC_AE, "host": "127.0.0.1", "port": orthanc.dicom_port,
            "calling_ae_title": gateway_ae}  # fmt: skip
    site.edit(lambda c: c.update(results={
        "enabled": True, "poll_seconds": POLL_SECONDS, "max_backoff_seconds": 2.0,
        "private_key": str(keys / "results.key"), "public_key": str(keys / "results.pub"),
        "pacs": pacs}))  # fmt: skip
    site.edit(lambda c: c["receiver"].update(results_key=str(keys / "results.pub")))
    admit_orthanc(site)
    make_keys(site.path)


RoundTrip = tuple[Site, Orthanc, list[Dataset]]


@pytest.fixture
def round_trip(site: Site, orthanc: Orthanc) -> Iterator[RoundTrip]:
    """Jane's study pushed from Orthanc through the gateway to the receiver, its manifest
    there; what the receiver got."""
    yield from _pushed(site, orthanc, demo=False)


@pytest.fixture
def demo_round_trip(site: Site, orthanc: Orthanc) -> Iterator[RoundTrip]:
    """The same, the receiver running its demo analysis (`receiver --demo-analysis`)."""
    yield from _pushed(site, orthanc, demo=True)


def _pushed(site: Site, orthanc: Orthanc, demo: bool) -> Iterator[RoundTrip]:
    with_results(site, orthanc)
    site.edit(lambda c: c["receiver"].update(demo_analysis=demo))
    site.receiver()
    gateway = site.gateway()
    originals = two_series()
    folder = site.root / "send"
    folder.mkdir()
    for i, ds in enumerate(originals):
        (folder / f"{i}.dcm").write_bytes(part10(ds))
    with orthanc.blamed():
        orthanc.start(site.config["ingest"]["ae_title"], gateway.port, dicom=True)
        ids = orthanc.upload(sorted(folder.iterdir()))
        pushed = orthanc.post("/modalities/gateway/store", {"Resources": sorted(ids),
                                                             "Synchronous": True})  # fmt: skip
        assert pushed.status_code == 200, pushed.text
    wait_for(lambda: _listed(site) == len(originals), 120, "a manifest listing the study")
    received: list[Dataset] = [
        pydicom.dcmread(p) for p in site.stored() if p.parent.name != "results"
    ]
    assert len(received) == len(originals)
    yield site, orthanc, received
    assert gateway.stop() == 0
    audit = site.config.get("audit", {}).get("path") or site.root / "spool" / "audit.log"
    _no_phi(Path(audit).read_text(encoding="utf-8"), originals)


def _listed(site: Site) -> int:
    manifests = site.manifests()
    if not manifests:
        return 0
    newest = max(manifests, key=lambda p: int(p.stem.removeprefix("manifest-")))
    return len(json.loads(newest.read_text())["instances"])


def test_an_sr_and_a_seg_land_in_orthanc_beside_the_original_study(round_trip: RoundTrip) -> None:
    site, orthanc, received = round_trip
    study = _original_study(orthanc, received)
    before = orthanc.study(study)
    largest = max(_by_series(received), key=len)
    offered = Results(site.root / "received")
    made = [offered.offer(SITE_CODE, seg(largest)), offered.offer(SITE_CODE, encode(sr(received)))]
    wait_for(lambda: len(orthanc.study(study)) == len(before) + 2, 30, "both results in Orthanc")
    results = _check_results(orthanc.study(study), received, len(largest))
    assert sorted(str(ds.SOPInstanceUID) for ds in results) == sorted(r.result for r in made)
    _refused_never_reach_orthanc(site, orthanc, received)  # the same round trip, on the way in


def test_the_demo_analysis_makes_the_whole_round_trip(demo_round_trip: RoundTrip) -> None:
    """PACS -> gateway -> analysis (the receiver's demo) -> gateway -> PACS, nobody copying
    anything: an SR and a SEG of the largest series are in Orthanc within the poll interval
    after the manifest."""
    site, orthanc, received = demo_round_trip
    study = _original_study(orthanc, received)
    wait_for(lambda: len(orthanc.study(study)) == len(received) + 2, 60, "the demo's results")
    results = _check_results(orthanc.study(study), received, max(map(len, _by_series(received))))
    assert sorted(ds.Modality for ds in results) == ["SEG", "SR"]
    assert not list((site.root / "received" / SITE_CODE / "results").glob("*.dcm"))  # acked


def _check_results(files: list[bytes], received: list[Dataset], largest: int) -> list[Dataset]:
    """The results among `files` (Orthanc's copy of the study): under the original patient
    and study, every reference one of the original images, no pseudonym in any byte; a SEG
    references every image of the series of `largest` images."""
    results = [(data, ds) for data, ds in _read(files) if ds.Modality in RESULTS]
    images = [ds for _, ds in _read(files) if ds.Modality not in RESULTS]
    originals = {
        str(ds.get(keyword))
        for ds in images
        for keyword in (
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "FrameOfReferenceUID",
        )
    }
    pseudonyms = {
        str(ds.get(keyword))
        for ds in received
        for keyword in (
            "StudyInstanceUID",
            "SeriesInstanceUID",
            "SOPInstanceUID",
            "FrameOfReferenceUID",
            "PatientID",
        )
    }
    for data, ds in results:
        assert str(ds.PatientID) == JANE["PatientID"]
        assert str(ds.PatientName) == JANE["PatientName"]
        assert str(ds.AccessionNumber) == JANE["AccessionNumber"]
        references = _references(ds)
        assert str(ds.StudyInstanceUID) in references  # the study, and images in it
        assert references & {str(i.SOPInstanceUID) for i in images}, f"{ds.Modality}: no image"
        assert references <= originals, f"{ds.Modality} references what Orthanc does not hold"
        assert not [p for p in pseudonyms if p.encode("ascii") in data]
    segmentation = next(ds for _, ds in results if ds.Modality == "SEG")
    [source] = [s for s in _by_series(images) if len(s) == largest]
    assert _references(segmentation) >= {str(ds.SOPInstanceUID) for ds in source}
    return [ds for _, ds in results]


def _original_study(orthanc: Orthanc, received: list[Dataset]) -> str:
    """The original study's UID, as Orthanc holds it (the one study there)."""
    with orthanc.rest() as client:
        [orthanc_id] = client.get("/studies").json()
        tags = client.get(f"/studies/{orthanc_id}").json()["MainDicomTags"]
    assert tags["StudyInstanceUID"] != str(received[0].StudyInstanceUID)
    return str(tags["StudyInstanceUID"])


def _by_series(images: list[Dataset]) -> list[list[Dataset]]:
    series: dict[str, list[Dataset]] = {}
    for ds in images:
        series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    return list(series.values())


def _refused_never_reach_orthanc(site: Site, orthanc: Orthanc, received: list[Dataset]) -> None:
    """Results the gateway cannot tie to one original study are held with their reasons, and
    nothing more reaches Orthanc."""
    held_before = orthanc.count()
    own = str(received[0].PatientID)
    other = f"{SITE_CODE}-0123456789"
    assert other != own
    cases = {
        "result-unknown-study": sr(received, StudyInstanceUID=generate_uid()),
        "result-other-patient": sr(received, PatientID=other),
        "result-unknown-reference": _referencing(sr(received), generate_uid()),
        "result-reuses-uid": sr(received, SOPInstanceUID=str(received[0].SOPInstanceUID)),
    }
    offered = Results(site.root / "received")
    made = {offered.offer(SITE_CODE, encode(ds)).result: reason for reason, ds in cases.items()}
    folder = site.root / "spool" / "returns-held"
    wait_for(lambda: len(list(folder.glob("*.reason.json"))) == len(cases), 30, "all held")
    held = {
        p.name.removesuffix(".reason.json"): json.loads(p.read_text())["reason"]
        for p in folder.glob("*.reason.json")
    }
    assert held == made
    assert orthanc.count() == held_before


def _read(files: list[bytes]) -> Iterator[tuple[bytes, Dataset]]:
    for data in files:
        yield data, pydicom.dcmread(io.BytesIO(data))


def _references(ds: Dataset, nested: bool = False) -> set[str]:
    """Every UID in `REFERENCES` (any depth), and Series/SOP Instance UIDs below the top."""
    found: set[str] = set()
    for element in ds:
        if element.VR == "SQ":
            for item in element.value:
                found |= _references(item, nested=True)
        elif (
            element.VR == "UI"
            and element.value
            and (
                element.keyword in REFERENCES
                or (nested and element.keyword in ("SeriesInstanceUID", "SOPInstanceUID"))
            )
        ):
            values = element.value if element.VM > 1 else [element.value]
            found |= {str(v) for v in values if not is_standard_uid(str(v))}
    return found


def _no_phi(text: str, originals: list[Dataset]) -> None:
    values = {str(ds.get(k)) for ds in originals for k in ("PatientID", "AccessionNumber")}
    values |= {str(originals[0].PatientName).split("^")[0]}
    values |= {str(ds.get(k)) for ds in originals for k in ("StudyInstanceUID", "SOPInstanceUID")}
    assert not [v for v in values if v and v in text], "the audit trail names the patient"
