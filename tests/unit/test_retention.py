"""Retention on a real spool (issue 7): exactly what is due goes, on an injected clock.

Ages are file stamps set with os.utime, as the gateway reads them: the receive time of an
original, the delivery or refusal time of a sealed copy. Windows differ per state (1 h
delivered, 2 h quarantine, 3 h dead letters) so that a state erased on another's window shows.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.audit import AuditLog, verify
from gateway.keyfiles import generate_key_file
from gateway.metrics import Metrics
from gateway.pipeline.retention import Retention
from gateway.settings import RetentionSettings, SecretSource, SpoolSettings
from gateway.spool import OutgoingHeader, Received, Spool, State
from gateway.vault import Entry, SqliteVault

HOUR = 3600.0
WINDOWS = RetentionSettings(delivered_hours=1.0, quarantine_hours=2.0, dead_letter_hours=3.0)
STUDY_A = "1.2.826.0.1.3680043.8.498.101"
CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY_B = "1.2.826.0.1.3680043.8.498.202"
PAYLOAD = b"\0" * 128 + b"DICM" + b"a data set naming PATIENT^NAME" * 20
WHATS = ("delivered", "dead", "quarantine", "study_key", "study_record")


class Bench:
    """A spool, an audit log and a metrics registry in one folder; a clock the test moves."""

    def __init__(self, root: Path) -> None:
        key = root / "keys" / "master.key"
        generate_key_file(key)
        self.settings = SpoolSettings(root / "spool", SecretSource(file=key), 0)
        self.spool = Spool.open(self.settings)
        self.audit_path = root / "audit.log"
        self.audit = AuditLog(self.audit_path, sync=False)
        self.registry = CollectorRegistry()
        self.now = time.time()
        self.retention = Retention(
            WINDOWS, self.spool, Metrics(self.registry), self.audit, clock=lambda: self.now
        )

    def close(self) -> None:
        self.audit.close()
        self.spool.close()

    # -- putting items in each state, with an age -------------------------------------------

    def original(self, study: str, age: float = 0.0) -> Path:
        """An original stored as ingest stores it, received `age` seconds ago."""
        head, body = PAYLOAD[:132], PAYLOAD[132:]
        ct, explicit_le = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1"
        header = self.spool.store(Received(head, body, study, "test-pacs", ct, explicit_le))
        return self.aged(self.spool.incoming / header.study_id / f"{header.instance_id}.dgs", age)

    def quarantined(self, study: str, age: float) -> Path:
        """An original the release check held, received `age` seconds ago."""
        path = self.original(study)
        held = self.spool.hold(path, State.QUARANTINE, {"reason": "release-identifier-in-value"})
        return self.aged(held, age)

    def sealed(self, study_id: str, name: str, state: State, age: float) -> Path:
        """A sealed copy in `state`, delivered (sent) or refused (dead) `age` seconds ago."""
        path = self.spool.write_sealed(outgoing(study_id, name), b"body")
        if state == "dead":
            path = self.spool.hold(path, State.DEAD, {"reason": "http-400"})
        elif state != "outbox":
            path = self.spool.move(path, state, stamp=True)
        return self.aged(path, age)

    def aged(self, path: Path, age: float) -> Path:
        os.utime(path, (self.now - age, self.now - age))
        return path

    def study_id(self, original: Path) -> str:
        return original.parent.name

    # -- looking ----------------------------------------------------------------------------

    def key(self, study_id: str) -> Path:
        return self.spool.key_dir / f"{study_id}.key"

    def everything(self) -> set[Path]:
        """Every file in the spool except the lock: what a sweep may have changed."""
        return {p for p in self.spool.root.rglob("*") if p.is_file() and p.name != ".lock"}

    def sweep(self, *busy: str) -> Counter[str]:
        """One sweep; `busy` studies have originals on their way (the scheduler's view)."""
        return self.retention.sweep(set(busy))

    def erased_metric(self) -> dict[str, float]:
        sample = self.registry.get_sample_value
        return {w: sample("dicom_gateway_erased_total", {"what": w}) or 0.0 for w in WHATS}

    def erasures(self) -> list[dict[str, object]]:
        """The `study.erased` records (each one whole line, written at once)."""
        records = [json.loads(line) for line in self.audit_path.read_text().splitlines()]
        return [r for r in records if r["event"] == "study.erased"]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Bench]:
    s = Bench(tmp_path)
    yield s
    s.close()


def outgoing(study_id: str, name: str) -> OutgoingHeader:
    """The clear header of a sealed copy (pseudonymous names only)."""
    return OutgoingHeader(
        name=name,
        study_id=study_id,
        kind="manifest" if name.startswith("manifest-") else "instance",
        site="SITE",
        study="2.25.1",
        item="2.25.2",
        key_id="0" * 16,
        sha256="0" * 64,
        size=4,
        received_at="2025-05-01T09:30:00.000+00:00",
        sealed_at="2025-05-01T09:30:01.000+00:00",
    )


def reason_file(path: Path) -> Path:
    return path.with_name(path.name.rsplit(".", 1)[0] + ".reason.json")


def test_nothing_young_is_erased_and_an_empty_sweep_counts_nothing(site: Bench) -> None:
    a = site.study_id(site.original(STUDY_A, age=10 * HOUR))  # originals wait for the workers
    site.sealed(a, "aa" * 16, State.OUTBOX, age=10 * HOUR)  # waiting to be sent: no window
    site.sealed(a, "bb" * 16, State.SENT, age=HOUR - 60)
    site.sealed(a, "cc" * 16, State.DEAD, age=3 * HOUR - 60)
    site.quarantined(STUDY_A, age=2 * HOUR - 60)
    site.spool.records.write(a, {"version": 1})
    site.aged(site.spool.records.path(a), 10 * HOUR)
    before = site.everything()

    assert site.sweep() == Counter()

    assert site.everything() == before
    assert site.erased_metric() == dict.fromkeys(WHATS, 0.0)
    assert site.erasures() == []


def test_delivered_copies_go_after_their_window_and_nothing_else(site: Bench) -> None:
    a = site.study_id(site.original(STUDY_A))
    b = site.study_id(site.original(STUDY_B))
    due = [
        site.sealed(a, "aa" * 16, State.SENT, age=HOUR),
        site.sealed(a, "manifest-1", State.SENT, age=2 * HOUR),
    ]
    young = site.sealed(a, "bb" * 16, State.SENT, age=HOUR - 60)
    other = site.sealed(b, "cc" * 16, State.SENT, age=HOUR - 1)
    dead = site.sealed(a, "dd" * 16, State.DEAD, age=2 * HOUR)  # older than 1 h, under 3 h
    held = site.quarantined(STUDY_A, age=HOUR + 60)  # older than 1 h, under 2 h
    before = site.everything()

    assert site.sweep(a, b) == Counter(delivered=2)

    assert site.everything() == before - set(due)
    assert {young, other, dead, reason_file(dead), held, reason_file(held)} <= site.everything()
    assert site.key(a).exists()
    assert site.key(b).exists()
    assert site.erased_metric()["delivered"] == 2


def test_dead_letters_go_with_their_reason_files_after_their_own_window(site: Bench) -> None:
    a = site.study_id(site.original(STUDY_A))
    due = site.sealed(a, "aa" * 16, State.DEAD, age=3 * HOUR)
    young = site.sealed(a, "bb" * 16, State.DEAD, age=3 * HOUR - 60)
    assert reason_file(due).exists()

    assert site.sweep(a) == Counter(dead=1)

    assert not due.exists()
    assert not reason_file(due).exists()
    assert young.exists()
    assert reason_file(young).exists()
    assert site.key(a).exists()
    assert site.erased_metric()["dead"] == 1


def test_an_expired_quarantined_study_is_crypto_erased_key_and_all(site: Bench) -> None:
    held = [site.quarantined(STUDY_A, age=2 * HOUR), site.quarantined(STUDY_A, age=5 * HOUR)]
    a = site.study_id(held[0])
    kept = site.quarantined(STUDY_B, age=2 * HOUR - 60)
    b = site.study_id(kept)
    assert site.key(a).exists()

    assert site.sweep() == Counter(quarantine=2, study_key=1)

    assert not site.key(a).exists()
    assert not (site.spool.root / "quarantine" / a).exists()  # reason files and directory too
    assert kept.exists()
    assert reason_file(kept).exists()
    assert site.key(b).exists()
    metric = site.erased_metric()
    assert (metric["quarantine"], metric["study_key"]) == (2, 1)


def test_a_partly_expired_quarantine_keeps_the_key_for_what_is_left(site: Bench) -> None:
    due = site.quarantined(STUDY_A, age=2 * HOUR)
    young = site.quarantined(STUDY_A, age=HOUR)
    a = site.study_id(due)

    assert site.sweep() == Counter(quarantine=1)

    assert not due.exists()
    assert not reason_file(due).exists()
    assert young.exists()
    assert reason_file(young).exists()
    assert site.key(a).exists()
    assert site.spool.read(young)[1] == PAYLOAD  # still readable: its key is intact

    site.now += HOUR
    assert site.sweep() == Counter(quarantine=1, study_key=1)
    assert not young.exists()
    assert not site.key(a).exists()


def test_a_study_busy_only_with_sealed_copies_loses_its_key_with_its_last_original(
    site: Bench,
) -> None:
    """Sealed copies do not need the study key (they are sealed to the server's key): what
    decides is whether an original is left, which the spool checks under its lock."""
    held = site.quarantined(STUDY_A, age=3 * HOUR)
    a = site.study_id(held)

    assert site.sweep(a) == Counter(quarantine=1, study_key=1)

    assert not held.exists()
    assert not reason_file(held).exists()
    assert not site.key(a).exists()


def test_an_original_still_in_incoming_keeps_its_study_key(site: Bench) -> None:
    """The key goes only with the study's last original: one stored just now (and not yet
    known to the scheduler, so not in `busy`) must survive the quarantine's erasure."""
    held = site.quarantined(STUDY_A, age=3 * HOUR)
    waiting = site.original(STUDY_A)
    a = site.study_id(held)

    erased = site.sweep()

    assert not held.exists()
    assert waiting.exists(), "an acknowledged original was erased before it was sealed"
    assert site.key(a).exists()
    assert site.spool.read(waiting)[1] == PAYLOAD
    assert erased == Counter(quarantine=1)


def test_a_stamp_in_the_future_is_reset_to_now_and_not_erased(site: Bench) -> None:
    """The clock went back: the window starts again from now, so erasure is late by at most
    one window, never indefinitely."""
    a = site.study_id(site.original(STUDY_A))
    sent = site.sealed(a, "aa" * 16, State.SENT, age=-100 * HOUR)
    held = site.quarantined(STUDY_B, age=-100 * HOUR)

    assert site.sweep(a) == Counter()

    assert sent.stat().st_mtime == pytest.approx(site.now, abs=0.01)
    assert held.stat().st_mtime == pytest.approx(site.now, abs=0.01)
    site.now += HOUR - 1
    assert site.sweep(a) == Counter()
    site.now += 1
    assert site.sweep(a) == Counter(delivered=1)
    assert held.exists()
    site.now += HOUR
    assert site.sweep(a) == Counter(quarantine=1, study_key=1)
    assert not held.exists()


def test_a_study_record_goes_once_nothing_of_the_study_is_left(site: Bench) -> None:
    original = site.original(STUDY_A)
    a = site.study_id(original)
    site.spool.discard(original)  # sealed: the scheduler removed it
    site.spool.prune(State.INCOMING, a)
    sent = site.sealed(a, "aa" * 16, State.SENT, age=HOUR - 60)
    record = site.spool.records.path(a)
    site.spool.records.write(a, {"version": 1})
    site.aged(record, 2 * HOUR)

    assert site.sweep() == Counter()  # a sealed copy is still there
    assert record.exists()

    site.now += 60
    assert site.sweep(a) == Counter(delivered=1)  # the study is busy: the record stays
    assert record.exists()

    assert site.sweep() == Counter(study_record=1)
    assert not record.exists()
    assert not sent.exists()
    assert not (site.spool.root / "sent" / a).exists()  # the empty directory is pruned
    assert site.erased_metric()["study_record"] == 1


def test_a_young_study_record_stays(site: Bench) -> None:
    site.spool.records.write("ab" * 16, {"version": 1})
    site.aged(site.spool.records.path("ab" * 16), HOUR - 60)

    assert site.sweep() == Counter()
    assert (site.spool.records.path("ab" * 16)).exists()


def test_metrics_and_audit_trail_match_what_went_per_study(site: Bench) -> None:
    a = site.study_id(site.original(STUDY_A))
    b = site.study_id(site.quarantined(STUDY_B, age=2 * HOUR))
    site.sealed(a, "aa" * 16, State.SENT, age=HOUR)
    site.sealed(a, "manifest-1", State.SENT, age=HOUR)
    site.sealed(a, "bb" * 16, State.DEAD, age=3 * HOUR)
    site.sealed(b, "cc" * 16, State.SENT, age=HOUR)

    erased = site.sweep(a)

    assert erased == Counter(delivered=3, dead=1, quarantine=1, study_key=1)
    assert site.erased_metric() == {**dict.fromkeys(WHATS, 0.0), **erased}
    found = {(r["study_id"], r["kind"], r["count"]) for r in site.erasures()}
    assert found == {
        (a, "delivered", 2),
        (a, "dead", 1),
        (b, "delivered", 1),
        (b, "quarantine", 1),
        (b, "study_key", 1),
    }
    for record in site.erasures():
        assert set(record) == {"seq", "time", "event", "study_id", "kind", "count", "prev", "hash"}
    text = site.audit_path.read_text()
    for uid in (STUDY_A, STUDY_B, "2.25."):
        assert uid not in text
    assert verify(site.audit_path).ok


def test_counters_add_up_over_sweeps(site: Bench) -> None:
    a = site.study_id(site.original(STUDY_A))
    site.sealed(a, "aa" * 16, State.SENT, age=HOUR)
    assert site.sweep(a) == Counter(delivered=1)
    site.sealed(a, "bb" * 16, State.SENT, age=HOUR)
    assert site.sweep(a) == Counter(delivered=1)
    assert site.erased_metric()["delivered"] == 2
    assert [r["count"] for r in site.erasures()] == [1, 1]


def test_a_sweep_leaves_the_outbox_usable_for_a_worker_process(site: Bench) -> None:
    """Workers write sealed copies through their own Spool (opened read-only, as
    pipeline.child does). A sweep that prunes a study's emptied outbox directory must not
    leave that worker unable to write the study's next sealed copy."""
    a = site.study_id(site.original(STUDY_A))
    worker = Spool.open_readonly(site.settings)
    try:
        first = worker.write_sealed(outgoing(a, "aa" * 16), b"body")
        delivered = site.spool.move(first, State.SENT, stamp=True)
        assert site.sweep(a) == Counter()  # nothing due; the empty outbox/<study> is pruned
        assert delivered.exists()

        try:
            path = worker.write_sealed(outgoing(a, "bb" * 16), b"body")
        except FileNotFoundError:
            pytest.fail("the worker cannot write into outbox/<study> after a sweep pruned it")
        assert path.exists()
    finally:
        worker.close()


def test_a_study_key_destroyed_when_idle_does_not_break_a_later_instance(site: Bench) -> None:
    """Once a study is idle its key goes (the scheduler, `erase_if_idle`) and a later instance
    of the study gets a fresh key. A worker (its own Spool, as pipeline.child opens it) that
    read the study before must read the later instance with the fresh key."""
    worker = Spool.open_readonly(site.settings)
    try:
        first = site.original(STUDY_A)
        a = site.study_id(first)
        assert worker.read(first)[1] == PAYLOAD
        site.spool.discard(first)  # sealed
        assert site.spool.erase_if_idle(a)
        assert not site.key(a).exists()

        later = site.original(STUDY_A)
        assert site.key(a).exists()
        assert site.spool.read(later)[1] == PAYLOAD
        assert worker.read(later)[1] == PAYLOAD
    finally:
        worker.close()


def test_the_study_ledger_forgets_what_is_older_than_the_delivered_window(
    tmp_path: Path,
) -> None:
    """The vault's ledger (shared by gateways) is pruned by the sweep on the database's own
    clock: entries older than the delivered window go, younger ones and holds stay."""
    vault = SqliteVault(tmp_path / "vault.sqlite3", b"v" * 32)
    bench = Bench(tmp_path)
    bench.retention.ledger = vault
    try:
        old, young = Entry("2.25.11", "2.25.9", CT, "aa"), Entry("2.25.12", "2.25.9", CT, "bb")
        vault.record_delivered("2.25.1", [old])
        assert vault.claim_manifest("2.25.1", 1) == 1
        vault.hold_study("2.25.1")
        db = sqlite3.connect(tmp_path / "vault.sqlite3")
        db.execute(
            "UPDATE delivered SET recorded = recorded - ?", (WINDOWS.delivered_hours * HOUR + 5,)
        )
        db.execute("UPDATE manifest_version SET recorded = recorded - ?", (2 * HOUR,))
        db.commit()
        db.close()
        vault.record_delivered("2.25.1", [young])
        erased = bench.retention.sweep(busy=set())
        assert erased["study_ledger"] == 1
        assert vault.delivered("2.25.1") == {"2.25.12": young}
        assert vault.claim_manifest("2.25.1", 1) == 1  # the old claim went with its window
        assert vault.study_held("2.25.1")
        assert bench.retention.sweep(busy=set())["study_ledger"] == 0
    finally:
        bench.close()
        vault.close()


def test_held_results_go_after_the_quarantine_or_dead_letter_window_and_waiting_ones_stay(
    site: Bench,
) -> None:
    """returns-held/ (results the way back could not store) on the windows of the instances
    held beside them, from the time they were held; returns/ is not retention's."""
    returns = site.spool.returns
    ids = {
        name: f"2.25.{n}" for n, name in enumerate(("old_q", "young_q", "old_d", "young_d", "w"), 1)
    }
    for cursor, rid in enumerate(ids.values(), 1):
        site.aged(returns.put(rid, "2.25.99", cursor, b"sealed").path, 10 * HOUR)
    items = {r.result: r for r in returns.waiting()}
    ages = {"old_q": 2 * HOUR, "young_q": 1.9 * HOUR, "old_d": 3 * HOUR, "young_d": 2.5 * HOUR}
    for name, age in ages.items():
        kind = "quarantine" if name.endswith("_q") else "dead"
        returns.hold(items[ids[name]], kind, "result-unknown-study")
        site.aged(returns.reason_path(ids[name]), age)

    erased = site.sweep()

    assert erased == Counter(result=2)
    assert sorted(str(n["result"]) for n in returns.held()) == [ids["young_q"], ids["young_d"]]
    assert not returns.held_path(ids["old_q"]).exists()
    assert not returns.held_path(ids["old_d"]).exists()
    assert [r.result for r in returns.waiting()] == [ids["w"]]
    sample = site.registry.get_sample_value
    assert sample("dicom_gateway_erased_total", {"what": "result"}) == 2
    records = [json.loads(line) for line in site.audit_path.read_text().splitlines()]
    assert {(r["event"], r["result"], r["kind"]) for r in records} == {
        ("result.erased", ids["old_q"], "quarantine"),
        ("result.erased", ids["old_d"], "dead"),
    }
