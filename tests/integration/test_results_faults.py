"""The way back under faults, at the daemon (issue 21): PACS down -> results wait and are
stored once when it returns; the analysis server away -> polling backs off and resumes;
`kill -9` of the gateway while results are being stored -> every result is in PACS as one
instance, each acknowledged to the server.

PACS is dcmtk `storescp` with unique file names (`+uf`), so a second C-STORE of a result would
show as a second file.
"""

from __future__ import annotations

import itertools
import signal
import time
from datetime import datetime
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from gateway.receiver.results import Offer, Results
from tests.dicom_builders import part10
from tests.integration.test_reidentify import JANE, ct_slices, encode, sr
from tests.integration.test_results_channel import storescp
from tests.pipeline_site import Site, free_port, wait_for
from tests.support import GatewayProcess, make_keys, storescu

pytestmark = pytest.mark.timeout(240)
SITE_CODE = "SITE"  # deidentify.site_code by default
POLL = 0.2
MAX_BACKOFF = 1.6


def returning(site: Site, pacs_port: int) -> GatewayProcess:
    """The receiver (offering results) and a gateway bringing them back to PACS at
    `pacs_port`; a study of Jane's sent and its manifest at the receiver. The gateway."""
    keys = site.root / "keys"
    site.edit(lambda c: c.update(results={
        "enabled": True, "poll_seconds": POLL, "max_backoff_seconds": MAX_BACKOFF,
        "private_key": str(keys / "results.key"), "public_key": str(keys / "results.pub"),
        "pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": pacs_port}}))  # fmt: skip
    site.edit(lambda c: c["receiver"].update(results_key=str(keys / "results.pub")))
    make_keys(site.path)
    site.receiver()
    gateway = site.gateway()
    folder = site.root / "send"
    folder.mkdir()
    for i, ds in enumerate(ct_slices(2, **JANE)):
        (folder / f"{i}.dcm").write_bytes(part10(ds))
    assert storescu(gateway.port, sorted(folder.iterdir())).returncode == 0
    wait_for(lambda: len(site.manifests()) == 1, 60, "the study's manifest")
    return gateway


def received(site: Site) -> list[Dataset]:
    return [pydicom.dcmread(p) for p in sorted((site.root / "received").glob("*/*/*.dcm"))]


def unacknowledged(site: Site) -> list[Path]:
    return list((site.root / "received" / SITE_CODE / "results").glob("*.dcm"))


def in_pacs(folder: Path) -> list[str]:
    """The SOP Instance UID of every file PACS wrote, repeats included."""
    return sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in folder.iterdir())


def offer(site: Site, images: list[Dataset]) -> Offer:
    return Results(site.root / "received").offer(SITE_CODE, encode(sr(images)))


def _times(gateway: GatewayProcess, event: str) -> list[float]:
    return [datetime.fromisoformat(e["timestamp"]).timestamp() for e in gateway.events(event)]


def test_pacs_down_results_wait_then_are_stored_once_and_a_server_away_is_polled_less_often(
    site: Site,
) -> None:
    port = free_port()
    gateway = returning(site, port)
    first = offer(site, received(site))
    wait_for(lambda: len(gateway.events("results.pacs_unavailable")) >= 2, 30, "PACS retried")
    assert len(unacknowledged(site)) == 1  # not acknowledged while PACS is down
    pacs = site.root / "pacs"
    with storescp(pacs, port):
        wait_for(lambda: not unacknowledged(site), 30, "the result stored and acknowledged")
        time.sleep(4 * POLL)  # a few more passes
        assert in_pacs(pacs) == [first.result]

        receiver = site.processes[0]
        assert receiver.command == "receiver"
        receiver.stop()
        wait_for(lambda: len(gateway.events("results.poll_failed")) >= 5, 30, "polls failing")
        failed = _times(gateway, "results.poll_failed")
        gaps = [b - a for a, b in itertools.pairwise(failed)]
        assert gaps[1] > 1.5 * gaps[0], gaps  # doubling ...
        assert gaps[2] > 1.5 * gaps[1] or gaps[2] >= MAX_BACKOFF * 0.9, gaps
        assert max(gaps) < MAX_BACKOFF + 0.5, gaps  # ... up to max_backoff_seconds

        site.receiver()  # back: polling resumes within the longest wait
        second = offer(site, received(site))
        wait_for(lambda: not unacknowledged(site), MAX_BACKOFF + 10, "the next result")
        assert in_pacs(pacs) == sorted([first.result, second.result])
    assert gateway.stop() == 0


def test_kill_9_while_results_are_stored_leaves_each_in_pacs_as_one_instance(
    site: Site,
) -> None:
    port = free_port()
    gateway = returning(site, port)
    images = received(site)
    offered = {offer(site, images).result for _ in range(40)}
    pacs = site.root / "pacs"
    kills = 0
    with storescp(pacs, port):
        for at_least in (5, 15, 25):
            deadline = time.monotonic() + 60
            while len(list(pacs.iterdir())) < at_least and time.monotonic() < deadline:
                time.sleep(0.005)
            if gateway.stop(signal.SIGKILL) == -signal.SIGKILL:
                kills += 1
            gateway = site.gateway()
        wait_for(lambda: not unacknowledged(site), 60, "every result acknowledged")
        stored = in_pacs(pacs)
    assert kills >= 1
    assert set(stored) == offered  # every result, under its own SOP Instance UID
    # a kill between PACS's Success and the spool's mark may store one result again: the
    # same instance (PACS keeps one); never more than one repeat per kill
    assert len(stored) - len(offered) <= kills
    assert not list((site.root / "spool" / "returns").glob("*.sealed"))
    assert gateway.stop() == 0
