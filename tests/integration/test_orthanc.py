"""Orthanc as the real PACS (issue 8): Orthanc stores studies given over its REST API, then
pushes them to the gateway as a C-STORE SCU, with its own presentation contexts, transfer
syntaxes and transcoding; they must reach the reference receiver de-identified.

Orthanc (Debian package `orthanc`) runs as a child process with its own JSON configuration,
storage and log under the test's folder, and is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.pipeline_site import Site, check_received, free_port, studies, wait_for
from tests.support import shared_dir

pytestmark = pytest.mark.timeout(300)

ORTHANC_AE = "ORTHANC"
START_TIMEOUT = 30.0
LOG_FLAGS = ("--verbose",)  # "--trace-dicom" shows every presentation context negotiated

#: From the shared corpus, beside the synthetic studies: an uncompressed CT with private
#: elements, a JPEG 2000 MR (sent as it is), and a deflated image, a transfer syntax the gateway
#: never accepts, so Orthanc must transcode it (TranscodeDicomProtocol).
REAL_FILES = (
    "transfer_syntaxes/pydicom_wheel__CT_small.dcm",
    "transfer_syntaxes/pydicom_wheel__MR_small_jp2klossless.dcm",
    "transfer_syntaxes/pydicom_wheel__image_dfl.dcm",
)


def orthanc_binary() -> str | None:
    """The Debian package installs it in /usr/sbin, which is not on every user's PATH."""
    return shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/local/sbin:/usr/sbin")


class Orthanc:
    """One Orthanc on loopback: REST on a free port, no DICOM listener, no plugins.

    Two modalities point at the gateway: `gateway` (Orthanc calls as ORTHANC) and `stranger`
    (the same node, but Orthanc calls as an AE title the gateway does not know).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.http_port = free_port()
        self.log = root / "orthanc.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self, gateway_ae: str, gateway_port: int) -> dict[str, Any]:
        node = {"AET": gateway_ae, "Host": "127.0.0.1", "Port": gateway_port}
        return {
            "Name": "dicom-gateway-test",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "storage"),
            # only this file is read: the Debian /etc/orthanc/orthanc.json, which loads every
            # plugin in /usr/share/orthanc/plugins/, is not
            "Plugins": [],
            "HttpPort": self.http_port,
            # 1.10.1 has no bind address: the HTTP server listens on every interface and
            # answers loopback clients only
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "OrthancExplorerEnabled": False,
            "WebDavEnabled": False,
            "HttpCompressionEnabled": False,
            "HttpThreadsCount": 4,
            # Orthanc only calls out here; its SCP would also listen on every interface
            "DicomServerEnabled": False,
            "DicomAet": ORTHANC_AE,
            "DicomModalities": {
                "gateway": node,
                "stranger": {**node, "LocalAet": "NOT_A_PEER"},
            },
            "DicomScuTimeout": 30,
            "DicomAssociationCloseDelay": 0,
            "TranscodeDicomProtocol": True,
            "ConcurrentJobs": 1,
            "SaveJobs": False,
            "MetricsEnabled": False,
            "SyncStorageArea": False,
        }

    def start(self, gateway_ae: str, gateway_port: int) -> Orthanc:
        binary = orthanc_binary()
        assert binary is not None
        (self.root / "storage").mkdir(parents=True)
        path = self.root / "orthanc.json"
        path.write_text(json.dumps(self.config(gateway_ae, gateway_port), indent=2))
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [binary, *LOG_FLAGS, str(path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env={**os.environ, "TMPDIR": str(self.root)},
            )
        wait_for(self._answers, START_TIMEOUT, "Orthanc's REST API")
        return self

    def _answers(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, f"Orthanc exited with {self.proc.returncode}"
        try:
            with self.rest() as client:
                return client.get("/system").status_code == 200
        except httpx.TransportError:
            return False

    def rest(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.http_port}", timeout=120.0)

    def upload(self, files: list[Path]) -> set[str]:
        """POST /instances, one file each; the Orthanc IDs of their studies."""
        ids = set()
        with self.rest() as client:
            for path in files:
                answer = client.post("/instances", content=path.read_bytes())
                assert answer.status_code == 200, answer.text
                assert answer.json()["Status"] == "Success", answer.text
                ids.add(answer.json()["ParentStudy"])
        return ids

    def post(self, path: str, body: Any) -> httpx.Response:
        with self.rest() as client:
            return client.post(path, json=body)

    @contextlib.contextmanager
    def blamed(self) -> Iterator[None]:
        """A failed assertion inside also shows the end of Orthanc's log."""
        try:
            yield
        except AssertionError as exc:
            lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
            tail = "\n".join(lines[-40:])
            raise AssertionError(f"{exc}\n--- end of {self.log} ---\n{tail}") from exc

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM by PID, then SIGKILL if it has not exited in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """An Orthanc to start once the gateway's port is known; stopped by PID at teardown.

    Its folder is below the test's, out of `Site.check_logs`'s reach (top-level *.log only):
    the PACS is allowed to log the patients it holds.
    """
    if orthanc_binary() is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc, in .ci/debian-packages)")
    pacs = Orthanc(tmp_path / "orthanc")
    yield pacs
    pacs.stop()


def admit_orthanc(site: Site) -> None:
    peer = {"name": "orthanc", "ae_title": ORTHANC_AE, "addresses": ["127.0.0.1"]}
    site.edit(lambda c: c["ingest"]["peers"].append(peer))


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
