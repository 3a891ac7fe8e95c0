"""The audit trail on real files: the chain verifies, any edit is found at its line, no PHI."""

from __future__ import annotations

import hashlib
import json
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import structlog.testing

from gateway.audit import GENESIS, AuditError, AuditLog, Verification, verify
from gateway.errors import GatewayError

STUDY = "2.25.329800735698586629295641978511506172918"
STUDY_ID = "9f8e7d6c5b4a39281706f5e4d3c2b1a0"


def write_log(path: Path, records: int, *, sync: bool = False) -> None:
    """A log with a mix of events: study pseudonyms, spool hashes, reasons, counts."""
    with AuditLog(path, sync=sync) as log:
        log.append("gateway.started", version=1)
        for n in range(records - 2):
            if n % 3 == 0:
                log.append("association.accepted", peer="ct-scanner-1")
            elif n % 3 == 1:
                log.append("instance.received", peer="ct-scanner-1", study_id=STUDY_ID)
            else:
                log.append("study.delivered", study=STUDY, destination="analysis", count=n)
        log.append("gateway.stopped")


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in lines(path)]


def rewrite(path: Path, new: list[bytes]) -> None:
    path.write_bytes(b"".join(new))


def resealed(line: bytes, **changes: object) -> bytes:
    """A forger's line: `changes` applied and `hash` recomputed the way the gateway does it."""
    body = {k: v for k, v in json.loads(line).items() if k != "hash"}
    body.update(changes)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    body["hash"] = hashlib.sha256(canonical).hexdigest()
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def test_a_long_chain_verifies(tmp_path: Path) -> None:
    """Records of every shape verify, and `records` counts them all."""
    path = tmp_path / "audit.log"
    write_log(path, 500)
    assert verify(path) == Verification(ok=True, records=500, first_bad_line=None, problem=None)


def test_record_format(tmp_path: Path) -> None:
    """Keys in order seq, time, event, sorted fields, prev, hash; prev of line 1 is 64 zeros;
    hash is SHA-256 of the canonical JSON without hash; prev is SHA-256 of the line before."""
    path = tmp_path / "audit.log"
    with AuditLog(path) as log:
        log.append("gateway.started", version=3)
        log.append("instance.quarantined", study_id=STUDY_ID, reason="pixel-check-timeout")
    first, second = lines(path)
    record = json.loads(second)
    assert list(record) == ["seq", "time", "event", "reason", "study_id", "prev", "hash"]
    assert record["seq"] == 2
    assert record["prev"] == hashlib.sha256(first.rstrip(b"\n")).hexdigest()
    assert json.loads(first)["prev"] == GENESIS
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert record["hash"] == hashlib.sha256(canonical).hexdigest()
    assert len(str(record["time"])) == len("2025-05-01T09:30:12.345Z")
    assert str(record["time"]).endswith("Z")


def edit_value(log: list[bytes]) -> list[bytes]:
    log[3] = log[3].replace(b'"count":2', b'"count":3')
    return log


def edit_time(log: list[bytes]) -> list[bytes]:
    record = json.loads(log[3])
    log[3] = log[3].replace(record["time"].encode(), b"2001-01-01T00:00:00.000Z")
    return log


def edit_prev(log: list[bytes]) -> list[bytes]:
    log[3] = log[3].replace(json.loads(log[3])["prev"].encode(), b"1" * 64)
    return log


def delete_line(log: list[bytes]) -> list[bytes]:
    del log[3]
    return log


def delete_first_line(log: list[bytes]) -> list[bytes]:
    del log[0]
    return log


def swap_lines(log: list[bytes]) -> list[bytes]:
    log[3], log[4] = log[4], log[3]
    return log


def forged_line_appended(log: list[bytes]) -> list[bytes]:
    return [*log, resealed(log[-1], seq=9, prev=GENESIS)]


def old_line_replayed(log: list[bytes]) -> list[bytes]:
    return [*log, log[2]]


def resealed_value(log: list[bytes]) -> list[bytes]:
    """The forger recomputes the hash: the next line's prev still gives it away."""
    log[3] = resealed(log[3], count=3)
    return log


def resealed_seq(log: list[bytes]) -> list[bytes]:
    """A well-formed record with a good prev and hash but the wrong number."""
    prev = hashlib.sha256(log[-1].rstrip(b"\n")).hexdigest()
    return [*log, resealed(log[-1], seq=99, prev=prev)]


def space_added(log: list[bytes]) -> list[bytes]:
    log[3] = log[3].replace(b'"seq":', b'"seq": ')
    return log


def key_duplicated(log: list[bytes]) -> list[bytes]:
    log[3] = log[3].replace(b'{"seq":4,', b'{"seq":1,"seq":4,')
    return log


def phi_written_in(log: list[bytes]) -> list[bytes]:
    log[3] = log[3].replace(b'"destination":"analysis"', b'"destination":"DOE^JOHN"')
    return log


def unknown_event(log: list[bytes]) -> list[bytes]:
    log[3] = resealed(log[3], event="patient.seen")
    return log


def unknown_field(log: list[bytes]) -> list[bytes]:
    log[3] = resealed(log[3], patient_name="doe")
    return log


def garbage_line(log: list[bytes]) -> list[bytes]:
    log.insert(3, b"\n")
    return log


def newline_dropped(log: list[bytes]) -> list[bytes]:
    log[-1] = log[-1].rstrip(b"\n")
    return log


@pytest.mark.parametrize(
    ("tamper", "bad_line", "problem"),
    [
        (edit_value, 4, "hash mismatch"),
        (edit_time, 4, "hash mismatch"),
        (edit_prev, 4, "hash mismatch"),
        (delete_line, 4, "broken chain"),
        (delete_first_line, 1, "broken chain"),
        (swap_lines, 4, "broken chain"),
        (forged_line_appended, 7, "broken chain"),
        (old_line_replayed, 7, "broken chain"),
        (resealed_value, 5, "broken chain"),
        (resealed_seq, 7, "sequence gap"),
        (space_added, 4, "not canonical"),
        (key_duplicated, 4, "not canonical"),
        (phi_written_in, 4, "bad field value"),
        (unknown_event, 4, "unknown event"),
        (unknown_field, 4, "unknown field"),
        (garbage_line, 4, "not JSON"),
        (newline_dropped, 6, "torn line"),
    ],
)
def test_tampering_fails_at_its_line(
    tmp_path: Path, tamper: Callable[[list[bytes]], list[bytes]], bad_line: int, problem: str
) -> None:
    """Each kind of edit is reported at the first line it makes wrong, with a fixed problem."""
    path = tmp_path / "audit.log"
    write_log(path, 6)  # line 4 is study.delivered with count=2, destination="analysis"
    assert verify(path).ok
    rewrite(path, tamper(lines(path)))
    expected = Verification(False, bad_line - 1, bad_line, problem)
    assert verify(path) == expected


def test_every_single_byte_edit_fails_at_its_line(tmp_path: Path) -> None:
    """Flip one bit of any byte of the file: verify fails at the line holding that byte."""
    path = tmp_path / "audit.log"
    write_log(path, 4)
    original = path.read_bytes()
    line_of = [original[:i].count(b"\n") + 1 for i in range(len(original))]
    for i, line in enumerate(line_of):
        path.write_bytes(original[:i] + bytes([original[i] ^ 1]) + original[i + 1 :])
        result = verify(path)
        assert (result.ok, result.first_bad_line) == (False, line), f"byte {i}"


def test_concurrent_appends_are_numbered_without_gaps(tmp_path: Path) -> None:
    """8 threads x 200 durable appends: seq is 1..1600, the chain verifies, and each thread's
    records appear in the order that thread wrote them."""
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    barrier = threading.Barrier(8)

    def appender(thread: int) -> None:
        barrier.wait()
        for n in range(200):
            log.append("instance.received", peer=f"peer-{thread}", count=n)

    threads = [threading.Thread(target=appender, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    assert verify(path) == Verification(True, 1600, None, None)
    written = records(path)
    assert [r["seq"] for r in written] == list(range(1, 1601))
    for thread in range(8):
        mine = [r["count"] for r in written if r["peer"] == f"peer-{thread}"]
        assert mine == list(range(200))


def test_reopening_continues_the_chain(tmp_path: Path) -> None:
    """A restart goes on from the last record: the next seq, prev = that line's hash."""
    path = tmp_path / "audit.log"
    write_log(path, 3)
    with AuditLog(path) as log:
        log.append("gateway.started", version=1)
    assert verify(path) == Verification(True, 4, None, None)
    assert records(path)[-1]["seq"] == 4


def test_a_torn_last_line_is_cut_off_and_recorded(tmp_path: Path) -> None:
    """A crash mid-write leaves a line without newline: opening drops it and says so."""
    path = tmp_path / "audit.log"
    write_log(path, 3)
    torn = b'{"seq":4,"time":"2025-05-01T09:30:12.345Z","event":"instan'
    with path.open("ab") as stream:
        stream.write(torn)
    assert verify(path) == Verification(False, 3, 4, "torn line")
    with AuditLog(path) as log:
        log.append("gateway.started", version=1)
    assert verify(path) == Verification(True, 5, None, None)
    recovered = records(path)[3]
    assert (recovered["seq"], recovered["event"], recovered["bytes"]) == (
        4,
        "audit.recovered",
        len(torn),
    )


def test_a_torn_only_line_restarts_the_chain(tmp_path: Path) -> None:
    """A crash during the very first write: the log starts again at seq 1 from 64 zeros."""
    path = tmp_path / "audit.log"
    path.write_bytes(b'{"seq":1,"ti')
    AuditLog(path).close()
    assert verify(path) == Verification(True, 1, None, None)
    assert records(path)[0]["prev"] == GENESIS


def test_an_unreadable_last_record_is_refused_at_open(tmp_path: Path) -> None:
    """Never chain onto a record that cannot be checked; the file is left as found."""
    path = tmp_path / "audit.log"
    write_log(path, 3)
    rewrite(path, [*lines(path)[:-1], b'{"seq":3,"event":"edited"}\n'])
    before = path.read_bytes()
    with pytest.raises(AuditError, match="last audit record cannot be continued"):
        AuditLog(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("peer", "DOE^JOHN"),
        ("destination", "John Doe"),
        ("reason", "name mismatch: DOE^JOHN"),
        ("kind", "Smith"),
        ("study", "DOE^JOHN^^^"),
        ("study", "1.2.840.10008 Jane"),
        ("instance", "1." + "2" * 70),
        ("study_id", "19700101-jdoe"),
        ("instance_id", "ABCDEF0123456789"),
        ("count", "12345678"),
        ("count", -1),
        ("count", True),
        ("version", "1"),
        ("patient_name", "DOE^JOHN"),
    ],
)
def test_phi_looking_values_are_refused(tmp_path: Path, field: str, value: str | int) -> None:
    """Free text cannot be written; the error names the field, never the value."""
    path = tmp_path / "audit.log"
    with AuditLog(path) as log:
        with pytest.raises(AuditError) as raised:
            log.append("instance.quarantined", **{field: value})
        log.append("gateway.stopped")  # the log goes on after a refused record
    assert field in str(raised.value)
    assert str(value) not in str(raised.value)
    assert isinstance(raised.value, GatewayError)
    assert [r["event"] for r in records(path)] == ["gateway.stopped"]


def test_the_daemon_records_and_goes_on_when_a_record_is_refused(tmp_path: Path) -> None:
    """`record` (the daemon's threads): a refused record is logged without its value and
    reported as False; the trail goes on."""
    path = tmp_path / "audit.log"
    with AuditLog(path) as log, structlog.testing.capture_logs() as logged:
        assert not log.record("instance.quarantined", reason="name mismatch: DOE^JOHN")
        assert log.record("gateway.stopped")
    assert [(e["event"], e["log_level"]) for e in logged] == [("audit.failed", "error")]
    assert "DOE^JOHN" not in repr(logged)
    assert [r["event"] for r in records(path)] == ["gateway.stopped"]


def test_unknown_events_are_refused(tmp_path: Path) -> None:
    with AuditLog(tmp_path / "audit.log") as log, pytest.raises(AuditError, match="unknown event"):
        log.append("patient.admitted")


def test_file_and_directory_modes(tmp_path: Path) -> None:
    """Created 0600 in a new 0700 directory."""
    path = tmp_path / "state" / "audit" / "audit.log"
    AuditLog(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_second_writer_is_refused(tmp_path: Path) -> None:
    """Two writers would fork the chain; the second one gets an error, the first goes on."""
    path = tmp_path / "audit.log"
    with AuditLog(path) as first:
        with pytest.raises(AuditError, match="another process"):
            AuditLog(path)
        first.append("gateway.started", version=1)
    assert verify(path).ok


def test_a_closed_log_refuses_appends(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    log.close()
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.append("gateway.stopped")


def test_an_empty_log_verifies_and_a_missing_one_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    AuditLog(path).close()
    assert verify(path) == Verification(True, 0, None, None)
    with pytest.raises(AuditError, match="cannot read"):
        verify(tmp_path / "missing.log")
