"""The gateway's whole flow as real processes, for the integration tests: keys and
certificates from `dicom-gateway keys`, the reference receiver on a fixed loopback port, the
gateway beside it; synthetic studies to send; checks of what the receiver stored.

At teardown every process is stopped by its PID and every log line is checked for the patient
names, IDs and UIDs of every file the test sent: no PHI in any log.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.dicom_builders import greyscale, part10
from tests.support import (
    GatewayProcess,
    iter_phi_values,
    make_keys,
    receiver_config,
    write_config,
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Site:
    """Keys, certificates and configs under one folder; the receiver on a fixed port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.receiver_port = free_port()
        self.config = receiver_config(root)
        self.config["receiver"]["port"] = self.receiver_port
        self.config["forward"]["url"] = f"https://127.0.0.1:{self.receiver_port}"
        self.config["forward"]["max_backoff_seconds"] = 1.0
        self.config["studies"] = {"stable_seconds": 1.0}
        self.config["workers"] = {"count": 1}
        self.config["logging"] = {"level": "info"}
        self.path = write_config(root, self.config)
        make_keys(self.path)
        self.processes: list[GatewayProcess] = []

    def edit(self, change: Callable[[dict[str, Any]], None]) -> None:
        change(self.config)
        self.path = write_config(self.root, self.config)

    def receiver(self) -> GatewayProcess:
        process = GatewayProcess(
            self.path, self.root / "receiver.log", command="receiver", ready="receiver.listening"
        ).start()
        self.processes.append(process)
        return process

    def gateway(self) -> GatewayProcess:
        process = GatewayProcess(self.path, self.root / "gateway.log").start()
        self.processes.append(process)
        return process

    def receiver_and_gateway(self) -> tuple[GatewayProcess, GatewayProcess]:
        """`receiver()` and `gateway()`, started at the same time; the gateway is still
        stopped first."""
        receiver = GatewayProcess(
            self.path, self.root / "receiver.log", command="receiver", ready="receiver.listening"
        )
        gateway = GatewayProcess(self.path, self.root / "gateway.log")
        self.start_together(receiver, gateway)
        return receiver, gateway

    def start_together(self, *processes: GatewayProcess) -> None:
        """Start `processes` at the same time (none needs another to be up to start), each
        ready when this returns; stopped at teardown in reverse order."""
        for process in processes:
            self.processes.append(process.launch())
        for process in processes:
            process.wait_ready()

    def stored(self) -> list[Path]:
        return sorted((self.root / "received").rglob("*.dcm"))

    def manifests(self) -> list[Path]:
        return sorted((self.root / "received").rglob("manifest-*.json"))

    def spool(self, state: str, pattern: str = "*") -> list[Path]:
        return sorted((self.root / "spool" / state).glob(f"*/{pattern}"))

    def check_logs(self) -> None:
        """No name, ID or UID of any file sent (anything under root but the receiver's store)
        in any log line of any process."""
        received = self.root / "received"
        sent = [p for p in self.root.rglob("*.dcm") if received not in p.parents]
        values = set(iter_phi_values(sent))
        for log in self.root.glob("*.log"):
            text = log.read_text(encoding="utf-8", errors="replace")
            leaked = sorted(v for v in values if v in text)
            assert not leaked, f"{log.name} holds identifiers of the sent files"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    site = Site(tmp_path)
    yield site
    for process in reversed(site.processes):  # the gateway before the receiver it sends to
        process.stop()
    site.check_logs()


PATIENTS = [("Doe^Jane", "PID-4417", "ACC-99187"), ("Roe^Richard", "PID-5521", "ACC-31337")]


def studies(folder: Path, per_study: int) -> list[Path]:
    """Two studies of two patients; each instance a small greyscale image without text."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for s, (name, pid, accession) in enumerate(PATIENTS):
        study_uid = pydicom.uid.generate_uid()
        series_uid = pydicom.uid.generate_uid()
        for i in range(per_study):
            ds = greyscale(
                64,
                64,
                bytes((x * 3 + i) % 200 for x in range(64 * 64)),
                PatientName=name,
                PatientID=pid,
                AccessionNumber=accession,
                StudyInstanceUID=study_uid,
                SeriesInstanceUID=series_uid,
                InstitutionName="St Elsewhere General",
                InstanceNumber=i + 1,
            )
            path = folder / f"s{s}-{i}.dcm"
            path.write_bytes(part10(ds))
            files.append(path)
    return files


def leaky(folder: Path) -> Path:
    """An instance whose safe-listed private number (kept with retain_safe_private) is the
    patient's ID: the de-identifier lets it through, the release check must not."""
    ds = greyscale(32, 32, bytes(32 * 32), PatientName="Doe^Jane", PatientID="73915824")
    block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
    block.add_new(0x00, "DS", "73915824")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "leaky.dcm"
    path.write_bytes(part10(ds))
    return path


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


IDENTIFYING = ("PatientName", "PatientID", "AccessionNumber", "InstitutionName")
INSTANCE_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def originals(files: list[Path]) -> set[str]:
    """Identifying values of the sent files, to look for in what was received. Real files may
    lack some or hold empty ones ("^^^^"): those are left out, as an empty value is in any file."""
    found = set()
    for path in files:
        ds = pydicom.dcmread(path)
        found |= {str(ds.get(keyword) or "").strip("^ ") for keyword in IDENTIFYING}
        found |= {str(ds[keyword].value) for keyword in INSTANCE_UIDS}
    found |= {n.split("^")[0] for n, _, _ in PATIENTS}
    return found - {""}


def check_received(site: Site, files: list[Path], study_count: int = len(PATIENTS)) -> None:
    """One valid de-identified file per sent instance; the latest manifests of `study_count`
    studies (the two of `studies()` by default) list exactly them."""
    stored = site.stored()
    assert len(stored) == len(files)
    secrets = originals(files)
    uids = set()
    for path in stored:
        data = path.read_bytes()
        for value in secrets:
            assert value.encode() not in data, "an identifier of the sent file was delivered"
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.SOPInstanceUID == path.stem
        uids.add(ds.SOPInstanceUID)
    assert len(uids) == len(files)
    listed: dict[str, str] = {}
    by_study: dict[str, int] = {}
    for manifest in site.manifests():
        document = json.loads(manifest.read_bytes())
        version = int(manifest.stem.removeprefix("manifest-"))
        if version >= by_study.get(document["study"], 0):
            by_study[document["study"]] = version
            for entry in document["instances"]:
                listed[entry["instance"]] = entry["sha256"]
    assert len(by_study) == study_count
    assert listed == {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in stored}
