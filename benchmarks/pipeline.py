"""End-to-end benchmark: dcmtk storescu -> the gateway daemon -> the reference receiver, beside
dcmtk storescp in the same run. Prints figures; not a test.

N synthetic 512x512 16-bit CT instances (~513 KiB, the ingest benchmark's) are sent over 1 and
over 4 associations, to the gateway as configured by default (every image's pixels read by the
text detector, CT included) and with `[pixels] skip = ["cross-sectional"]` (CT header-only).
For the gateway the clock runs from the first byte sent until the last instance is stored by
the receiver (opened, checked, fsynced); storescp's figure is its receive time alone.
Everything - sender, gateway, its worker processes, receiver - shares this machine's cores.
Every dcmtk program runs with TCP_NODELAY=1 (see benchmarks/ingest.py).

Reported per run: instances/s and MB/s to the last delivery, the ratio to storescp, p50/p95
receive-to-delivered latency (from each delivered file's stored receive time and its delivery
stamp), peak RSS of the daemon and of each worker (VmHWM), CPU seconds by process, and where
the workers' time goes (the daemon's per-stage histograms: read, deidentify, seal, write).

    .venv/bin/python benchmarks/pipeline.py                 # N = 500
    .venv/bin/python benchmarks/pipeline.py -n 500 -n 2000
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from ingest import AE, make_instances, send, storescp  # noqa: E402

from gateway.settings import load  # noqa: E402
from gateway.spool import Spool, State  # noqa: E402
from tests.support import GatewayProcess, cli, receiver_config, write_config  # noqa: E402


@dataclass(frozen=True)
class Run:
    label: str
    associations: int
    n: int
    seconds: float
    megabytes: float
    p50: float | None = None
    p95: float | None = None
    rss_mib: dict[str, float] | None = None
    pss_mib: float | None = None
    cpu_seconds: dict[str, float] | None = None
    stages: dict[str, float] | None = None


def proc_stat(pid: int) -> tuple[float, float]:
    """(CPU seconds, peak RSS MiB) of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return cpu, int(hwm.split()[1]) / 1024


def pss_mib(pid: int) -> float:
    """Proportional set size now: shared pages (libraries, the interpreter) counted once over
    the processes that share them, so the sum over processes is the memory they really use."""
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    line = next(x for x in rollup.splitlines() if x.startswith("Pss:"))
    return int(line.split()[1]) / 1024


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def stage_seconds(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "dicom_gateway_stage_duration_seconds_sum":
                sums[sample.labels["stage"]] = round(sample.value, 2)
            if sample.name == "dicom_gateway_forward_request_duration_seconds_sum":
                sums["forward_request"] = round(sample.value, 2)
    return sums


def latencies(config: Path) -> list[float]:
    """Receive-to-delivered seconds of every delivered instance."""
    spool = Spool.open_readonly(load(config).spool)
    found = []
    for item in spool.items(State.SENT):
        path = item.path
        header, _ = spool.read_sealed(path, body=False)
        if header.kind == "instance":
            received = datetime.fromisoformat(header.received_at).timestamp()
            found.append(path.stat().st_mtime - received)
    return found


def gateway_run(
    work: Path, folders: list[Path], n: int, size_mb: float, skip: bool, connections: int | None
) -> Run:
    root = work / ("site-skip" if skip else "site")
    config = receiver_config(root)
    if skip:
        config["pixels"] = {"skip": ["cross-sectional"]}
    config["ingest"].update(ae_title=AE, max_associations=8)
    config["logging"] = {"level": "info"}
    if connections:
        config["forward"]["connections"] = connections
    config["studies"] = {"stable_seconds": 2.0}
    receiver_port = _free_port()
    config["receiver"]["port"] = receiver_port
    config["forward"]["url"] = f"https://127.0.0.1:{receiver_port}"
    path = write_config(root, config)
    made = cli("keys", "--config", str(path))
    if made.returncode != 0:
        raise RuntimeError(made.stderr)
    receiver = GatewayProcess(path, root / "receiver.log", "receiver", "receiver.listening")
    receiver.start()
    gateway = GatewayProcess(path, root / "gateway.log").start()
    try:
        time.sleep(5)  # the workers load their models
        profiler = None
        if os.environ.get("BENCH_PROFILE"):  # a folder: py-spy samples the daemon and workers
            out = Path(os.environ["BENCH_PROFILE"]) / f"{'skip' if skip else 'default'}.txt"
            profiler = subprocess.Popen(
                ["py-spy", "record", "--subprocesses", "--format", "raw", "--rate", "200",
                 "--pid", str(gateway.pid), "--output", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        started = time.perf_counter()
        try:
            send(gateway.port, folders)  # storescu -aet STORESCU -aec BENCH_GW
        except RuntimeError:
            print("\n".join(gateway.lines[-30:]), file=sys.stderr)
            raise
        stored = root / "received"
        while len(list(stored.rglob("*.dcm"))) < n:
            time.sleep(0.05)
            if time.perf_counter() - started > 3600:
                raise RuntimeError("not everything was delivered within an hour")
        seconds = time.perf_counter() - started
        cpu, rss = {}, {}
        cpu["daemon"], rss["daemon"] = proc_stat(gateway.pid)
        pss = pss_mib(gateway.pid) + sum(pss_mib(pid) for pid in children(gateway.pid))
        for pid in children(gateway.pid):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            name = f"worker-{pid}" if b"spawn_main" in cmdline else f"helper-{pid}"
            cpu[name], rss[name] = proc_stat(pid)
        cpu["receiver"], rss["receiver"] = proc_stat(receiver.pid)
        stages = stage_seconds(gateway.metrics_port)
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=60)
    finally:
        gateway.stop(signal.SIGTERM)
        receiver.stop(signal.SIGTERM)
    waits = sorted(latencies(path))
    p95 = waits[int(0.95 * (len(waits) - 1))] if waits else None
    return Run(
        "gateway, CT not text-checked" if skip else "gateway, every image checked",
        len(folders),
        n,
        seconds,
        size_mb,
        statistics.median(waits) if waits else None,
        p95,
        {k: round(v) for k, v in rss.items()},
        round(pss),
        {k: round(v, 1) for k, v in cpu.items()},
        stages,
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def baseline_run(work: Path, folders: list[Path], n: int, size_mb: float) -> Run:
    with storescp(work) as (port, _pid):
        seconds = send(port, folders)
    return Run("storescp (receive only)", len(folders), n, seconds, size_mb)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, action="append", help="instances (default 500)")
    parser.add_argument("--associations", type=int, action="append", help="default 1 and 4")
    parser.add_argument(
        "--mode", choices=("both", "default", "skip"), default="both",
        help="every image checked, CT header-only, or both (default)",
    )  # fmt: skip
    parser.add_argument(
        "--connections", type=int, help="forward.connections (default: its default)"
    )
    args = parser.parse_args()
    modes = {"both": (False, True), "default": (False,), "skip": (True,)}[args.mode]
    for n in args.n or [500]:
        for associations in args.associations or [1, 4]:
            with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
                work = Path(tmp)
                files = make_instances(work / "in", n, associations)
                folders = sorted({p.parent for p in files})  # one storescu per folder
                size_mb = sum(p.stat().st_size for p in (work / "in").rglob("*.dcm")) / 1e6
                base = baseline_run(work, folders, n, size_mb)
                for skip in modes:
                    run = gateway_run(work, folders, n, size_mb, skip, args.connections)
                    report(base, run)
    return 0


def report(base: Run, run: Run) -> None:
    print(f"\n{run.label}: N={run.n} x 513 KiB CT, {run.associations} association(s)")
    for r in (base, run):
        print(
            f"  {r.label:28s} {r.n / r.seconds:7.1f} inst/s {r.megabytes / r.seconds:7.1f} MB/s"
            f"  ({r.seconds:.1f} s)"
        )
    print(f"  ratio gateway/storescp: {base.seconds / run.seconds:.3f}")
    if run.p50 is not None and run.p95 is not None:
        print(f"  receive -> delivered: p50 {run.p50:.2f} s, p95 {run.p95:.2f} s")
    print(f"  peak RSS MiB: {run.rss_mib}")
    print(f"  daemon + workers now, PSS MiB (shared pages counted once): {run.pss_mib}")
    print(f"  CPU seconds: {run.cpu_seconds}")
    print(f"  time by stage (s, summed over instances): {run.stages}")


if __name__ == "__main__":
    raise SystemExit(main())
