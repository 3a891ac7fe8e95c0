"""Header de-identification benchmark: the gateway's engine against pydicom/deid and dicognito.

Each tool de-identifies the same CT series on one core (CPU 0), in its own process, parsing
each instance from bytes and writing the result to memory, in the same run; the tools take
turns, `--repeat` rounds, and each figure is the median. The series is made from a real CT of
the shared test material: `--count` copies with new SOP Instance UIDs (one study, one series),
read from disk one by one, so every instance the gateway sees is new to its vault, as in a real
study: each one costs a durable vault write (SQLite WAL, synchronous=FULL) for its new UID.
The baselines keep nothing. "gateway-nosync" is the same engine with the vault's commits left
to the OS (synchronous=NORMAL): the price of the per-instance fsync, shown apart.

deid and dicognito are installed only in .venv-bench (benchmarks/baselines/setup.sh).

    .venv/bin/python benchmarks/deidentify.py                  # GE 512x512 CT, 400 instances
    .venv/bin/python benchmarks/deidentify.py --input FILE.dcm --count 1000 --repeat 5
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
BENCH_PYTHON = REPO / ".venv-bench" / "bin" / "python"
DEFAULT_INPUT = (
    REPO.parent / "shared/testdata/dicom/private_tags/orthanc_tests__2019-06-17-VedranZdesic.dcm"
)
CPU = 0
WARMUP = 3


def make_series(source: Path, size: int, folder: Path) -> None:
    """`size` copies of `source`: same study and series, a new SOP Instance UID each."""
    ds = pydicom.dcmread(source)
    for i in range(size):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        ds.save_as(folder / f"{i:05d}.dcm", enforce_file_format=True)


def run_gateway(series_dir: Path, count: int, durable: bool) -> dict[str, Any]:
    """The gateway's engine, the way a worker process runs it (one Engine, a real vault)."""
    from gateway.deidentify.engine import Engine
    from gateway.settings import DeidentifySettings
    from gateway.vault.sqlite import SqliteVault

    series = sorted(series_dir.iterdir())
    with tempfile.TemporaryDirectory(dir=REPO) as tmp:  # the vault on the disk a site would use
        vault = SqliteVault(Path(tmp) / "vault.sqlite3", os.urandom(32), durable=durable)
        engine = Engine(DeidentifySettings(), vault, ae_title="BENCH")
        for i in range(WARMUP):
            engine.run(series[-1 - i].read_bytes())
        start = time.perf_counter()
        for i in range(count):
            io.BytesIO(engine.run(series[i % len(series)].read_bytes()).data)
        seconds = time.perf_counter() - start
        vault.close()
    return {
        "tool": "dicom-gateway" if durable else "gateway-nosync",
        "version": "this tree",
        "count": count,
        "seconds": round(seconds, 4),
        "instances_per_s": round(count / seconds, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def measure(tool: str, series_dir: Path, count: int) -> dict[str, Any]:
    if tool in ("dicom-gateway", "gateway-nosync"):
        cmd = [sys.executable, __file__, "--worker", tool, "--input", str(series_dir)]
    else:
        cmd = [str(BENCH_PYTHON), str(REPO / "benchmarks/baselines/run.py"), "--tool", tool]
        cmd += ["--input", str(series_dir)]
    done = subprocess.run(
        ["taskset", "-c", str(CPU), *cmd, "--count", str(count)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="a CT instance")
    parser.add_argument("--count", type=int, default=400, help="timed instances per tool")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(run_gateway(args.input, args.count, args.worker == "dicom-gateway")))
        return
    if not args.input.is_file():
        parser.error(f"no such file {args.input} (the shared test material is needed)")
    subprocess.run(["bash", str(REPO / "benchmarks/baselines/setup.sh")], check=True)
    tools = ["dicom-gateway", "gateway-nosync", "dicognito", "deid"]
    rounds: dict[str, list[dict[str, Any]]] = {tool: [] for tool in tools}
    with tempfile.TemporaryDirectory() as tmp:
        series_dir = Path(tmp)
        make_series(args.input, args.count + WARMUP, series_dir)
        for r in range(args.repeat):
            for tool in tools if r % 2 == 0 else reversed(tools):
                # deid is ~15/s: a tenth of the instances keeps a round under a minute
                count = max(args.count // 10, 20) if tool == "deid" else args.count
                rounds[tool].append(measure(tool, series_dir, count))
    print(f"\nHeader de-identification, {args.input.name}, one core, median of {args.repeat}")
    print(f"{'tool':<16}{'version':<12}{'inst/s':>9}{'peak RSS MiB':>14}{'  gateway is':>14}")
    ours = statistics.median(r["instances_per_s"] for r in rounds["dicom-gateway"])
    for tool in tools:
        rate = statistics.median(r["instances_per_s"] for r in rounds[tool])
        rss = max(r["peak_rss_mib"] for r in rounds[tool])
        ratio = f"{ours / rate:.1f}x" if tool not in ("dicom-gateway", "gateway-nosync") else ""
        print(f"{tool:<16}{rounds[tool][0]['version']:<12}{rate:>9.1f}{rss:>14.1f}{ratio:>14}")


if __name__ == "__main__":
    main()
