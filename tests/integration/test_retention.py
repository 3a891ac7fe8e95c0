"""Retention with windows of seconds, on real processes (issue 7): storescu -> the gateway ->
the reference receiver, then originals, sealed copies, quarantine, keys and study records
disappear on schedule, and nothing else.

Every item is watched from when it appears to when it is gone: its stamp (delivery time of a
sealed copy, receive time of an original) plus the window is the earliest it may go, and one
sweep later the latest.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from gateway.spool import STATES
from gateway.spool.layout import RETURNS, RETURNS_HELD
from tests.pipeline_site import Site, leaky, originals, studies
from tests.support import cli, storescu

pytestmark = pytest.mark.timeout(120)

HOURS = 0.002
WINDOW = HOURS * 3600.0  # 7.2 s
SWEEP = 0.5
#: A sweep is due every SWEEP seconds and runs on the scheduler's next pass, which waits up
#: to 0.5 s for work; the watcher looks every LOOK seconds.
LOOK = 0.05
LATE = SWEEP + 0.5 + LOOK + 0.25
#: An idle study's key goes on the scheduler's next one-second tick after its last answer.
TICK = 1.0


@dataclass
class Seen:
    stamp: float  # st_mtime when first seen: when it was delivered, or received
    gone: float | None = None  # wall time of the first look that did not find it


class Watch:
    """Looks at the spool every LOOK seconds: when each sealed copy and quarantined original
    appeared (with its stamp) and when it was gone."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.items: dict[Path, Seen] = {}

    def look(self) -> None:
        now = time.time()
        present = {*self.site.spool("sent", "*.sealed"), *self.site.spool("quarantine", "*.dgs")}
        for path in present - self.items.keys():
            try:
                self.items[path] = Seen(path.stat().st_mtime)
            except FileNotFoundError:
                continue
            if path.parent.parent.name == "sent":  # its original went when it was sealed
                incoming = self.site.root / "spool" / "incoming" / path.parent.name
                assert not (incoming / f"{path.stem}.dgs").exists()
        for path, seen in self.items.items():
            if seen.gone is None and path not in present:
                seen.gone = now

    def until(self, check: Callable[[], bool], timeout: float) -> bool:
        """Look until `check()` holds; False if it did not within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.look()
            if check():
                return True
            time.sleep(LOOK)
        return False

    def state(self, state: str) -> dict[Path, Seen]:
        return {p: s for p, s in self.items.items() if p.parent.parent.name == state}


def received_files(site: Site) -> dict[Path, str]:
    """Everything the receiver stored, with its digest."""
    found = (p for p in (site.root / "received").rglob("*") if p.is_file())
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in found}


def identifiers(path: Path) -> set[str]:
    ds = pydicom.dcmread(path)
    return {ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}


def key(site: Site, study_id: str) -> Path:
    return site.root / "spool" / "keys" / f"{study_id}.key"


def test_everything_on_site_is_erased_on_schedule_and_nothing_else(site: Site) -> None:
    windows = {"delivered_hours": HOURS, "quarantine_hours": HOURS, "dead_letter_hours": HOURS}
    site.edit(lambda c: c.update(retention={**windows, "sweep_seconds": SWEEP}))
    site.edit(lambda c: c.setdefault("deidentify", {}).update(retain_safe_private=True))
    receiver = site.receiver()
    gateway = site.gateway()
    clean = studies(site.root / "send", 2)
    planted = leaky(site.root / "send")
    watch = Watch(site)
    sent = storescu(gateway.port, [planted, *clean], aec="GATEWAY_UT")
    assert sent.returncode == 0, sent.stderr

    # 1. delivered: every clean instance and one manifest per study, each original gone
    delivered = len(clean) + 2

    def answered() -> bool:  # the receiver has them all, and the gateway has moved them
        return len(site.manifests()) == 2 and len(watch.state("sent")) == delivered

    assert watch.until(answered, 40), f"{delivered} sealed copies in sent/, 2 manifests received"
    assert len(site.stored()) == len(clean)
    assert site.spool("incoming", "*.dgs") == []
    [held] = watch.state("quarantine")
    quarantined = held.parent.name
    done = {p.parent.name for p in watch.state("sent")}
    assert len(done) == 2
    assert quarantined not in done
    assert key(site, quarantined).exists()
    at_receiver = received_files(site)

    # 2. the delivered studies' keys go once they are idle, long before any window ends
    last_answer = max(s.stamp for s in watch.state("sent").values())
    keys_gone = watch.until(lambda: not any(key(site, s).exists() for s in done), 2 * TICK + LATE)
    assert keys_gone, "the delivered studies' keys are still there"
    assert time.time() < last_answer + WINDOW
    assert key(site, quarantined).exists(), "the quarantine still needs its key"

    # 3. each sealed copy and the quarantined original go one window after their stamp
    assert watch.until(lambda: all(s.gone for s in watch.items.values()), WINDOW + 10)
    for path, seen in watch.items.items():
        assert seen.gone is not None
        age = seen.gone - seen.stamp
        assert WINDOW <= age <= WINDOW + LATE, f"{path.parent.parent.name}: gone after {age:.2f} s"
    assert not key(site, quarantined).exists()

    # 4. nothing of the studies is left on site; the receiver's copies are untouched
    spool = site.root / "spool"
    empty = {".lock", "audit.log", "keys", "studies", "requests", RETURNS, RETURNS_HELD, *STATES}

    def left() -> set[str]:
        return {p.relative_to(spool).as_posix() for p in spool.rglob("*")}

    watch.until(lambda: left() == empty, LATE)  # records and directories go in the same sweep
    assert left() == empty
    assert received_files(site) == at_receiver
    assert [e["status"] for e in receiver.events("receiver.answered")] == [201] * delivered

    erased = {
        what: gateway.metric("dicom_gateway_erased_total", what=what)
        for what in ("delivered", "quarantine", "study_key", "study_record")
    }
    assert erased == {"delivered": delivered, "quarantine": 1, "study_key": 3, "study_record": 2}
    assert gateway.stop() == 0

    # 5. the audit trail: one erasure per study and kind, summed; no identifier; it verifies
    audit = spool / "audit.log"
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    erasures: Counter[tuple[str, str]] = Counter()
    for record in records:
        if record["event"] == "study.erased":
            assert set(record) == {"seq", "time", "event", "study_id", "kind", "count", "prev",
                                   "hash"}  # fmt: skip
            erasures[record["study_id"], record["kind"]] += record["count"]
    per_study = delivered // 2
    assert erasures == {
        **{(s, "delivered"): per_study for s in done},
        **{(s, "study_key"): 1 for s in (*done, quarantined)},  # each key destroyed once
        (quarantined, "quarantine"): 1,
    }
    text = audit.read_text()
    for value in originals(clean) | identifiers(planted):
        assert value not in text
    verified = cli("audit", "verify", "--config", str(site.path))
    assert verified.returncode == 0, verified.stderr
