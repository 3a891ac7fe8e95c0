"""Helpers for tests that run the real gateway as a process and talk to it with real peers."""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gateway.settings import load
from gateway.spool import InstanceHeader, Spool

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = 20.0


def dcmtk(tool: str) -> str:
    """The path of a dcmtk program. pynetdicom installs console scripts of the same names
    (storescu, storescp, ...) into every venv, which an activated venv puts first on PATH."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / tool
        in_venv = (Path(folder).parent / "pyvenv.cfg").exists()
        if folder and not in_venv and os.access(candidate, os.X_OK):
            return str(candidate)
    raise FileNotFoundError(f"dcmtk's {tool} is not installed (apt-get install dcmtk)")


def shared_dir() -> Path:
    return Path(os.environ.get("DICOM_GATEWAY_SHARED", REPO.parent / "shared")).resolve()


def toml(data: Mapping[str, Any]) -> str:
    """A small TOML writer for test configs: tables, arrays of tables, inline secret tables."""
    lines: list[str] = []
    _emit(lines, data, "")
    return "\n".join(lines) + "\n"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, Path)):
        return json.dumps(str(v))
    if isinstance(v, list):
        return "[" + ", ".join(_value(i) for i in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(i)}" for k, i in v.items()) + " }"
    raise TypeError(type(v))


def _emit(lines: list[str], data: Mapping[str, Any], prefix: str) -> None:
    def is_table(v: Any) -> bool:
        return isinstance(v, dict) and not v.get("__inline__")

    for key, v in data.items():
        if not is_table(v) and not (isinstance(v, list) and v and isinstance(v[0], dict)):
            inline = {k: i for k, i in v.items() if k != "__inline__"} if isinstance(v, dict) else v
            lines.append(f"{key} = {_value(inline)}")
    for key, v in data.items():
        name = f"{prefix}{key}"
        if is_table(v):
            lines.append(f"\n[{name}]")
            _emit(lines, v, name + ".")
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                lines.append(f"\n[[{name}]]")
                _emit(lines, item, name + ".")


def secret_file(path: Path) -> dict[str, Any]:
    return {"__inline__": True, "file": str(path)}


def base_config(root: Path) -> dict[str, Any]:
    """A loopback config with free ports, two peers and a tiny spool reserve."""
    return {
        "ingest": {
            "ae_title": "GATEWAY_UT",
            "host": "127.0.0.1",
            "port": 0,
            "association_request_timeout": 5.0,
            "peers": [
                {"name": "test-pacs", "ae_title": "PACS", "addresses": ["127.0.0.1"]},
                {"name": "dcmtk", "ae_title": "STORESCU"},
            ],
        },
        "spool": {
            "directory": str(root / "spool"),
            "master_key": secret_file(root / "keys" / "master.key"),
            "min_free_mib": 1,
        },
        "vault": {
            "path": str(root / "vault" / "vault.sqlite3"),
            "key": secret_file(root / "keys" / "vault.key"),
        },
        "metrics": {"host": "127.0.0.1", "port": 0},
        "logging": {"level": "debug"},
    }


def receiver_config(root: Path) -> dict[str, Any]:
    """`base_config` plus forwarding to, and the reference receiver on, 127.0.0.1 (port 0),
    with the files `dicom-gateway keys` makes under `root`."""
    config = base_config(root)
    pki, keys = root / "pki", root / "keys"
    config["forward"] = {
        "enabled": True,
        "url": "https://127.0.0.1:8443",
        "ca_bundle": str(pki / "ca.crt"),
        "client_certificate": str(pki / "gateway.crt"),
        "client_key": str(pki / "gateway.key"),
        "receiver_key": str(keys / "receiver.pub"),
    }
    config["receiver"] = {
        "host": "127.0.0.1",
        "port": 0,
        "certificate": str(pki / "receiver.crt"),
        "private_key": str(pki / "receiver.key"),
        "client_ca": str(pki / "ca.crt"),
        "hpke_private_key": str(keys / "receiver.key"),
        "storage": str(root / "received"),
    }
    return config


def ingest(**values: Any) -> Callable[[dict[str, Any]], None]:
    """A `gateway_factory` edit that sets `[ingest]` keys."""

    def edit(config: dict[str, Any]) -> None:
        config["ingest"].update(values)

    return edit


def write_config(root: Path, config: Mapping[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "gateway.toml"
    path.write_text(toml(config), encoding="utf-8")
    return path


def cli(
    *args: str, timeout: float = 60.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
        input=input,
    )


def clis(*commands: Sequence[str], timeout: float = 60.0) -> list[subprocess.CompletedProcess[str]]:
    """`cli(*command)` for each command, side by side; the results in the order given. Only for
    commands that neither write what another reads nor depend on each other's order (listings,
    `show`, `audit verify`; those that change the spool take its lock): a process start is
    mostly CPU (imports), so two run in the time of one on two cores."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda command: cli(*command, timeout=timeout), commands))


def make_keys(config: Path) -> None:
    """What `dicom-gateway keys --config <config>` makes, by the same entry point
    (`gateway.cli.main`) in this process: for tests whose subject is another command, the keys
    are only setup (a process start costs a second or two). Tests of `keys` itself use
    `cli("keys", ...)`. AssertionError with its messages if it fails."""
    from gateway.cli import main  # imported here: most tests never need the parser

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["keys", "--config", str(config)])
    assert status == 0, f"keys exit status {status}: {out.getvalue()}{err.getvalue()}"


@dataclass
class GatewayProcess:
    """`dicom-gateway run` (or `receiver`) as a child process; its JSON log lines are kept and
    written out. Ready when the `<ready>` event names the port it listens on."""

    config: Path
    log_file: Path
    command: str = "run"
    ready: str = "ingest.listening"
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    metrics_port: int = 0
    lines: list[str] = field(default_factory=list)
    _ready: queue.Queue[str] = field(default_factory=queue.Queue)
    _reader: threading.Thread | None = None

    def start(self, **popen: Any) -> GatewayProcess:
        return self.launch(**popen).wait_ready()

    def launch(self, **popen: Any) -> GatewayProcess:
        """Start the process without waiting for it to listen (`wait_ready` does)."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", *self.command.split(), "--config", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            **popen,
        )
        self._reader = threading.Thread(target=self._pump, args=(self.proc,), daemon=True)
        self._reader.start()
        return self

    def threads(self) -> int:
        """The gateway process's thread count (Linux /proc)."""
        status = Path(f"/proc/{self.pid}/status").read_text(encoding="ascii")
        return int(next(x for x in status.splitlines() if x.startswith("Threads:")).split()[1])

    def wait_ready(self) -> GatewayProcess:
        """Wait until the `<ready>` event names the port; RuntimeError if it exits first."""
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                event = json.loads(self._ready.get(timeout=0.2))
            except queue.Empty:
                if self.proc.poll() is not None:
                    if self._reader is not None:  # its last lines (why it exited) may be unread
                        self._reader.join(5.0)
                    raise RuntimeError("gateway exited:\n" + "\n".join(self.lines)) from None
                continue
            if event["event"] == "metrics.listening":
                self.metrics_port = int(event["port"])
            if event["event"] == self.ready:
                self.port = int(event["port"])
                return self
        raise RuntimeError("gateway did not start:\n" + "\n".join(self.lines))

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        with self.log_file.open("a", encoding="utf-8") as out:
            for line in proc.stderr:
                out.write(line)
                out.flush()
                self.lines.append(line.rstrip("\n"))
                if ".listening" in line:
                    self._ready.put(line)
        proc.stderr.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40.0) -> int:
        """Signal by PID and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=10)

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit on its own; its exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        parsed = []
        for line in list(self.lines):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if name is None or event.get("event") == name:
                parsed.append(event)
        return parsed

    def wait_for_event(self, name: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events(name):
                if all(event.get(k) == v for k, v in match.items()):
                    return event
            time.sleep(0.05)
        raise AssertionError(f"no {name} {match} in log:\n" + "\n".join(self.lines[-30:]))

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        raise AssertionError(f"metric {name}{labels} not exported")

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
        return int(line.split()[1])


@dataclass(frozen=True)
class Spooled:
    header: InstanceHeader
    part10: bytes


def read_spool(config: Path) -> list[Spooled]:
    spool = Spool.open_readonly(load(config).spool)
    return [Spooled(*spool.read(path)) for path in spool.instance_files()]


def spool_files(config: Path) -> list[Path]:
    """Every file under the spool's instance directory, finished or partial."""
    return [p for p in (load(config).spool.directory / "incoming").rglob("*") if p.is_file()]


def dataset_offset(part10: bytes) -> int:
    """Offset of the data set after the preamble and the group 0002 file meta elements."""
    if part10[128:132] != b"DICM":
        raise ValueError("not a Part 10 stream")
    pos = 132
    while part10[pos : pos + 2] == b"\x02\x00":
        vr = part10[pos + 4 : pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            length = int.from_bytes(part10[pos + 8 : pos + 12], "little")
            pos += 12 + length
        else:
            length = int.from_bytes(part10[pos + 6 : pos + 8], "little")
            pos += 8 + length
    return pos


def dataset_bytes(part10: bytes) -> bytes:
    return part10[dataset_offset(part10) :]


def storescu(
    port: int,
    files: list[Path],
    *options: str,
    aet: str = "STORESCU",
    aec: str = "GATEWAY_UT",
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """dcmtk storescu with TCP_NODELAY (else ~45 ms per instance of delayed-ACK waits)."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    cmd = [dcmtk("storescu"), "-aet", aet, "-aec", aec, *options, "127.0.0.1", str(port)]
    return subprocess.run(
        [*cmd, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def iter_phi_values(files: list[Path]) -> Iterator[str]:
    """Patient names, IDs and instance UIDs of `files`, where specific enough to grep logs for."""
    import pydicom

    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
                keywords = ("PatientName", "PatientID", "StudyInstanceUID", "SOPInstanceUID")
                values = [str(ds.get(kw, "") or "") for kw in keywords]
        except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError):
            continue
        for raw in values:
            for candidate in {raw.strip().strip("^"), *raw.split("^")}:
                candidate = candidate.strip()
                has_letter = any(c.isalpha() for c in candidate)
                if (has_letter and len(candidate) >= 4) or len(candidate) >= 8:
                    yield candidate
