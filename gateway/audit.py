"""The audit trail: append-only, hash-chained and PHI-free.

One JSON object per line, keys in this order: `seq` (1, 2, 3 ... with no gaps), `time` (UTC,
milliseconds), `event`, the event's fields sorted by name, `prev` and `hash`:

    {"seq":7,"time":"2025-05-01T09:30:12.345Z","event":"instance.quarantined",
     "reason":"pixel-check-timeout","study_id":"9f8e...","prev":"5c1a...","hash":"e04b..."}

(one line in the file). `hash` is SHA-256 over the canonical JSON of the record without `hash`
(sorted keys, no spaces, ASCII). `prev` is SHA-256 over the bytes of the line before, its
newline excluded, or 64 zeros on the first line, so a change to any line breaks the chain at
that line or the next. `verify` also re-encodes every record and requires the very same
bytes, so a change that JSON would not notice (a space, a reordered key) fails too.

Nothing in a record can be PHI by construction: only the names in `EVENTS` and `FIELDS` are
written, and every value must match a narrow pattern (configured names, reason codes, UIDs
made of digits and dots, hex spool hashes, counts). A patient name or free text cannot be
written; an `AuditError` names the refused field, never its value. The patterns check shape,
not meaning: callers still pass pseudonyms, never the original UIDs.

Crash safety: the file is opened O_APPEND and each record is one `os.write` of the whole line,
so a crash leaves at most one torn last line (no newline). Opening the log cuts it off and
records that as `audit.recovered` (how many bytes were dropped). With `sync=True` (the
default) `append` returns only after the record is on stable storage; concurrent appenders
share an fdatasync (group commit), so durability does not serialise them on the disk.

One writer: records are numbered and chained under a lock, and an exclusive flock on the
file refuses a second process. `verify` needs no lock; it may run beside the gateway.

What the chain does not show: it has no key, so whoever can write the file can rewrite every
line after the one they change with fresh hashes, or cut lines off the end. Keep the last
`hash` somewhere else (shipped off the box) to detect that.

Rotation (not implemented): a later file would start with the next `seq` and, as its first
`prev`, the hash of the previous file's last line; `verify` would then be given that hash and
`seq` as its starting point instead of 64 zeros and 0. The record format needs no change.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType, TracebackType

from gateway.errors import GatewayError
from gateway.keyfiles import fsync_directory
from gateway.logs import get_logger

_log = get_logger("gateway.audit")

GENESIS = "0" * 64
#: Far above any record we write (~ 400 bytes); bounds what `verify` and recovery read.
MAX_LINE = 64 * 1024


class AuditError(GatewayError):
    """The audit log cannot be opened or written, or a record was refused. Messages name files,
    fields and events, never a field's value."""


EVENTS = frozenset(
    {
        "association.accepted",
        "association.refused",
        "instance.received",
        "instance.dropped",
        "instance.quarantined",
        "instance.released",
        "instance.purged",
        "instance.retried",
        "instance.delivered",
        "instance.dead-lettered",
        "instance.erased",
        "study.received",
        "study.delivered",
        "study.erased",
        "manifest.delivered",
        "result.stored",  # a result of the analysis server, re-identified, in PACS
        "result.quarantined",
        "result.dead-lettered",
        "result.retried",  # an operator put a held result back on its way to PACS
        "result.purged",  # an operator erased a held result
        "result.erased",  # retention erased a held result
        "console.signed-in",  # an officer signed in to the console (`officer`)
        "console.sign-in-refused",  # a wrong name or password, or a locked name
        "console.signed-out",
        "console.viewed",  # an officer looked at a held original (images, header)
        "gateway.started",
        "gateway.stopped",
        "config.reloaded",  # SIGHUP: `version` the generation now in force, `count` the keys
        # that changed but need a restart
        "config.reload-refused",  # SIGHUP: the file is invalid (`count` problems); old kept
        "audit.recovered",  # written by the log itself when it cut off a torn last line
    }
)

Validator = Callable[[object], bool]


def _text(pattern: str) -> Validator:
    regex = re.compile(pattern, re.ASCII)
    return lambda value: isinstance(value, str) and regex.fullmatch(value) is not None


def _number(limit: int) -> Validator:
    return lambda value: type(value) is int and 0 <= value <= limit  # bool is not a number here


_NAME = _text(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # a configured peer or destination name
_UID = _text(r"(?=.{1,64}\Z)(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")  # PS3.5 9.1, pseudonyms only
_SPOOL_HASH = _text(r"[0-9a-f]{16,64}")

FIELDS: Mapping[str, Validator] = MappingProxyType(
    {
        "peer": _NAME,
        "destination": _NAME,
        "officer": _NAME,  # a console officer's account name (staff, never a patient)
        # a fixed code, optionally with an exception class name: "decode-failed:JPEGError"
        "reason": _text(r"[a-z0-9][a-z0-9:._-]{0,63}(:[A-Za-z][A-Za-z0-9_]{0,63})?"),
        "kind": _text(r"[a-z][a-z0-9._-]{0,31}"),
        "study": _UID,
        "instance": _UID,
        "result": _UID,  # a result's id: a UID the analysis server made
        "status": _number(0xFFFF),  # a DIMSE status
        "study_id": _SPOOL_HASH,
        "instance_id": _text(r"[0-9a-f]{16,64}|manifest-[1-9][0-9]{0,8}"),  # or a manifest
        "count": _number(2**63 - 1),
        "bytes": _number(2**63 - 1),
        "version": _number(2**31 - 1),
    }
)

_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", re.ASCII)
_HEX64 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_FRAME = frozenset({"seq", "time", "event", "prev", "hash"})
_SHOWN = re.compile(r"[a-z][a-z0-9._-]{0,39}", re.ASCII)


@dataclass(frozen=True)
class Verification:
    """What `verify` found. `records` counts the good records before `first_bad_line`."""

    ok: bool
    records: int
    first_bad_line: int | None  # 1-based
    problem: str | None  # a fixed text, never content from the file


@dataclass(frozen=True)
class _Record:
    seq: int
    prev: str
    link: str  # what the next line's `prev` must be


# -- the record format ----------------------------------------------------------------------


def _refusal(event: object, fields: Mapping[str, object]) -> tuple[str, str] | None:
    """(problem, name) for the first thing that may not be written, or None."""
    if event not in EVENTS:
        return "unknown event", str(event)
    for name, value in fields.items():
        check = FIELDS.get(name)
        if check is None:
            return "unknown field", name
        if not check(value):
            return "bad field value", name
    return None


def _body(
    seq: int, time: str, event: str, fields: Mapping[str, object], prev: str
) -> dict[str, object]:
    return {"seq": seq, "time": time, "event": event, **dict(sorted(fields.items())), "prev": prev}


def _digest(body: Mapping[str, object]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _encode(body: Mapping[str, object], digest: str) -> bytes:
    """The line as written (no newline): the body's order, then `hash`."""
    return json.dumps({**body, "hash": digest}, separators=(",", ":")).encode("ascii")


def _framed(data: dict[str, object]) -> bool:
    seq, time, prev, digest = (data.get(k) for k in ("seq", "time", "prev", "hash"))
    return (
        type(seq) is int
        and seq >= 1
        and isinstance(time, str)
        and _TIME.fullmatch(time) is not None
        and isinstance(data.get("event"), str)
        and all(isinstance(h, str) and _HEX64.fullmatch(h) is not None for h in (prev, digest))
    )


def _read_record(line: bytes) -> _Record | str:
    """Check one line on its own (newline excluded); a problem is returned as fixed text."""
    try:
        data = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        return "not JSON"
    if not isinstance(data, dict) or not _framed(data):
        return "malformed record"
    fields = {k: v for k, v in data.items() if k not in _FRAME}
    refusal = _refusal(data["event"], fields)
    if refusal is not None:
        return refusal[0]
    body = _body(data["seq"], data["time"], data["event"], fields, data["prev"])
    digest = _digest(body)
    if digest != data["hash"]:
        return "hash mismatch"
    if _encode(body, digest) != line:
        return "not canonical"
    return _Record(data["seq"], data["prev"], hashlib.sha256(line).hexdigest())


def _next_record(raw: bytes, prev: str, seq: int) -> _Record | str:
    """Check one line read from the file against the record before it."""
    if not raw.endswith(b"\n"):
        return "line too long" if len(raw) > MAX_LINE else "torn line"
    record = _read_record(raw[:-1])
    if isinstance(record, str):
        return record
    if record.prev != prev:
        return "broken chain"
    if record.seq != seq + 1:
        return "sequence gap"
    return record


def verify(path: Path) -> Verification:
    """Check every line and the chain from the first line on; stop at the first bad line."""
    prev, seq, number = GENESIS, 0, 0
    try:
        with path.open("rb") as stream:
            while raw := stream.readline(MAX_LINE + 1):
                number += 1
                record = _next_record(raw, prev, seq)
                if isinstance(record, str):
                    return Verification(False, number - 1, number, record)
                prev, seq = record.link, record.seq
    except OSError as exc:
        raise AuditError(f"{path}: cannot read the audit log ({_code(exc)})") from None
    return Verification(True, number, None, None)


# -- the writer -----------------------------------------------------------------------------


class AuditLog:
    """The one writer of an audit file. Thread-safe: records are numbered in the order written."""

    def __init__(self, path: Path, *, sync: bool = True) -> None:
        self.path = path
        self.sync = sync
        self._lock = threading.Lock()  # seq, prev and the write itself: one record at a time
        self._sync_lock = threading.Lock()  # taken before _lock, never after it
        self._synced = 0  # every record up to this seq is on stable storage
        self._broken = False
        self._fd: int | None = _open(path)
        self._seq, self._prev = 0, GENESIS
        try:
            self._seq, self._prev, dropped = _resume(self._fd, path)
            if dropped:
                self.append("audit.recovered", bytes=dropped)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def append(self, event: str, **fields: str | int) -> None:
        """Write one record; with `sync`, return only once it is on stable storage."""
        refusal = _refusal(event, fields)
        if refusal is not None:
            problem, name = refusal
            shown = repr(name) if _SHOWN.fullmatch(name) else "(name not shown)"
            raise AuditError(f"audit record refused: {problem} {shown}")
        with self._lock:
            fd = self._writable()
            body = _body(self._seq + 1, _now(), event, fields, self._prev)
            line = _encode(body, _digest(body))
            self._write(fd, line + b"\n")
            self._seq += 1
            self._prev = hashlib.sha256(line).hexdigest()
            seq = self._seq
        if self.sync:
            self._sync_through(seq)

    def record(self, event: str, **fields: str | int) -> bool:
        """`append` for the daemon's threads: a record that cannot be written (refused, or
        the disk fails) is logged as `audit.failed` and the work goes on (nothing is lost:
        the work's own state is in the spool); False then."""
        try:
            self.append(event, **fields)
        except AuditError as exc:
            _log.error("audit.failed", record=event, error=str(exc))
            return False
        return True

    def close(self) -> None:
        """Make every record durable and release the file; appending afterwards is refused."""
        with self._sync_lock, self._lock:
            if self._fd is None:
                return
            fd, self._fd = self._fd, None
            try:
                if not self._broken and self._synced < self._seq:
                    os.fdatasync(fd)
            except OSError as exc:
                raise AuditError(f"{self.path}: cannot sync the audit log ({_code(exc)})") from None
            finally:
                os.close(fd)  # releases the flock too

    def _writable(self) -> int:
        if self._fd is None:
            raise AuditError(f"{self.path}: the audit log is closed")
        if self._broken:
            raise AuditError(f"{self.path}: a write failed; reopen the audit log to recover")
        return self._fd

    def _write(self, fd: int, data: bytes) -> None:
        """One write per record: O_APPEND puts it whole at the end, or a crash tears only it.
        A failed or short write leaves the end unknown, so nothing more is chained onto it."""
        try:
            written = os.write(fd, data)
        except OSError as exc:
            self._broken = True
            raise AuditError(f"{self.path}: cannot write the audit log ({_code(exc)})") from None
        if written != len(data):
            self._broken = True
            raise AuditError(f"{self.path}: short write to the audit log (disk full?)")

    def _sync_through(self, seq: int) -> None:
        """Group commit: one fdatasync covers every record written before it started."""
        with self._sync_lock:
            if self._synced >= seq:
                return
            with self._lock:
                fd, target = self._writable(), self._seq
            try:
                os.fdatasync(fd)
            except OSError as exc:  # after a failed sync the page cache cannot be trusted
                with self._lock:
                    self._broken = True
                raise AuditError(f"{self.path}: cannot sync the audit log ({_code(exc)})") from None
            self._synced = target


def _open(path: Path) -> int:
    """Open for appending (creating 0600 in a 0700 directory) and take the writer's flock."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise AuditError(f"{path}: cannot open the audit log ({_code(exc)})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fsync_directory(path.parent)  # a newly created log's name is durable before its records
    except BlockingIOError:
        os.close(fd)
        raise AuditError(f"{path}: another process is writing this audit log") from None
    except OSError as exc:
        os.close(fd)
        raise AuditError(f"{path}: cannot open the audit log ({_code(exc)})") from None
    return fd


def _resume(fd: int, path: Path) -> tuple[int, str, int]:
    """(last seq, its line's hash, torn bytes cut off) to continue the chain from."""
    try:
        size = os.fstat(fd).st_size
        last = _last_line(fd, size, path)
        dropped = 0
        if last and not last.endswith(b"\n"):  # a crash mid-write: never a whole record
            dropped = len(last)
            os.ftruncate(fd, size - dropped)
            os.fdatasync(fd)
            last = _last_line(fd, size - dropped, path)
    except OSError as exc:
        raise AuditError(f"{path}: cannot open the audit log ({_code(exc)})") from None
    if not last:
        return 0, GENESIS, dropped
    record = _read_record(last[:-1])
    if isinstance(record, str):
        raise AuditError(f"{path}: the last audit record cannot be continued ({record})")
    return record.seq, record.link, dropped


def _last_line(fd: int, size: int, path: Path) -> bytes:
    """The last line of the file's first `size` bytes, with its newline if it has one."""
    start = max(0, size - MAX_LINE - 1)
    tail = os.pread(fd, size - start, start)
    cut = tail.rfind(b"\n", 0, len(tail) - 1)
    if cut < 0 and start > 0:
        raise AuditError(f"{path}: the last audit record cannot be continued (line too long)")
    return tail[cut + 1 :]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _code(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, exc.__class__.__name__)
