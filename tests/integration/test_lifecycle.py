"""Workers that die or hang, SIGTERM while work is in flight, and a large backlog at start
(issue 7), with real processes on 127.0.0.1; every process is stopped by its PID."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from gateway.settings import load
from gateway.spool import Received, Spool
from tests.dicom_builders import greyscale, part10
from tests.pipeline_site import Site, studies, wait_for
from tests.support import START_TIMEOUT, GatewayProcess, dcmtk, storescu

pytestmark = pytest.mark.timeout(300)


def slow_instance(folder: Path, seed: int) -> Path:
    """A large noisy image: the text detector needs seconds for it on this machine."""
    rng = random.Random(seed)  # noqa: S311 - test noise
    size = 2048
    ds = greyscale(size, size, rng.randbytes(size * size), PatientName="Slow^Sam")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"slow-{seed}.dcm"
    path.write_bytes(part10(ds))
    return path


def worker_pids(gateway_pid: int) -> set[int]:
    children: set[int] = set()
    for task in Path(f"/proc/{gateway_pid}/task").iterdir():
        text = (task / "children").read_text().split()
        children |= {int(pid) for pid in text}
    return children


def job_started(gateway: GatewayProcess, count: int) -> int:
    """Wait for the `count`-th job start; the PID of the worker that took it."""
    wait_for(lambda: len(gateway.events("worker.job_started")) >= count, 60, "a job")
    return int(gateway.events("worker.job_started")[count - 1]["pid"])


def test_a_worker_killed_twice_on_an_instance_quarantines_it_and_the_pool_serves_on(
    site: Site,
) -> None:
    site.edit(lambda c: c.update(logging={"level": "debug"}))
    site.receiver()
    gateway = site.gateway()
    slow = slow_instance(site.root / "send", 1)
    assert storescu(gateway.port, [slow], aec="GATEWAY_UT").returncode == 0
    for attempt in (1, 2):  # the first crash is retried once, the second quarantines
        pid = job_started(gateway, attempt)
        assert pid in worker_pids(gateway.pid)
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: len(site.spool("quarantine", "*.dgs")) == 1, 60, "the quarantine")
    assert site.spool("quarantine", "*.reason.json")[0].read_text().count("worker-crashed") == 1
    assert gateway.metric("dicom_gateway_worker_restarts_total", reason="worker-crashed") == 2
    assert gateway.metric("dicom_gateway_instances_quarantined_total", reason="worker-crashed") == 1
    files = studies(site.root / "after", 1)
    assert storescu(gateway.port, files, aec="GATEWAY_UT").returncode == 0
    wait_for(lambda: len(site.stored()) == len(files), 90, "delivery by the new worker")
    assert gateway.stop() == 0


def test_a_worker_past_its_time_limit_is_killed_and_its_instance_quarantined(site: Site) -> None:
    site.edit(lambda c: c["workers"].update(instance_timeout_seconds=0.5))
    gateway = site.gateway()
    slow = slow_instance(site.root / "send", 2)
    assert storescu(gateway.port, [slow], aec="GATEWAY_UT").returncode == 0
    wait_for(lambda: len(site.spool("quarantine", "*.dgs")) == 1, 60, "the quarantine")
    assert gateway.metric("dicom_gateway_instances_quarantined_total", reason="worker-timeout") == 1
    assert gateway.metric("dicom_gateway_worker_restarts_total", reason="worker-timeout") == 1
    assert gateway.stop() == 0


def test_sigterm_with_work_in_flight_exits_within_the_drain_time_and_restart_finishes(
    site: Site,
) -> None:
    drain = 5.0
    site.edit(lambda c: c["ingest"].update(drain_seconds=drain))
    site.receiver()
    gateway = site.gateway()
    # one slow instance keeps the single worker busy for seconds, the ten behind it queued
    # (three slow ones only made the restart take ~5 s longer: one worker takes one at a time)
    files = [slow_instance(site.root / "send", 3), *studies(site.root / "send", 5)]
    assert storescu(gateway.port, files, aec="GATEWAY_UT").returncode == 0
    started = time.monotonic()
    assert gateway.stop(signal.SIGTERM, timeout=drain + 20) == 0
    assert time.monotonic() - started < drain + 5
    waiting = site.spool("incoming", "*.dgs") + site.spool("outbox", "*.sealed")
    assert waiting, "the test must stop the gateway with work still queued"
    restarted = site.gateway()
    wait_for(lambda: len(site.manifests()) >= 3, 120, "the rest delivered after restart")
    wait_for(lambda: len(site.stored()) == len(files), 30, "every instance")
    assert site.spool("incoming", "*.dgs") == []
    assert restarted.stop() == 0


def test_a_large_backlog_at_start_does_not_delay_associations_or_grow_memory(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    backlog = 10_000
    settings = load(site.path)
    empty = site.gateway()
    empty.wait_for_event("workers.started", timeout=START_TIMEOUT)  # steady state
    baseline_kib = empty.rss_kib()  # the daemon's RSS is flat from here (+- 4 KiB in 5 s)
    assert empty.stop() == 0
    spool = Spool.open(settings.spool)
    try:
        head = part10(greyscale(8, 8, bytes(64)))
        # the backlog is written by the spool's own code, but without a disk flush per file
        # (10,000 x fdatasync + fsync: ~83 % of writing it, most of this test); os.sync() puts it
        # all on disk before the gateway starts, as the per-file flushes did
        with monkeypatch.context() as unflushed:
            unflushed.setattr(os, "fsync", lambda fd: None)
            unflushed.setattr(os, "fdatasync", lambda fd: None)
            for i in range(backlog):
                spool.store(
                    Received(
                        head[:0],
                        head,
                        f"1.2.826.0.1.3680043.10.1.{i // 100}",
                        "dcmtk",
                        "1.2.840.10008.5.1.4.1.1.7",
                        "1.2.840.10008.1.2.1",
                    )
                )
    finally:
        spool.close()
    os.sync()
    assert len(site.spool("incoming", "*.dgs")) == backlog
    started = time.monotonic()
    gateway = site.gateway()  # the receiver is down: the backlog stays
    echo = subprocess.run(
        [dcmtk("echoscu"), "-aet", "STORESCU", "-aec", "GATEWAY_UT", "127.0.0.1",
         str(gateway.port)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert echo.returncode == 0, echo.stderr
    assert time.monotonic() - started < 5.0
    time.sleep(3)
    grown_kib = gateway.rss_kib() - baseline_kib
    assert grown_kib < 40 * 1024, f"the daemon grew {grown_kib} KiB with a {backlog} backlog"
    assert gateway.metric("dicom_gateway_queue_depth", state="incoming") > backlog / 2
    assert gateway.stop() == 0
