"""The outbox: send every sealed item to the analysis server until it has it.

A few sender threads (`forward.connections`) take sealed files from the outbox queue, oldest
first, and PUT them (`forward.Forwarder`). What came of it moves the file on, durably:

- done (201/200) -> `sent/`; the scheduler is told, for study assembly;
- conflict (409) and permanent refusals (other 4xx) -> `dead/` with a reason file, a metric
  and a log event; never retried in a loop (`dicom-gateway spool retry` puts them back);
- transient failures (5xx, 429, timeouts, resets) and rejected server certificates -> the item
  goes back to the head of the queue and the whole destination waits (`Gate`): capped
  exponential backoff with jitter, Retry-After honoured, the slowest pace for a certificate
  problem. While the destination is failing only one request at a time probes it, so an
  outage costs one request per backoff step, not one per waiting instance.

The retry state that matters survives a restart: the sealed file stays in the outbox and its
header holds when it was sealed; an item still failing `forward.retry_hours` after it was
sealed is dead-lettered (`retries-exhausted`).
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gateway.errors import SpoolError
from gateway.forward.backoff import Backoff
from gateway.forward.classify import Kind, Verdict
from gateway.forward.client import Forwarder
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.seal.envelope import Name, Sealed
from gateway.spool import OutgoingHeader, Spool, State

log = get_logger("gateway.forward")


@dataclass(frozen=True)
class Answered:
    """A sealed item that left the outbox: where it went and why."""

    header: OutgoingHeader
    path: Path  # its new place (sent/ or dead/)
    verdict: Verdict


class Gate:
    """The destination's pace: open, or closed until a time after a failure; while failing,
    at most one probe at a time."""

    def __init__(
        self,
        backoff: Backoff,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.backoff = backoff
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._cond = threading.Condition()
        self._failures = 0
        self._not_before = 0.0
        self._probing = False
        self._closed = False

    def enter(self) -> bool:
        """Wait until a request may go; False when the gate was shut for good."""
        with self._cond:
            while not self._closed:
                wait = self._not_before - self._clock()
                if wait <= 0 and not (self._failures and self._probing):
                    self._probing = self._failures > 0
                    return True
                self._cond.wait(timeout=wait if wait > 0 else None)
            return False

    def leave(self, verdict: Verdict | None) -> float:
        """Record what the request got (None: nothing was sent); returns the wait now set."""
        with self._cond:
            self._probing = False
            wait = 0.0
            if verdict is not None and verdict.kind in (Kind.TRANSIENT, Kind.REJECTED):
                wait = self.backoff.delay(self._failures, verdict, self._rng)
                self._failures += 1
                self._not_before = self._clock() + wait
            elif verdict is not None:
                self._failures = 0
                self._not_before = 0.0
            self._cond.notify_all()
            return wait

    @property
    def failing(self) -> bool:
        return self._failures > 0

    def shut(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Outbox:
    def __init__(
        self,
        spool: Spool,
        forwarder: Forwarder,
        backoff: Backoff,
        metrics: Metrics,
        *,
        connections: int,
        destination: str = "default",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.spool = spool
        self.forwarder = forwarder
        self.backoff = backoff
        self.metrics = metrics
        self.gate = Gate(backoff)
        self.destination = destination
        self._wall_clock = wall_clock  # against the sealed time in headers (`_expired`)
        metrics.forward_results.labels(destination=destination, result="done", reason="stored")
        metrics.forwarded_bytes.labels(destination=destination)
        metrics.forward_retries.labels(destination=destination)
        #: told about every item that left the outbox (the scheduler sets it)
        self.on_answered: Callable[[Answered], None] = lambda answered: None
        self._queue: deque[Path] = deque()
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._run, name=f"forward-{i}", daemon=True)
            for i in range(connections)
        ]
        self._stopping = False
        self._active = 0

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def put(self, path: Path, *, front: bool = False) -> None:
        with self._cond:
            (self._queue.appendleft if front else self._queue.append)(path)
            self._cond.notify()

    def waiting(self) -> int:
        with self._cond:
            return len(self._queue) + self._active

    def head(self) -> Path | None:
        """The next item to go: the queue is oldest first (a retried item goes back to the
        front), so its age is the outbox's oldest."""
        with self._cond:
            return self._queue[0] if self._queue else None

    def _take(self) -> Path | None:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            self._active += 1
            return self._queue.popleft()

    def _run(self) -> None:
        while (path := self._take()) is not None:
            try:
                self._one(path)
            except Exception as exc:  # noqa: BLE001 - a sender thread must survive anything
                log.error("forward.failed", error=exc.__class__.__name__)
                self.put(path)  # it stays in the outbox; try again after a pause
                time.sleep(1.0)
            finally:
                with self._cond:
                    self._active -= 1
                    self._cond.notify_all()

    def _one(self, path: Path) -> None:
        try:
            header, body = self.spool.read_sealed(path)
        except FileNotFoundError:
            return  # moved by an operator (spool retry/purge) meanwhile
        except SpoolError:
            self._hold(path, None, Verdict(Kind.PERMANENT, "sealed-file-corrupt"))
            return
        if self.spool.records.held(header.study_id):  # held as a whole: dead-lettered unsent
            self._hold(path, header, Verdict(Kind.PERMANENT, "study-mixed-patients"))
            return
        if not self.gate.enter():
            self.put(path, front=True)
            return
        if self.gate.failing and self._expired(header):
            self.gate.leave(None)
            self._hold(path, header, Verdict(Kind.PERMANENT, "retries-exhausted"))
            return
        name = Name("instance" if header.kind == "instance" else "manifest", header.site,
                    header.study, header.item)  # fmt: skip
        started = time.perf_counter()
        verdict = self.forwarder.send(Sealed(name, header.key_id, body))
        self.metrics.forward_seconds.observe(time.perf_counter() - started)
        wait = self.gate.leave(verdict)
        self.metrics.forward_results.labels(
            destination=self.destination, result=verdict.kind.value, reason=verdict.reason
        ).inc()
        if verdict.kind is Kind.DONE:
            self.metrics.forwarded_bytes.labels(destination=self.destination).inc(len(body))
            moved = self.spool.move(path, State.SENT, stamp=True)
            self.on_answered(Answered(header, moved, verdict))
        elif verdict.final:
            self._hold(path, header, verdict)
        else:
            self.metrics.forward_retries.labels(destination=self.destination).inc()
            log.warning(
                "forward.retry",
                kind=header.kind,
                result=verdict.kind.value,
                reason=verdict.reason,
                wait_seconds=round(wait, 1),
            )
            self.put(path, front=True)

    def _expired(self, header: OutgoingHeader) -> bool:
        try:
            sealed = datetime.fromisoformat(header.sealed_at).timestamp()
        except ValueError:
            return False
        return self.backoff.exhausted(sealed, self._wall_clock())

    def _hold(self, path: Path, header: OutgoingHeader | None, verdict: Verdict) -> None:
        reason = "conflict" if verdict.kind is Kind.CONFLICT else verdict.reason
        moved = self.spool.hold(
            path,
            State.DEAD,
            {"reason": reason, "at": datetime.now(UTC).isoformat(timespec="seconds")},
        )
        self.metrics.dead_letters.labels(destination=self.destination, reason=reason).inc()
        log.error("forward.dead_letter", kind=header.kind if header else "unknown", reason=reason)
        if header is not None:
            self.on_answered(Answered(header, moved, verdict))

    def stop(self, timeout: float) -> None:
        """Let requests in flight finish (up to `timeout`), then stop the senders."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self.gate.shut()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.forwarder.close()
