"""End-to-end benchmark: dcmtk storescu -> the gateway daemon(s) -> the reference receiver,
beside dcmtk storescp in the same run. Prints figures; not a test.

N synthetic 512x512 16-bit CT instances (~513 KiB, the ingest benchmark's) are sent over 1 and
over 4 associations, to the gateway as configured by default (every image's pixels read by the
text detector, CT included) and with `[pixels] skip = ["cross-sectional"]` (CT header-only).
For the gateway the clock runs from the first byte sent until the last instance is stored by
the receiver (opened, checked, fsynced); storescp's figure is its receive time alone.
Everything - sender, gateway(s), their worker processes, receiver, PostgreSQL - shares this
machine's cores. Every dcmtk program runs with TCP_NODELAY=1 (see benchmarks/ingest.py).

The vault and the number of gateways:

- `--vault sqlite` (the default): one SQLite file per gateway; `--vault postgresql`: a
  PostgreSQL server this script starts (tests/postgres.py: the Debian package's initdb and
  pg_ctl, a fresh cluster on 127.0.0.1, SCRAM password, fsync on) and removes at the end;
  every gateway run gets a fresh database, as every SQLite run gets a fresh file.
- `--gateways 2`: two daemons with their own spools and ports, the same keys, the same
  receiver and the same PostgreSQL database (SQLite cannot be shared: that pair is skipped).
  The instances are split alternately - within each study (100 instances each) the
  instances go to the two gateways in turn, so every study is split across both - and both
  halves are sent at once, `--associations` storescu processes per gateway, so
  2 x associations in all. The clock runs from the first byte
  sent to either until the receiver has stored the last instance. Two gateways on one
  machine share its cores: this measures the shared vault and the contention, not the gain
  of a second box. storescp's baseline for that case receives the same 2 x associations
  folders (it takes one association at a time, as in the one-gateway case).

Reported per run: instances/s and MB/s to the last delivery, the ratio to storescp, p50/p95
receive-to-delivered latency (from each delivered file's stored receive time and its delivery
stamp), the p50/p95 of `dicom_gateway_vault_duration_seconds` (per instance: the seconds its
vault round trips took; instances whose pseudonyms were all remembered make no round trip and
are not counted) estimated from the histogram's buckets (summed over both daemons for two
gateways; linear within a bucket, as Prometheus' histogram_quantile; the buckets are 0.5, 1,
2, 5, 10, 25, 50 ms ...), the vault errors (`dicom_gateway_vault_errors_total`), peak RSS of
each daemon and worker (VmHWM), CPU seconds by process, and where the workers' time goes (the
daemons' per-stage histograms: read, deidentify, seal, write). With `--runs R` (R >= 2) every
round runs storescp and then each gateway case in turn (so a drift of the disk's speed reaches
all alike), and a summary gives the median and the range (min-max) over the rounds.

    .venv/bin/python benchmarks/pipeline.py                 # N = 500
    .venv/bin/python benchmarks/pipeline.py -n 500 -n 2000
    .venv/bin/python benchmarks/pipeline.py -n 1000 --mode skip --associations 1 \\
        --vault sqlite --vault postgresql --gateways 1 --gateways 2 --runs 3
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pydicom
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from ingest import AE, make_instances, send, storescp  # noqa: E402

from gateway.settings import load  # noqa: E402
from gateway.spool import Spool, State  # noqa: E402
from tests.postgres import PostgresServer, binaries  # noqa: E402
from tests.support import (  # noqa: E402
    GatewayProcess,
    cli,
    receiver_config,
    secret_file,
    write_config,
)

VAULTS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


@dataclass(frozen=True)
class Case:
    """One gateway configuration to measure."""

    skip: bool  # CT header-only
    vault: str = "sqlite"
    gateways: int = 1
    name_vault: bool = False  # say which vault in the label (when more than SQLite is run)

    @property
    def label(self) -> str:
        label = "gateway" if self.gateways == 1 else f"{self.gateways} gateways"
        label += ", CT not text-checked" if self.skip else ", every image checked"
        if self.name_vault:
            label += f", {VAULTS[self.vault]} vault"
        return label

    @property
    def slug(self) -> str:
        slug = "skip" if self.skip else "default"
        if self.vault != "sqlite" or self.gateways != 1:
            slug += f"-{self.vault}-{self.gateways}gw"
        return slug


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
    gateways: int = 1
    vault_p50: float | None = None  # seconds; math.inf: beyond the last finite bucket
    vault_p95: float | None = None
    vault_observed: int | None = None  # instances that made a vault round trip
    vault_errors: dict[str, int] | None = None
    sealed: list[int] | None = None  # by gateway


@dataclass
class Scrape:
    """What one run's daemons' /metrics say, summed over the daemons."""

    stages: dict[str, float]
    vault_buckets: dict[float, float]  # upper bound -> cumulative count
    vault_errors: dict[str, float]
    sealed: list[int]  # instances each daemon sealed

    def add(self, other: Scrape) -> None:
        self.sealed += other.sealed
        for name, value in other.stages.items():
            self.stages[name] = self.stages.get(name, 0.0) + value
        for bound, count in other.vault_buckets.items():
            self.vault_buckets[bound] = self.vault_buckets.get(bound, 0.0) + count
        for reason, count in other.vault_errors.items():
            self.vault_errors[reason] = self.vault_errors.get(reason, 0.0) + count


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


def scrape(port: int) -> Scrape:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    found = Scrape({}, {}, {}, [0])
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "dicom_gateway_stage_duration_seconds_sum":
                found.stages[sample.labels["stage"]] = sample.value
            if sample.name == "dicom_gateway_forward_request_duration_seconds_sum":
                found.stages["forward_request"] = sample.value
            if sample.name == "dicom_gateway_vault_duration_seconds_bucket":
                found.vault_buckets[float(sample.labels["le"])] = sample.value
            if sample.name == "dicom_gateway_vault_errors_total":
                found.vault_errors[sample.labels["reason"]] = sample.value
            processed = sample.name == "dicom_gateway_instances_processed_total"
            if processed and sample.labels["result"] == "sealed":
                found.sealed = [round(sample.value)]
    return found


def bucket_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile estimated from cumulative histogram buckets (upper bound -> count), linear
    within a bucket from the previous bound (0 for the first), as Prometheus'
    histogram_quantile does; math.inf when it falls in the +Inf bucket; None without counts."""
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in sorted(buckets):
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return math.inf
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return math.inf


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


def site_configs(
    root: Path, case: Case, connections: int | None, postgres: PostgresServer | None
) -> list[Path]:
    """The configs of the case's gateways (the first also the receiver's) and their keys."""
    config = receiver_config(root)
    if case.skip:
        config["pixels"] = {"skip": ["cross-sectional"]}
    config["ingest"].update(ae_title=AE, max_associations=8)
    config["logging"] = {"level": "info"}
    if connections:
        config["forward"]["connections"] = connections
    config["studies"] = {"stable_seconds": 2.0}
    receiver_port = _free_port()
    config["receiver"]["port"] = receiver_port
    config["forward"]["url"] = f"https://127.0.0.1:{receiver_port}"
    if case.vault == "postgresql":
        if postgres is None:
            raise RuntimeError("the PostgreSQL vault needs the benchmark's server")
        dbname = f"bench_{secrets.token_hex(6)}"
        postgres.create_database(dbname)
        (root / "keys").mkdir(parents=True, exist_ok=True)
        vault = postgres.vault_config(dbname, root / "keys" / "vault-db.password")
        vault["key"] = secret_file(root / "keys" / "vault.key")
        config["vault"] = vault
    paths = [write_config(root, config)]
    made = cli("keys", "--config", str(paths[0]))
    if made.returncode != 0:
        raise RuntimeError(made.stderr)
    for k in range(2, case.gateways + 1):  # the same keys, vault and receiver; its own spool
        other = {
            **config,
            "spool": {**config["spool"], "directory": str(root / f"gw{k}" / "spool")},
        }
        paths.append(write_config(root / f"gw{k}", other))
    return paths


def wait_ready(gateway: GatewayProcess, timeout: float = 120.0) -> None:
    """Until /readyz answers 200 (workers up, vault and receiver reachable)."""
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        answer = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/readyz", timeout=5)
        if answer.status_code == 200:
            return
        body = answer.text
        time.sleep(0.5)
    raise RuntimeError(f"gateway not ready after {timeout:.0f} s: {body}")


def gateway_run(
    root: Path,
    parts: list[list[Path]],
    n: int,
    size_mb: float,
    case: Case,
    connections: int | None,
    postgres: PostgresServer | None,
) -> Run:
    """`parts[k]`: the folders sent to gateway k, one storescu each, all at once."""
    paths = site_configs(root, case, connections, postgres)
    receiver = GatewayProcess(paths[0], root / "receiver.log", "receiver", "receiver.listening")
    receiver.start()
    gateways: list[GatewayProcess] = []
    try:
        for k, path in enumerate(paths):  # one after the other: the first migrates the vault
            suffix = "" if k == 0 else f"-{k + 1}"
            gateways.append(GatewayProcess(path, root / f"gateway{suffix}.log").start())
        time.sleep(5)  # the workers load their models
        for gateway in gateways:
            wait_ready(gateway)
        profilers = []
        if os.environ.get("BENCH_PROFILE"):  # a folder: py-spy samples the daemon and workers
            for k, gateway in enumerate(gateways):
                name = case.slug + ("" if k == 0 else f"-{k + 1}") + f"-{root.name}"
                out = Path(os.environ["BENCH_PROFILE"]) / f"{name}.txt"
                profilers.append(subprocess.Popen(
                    ["py-spy", "record", "--subprocesses", "--format", "raw", "--rate", "200",
                     "--pid", str(gateway.pid), "--output", str(out)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                ))  # fmt: skip
        started = time.perf_counter()
        try:
            send_all([(g.port, folders) for g, folders in zip(gateways, parts, strict=True)])
        except RuntimeError:
            for gateway in gateways:
                print("\n".join(gateway.lines[-30:]), file=sys.stderr)
            raise
        stored = root / "received"
        while len(list(stored.rglob("*.dcm"))) < n:
            time.sleep(0.05)
            if time.perf_counter() - started > 3600:
                raise RuntimeError("not everything was delivered within an hour")
        seconds = time.perf_counter() - started
        cpu, rss = {}, {}
        pss = 0.0
        metrics = Scrape({}, {}, {}, [])
        for k, gateway in enumerate(gateways):
            prefix = "" if len(gateways) == 1 else f"gw{k + 1}-"
            cpu[f"{prefix}daemon"], rss[f"{prefix}daemon"] = proc_stat(gateway.pid)
            pss += pss_mib(gateway.pid) + sum(pss_mib(pid) for pid in children(gateway.pid))
            for pid in children(gateway.pid):
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                kind = "worker" if b"spawn_main" in cmdline else "helper"
                cpu[f"{prefix}{kind}-{pid}"], rss[f"{prefix}{kind}-{pid}"] = proc_stat(pid)
            metrics.add(scrape(gateway.metrics_port))
        cpu["receiver"], rss["receiver"] = proc_stat(receiver.pid)
        for profiler in profilers:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=60)
    finally:
        for gateway in gateways:
            gateway.stop(signal.SIGTERM)
        receiver.stop(signal.SIGTERM)
    waits = sorted(w for path in paths for w in latencies(path))
    p95 = waits[int(0.95 * (len(waits) - 1))] if waits else None
    return Run(
        case.label,
        sum(len(folders) for folders in parts),
        n,
        seconds,
        size_mb,
        statistics.median(waits) if waits else None,
        p95,
        {k: round(v) for k, v in rss.items()},
        round(pss),
        {k: round(v, 1) for k, v in cpu.items()},
        {k: round(v, 2) for k, v in metrics.stages.items()},
        gateways=len(gateways),
        vault_p50=bucket_quantile(0.5, metrics.vault_buckets),
        vault_p95=bucket_quantile(0.95, metrics.vault_buckets),
        vault_observed=round(metrics.vault_buckets.get(math.inf, 0.0)),
        vault_errors={k: round(v) for k, v in metrics.vault_errors.items()},
        sealed=metrics.sealed,
    )


def send_all(targets: list[tuple[int, list[Path]]]) -> float:
    """`ingest.send` to every (port, folders) at once; wall seconds until the last finished."""
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        for done in [pool.submit(send, port, folders) for port, folders in targets]:
            done.result()
    return time.perf_counter() - started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def baseline_run(work: Path, folders: list[Path], n: int, size_mb: float) -> Run:
    work.mkdir(parents=True, exist_ok=True)
    with storescp(work) as (port, _pid):
        seconds = send(port, folders)
    return Run("storescp (receive only)", len(folders), n, seconds, size_mb)


Layout = tuple[list[list[Path]], float]  # the folders of each gateway; megabytes in all


def layouts(root: Path, n: int, associations: int, counts: Iterable[int]) -> dict[int, Layout]:
    """For each number of gateways g: the folders each gateway is sent (`associations` per
    gateway; one storescu each) and the megabytes in all. The files are made once, in
    `associations` folders (instance i in folder i mod associations), which is the one-gateway
    layout. For g gateways they are hard-linked into g x associations folders: within each
    study the instances go to the gateways in turn (InstanceNumber order), so every study is
    split across all of them, and each gateway's share is dealt out over its folders."""
    files = make_instances(root / "in", n, associations)
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    found: dict[int, Layout] = {}
    for g in sorted(set(counts)):
        if g == 1:
            found[g] = ([sorted({p.parent for p in files})], size_mb)
            continue
        by_study: dict[str, list[tuple[int, Path]]] = {}
        for path in files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            by_study.setdefault(ds.StudyInstanceUID, []).append((int(ds.InstanceNumber), path))
        shares: list[list[Path]] = [[] for _ in range(g)]
        for instances in by_study.values():
            for position, (_, path) in enumerate(sorted(instances)):
                shares[position % g].append(path)
        parts: list[list[Path]] = []
        for k, share in enumerate(shares):
            folders = [root / f"in-{g}gw" / f"gw{k + 1}-a{j}" for j in range(associations)]
            for position, path in enumerate(sorted(share)):
                folder = folders[position % associations]
                folder.mkdir(parents=True, exist_ok=True)
                (folder / path.name).hardlink_to(path)
            parts.append([f for f in folders if f.is_dir()])
        found[g] = (parts, size_mb)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, action="append", help="instances (default 500)")
    parser.add_argument(
        "--associations", type=int, action="append",
        help="default 1 and 4 (per gateway with --gateways 2)",
    )  # fmt: skip
    parser.add_argument(
        "--mode", choices=("both", "default", "skip"), default="both",
        help="every image checked, CT header-only, or both (default)",
    )  # fmt: skip
    parser.add_argument(
        "--connections", type=int, help="forward.connections (default: its default)"
    )
    parser.add_argument(
        "--vault", choices=tuple(VAULTS), action="append",
        help="the vault engine; repeatable (default sqlite)",
    )  # fmt: skip
    parser.add_argument(
        "--gateways", type=int, choices=(1, 2), action="append",
        help="gateways sharing the work (2: PostgreSQL vault only); repeatable (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--runs", type=int, default=1, help="rounds of every case; >= 2 adds a summary"
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    modes = {"both": (False, True), "default": (False,), "skip": (True,)}[args.mode]
    vaults = list(dict.fromkeys(args.vault or ["sqlite"]))
    counts = list(dict.fromkeys(args.gateways or [1]))
    if "sqlite" in vaults and 2 in counts:
        print("note: two gateways cannot share a SQLite vault; that pair is not run")
    name_vault = vaults != ["sqlite"]
    cases = [
        Case(skip, vault, g, name_vault)
        for skip in modes
        for vault in vaults
        for g in counts
        if not (vault == "sqlite" and g > 1)
    ]
    if not cases:
        parser.error("nothing to run: --gateways 2 needs --vault postgresql")
    postgres = None
    if any(case.vault == "postgresql" for case in cases):
        bindir = binaries()
        if bindir is None:
            parser.error("PostgreSQL is not installed (apt-get install postgresql)")
        postgres = PostgresServer(bindir)
    try:
        if postgres is not None:
            postgres.start()
        for n in args.n or [500]:
            for associations in args.associations or [1, 4]:
                measure(n, associations, cases, args.runs, args.connections, postgres)
    finally:
        if postgres is not None:
            postgres.remove()
    return 0


def measure(
    n: int,
    associations: int,
    cases: list[Case],
    runs: int,
    connections: int | None,
    postgres: PostgresServer | None,
) -> None:
    """`runs` rounds: in each, storescp for every layout, then every case in turn."""
    results: dict[str, list[tuple[Run, Run]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = Path(tmp)
        data = layouts(work, n, associations, (case.gateways for case in cases))
        for r in range(runs):
            bases = {
                g: baseline_run(work / f"storescp-{g}gw-r{r}", [f for p in parts for f in p], n,
                                size_mb)
                for g, (parts, size_mb) in data.items()
            }  # fmt: skip
            for case in cases:
                parts, size_mb = data[case.gateways]
                root = work / f"site-{case.slug}-r{r}"
                run = gateway_run(root, parts, n, size_mb, case, connections, postgres)
                report(bases[case.gateways], run, (r + 1, runs) if runs > 1 else None)
                results.setdefault(case.label, []).append((bases[case.gateways], run))
    if runs > 1:
        summary(n, associations, runs, results)


def report(base: Run, run: Run, round_: tuple[int, int] | None = None) -> None:
    per_gateway = (
        f" ({run.associations // run.gateways} per gateway, in parallel)"
        if run.gateways > 1
        else ""
    )
    of = f", run {round_[0]}/{round_[1]}" if round_ else ""
    print(
        f"\n{run.label}: N={run.n} x 513 KiB CT, {run.associations} association(s){per_gateway}{of}"
    )
    width = max(28, len(run.label))
    for r in (base, run):
        rate, throughput = r.n / r.seconds, r.megabytes / r.seconds
        print(
            f"  {r.label:{width}s} {rate:7.1f} inst/s {throughput:7.1f} MB/s  ({r.seconds:.1f} s)"
        )
    print(f"  ratio gateway/storescp: {base.seconds / run.seconds:.3f}")
    if run.p50 is not None and run.p95 is not None:
        print(f"  receive -> delivered: p50 {run.p50:.2f} s, p95 {run.p95:.2f} s")
    summed = ", summed over the daemons" if run.gateways > 1 else ""
    print(
        f"  vault per instance (from the histogram's buckets{summed}): "
        f"p50 {_ms(run.vault_p50)}, p95 {_ms(run.vault_p95)}, "
        f"{run.vault_observed} instance(s) with round trips; "
        f"errors {_errors(run.vault_errors)}"
    )
    if run.gateways > 1:
        print(f"  instances sealed by each gateway: {run.sealed}")
    print(f"  peak RSS MiB: {run.rss_mib}")
    print(f"  daemon + workers now, PSS MiB (shared pages counted once): {run.pss_mib}")
    print(f"  CPU seconds: {run.cpu_seconds}")
    print(f"  time by stage (s, summed over instances): {run.stages}")


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if math.isinf(seconds):
        return "> 5000 ms"
    return f"{seconds * 1000:.2f} ms"


def _errors(errors: dict[str, int] | None) -> str:
    """The total, and the count of each reason seen."""
    seen = {k: v for k, v in (errors or {}).items() if v}
    return f"{sum(seen.values())} {seen}" if seen else "0"


def summary(
    n: int, associations: int, runs: int, results: dict[str, list[tuple[Run, Run]]]
) -> None:
    print(f"\nsummary: N={n} x 513 KiB CT, {associations} association(s) per gateway, "
          f"{runs} runs - median (min-max)")  # fmt: skip
    for label, pairs in results.items():
        bases = [b for b, _ in pairs]
        gateway_runs = [r for _, r in pairs]
        print(f"  {label}")
        print(
            f"    inst/s {_spread([r.n / r.seconds for r in gateway_runs], '.1f')}; "
            f"storescp {_spread([b.n / b.seconds for b in bases], '.1f')}; "
            f"ratio {_spread([b.seconds / r.seconds for b, r in pairs], '.3f')}"
        )
        print(
            f"    receive -> delivered: p50 {_spread([r.p50 for r in gateway_runs], '.2f')} s, "
            f"p95 {_spread([r.p95 for r in gateway_runs], '.2f')} s"
        )
        p50 = _spread([_in_ms(r.vault_p50) for r in gateway_runs], ".2f")
        p95 = _spread([_in_ms(r.vault_p95) for r in gateway_runs], ".2f")
        errors = _spread([sum((r.vault_errors or {}).values()) for r in gateway_runs], "d")
        print(f"    vault per instance: p50 {p50} ms, p95 {p95} ms; errors {errors}")


def _in_ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _spread(values: Iterable[float | int | None], spec: str) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"

    def show(value: float) -> str:
        if math.isinf(value):
            return ">5000"
        return format(round(value) if spec == "d" else value, spec)

    return f"{show(statistics.median(known))} ({show(min(known))}-{show(max(known))})"


if __name__ == "__main__":
    raise SystemExit(main())
