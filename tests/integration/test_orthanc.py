"""Orthanc as the real PACS (issue 8): Orthanc stores studies given over its REST API, then
pushes them to the gateway as a C-STORE SCU, with its own presentation contexts, transfer
syntaxes and transcoding; they must reach the reference receiver de-identified.

Orthanc runs as tests/orthanc.py says.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.orthanc import Orthanc, admit_orthanc
from tests.pipeline_site import Site, check_received, studies, wait_for
from tests.support import shared_dir

pytestmark = pytest.mark.timeout(300)

#: From the shared corpus, beside the synthetic studies: an uncompressed CT with private
#: elements, a JPEG 2000 MR (sent as it is), and a deflated image, a transfer syntax the gateway
#: never accepts, so Orthanc must transcode it (TranscodeDicomProtocol).
REAL_FILES = (
    "transfer_syntaxes/pydicom_wheel__CT_small.dcm",
    "transfer_syntaxes/pydicom_wheel__MR_small_jp2klossless.dcm",
    "transfer_syntaxes/pydicom_wheel__image_dfl.dcm",
)


def real_files(folder: Path) -> list[Path]:
    """Copies of `REAL_FILES` where the shared corpus is present, none where it is not."""
    corpus = shared_dir() / "testdata" / "dicom"
    return [
        Path(shutil.copy(corpus / name, folder)) for name in REAL_FILES if (corpus / name).is_file()
    ]


def test_orthanc_echo_is_answered_for_a_configured_peer_only(site: Site, orthanc: Orthanc) -> None:
    admit_orthanc(site)
    gateway = site.gateway()
    with orthanc.blamed():
        orthanc.start(site.config["ingest"]["ae_title"], gateway.port)
        echoed = orthanc.post("/modalities/gateway/echo", {})
        assert echoed.status_code == 200, echoed.text
        refused = orthanc.post("/modalities/stranger/echo", {})
        assert refused.status_code == 500, refused.text
    # the gateway's log lines may trail Orthanc's answer by a few milliseconds
    gateway.wait_for_event("association.ended", peer="orthanc", how="released", instances=0)
    gateway.wait_for_event("association.refused", reason="calling_ae_unknown")
    assert len(gateway.events("association.admitted")) == 1
    assert gateway.stop() == 0


def test_a_study_pushed_by_orthanc_arrives_de_identified(site: Site, orthanc: Orthanc) -> None:
    admit_orthanc(site)
    site.receiver()
    gateway = site.gateway()
    files = studies(site.root / "send", 2) + real_files(site.root / "send")
    with orthanc.blamed():
        orthanc.start(site.config["ingest"]["ae_title"], gateway.port)
        ids = orthanc.upload(files)
        body = {"Resources": sorted(ids), "Synchronous": True}
        pushed = orthanc.post("/modalities/gateway/store", body)
        assert pushed.status_code == 200, pushed.text
        report = pushed.json()
        assert (report["InstancesCount"], report["FailedInstancesCount"]) == (len(files), 0)

    def acknowledged() -> int:  # logged just after the release Orthanc's job waits for
        return sum(e["instances"] for e in gateway.events("association.ended"))

    wait_for(lambda: acknowledged() == len(files), 10, "the gateway's count of instances")
    wait_for(lambda: len(site.manifests()) >= len(ids), 120, "a manifest per study")
    check_received(site, files, study_count=len(ids))
    assert gateway.metric("dicom_gateway_instances_processed_total", result="sealed") == len(files)
    # nothing refused, deferred or quarantined (readiness probes are test_operations' subject)
    troubles = [e for e in gateway.events() if e["level"] != "info"]
    assert [e for e in troubles if e["event"] != "readiness.changed"] == []
    assert gateway.stop() == 0
