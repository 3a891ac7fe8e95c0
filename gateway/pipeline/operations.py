"""What an operator may do to held items, and how the request reaches the spool's owner.

Held items are quarantined originals (`quarantine/`) and dead letters (`dead/`), each with a
reason file. The operations:

- `release`: a quarantined original goes back to `incoming/` and through the whole worker path
  again (the CLI first re-runs it in its own process and refuses when it is still not clean);
- `purge`: a held item is erased now (for the last original of a study, the key goes too);
- `retry`: a dead letter goes back to the outbox and is sent again.

Only one process changes spool states: the gateway that holds the spool lock. When it runs, the
CLI writes a request file into `<spool>/requests/` and waits for the answer file, which the
scheduler writes after applying it (within about a second). When no gateway runs, the CLI takes
the lock itself and applies the operation directly, with the same functions.
Items are named by their spool ids (`<study-id>/<instance-id>`, or the instance id alone when
it is unique): hashes and random ids, never patient data.

Held results (`returns-held/`, the way back) take two operations by their result id (a UID the
analysis server made): `retry` moves one back to `returns/`, where the next pass of the way back
stores it in PACS; `purge` erases it. They reach the spool the same way, as requests of state
`results`: the result files alone could be renamed safely beside the way back's thread (it only
lists `returns/` and moves into `returns-held/`), but the audit trail has one writer - the
running gateway - and retention erases held results on the scheduler's thread, so a request
keeps every change of the spool and its record in one place.

The officer's console (`gateway.console`) asks the same way, naming the officer (`officer`:
the audit record of the operation names them), and records what an officer looked at as a
`note`: a request whose only effect is its audit record (`NOTES`), written by the running
gateway before it answers - the console shows nothing it could not record.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.audit import AuditError, AuditLog
from gateway.errors import GatewayError
from gateway.spool import HELD, Item, Spool, State

Op = Literal["release", "purge", "retry"]
ResultOp = Literal["retry", "purge"]
#: the `state` of a request about a held result
RESULTS = "results"
#: the events a `note` request may record (the console's), and the fields it may carry
NOTES = frozenset(
    {"console.signed-in", "console.sign-in-refused", "console.signed-out", "console.viewed"}
)
NOTE_FIELDS = frozenset({"officer", "study_id", "instance_id", "reason"})
_ANSWER = ".answer.json"


@dataclass(frozen=True)
class Held:
    """A held item and why it is held."""

    item: Item
    reason: dict[str, Any]

    @property
    def state(self) -> State:
        return self.item.state

    @property
    def study_id(self) -> str:
        return self.item.study_id

    @property
    def name(self) -> str:
        return self.item.name

    @property
    def path(self) -> Path:
        return self.item.path

    @property
    def ref(self) -> str:
        return self.item.ref


def held(spool: Spool, state: State) -> list[Held]:
    return [Held(item, spool.reason(item.path)) for item in spool.items(state)]


def find(spool: Spool, state: State, ref: str) -> Held:
    """The held item named `ref` (`<study-id>/<name>` or a unique `<name>`)."""
    matches = [h for h in held(spool, state) if ref in (h.ref, h.name)]
    if not matches:
        raise GatewayError(f"no {state} item {ref!r}")
    if len(matches) > 1:
        raise GatewayError(f"{ref!r} names several {state} items; use <study-id>/<name>")
    return matches[0]


def apply(spool: Spool, op: Op, item: Held) -> Path | None:
    """Carry out one operation on a held item; the item's new path (None when erased)."""
    if op == "release":
        if item.state != State.QUARANTINE:
            raise GatewayError("only quarantined instances can be released")
        moved = spool.move(item.path, State.INCOMING)
        spool.discard(item.path)  # its reason file (the item itself has moved)
        return moved
    if op == "retry":
        if item.state != State.DEAD:
            raise GatewayError("only dead letters can be retried")
        moved = spool.move(item.path, State.OUTBOX)
        spool.discard(item.path)
        return moved
    spool.discard(item.path)
    if item.state == State.QUARANTINE:
        spool.erase_if_idle(item.study_id)
    return None


@dataclass(frozen=True)
class ResultApplied:
    """An operation done on a held result: what the audit trail records."""

    op: ResultOp
    result: str
    kind: str  # quarantine or dead: where it was held

    @property
    def event(self) -> str:
        return "result.retried" if self.op == "retry" else "result.purged"


def apply_result(spool: Spool, op: ResultOp, result: str) -> ResultApplied:
    """Retry (back to `returns/`) or purge a held result; GatewayError when none is held."""
    note = spool.returns.find_held(result)
    if op == "retry":
        spool.returns.retry(result)
    else:
        spool.returns.erase(result)
    return ResultApplied(op, result, str(note.get("kind", "unknown")))


# -- requests to a running gateway ----------------------------------------------------------


def request(
    spool: Spool,
    op: Op,
    state: str,
    ref: str,
    timeout: float = 30.0,
    officer: str | None = None,
) -> str:
    """Ask the running gateway to apply `op` (for `officer`, when the console asks); its
    answer, or GatewayError."""
    asked: dict[str, str] = {"op": op, "state": state, "ref": ref}
    if officer is not None:
        asked["officer"] = officer
    return _ask(spool, asked, timeout)


def note(spool: Spool, event: str, fields: dict[str, str], timeout: float = 30.0) -> str:
    """Ask the running gateway to record `event` (one of `NOTES`) in its audit trail."""
    return _ask(spool, {"op": "note", "event": event, "fields": fields}, timeout)


def _ask(spool: Spool, asked: dict[str, Any], timeout: float) -> str:
    rid = secrets.token_hex(8)
    body = json.dumps(asked).encode("ascii")
    tmp = spool.requests / f".{rid}.part"
    tmp.write_bytes(body)
    os.rename(tmp, spool.requests / f"{rid}.json")
    answer = spool.requests / f"{rid}{_ANSWER}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answer.exists():
            reply = json.loads(answer.read_bytes())
            answer.unlink()
            if not reply.get("ok"):
                raise GatewayError(str(reply.get("detail", "refused")))
            return str(reply.get("detail", "done"))
        time.sleep(0.1)
    (spool.requests / f"{rid}.json").unlink(missing_ok=True)
    raise GatewayError("the running gateway did not answer the request")


@dataclass(frozen=True)
class Applied:
    op: Op
    item: Held
    path: Path | None
    officer: str | None = None  # who asked, from the console


def record_note(audit: AuditLog, event: str, fields: dict[str, Any]) -> None:
    """Write a note's audit record; GatewayError when it is not one the console may write."""
    if event not in NOTES or not set(fields) <= NOTE_FIELDS:
        raise GatewayError("not a note the console may record")
    try:
        audit.append(event, **{k: str(v) for k, v in fields.items()})
    except AuditError as exc:
        raise GatewayError(f"not recorded: {exc}") from None


def serve_requests(spool: Spool, audit: AuditLog | None = None) -> list[Applied | ResultApplied]:
    """Apply every pending request (the gateway's scheduler thread); answer each. Notes are
    recorded in `audit` before they are answered (refused without one)."""
    done: list[Applied | ResultApplied] = []
    for path in sorted(spool.requests.glob("*.json")):
        if path.name.endswith(_ANSWER):
            continue
        ok, detail = False, "bad request"
        try:
            asked = json.loads(path.read_bytes())
            op = asked["op"]
            if op == "note":
                if audit is None:
                    raise GatewayError("no audit trail to record it in")
                record_note(audit, str(asked["event"]), dict(asked["fields"]))
                ok, detail = True, "recorded"
                raise _Answered
            state, ref = asked["state"], str(asked["ref"])
            officer = asked.get("officer")
            if officer is not None and not isinstance(officer, str):
                raise GatewayError("bad officer")
            if op in ("purge", "retry") and state == RESULTS:
                applied = apply_result(spool, op, ref)
                done.append(applied)
                ok, detail = True, f"{op}: result {ref}"
            elif op in ("release", "purge", "retry") and state in HELD:
                item = find(spool, State(state), ref)
                moved = apply(spool, op, item)
                done.append(Applied(op, item, moved, officer))
                ok, detail = True, f"{op}: {item.ref}"
        except _Answered:
            pass
        except GatewayError as exc:
            detail = str(exc)
        except (ValueError, KeyError, TypeError, OSError):
            pass
        answer = path.with_name(path.name.removesuffix(".json") + _ANSWER)
        tmp = answer.with_name(f".{answer.name}.part")
        tmp.write_text(json.dumps({"ok": ok, "detail": detail}), encoding="ascii")
        os.rename(tmp, answer)
        path.unlink(missing_ok=True)
    return done


class _Answered(Exception):
    """A request served without an item (a note): straight to its answer."""
