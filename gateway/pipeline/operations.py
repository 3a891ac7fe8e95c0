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
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gateway.errors import GatewayError
from gateway.spool import HELD, Item, Spool, State

Op = Literal["release", "purge", "retry"]
ResultOp = Literal["retry", "purge"]
#: the `state` of a request about a held result
RESULTS = "results"
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


def request(spool: Spool, op: Op, state: str, ref: str, timeout: float = 30.0) -> str:
    """Ask the running gateway to apply `op`; its answer, or GatewayError."""
    rid = secrets.token_hex(8)
    body = json.dumps({"op": op, "state": state, "ref": ref}).encode("ascii")
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


def serve_requests(spool: Spool) -> list[Applied | ResultApplied]:
    """Apply every pending request (the gateway's scheduler thread); answer each."""
    done: list[Applied | ResultApplied] = []
    for path in sorted(spool.requests.glob("*.json")):
        if path.name.endswith(_ANSWER):
            continue
        ok, detail = False, "bad request"
        try:
            asked = json.loads(path.read_bytes())
            op, state, ref = asked["op"], asked["state"], str(asked["ref"])
            if op in ("purge", "retry") and state == RESULTS:
                applied = apply_result(spool, op, ref)
                done.append(applied)
                ok, detail = True, f"{op}: result {ref}"
            elif op in ("release", "purge", "retry") and state in HELD:
                item = find(spool, State(state), ref)
                moved = apply(spool, op, item)
                done.append(Applied(op, item, moved))
                ok, detail = True, f"{op}: {item.ref}"
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
