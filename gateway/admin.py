"""`dicom-gateway spool ...` and `dicom-gateway audit verify`: what an operator or a privacy
officer sees and does, beside a running gateway or without one.

Everything shown is PHI-free: spool ids (keyed hashes, random ids), reason codes, tag paths,
configured peer names, standard SOP class UIDs, sizes and times. Nothing is decrypted to be
shown. Releasing a quarantined instance first runs it through the whole worker path here (the
policy, the pixel check, the de-identifier and the release check); a dirty instance is refused
and stays where it is.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.audit import AuditLog, Verification, verify
from gateway.errors import GatewayError, SpoolError, SpoolLocked
from gateway.fate import Fate
from gateway.pipeline import operations
from gateway.pipeline.operations import Held, Op, ResultOp
from gateway.settings import Settings
from gateway.spool import HELD, STATES, Spool, State
from gateway.spool.returns import Returned
from gateway.vault import open_vault
from gateway.worker import Worker


def overview(settings: Settings) -> dict[str, Any]:
    """Items and the oldest item's age per state; held items by reason."""
    spool = Spool.open_readonly(settings.spool)
    now = time.time()
    states: dict[str, Any] = {}
    for state in STATES:
        stamps = [s for item in spool.items(state) if (s := item.stamp()) is not None]
        states[state.value] = {
            "items": len(stamps),
            "oldest_age_seconds": round(now - min(stamps), 1) if stamps else None,
        }
    reasons = {}
    for held_state in HELD:
        items = operations.held(spool, held_state)
        reasons[held_state.value] = dict(
            Counter(str(h.reason.get("reason", "unknown")) for h in items)
        )
    return {"states": states, "held_by_reason": reasons}


def describe(spool: Spool, item: Held) -> dict[str, Any]:
    """One held item, as an operator needs to judge it."""
    shown: dict[str, Any] = {
        "ref": item.ref,
        "state": item.state,
        "reason": item.reason.get("reason", "unknown"),
        "where": item.reason.get("where", []),
        "held_at": item.reason.get("at"),
    }
    try:
        if item.state == State.QUARANTINE:
            header = spool.read_header(item.path)
            shown.update(
                peer=header.peer,
                received_at=header.received_at,
                sop_class=header.sop_class_uid,
                transfer_syntax=header.transfer_syntax_uid,
                size=header.size,
            )
        else:
            sealed, _ = spool.read_sealed(item.path, body=False)
            shown.update(kind=sealed.kind, received_at=sealed.received_at, size=sealed.size)
    except (FileNotFoundError, SpoolError):
        shown["unreadable"] = True
    received = shown.get("received_at")
    if isinstance(received, str):
        try:
            age = time.time() - datetime.fromisoformat(received).timestamp()
            shown["age_hours"] = round(age / 3600, 2)
        except ValueError:
            pass
    return shown


def listing(settings: Settings, state: State) -> list[dict[str, Any]]:
    spool = Spool.open_readonly(settings.spool)
    return [describe(spool, item) for item in operations.held(spool, state)]


def show(settings: Settings, state: State, ref: str) -> dict[str, Any]:
    spool = Spool.open_readonly(settings.spool)
    return describe(spool, operations.find(spool, state, ref))


def check_release(settings: Settings, ref: str) -> None:
    """Run a quarantined instance through the worker path; GatewayError if still not clean."""
    spool = Spool.open_readonly(settings.spool)
    item = operations.find(spool, State.QUARANTINE, ref)
    header, data = spool.read(item.path)
    vault = open_vault(settings.vault)
    try:
        outcome = Worker.for_settings(settings, vault).process(data, header.peer)
    finally:
        vault.close()
    if outcome.status is not Fate.WRITTEN:
        where = f" at {', '.join(outcome.where)}" if outcome.where else ""
        raise GatewayError(f"not released: still {outcome.status} ({outcome.reason}{where})")


def act(settings: Settings, op: Op, state: State, ref: str, officer: str | None = None) -> str:
    """Apply an operation: through the running gateway, or directly when none runs; its audit
    record names `officer` when the console asks."""
    try:
        spool = Spool.open(settings.spool)
    except SpoolLocked:
        readonly = Spool.open_readonly(settings.spool)
        return operations.request(readonly, op, state, ref, officer=officer)
    try:
        item = operations.find(spool, state, ref)
        operations.apply(spool, op, item)
        with _audit(settings) as audit:
            fields: dict[str, str] = {"study_id": item.study_id, "instance_id": item.name}
            if officer is not None:
                fields["officer"] = officer
            event = {"release": "instance.released", "retry": "instance.retried"}.get(op)
            if event is None:
                audit.append("instance.purged", kind=item.state, **fields)
            else:
                audit.append(event, **fields)
    finally:
        spool.close()
    return f"{op}: {item.ref}"


# -- results on their way back (`spool.returns`) ----------------------------------------------


def results(settings: Settings) -> list[dict[str, Any]]:
    """Every result waiting for PACS, then every held one (quarantine, dead)."""
    returns = Spool.open_readonly(settings.spool).returns
    now = time.time()
    rows = [_result(now, "waiting", item, {}) for item in returns.waiting()]
    for note in returns.held():
        item = returns.held_item(str(note["result"]))
        rows.append(_result(now, str(note.get("kind", "unknown")), item, note))
    return rows


def result(settings: Settings, result_id: str) -> dict[str, Any]:
    """One result, waiting or held: its header, reason and size; its body stays sealed."""
    returns = Spool.open_readonly(settings.spool).returns
    now = time.time()
    for item in returns.waiting():
        if item.result == result_id:
            return {**_result(now, "waiting", item, {}), **_file(item)}
    note = returns.find_held(result_id)
    held = returns.held_item(result_id)
    shown = _result(now, str(note.get("kind", "unknown")), held, note)
    return {**shown, **(_file(held) if held is not None else {"body": "missing"})}


def _result(
    now: float, state: str, item: Returned | None, note: dict[str, object]
) -> dict[str, Any]:
    fetched = item.fetched if item is not None else None
    return {
        "result": item.result if item is not None else note.get("result"),
        "state": state,
        "study": item.study if item is not None else note.get("study"),
        "reason": note.get("reason"),
        "fetched_at": _iso(fetched),
        "age_hours": round((now - fetched) / 3600, 2) if fetched else None,
        "held_at": _iso(note.get("at")),
    }


def _file(item: Returned) -> dict[str, Any]:
    try:
        size = item.path.stat().st_size
    except FileNotFoundError:
        return {"body": "missing"}
    return {"cursor": item.cursor, "size": size}


def _iso(stamp: object) -> str | None:
    if not isinstance(stamp, (int, float)) or not stamp:
        return None
    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")


def act_result(settings: Settings, op: ResultOp, result_id: str) -> str:
    """Retry or purge a held result: through the running gateway, or directly when none runs
    (`pipeline.operations` says why a request)."""
    try:
        spool = Spool.open(settings.spool)
    except SpoolLocked:
        readonly = Spool.open_readonly(settings.spool)
        return operations.request(readonly, op, operations.RESULTS, result_id)
    try:
        applied = operations.apply_result(spool, op, result_id)
        with _audit(settings) as audit:
            audit.append(applied.event, result=applied.result, kind=applied.kind)
    finally:
        spool.close()
    return f"{op}: result {result_id}"


def note(settings: Settings, event: str, **fields: str) -> None:
    """Record a console event (`operations.NOTES`) in the audit trail: through the running
    gateway (its one writer), or directly when none runs; GatewayError when it cannot be
    recorded - the console then shows nothing."""
    try:
        spool = Spool.open(settings.spool)
    except SpoolLocked:
        operations.note(Spool.open_readonly(settings.spool), event, fields)
        return
    try:
        with _audit(settings) as audit:
            operations.record_note(audit, event, fields)
    finally:
        spool.close()


@contextmanager
def _audit(settings: Settings) -> Iterator[AuditLog]:
    log = AuditLog(settings.audit_path)
    try:
        yield log
    finally:
        log.close()


def audit_verify(settings: Settings, path: Path | None = None) -> Verification:
    return verify(path or settings.audit_path)
