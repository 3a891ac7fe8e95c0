"""Ingest benchmark: the gateway against dcmtk's storescp, in the same run. Prints figures.

N synthetic 512x512 16-bit CT instances (explicit VR little endian, ~513 KiB each) are sent with
dcmtk storescu over 1 and over 4 associations, to each receiver in turn. Every dcmtk program
runs with TCP_NODELAY=1: without it dcmtk 3.6.7 leaves Nagle on and every instance waits ~45 ms
for a delayed ACK, which measures nothing.

The gateway fsyncs and encrypts every instance before it answers; storescp does neither.
Nothing is deleted until the end: on a filesystem mounted with `discard`, deleting the previous
run's gigabyte makes the next run's writes slow, whichever receiver it is.

    .venv/bin/python benchmarks/ingest.py            # N = 500
    .venv/bin/python benchmarks/ingest.py -n 500 -n 2000 --repeat 3

Each figure is the median of `--repeat` rounds in which the receivers take turns, because this
kind of machine's disk speed drifts by tens of percent from one minute to the next.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

REPO = Path(__file__).resolve().parents[1]
# dcmtk's programs, not pynetdicom's console scripts of the same names in an activated venv
_PATH = [
    d
    for d in os.environ.get("PATH", "").split(os.pathsep)
    if not (Path(d).parent / "pyvenv.cfg").exists()
]
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1", "PATH": os.pathsep.join(_PATH)}
AE = "BENCH_GW"


@dataclass(frozen=True)
class Figures:
    receiver: str
    associations: int
    n: int
    seconds: float
    megabytes: float
    peak_rss_mib: float

    @property
    def per_second(self) -> float:
        return self.n / self.seconds


def make_instances(root: Path, n: int, groups: int) -> list[Path]:
    """n CT instances in `groups` folders (one per association), one study and series per
    100 instances; every slice different (`ct_slice`), as a series' slices are."""
    studies = [(generate_uid(), generate_uid()) for _ in range(max(1, n // 100))]
    paths = []
    for i in range(n):
        folder = root / f"a{i % groups}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = ct_slice(i).tobytes()
        paths.append(_write_ct(folder / f"ct{i:05d}.dcm", studies[i % len(studies)], i, pixels))
    return paths


def ct_slice(index: int) -> np.ndarray:
    """A 512x512 CT-like slice (stored value = HU + 1024): padding outside a round field of
    view, noisy air, an elliptical body with a bone ring whose size changes along the series,
    and noise drawn anew for every slice. Since slices of a series are compared with the last
    one read (pixels/stage.py), identical slices would be read nowhere and flatter the
    figures; real slices differ wherever the body and its noise are."""
    rng = np.random.default_rng(index)
    y, x = np.mgrid[0:512, 0:512].astype(np.float32) - 255.5
    a, b = 170 + 25 * np.sin(index / 40), 120 + 15 * np.cos(index / 55)
    body = (x / a) ** 2 + (y / b) ** 2
    out = np.where(body < 1.0, 1064.0, 24.0) + rng.normal(0, 12, (512, 512))
    out[(body > 0.78) & (body < 0.86)] += 700  # bone
    out[x**2 + y**2 > 250**2] = 0  # outside the field of view
    return np.clip(out, 0, 4095).astype(np.uint16)


def _write_ct(path: Path, study: tuple[str, str], index: int, pixels: bytes) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study
    ds.PatientName = "BENCH^SYNTHETIC"
    ds.PatientID = "BENCH0001"
    ds.Modality = "CT"
    ds.InstanceNumber = index + 1
    ds.Rows = ds.Columns = 512
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels
    ds.save_as(path, enforce_file_format=True)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


@contextmanager
def serving(cmd: list[str], port: int, **popen: Any) -> Iterator[tuple[int, int]]:
    """Start a receiver, yield (port, pid) once it listens, stop it by PID."""
    proc = subprocess.Popen(cmd, **popen)
    try:
        wait_for_port(port)
        yield port, proc.pid
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def storescp(work: Path) -> AbstractContextManager[tuple[int, int]]:
    port = free_port()
    out = work / "storescp-out"
    out.mkdir()
    return serving(["storescp", "-aet", AE, "-od", str(out), str(port)], port, env=DCMTK_ENV)


def gateway(work: Path) -> AbstractContextManager[tuple[int, int]]:
    port = free_port()
    config = work / "gateway.toml"
    config.write_text(
        f"""
[ingest]
ae_title = "{AE}"
port = {port}
max_associations = 8
[[ingest.peers]]
name = "bench"
ae_title = "STORESCU"
[spool]
directory = "spool"
master_key = {{ file = "master.key" }}
min_free_mib = 64
[vault]
path = "vault.sqlite3"
key = {{ file = "vault.key" }}
[metrics]
enabled = false
[logging]
level = "warning"
"""
    )
    cli = [sys.executable, "-m", "gateway"]
    subprocess.run([*cli, "keys", "--config", str(config)], check=True, capture_output=True)
    return serving([*cli, "run", "--config", str(config)], port, cwd=REPO)


def send(port: int, folders: list[Path]) -> float:
    """storescu per folder, all at once; returns wall seconds until the last one finished."""
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                "storescu",
                "-aet",
                "STORESCU",
                "-aec",
                AE,
                "+sd",
                "+r",
                "127.0.0.1",
                str(port),
                str(f),
            ],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for f in folders
    ]
    failures = [p.communicate()[1] for p in procs if p.wait() != 0]
    if failures:
        raise RuntimeError(f"storescu failed: {failures[0][-500:]!r}")
    return time.perf_counter() - started


def run(n: int, work: Path, repeat: int) -> list[Figures]:
    """Receivers alternate, `repeat` rounds; each figure is the median round (by time)."""
    data = work / f"data-{n}"
    paths = make_instances(data, n, groups=4)
    megabytes = sum(p.stat().st_size for p in paths) / 1e6
    results = []
    for associations in (1, 4):
        folders = [data] if associations == 1 else sorted(data.glob("a*"))
        rounds: dict[str, list[Figures]] = {"storescp": [], "gateway": []}
        for _ in range(repeat):
            for name, receiver in (("storescp", storescp), ("gateway", gateway)):
                scratch = Path(tempfile.mkdtemp(dir=work))
                with receiver(scratch) as (port, pid):
                    seconds = send(port, folders)
                    rss = peak_rss_mib(pid)
                rounds[name].append(Figures(name, associations, n, seconds, megabytes, rss))
        for figures in rounds.values():
            results.append(sorted(figures, key=lambda f: f.seconds)[len(figures) // 2])
    return results


def report(results: list[Figures]) -> None:
    print(f"{'receiver':<10}{'N':>6}{'assocs':>8}{'inst/s':>10}{'MB/s':>9}{'peak RSS MiB':>14}")
    baseline: dict[tuple[int, int], float] = {}
    for r in results:
        print(
            f"{r.receiver:<10}{r.n:>6}{r.associations:>8}{r.per_second:>10.1f}"
            f"{r.megabytes / r.seconds:>9.1f}{r.peak_rss_mib:>14.1f}",
            end="",
        )
        if r.receiver == "storescp":
            baseline[r.n, r.associations] = r.per_second
            print()
        else:
            print(f"   {r.per_second / baseline[r.n, r.associations]:.2f}x storescp")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, action="append", help="instances (repeatable)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per figure (median)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    (REPO / "var").mkdir(exist_ok=True)  # beside the repository: the disk the gateway uses
    with tempfile.TemporaryDirectory(prefix="dg-bench-", dir=REPO / "var") as tmp:
        results = [f for n in (args.n or [500]) for f in run(n, Path(tmp), args.repeat)]
    report(results)
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
