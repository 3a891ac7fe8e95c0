"""Orthanc (Debian package `orthanc`) as the real PACS: a child process with its own JSON
configuration, storage and log under the test's folder, stopped by its PID.

Orthanc 1.10.1 cannot bind its listeners to one address: its HTTP server answers loopback
clients only (`RemoteAccessAllowed: false`); its DICOM server, started only for tests that
store into Orthanc (`start(..., dicom=True)`), answers only the gateway's AE title from
127.0.0.1 (`DicomCheckModalityHost`, `DicomAlwaysAllowStore: false`). The tests connect over
loopback only.
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

from tests.pipeline_site import Site, free_port, wait_for

ORTHANC_AE = "ORTHANC"
START_TIMEOUT = 30.0
LOG_FLAGS = ("--verbose",)  # "--trace-dicom" shows every presentation context negotiated


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
        self.dicom_port = free_port()
        self.log = root / "orthanc.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self, gateway_ae: str, gateway_port: int, dicom: bool) -> dict[str, Any]:
        node = {"AET": gateway_ae, "Host": "127.0.0.1", "Port": gateway_port}
        listener = {
            "DicomServerEnabled": True,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            # only the modalities below, each from its own host, may store
            "DicomAlwaysAllowStore": False,
            "DicomAlwaysAllowEcho": False,
            "DicomCheckModalityHost": True,
        }
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
            # without `dicom` Orthanc only calls out; its SCP would listen on every interface
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
            **(listener if dicom else {}),
        }

    def start(self, gateway_ae: str, gateway_port: int, *, dicom: bool = False) -> Orthanc:
        """Orthanc pushing to the gateway at `gateway_port`; with `dicom`, also storing what
        the gateway's AE title sends to `dicom_port`."""
        binary = orthanc_binary()
        assert binary is not None
        (self.root / "storage").mkdir(parents=True)
        path = self.root / "orthanc.json"
        path.write_text(json.dumps(self.config(gateway_ae, gateway_port, dicom), indent=2))
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

    def study(self, study_uid: str) -> list[bytes]:
        """Every instance Orthanc holds of the study (by its Study Instance UID): the files
        it keeps."""
        with self.rest() as client:
            found = client.post("/tools/lookup", content=study_uid)
            assert found.status_code == 200, found.text
            ids = [f["ID"] for f in found.json() if f["Type"] == "Study"]
            if not ids:
                return []
            listed = client.get(f"/studies/{ids[0]}/instances")
            assert listed.status_code == 200, listed.text
            out: list[bytes] = []
            for instance in listed.json():
                file = client.get(f"/instances/{instance['ID']}/file")
                assert file.status_code == 200, file.text
                out.append(file.content)
            return out

    def count(self) -> int:
        """Instances held, of every study."""
        with self.rest() as client:
            return int(client.get("/statistics").json()["CountInstances"])

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


def admit_orthanc(site: Site) -> None:
    peer = {"name": "orthanc", "ae_title": ORTHANC_AE, "addresses": ["127.0.0.1"]}
    site.edit(lambda c: c["ingest"]["peers"].append(peer))
