"""Results into PACS (issue 21): re-identified results stored into Orthanc. Figures, not a
test.

Orthanc (Debian package, tests/orthanc.py: a child process with its own config, REST and
DICOM on loopback, stopped by its PID) is the PACS throughout.

1. **The deliverer** (`ResultsPoller` + `ResultsDeliverer`, called directly in this process, as
   tests/integration/test_results_channel.py does) against the reference receiver (its own
   process) over mutual TLS, with a real SQLite vault and spool. A 100-slice 512x512 CT study
   of one patient is de-identified by a real worker into the vault and its delivery recorded in
   the ledger; results are made from the de-identified slices by the receiver's demo analysis
   (`receiver.analysis`): TID 1500 SRs (~5 KB) and 100-frame binary SEGs (~3.3 MB; one SEG is
   built by highdicom, the others are copies under new Series and SOP Instance UIDs). Each run
   offers `--srs` SRs, then `--segs` SEGs, and times: fetching them all into the spool (the
   poller), then one `deliver_once` (open, re-identify, C-STORE, mark, audit, acknowledge).
   Beside it, in the same run, with Orthanc emptied before each:
   - `Reidentifier.restore` alone on each result (ms per result);
   - the restored files sent by dcmtk `storescu` over one association (the baseline: a
     plain store of the same bytes);
   - the restored data sets sent by `scu.store` (the deliverer's SCU: one association per
     result), without re-identification or the channel.
2. **The round trip at the daemon level**: storescu -> gateway daemon -> receiver with
   `demo_analysis` -> gateway (polling the results channel) -> Orthanc. For each run a new
   study of `--slices` 512x512 CT slices; the clock runs from the mtime of the receiver's
   manifest-N.json that lists every slice to both results (SEG and SR) being listed in
   Orthanc's study (REST, polled every 0.1 s); the receiver's demo-N.json (results offered)
   splits the analysis from the way back. With `results.poll_seconds` at its default (30 s)
   and at 1 s.

`--orthanc-nodelay` starts Orthanc with TCP_NODELAY=1 in its environment (the dcmtk inside
it then turns Nagle off; as packaged it leaves it on, and a peer's every C-STORE waits ~40 ms
for an ACK Orthanc delays); without it, Orthanc runs as packaged.

Every figure: median (min-max) over `--runs` runs. Loopback only; every process is stopped by
its PID; the temporary folder is removed.

    .venv/bin/python benchmarks/results.py [--runs 3] [--srs 50] [--segs 10] [--slices 20]
        [--part all|deliverer|round-trip] [--orthanc-nodelay]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway import scu  # noqa: E402
from gateway.audit import AuditLog  # noqa: E402
from gateway.fate import Fate  # noqa: E402
from gateway.forward.client import Forwarder  # noqa: E402
from gateway.forward.results import ResultsClient  # noqa: E402
from gateway.keyfiles import generate_key_file  # noqa: E402
from gateway.logs import configure  # noqa: E402
from gateway.pipeline.results import ResultsDeliverer, ResultsPoller  # noqa: E402
from gateway.receiver import analysis  # noqa: E402
from gateway.receiver.results import Results  # noqa: E402
from gateway.reidentify.restore import Reidentifier  # noqa: E402
from gateway.seal import keys as seal_keys  # noqa: E402
from gateway.settings import (  # noqa: E402
    LoggingSettings,
    PixelSettings,
    SecretSource,
    SpoolSettings,
    load,
)
from gateway.spool import Spool  # noqa: E402
from gateway.vault import Entry, SqliteVault  # noqa: E402
from tests.dicom_builders import part10, pixel_stage, synthetic, worker  # noqa: E402
from tests.integration.test_reidentify import CT, JANE  # noqa: E402
from tests.orthanc import ORTHANC_AE, Orthanc, orthanc_binary  # noqa: E402
from tests.pipeline_site import Site  # noqa: E402
from tests.support import GatewayProcess, cli, storescu  # noqa: E402

SITE = "UT"  # the worker's site code (tests.dicom_builders.worker) and the channel's
GATEWAY_AE = "DICOM_GATEWAY"
SIZE = 512


def ct_series(count: int) -> list[Dataset]:
    """`count` 512x512 12-bit CT slices of Jane's, one study, series and frame of reference."""
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(count)
    slices = []
    for z in range(count):
        pixels = rng.integers(0, 4096, (SIZE, SIZE), dtype=np.uint16).tobytes()
        slices.append(synthetic(
            Rows=SIZE, Columns=SIZE, SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2",
            PixelRepresentation=0, BitsAllocated=16, BitsStored=12, HighBit=11, PixelData=pixels,
            SOPClassUID=CT, Modality="CT", StudyInstanceUID=study, SeriesInstanceUID=series,
            FrameOfReferenceUID=frame, ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
            ImagePositionPatient=[0, 0, z * 2.5], ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            PixelSpacing=[0.7, 0.7], SliceThickness=2.5, RescaleIntercept=-1024,
            RescaleSlope=1, InstanceNumber=z + 1, **JANE,
        ))  # fmt: skip
    return slices


def deidentified(vault: SqliteVault, slices: list[Dataset]) -> list[Dataset]:
    """De-identify like a worker (CT header-only: no pixel text check), and record in the
    ledger what was delivered, as the daemon's manifests do."""
    w = worker(vault, pixels=pixel_stage(PixelSettings(skip=("cross-sectional",))))
    outputs: list[Dataset] = []
    for ds in slices:
        outcome = w.process(part10(ds))
        assert outcome.status is Fate.WRITTEN, outcome.reason
        assert outcome.result is not None
        outputs.append(pydicom.dcmread(io.BytesIO(outcome.result.data)))
    entries = [
        Entry(str(o.SOPInstanceUID), str(o.SeriesInstanceUID), str(o.SOPClassUID), "0" * 64)
        for o in outputs
    ]
    vault.record_delivered(str(outputs[0].StudyInstanceUID), entries)
    return outputs


class Maker:
    """Fresh results of one de-identified series, as the receiver's demo analysis makes them."""

    def __init__(self, series: list[Dataset]) -> None:
        self.series = series
        self.study = str(series[0].StudyInstanceUID)
        self.made = 0
        self._seg: bytes | None = None

    def _names(self) -> analysis.Names:
        self.made += 1
        return analysis.Names(SITE, self.study, str(self.made))

    def sr(self) -> bytes:
        return analysis.sr(self._names(), self.series[len(self.series) // 2])

    def seg(self) -> bytes:
        """The first built by highdicom (seconds for 100 frames); the others are copies under
        the Series and SOP Instance UIDs of a new manifest version."""
        series, instance = self._names().uids("seg")
        if self._seg is None:
            self._seg = analysis.seg(analysis.Names(SITE, self.study, "0"), self.series)
        ds = pydicom.dcmread(io.BytesIO(self._seg))
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, instance
        ds.file_meta.MediaStorageSOPInstanceUID = UID(instance)
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()


def spread(values: list[float], spec: str = ".1f") -> str:
    return (
        f"{format(statistics.median(values), spec)} "
        f"({format(min(values), spec)}-{format(max(values), spec)})"
    )


# --- Orthanc ---------------------------------------------------------------------------------


def emptied(orthanc: Orthanc) -> None:
    """Every study deleted: the next store is a new instance, not one Orthanc already has."""
    with orthanc.rest() as client:
        for study in client.get("/studies").json():
            assert client.delete(f"/studies/{study}").status_code == 200


def held(orthanc: Orthanc, study_uid: str | None = None) -> int:
    """Instances Orthanc holds (of one study, by its Study Instance UID)."""
    if study_uid is None:
        return orthanc.count()
    with orthanc.rest() as client:
        found = client.post("/tools/lookup", content=study_uid).json()
        ids = [f["ID"] for f in found if f["Type"] == "Study"]
        return len(client.get(f"/studies/{ids[0]}/instances").json()) if ids else 0


# --- 1. the deliverer ------------------------------------------------------------------------


@dataclass
class Figures:
    """One kind of result, every run."""

    label: str
    count: int
    size: int = 0
    fetch: list[float] = field(default_factory=list)  # s, all of them into the spool
    deliver: list[float] = field(default_factory=list)  # s, one deliver_once
    store_in_deliver: list[float] = field(default_factory=list)  # s, C-STOREs inside it
    restore_ms: list[float] = field(default_factory=list)  # median per result, per run
    storescu: list[float] = field(default_factory=list)  # s, one association
    scu_store: list[float] = field(default_factory=list)  # s, scu.store each

    def rate(self, seconds: list[float]) -> list[float]:
        return [self.count / s for s in seconds]

    def whole(self) -> list[float]:
        return [f + d for f, d in zip(self.fetch, self.deliver, strict=True)]


@dataclass
class Channel:
    """The receiver, the gateway's side of the channel, the vault and the spool."""

    site: Site
    vault: SqliteVault
    spool: Spool
    audit: AuditLog
    client: ResultsClient
    key: seal_keys.PrivateKey
    node: scu.Node
    stored: list[float] = field(default_factory=list)

    def store(self, ds: Dataset) -> int | None:
        start = time.perf_counter()
        try:
            return scu.store(self.node, ds)
        finally:
            self.stored.append(time.perf_counter() - start)

    def deliverer(self) -> ResultsDeliverer:
        reidentifier = Reidentifier(self.vault, SITE)
        return ResultsDeliverer(
            self.spool.returns, self.client, reidentifier, self.key, self.store, self.audit,
            retry_hours=1.0,
        )  # fmt: skip


@contextmanager
def channel(root: Path, orthanc: Orthanc) -> Iterator[Channel]:
    site = Site(root)
    private, public = root / "keys" / "results.key", root / "keys" / "results.pub"
    key_id = seal_keys.write_pair(private, public)
    site.edit(lambda config: config["receiver"].update(results_key=str(public)))
    site.receiver()
    forwarder = Forwarder.for_settings(load(site.path))
    generate_key_file(root / "spool.key")
    spool = Spool.open(SpoolSettings(root / "returns", SecretSource(file=root / "spool.key")))
    vault = SqliteVault(root / "vault.sqlite3", b"v" * 32)
    audit = AuditLog(root / "audit.log")  # synchronous, as the daemon's
    url = str(site.config["forward"]["url"])
    node = scu.Node("127.0.0.1", orthanc.dicom_port, GATEWAY_AE, ORTHANC_AE, timeout=60.0)
    try:
        yield Channel(site, vault, spool, audit, ResultsClient(forwarder.http, url, SITE, key_id),
                      seal_keys.read_private(private), node)  # fmt: skip
    finally:
        audit.close()
        spool.close()
        vault.close()
        forwarder.close()
        for process in site.processes:
            process.stop()


def delivered(ch: Channel, orthanc: Orthanc, results: list[bytes], figures: Figures) -> None:
    """Offer `results`, fetch them all, deliver them all; Orthanc must hold every one."""
    offered = Results(ch.site.root / "received")
    for data in results:
        offered.offer(SITE, data)
    poller, deliverer = ResultsPoller(ch.client, ch.spool.returns), ch.deliverer()
    ch.stored.clear()
    start = time.perf_counter()
    fetched = 0
    while fetched < len(results):  # the channel lists a page at a time
        fetched += poller.poll_once()
    fetching = time.perf_counter() - start
    start = time.perf_counter()
    assert deliverer.deliver_once(), "a result was not delivered"
    figures.deliver.append(time.perf_counter() - start)
    figures.fetch.append(fetching)
    figures.store_in_deliver.append(sum(ch.stored))
    assert not ch.spool.returns.held(), ch.spool.returns.held()
    assert held(orthanc) == len(results), f"Orthanc holds {held(orthanc)} of {len(results)}"


def baselines(ch: Channel, orthanc: Orthanc, results: list[bytes], folder: Path,
              figures: Figures) -> None:  # fmt: skip
    """Re-identification alone; then the restored results stored by storescu, then by
    scu.store, Orthanc emptied before each."""
    reidentifier = Reidentifier(ch.vault, SITE)
    folder.mkdir(parents=True)
    times = []
    for i, data in enumerate(results):
        start = time.perf_counter()
        restored = reidentifier.restore(data)
        times.append(time.perf_counter() - start)
        (folder / f"{i:04d}.dcm").write_bytes(restored.data)
    figures.restore_ms.append(statistics.median(times) * 1000)
    files = sorted(folder.iterdir())
    figures.size = round(statistics.median(p.stat().st_size for p in files))
    emptied(orthanc)
    start = time.perf_counter()
    sent = storescu(orthanc.dicom_port, files, "-R", aet=GATEWAY_AE, aec=ORTHANC_AE, timeout=600)
    figures.storescu.append(time.perf_counter() - start)
    assert sent.returncode == 0, sent.stderr
    assert held(orthanc) == len(results)
    emptied(orthanc)
    datasets = [pydicom.dcmread(p) for p in files]
    start = time.perf_counter()
    statuses = [scu.store(ch.node, ds) for ds in datasets]
    figures.scu_store.append(time.perf_counter() - start)
    assert statuses == [0] * len(datasets), statuses
    assert held(orthanc) == len(results)
    emptied(orthanc)


def deliverer_runs(root: Path, runs: int, srs: int, segs: int, slices: int) -> list[Figures]:
    orthanc = Orthanc(root / "orthanc").start(GATEWAY_AE, 104, dicom=True)
    try:
        with channel(root / "channel", orthanc) as ch:
            series = deidentified(ch.vault, ct_series(slices))
            maker = Maker(series)
            kinds = [(Figures("TID 1500 SR", srs), maker.sr),
                     (Figures(f"SEG, {slices} frames 512x512", segs), maker.seg)]  # fmt: skip
            for r in range(runs):
                for figures, make in kinds:
                    results = [make() for _ in range(figures.count)]
                    delivered(ch, orthanc, results, figures)
                    emptied(orthanc)
                    baselines(ch, orthanc, results, root / f"restored-{r}-{maker.made}", figures)
                    print(f"  run {r + 1}: {figures.label}: {row(figures, -1)}", flush=True)
            return [f for f, _ in kinds]
    finally:
        orthanc.stop()


def row(f: Figures, at: int) -> str:
    """One run's figures."""
    whole = f.fetch[at] + f.deliver[at]
    return (
        f"{f.count / whole:.1f} results/s (fetch {f.fetch[at]:.2f} s + deliver "
        f"{f.deliver[at]:.2f} s, of which C-STORE {f.store_in_deliver[at]:.2f} s); restore "
        f"{f.restore_ms[at]:.1f} ms; storescu {f.count / f.storescu[at]:.1f}/s; scu.store "
        f"{f.count / f.scu_store[at]:.1f}/s"
    )


def report_deliverer(all_figures: list[Figures], runs: int) -> None:
    print(f"\nthe deliverer: median (min-max) over {runs} runs")
    for f in all_figures:
        print(f"  {f.label} ({f.count} per run, {f.size / 1000:.1f} kB each, restored)")
        print(f"    fetch + deliver, results/s         {spread(f.rate(f.whole()))}")
        print(f"    deliver_once alone, results/s      {spread(f.rate(f.deliver))}")
        per = [1000 * s / f.count for s in f.store_in_deliver]
        print(f"    C-STORE inside deliver, ms/result  {spread(per)}")
        print(f"    restore alone, ms/result           {spread(f.restore_ms, '.2f')}")
        print(f"    baseline storescu (1 assoc), /s    {spread(f.rate(f.storescu))}")
        print(f"    scu.store (1 assoc each), /s       {spread(f.rate(f.scu_store))}")
        ratio = [b / w for b, w in zip(f.storescu, f.whole(), strict=True)]
        print(f"    gateway / storescu                 {spread(ratio, '.2f')}")


# --- 2. the round trip -----------------------------------------------------------------------


@dataclass(frozen=True)
class Trip:
    analysis: float  # manifest -> demo-N.json (results offered)
    poll: float  # -> the gateway's results.fetched event (waiting for its poll, fetching)
    store: float  # -> both results in Orthanc (re-identify, C-STORE)
    manifests: int  # versions the receiver got for the study

    @property
    def back(self) -> float:
        return self.poll + self.store

    @property
    def whole(self) -> float:
        return self.analysis + self.back


def daemon_site(root: Path, orthanc: Orthanc, poll: float | None) -> Site:
    site = Site(root)
    keys = root / "keys"
    pacs = {"ae_title": ORTHANC_AE, "host": "127.0.0.1", "port": orthanc.dicom_port,
            "calling_ae_title": site.config["ingest"]["ae_title"]}  # fmt: skip
    results: dict[str, Any] = {"enabled": True, "private_key": str(keys / "results.key"),
                               "public_key": str(keys / "results.pub"), "pacs": pacs}  # fmt: skip
    if poll is not None:
        results["poll_seconds"] = poll
    site.edit(lambda c: c.update(results=results))
    site.edit(lambda c: c["receiver"].update(results_key=str(keys / "results.pub"),
                                             demo_analysis=True))  # fmt: skip
    made = cli("keys", "--config", str(site.path))
    assert made.returncode == 0, made.stderr
    return site


def when(check: Callable[[], float | None], timeout: float, what: str) -> float:
    """Poll every 0.1 s until `check` gives a time; that time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def complete_manifest(site: Site, before: set[Path], slices: int) -> Path | None:
    """The first new manifest that lists every slice."""
    for path in sorted(set(site.manifests()) - before, key=lambda p: p.stat().st_mtime):
        if len(json.loads(path.read_text())["instances"]) == slices:
            return path
    return None


def round_trip(site: Site, orthanc: Orthanc, gateway: GatewayProcess, folder: Path,
               slices: int, timeout: float) -> Trip:  # fmt: skip
    originals = ct_series(slices)
    folder.mkdir(parents=True)
    for i, ds in enumerate(originals):
        (folder / f"{i:03d}.dcm").write_bytes(part10(ds))
    before = set(site.manifests())
    sent = storescu(gateway.port, sorted(folder.iterdir()), timeout=120)
    assert sent.returncode == 0, sent.stderr
    found: list[Path] = []

    def manifest() -> float | None:
        path = complete_manifest(site, before, slices)
        if path is not None:
            found.append(path)
        return path.stat().st_mtime if path else None

    listed = when(manifest, 300, "the study's manifest")
    version = found[0].stem.removeprefix("manifest-")
    record = found[0].parent / f"demo-{version}.json"
    offered = when(lambda: record.stat().st_mtime if record.exists() else None, 120,
                   "the demo analysis")  # fmt: skip
    study = str(originals[0].StudyInstanceUID)
    stored = when(lambda: time.time() if held(orthanc, study) >= 2 else None, timeout,
                  "both results in Orthanc")  # fmt: skip
    fetched = min(t for t in logged(gateway, "results.fetched") if t >= offered)
    manifests = len(list(found[0].parent.glob("manifest-*.json")))
    return Trip(offered - listed, fetched - offered, stored - fetched, manifests)


def logged(process: GatewayProcess, event: str) -> list[float]:
    """When the process logged `event` (its ISO timestamps, UTC)."""
    return [datetime.fromisoformat(e["timestamp"]).timestamp() for e in process.events(event)]


def trips(root: Path, runs: int, slices: int, poll: float | None) -> list[Trip]:
    orthanc = Orthanc(root / "orthanc")
    site: Site | None = None
    try:
        site = daemon_site(root / "site", orthanc, poll)
        orthanc.start(site.config["ingest"]["ae_title"], 104, dicom=True)
        site.receiver()
        gateway = site.gateway()
        found = []
        interval = poll or 30.0
        phases = np.random.default_rng(runs)
        for r in range(runs):
            # each study arrives at a random point of the poll cycle (else every run after
            # the first would start just after a poll, and wait the same)
            time.sleep(float(phases.uniform(0, interval)))
            trip = round_trip(site, orthanc, gateway, root / f"send-{r}", slices,
                              timeout=2 * interval + 60)  # fmt: skip
            print(f"  poll {interval:g} s: run {r + 1}: manifest -> offered "
                  f"{trip.analysis:.2f} s -> fetched {trip.poll:.2f} s -> both in Orthanc "
                  f"{trip.store:.2f} s = {trip.whole:.2f} s ({trip.manifests} manifest(s))",
                  flush=True)  # fmt: skip
            found.append(trip)
        return found
    finally:
        if site is not None:
            for process in reversed(site.processes):  # the gateway before the receiver
                process.stop()
        orthanc.stop()


def report_trips(by_poll: dict[str, list[Trip]], slices: int) -> None:
    print(f"\nthe round trip, {slices} CT slices 512x512: seconds, median (min-max)")
    for label, found in by_poll.items():
        print(f"  results.poll_seconds {label}")
        for what, values in (
            ("manifest -> results offered (demo analysis)", [t.analysis for t in found]),
            ("results offered -> fetched (the poll's wait)", [t.poll for t in found]),
            ("fetched -> both in Orthanc", [t.store for t in found]),
            ("manifest -> both in Orthanc", [t.whole for t in found]),
        ):
            print(f"    {what:46s} {spread(values, '.2f')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--srs", type=int, default=50, help="SRs per run (default 50)")
    parser.add_argument("--segs", type=int, default=10, help="SEGs per run (default 10)")
    parser.add_argument("--seg-slices", type=int, default=100, help="frames of the SEG")
    parser.add_argument("--slices", type=int, default=20, help="slices of the round trip")
    parser.add_argument("--part", choices=("all", "deliverer", "round-trip"), default="all")
    parser.add_argument("--orthanc-nodelay", action="store_true", help="Orthanc without Nagle")
    args = parser.parse_args()
    if orthanc_binary() is None:
        parser.error("Orthanc is not installed (Debian package orthanc)")
    if args.orthanc_nodelay:  # Orthanc's environment is this one's (storescu sets it anyway)
        os.environ["TCP_NODELAY"] = "1"
    print(f"{os.cpu_count()} cores; {' '.join(sys.argv)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-results-") as tmp:
        root = Path(tmp)
        log = (root / "benchmark.log").open("w", encoding="utf-8")  # JSON, as the daemon's
        configure(LoggingSettings(), log)
        if args.part in ("all", "deliverer"):
            found = deliverer_runs(root / "deliverer", args.runs, args.srs, args.segs,
                                   args.seg_slices)  # fmt: skip
            report_deliverer(found, args.runs)
        if args.part in ("all", "round-trip"):
            by_poll = {
                label: trips(root / f"trip-{label}", args.runs, args.slices, poll)
                for label, poll in (("1 s", 1.0), ("30 s (default)", None))
            }
            report_trips(by_poll, args.slices)
        log.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
