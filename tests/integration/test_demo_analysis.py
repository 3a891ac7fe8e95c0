"""`dicom-gateway receiver --demo-analysis` as a real process (mutual TLS, port on 127.0.0.1):
studies de-identified by the real worker into a real vault are PUT sealed, as the forwarder
does; the SEG and SR the receiver makes of each complete manifest are listed and fetched over
the results channel, opened with the gateway's key, and re-identified by the gateway's
Reidentifier against that vault."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pydicom
import pytest
from pydicom.dataset import Dataset

from gateway.forward.client import Forwarder
from gateway.forward.results import ResultsClient
from gateway.reidentify.restore import Reidentifier
from gateway.seal import keys as seal_keys
from gateway.seal.envelope import Name, open_sealed, seal
from gateway.settings import load
from gateway.vault import SqliteVault
from tests.dicom_builders import part10
from tests.integration.test_receiver import SITE, client, put
from tests.integration.test_reidentify import JANE, Sent, ct_slices, send, uids
from tests.pipeline_site import Site, wait_for
from tests.support import GatewayProcess

pytestmark = pytest.mark.timeout(120)
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
SR_3D = "1.2.840.10008.5.1.4.1.1.88.34"


@dataclass
class Demo:
    site: Site
    results: ResultsClient
    key: seal_keys.PrivateKey
    connect: Callable[[], ResultsClient]
    receiver: GatewayProcess | None = None

    def start(self, demo: bool = True) -> GatewayProcess:
        self.site.edit(lambda config: config["receiver"].update(demo_analysis=demo))
        self.receiver = self.site.receiver()
        return self.receiver

    def stop(self) -> None:
        assert self.receiver is not None
        # the results client's idle keep-alive connection would hold the receiver's graceful
        # stop for up to its 5 s: closed first, and a new client for what follows
        self.results.http.close()
        self.results = self.connect()
        assert self.receiver.stop() == 0

    def put_instances(self, files: list[bytes]) -> None:
        public = seal_keys.read_public(self.site.root / "keys" / "receiver.pub")
        assert self.receiver is not None
        with client(self.site.root) as http:
            for data in files:
                ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
                study, uid = str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)
                body = seal(data, Name("instance", SITE, study, uid), public)
                answer = put(
                    http, self.receiver, f"/v1/studies/{study}/instances/{uid}", body, public
                )
                assert answer.status_code == 201

    def put_manifest(self, files: list[bytes], version: int) -> None:
        public = seal_keys.read_public(self.site.root / "keys" / "receiver.pub")
        heads = [pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True) for d in files]
        study = str(heads[0].StudyInstanceUID)
        listed = [
            {"instance": str(h.SOPInstanceUID), "sop_class": str(h.SOPClassUID),
             "series": str(h.SeriesInstanceUID), "sha256": hashlib.sha256(d).hexdigest()}
            for h, d in zip(heads, files, strict=True)
        ]  # fmt: skip
        plain = json.dumps({"version": version, "study": study, "instances": listed}).encode()
        body = seal(plain, Name("manifest", SITE, study, str(version)), public)
        assert self.receiver is not None
        with client(self.site.root) as http:
            answer = put(
                http, self.receiver, f"/v1/studies/{study}/manifest", body, public,
                dicom_gateway_manifest_version=str(version),
            )  # fmt: skip
            assert answer.status_code == 201

    def offered(self) -> list[Dataset]:
        listed, _ = self.results.waiting(0)
        opened = [open_sealed(i.body, i.name, self.key) for i in map(self.results.fetch, listed)]
        return [pydicom.dcmread(io.BytesIO(data)) for data in opened]

    def wait_for_results(self, count: int) -> list[Dataset]:
        wait_for(lambda: len(self.results.waiting(0)[0]) >= count, 30, f"{count} results")
        return self.offered()


@pytest.fixture
def demo(site: Site) -> Iterator[Demo]:
    private, public = site.root / "keys" / "results.key", site.root / "keys" / "results.pub"
    key_id = seal_keys.write_pair(private, public)
    site.edit(lambda config: config["receiver"].update(results_key=str(public)))
    url = str(site.config["forward"]["url"])
    forwarders: list[Forwarder] = []

    def connect() -> ResultsClient:
        forwarders.append(Forwarder.for_settings(load(site.path)))
        return ResultsClient(forwarders[-1].http, url, SITE, key_id)

    yield Demo(site, connect(), seal_keys.read_private(private), connect)
    for forwarder in forwarders:
        forwarder.close()


def study(vault: SqliteVault, count: int = 3) -> tuple[Sent, list[bytes]]:
    """A CT series of Jane's, de-identified into `vault`; its outputs as Part 10 files."""
    sent = send(vault, ct_slices(count, **JANE))
    return sent, [part10(ds) for ds in sent.outputs]


def kinds(results: list[Dataset]) -> dict[str, Dataset]:
    return {str(ds.SOPClassUID): ds for ds in results}


def test_a_complete_study_gets_a_seg_and_an_sr_that_name_only_the_study(
    demo: Demo, vault: SqliteVault
) -> None:
    sent, files = study(vault)
    demo.start()
    demo.put_instances(files)
    demo.put_manifest(files, 1)
    made = kinds(demo.wait_for_results(2))
    assert set(made) == {SEG, SR_3D}
    seg, sr = made[SEG], made[SR_3D]
    out = sent.outputs[0]
    instances = {str(o.SOPInstanceUID) for o in sent.outputs}
    for result in (seg, sr):
        assert result.StudyInstanceUID == out.StudyInstanceUID
        assert (result.PatientID, result.PatientName) == (out.PatientID, out.PatientName)
        assert result.SOPInstanceUID not in instances  # its own UIDs, never a source's
        assert result.SeriesInstanceUID != out.SeriesInstanceUID
    assert seg.SeriesInstanceUID != sr.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == out.FrameOfReferenceUID
    assert [s.SeriesInstanceUID for s in seg.ReferencedSeriesSequence] == [out.SeriesInstanceUID]
    assert set(uids(seg, "ReferencedSOPInstanceUID")) == instances
    pixels = seg.pixel_array  # it decodes: one binary frame per source slice, none empty
    assert pixels.shape == (3, 32, 32)
    assert all(frame.any() for frame in pixels)
    referenced = list(uids(sr, "ReferencedSOPInstanceUID"))
    assert referenced
    assert set(referenced) <= instances
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == out.StudyInstanceUID
    assert evidence.ReferencedSeriesSequence[0].SeriesInstanceUID == out.SeriesInstanceUID


def test_the_gateway_restores_both_to_the_original_study(demo: Demo, vault: SqliteVault) -> None:
    sent, files = study(vault)
    demo.start()
    demo.put_instances(files)
    demo.put_manifest(files, 1)
    restore = Reidentifier(vault, "UT").restore
    originals = {str(o.SOPInstanceUID) for o in sent.originals}
    for result in demo.wait_for_results(2):
        restored = restore(part10(result))
        ds = pydicom.dcmread(io.BytesIO(restored.data))
        assert ds.StudyInstanceUID == sent.original("StudyInstanceUID")
        assert str(ds.PatientName) == JANE["PatientName"]
        assert ds.PatientID == JANE["PatientID"]
        referenced = set(uids(ds, "ReferencedSOPInstanceUID"))
        assert referenced
        assert referenced <= originals
        series = set(uids(ds, "SeriesInstanceUID")) - {str(ds.SeriesInstanceUID)}
        assert series == {sent.original("SeriesInstanceUID")}
        if ds.SOPClassUID == SEG:
            assert ds.FrameOfReferenceUID == sent.original("FrameOfReferenceUID")


def test_an_incomplete_manifest_waits_for_its_last_instance(demo: Demo, vault: SqliteVault) -> None:
    _, files = study(vault)
    receiver = demo.start()
    demo.put_instances(files[:2])
    demo.put_manifest(files, 1)
    receiver.wait_for_event("demo.waiting", reason="manifest-incomplete")
    assert demo.results.waiting(0)[0] == []
    demo.put_instances(files[2:])
    assert {str(ds.SOPClassUID) for ds in demo.wait_for_results(2)} == {SEG, SR_3D}


def test_a_later_manifest_version_gets_its_own_results(demo: Demo, vault: SqliteVault) -> None:
    _, files = study(vault)
    demo.start()
    demo.put_instances(files[:2])
    demo.put_manifest(files[:2], 1)
    first = demo.wait_for_results(2)
    demo.put_instances(files[2:])
    demo.put_manifest(files, 2)
    both = demo.wait_for_results(4)
    assert len({ds.SOPInstanceUID for ds in both}) == 4
    assert len({ds.SeriesInstanceUID for ds in both}) == 4
    newer = kinds([ds for ds in both if ds.SOPInstanceUID not in {f.SOPInstanceUID for f in first}])
    assert newer[SEG].pixel_array.shape == (3, 32, 32)  # of every instance of version 2


def test_a_restart_analyses_what_was_missed_and_duplicates_nothing(
    demo: Demo, vault: SqliteVault
) -> None:
    _, files = study(vault)
    demo.start(demo=False)  # stored while the demo analysis was off: nothing offered
    demo.put_instances(files)
    demo.put_manifest(files, 1)
    demo.stop()
    demo.start()  # catches up at start
    made = [ds.SOPInstanceUID for ds in demo.wait_for_results(2)]
    study_folder = demo.site.root / "received" / SITE / files_study(files)
    record = study_folder / "demo-1.json"
    wait_for(record.exists, 10, "the record of the analysis")
    demo.stop()
    record.unlink()  # as if killed after offering, before recording: analysed again
    demo.start()
    wait_for(record.exists, 30, "the record of the second analysis")
    demo.stop()
    demo.start()  # recorded: nothing to do
    assert [ds.SOPInstanceUID for ds in demo.offered()] == made
    assert sorted(json.loads(record.read_bytes())["results"]) == sorted(made)


def files_study(files: list[bytes]) -> str:
    return str(pydicom.dcmread(io.BytesIO(files[0]), stop_before_pixels=True).StudyInstanceUID)


def test_the_demo_needs_the_results_key(site: Site) -> None:
    site.edit(lambda config: config["receiver"].update(demo_analysis=True))
    with pytest.raises(RuntimeError, match=r"receiver\.results_key"):
        site.receiver()
