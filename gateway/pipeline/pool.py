"""A small process pool that knows which instance each worker holds.

`concurrent.futures.ProcessPoolExecutor` breaks as a whole when one worker dies and cannot say
which job killed it, nor kill a worker that runs too long. This pool keeps one pipe per worker
process (spawned, not forked: the parent runs threads), gives each at most one job, and is
driven from a single thread (the scheduler's): `submit` when `free()`, then `poll` for what
finished. A worker that dies is reported as `Lost(job, "worker-crashed")`, one that overruns
its deadline is killed (by its PID) and reported as `Lost(job, "worker-timeout")`; either way a
fresh worker takes its place and the pool keeps serving.

`reconfigure` (a reload) hands reloaded settings to each worker when it is free (at once, or
when it returns the job it holds), before its next job: an instance dispatched after the
reload is processed under them, one in flight finishes under the old ones, none twice. (Not
sent to a busy worker: it does not read its pipe, and a large configuration could fill it and
block the scheduler until the job ends.) A worker that cannot rebuild exits and is replaced by a
fresh one under the new settings (fail closed: never the replaced rules).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

from gateway.errors import GatewayError
from gateway.logs import get_logger
from gateway.pipeline.child import Job, Reconfigure, Summary, serve
from gateway.settings import Settings

log = get_logger("gateway.pool")
_START_SECONDS = 300.0  # loading the text detector's models takes a few seconds; be generous
_RESPAWN_SECONDS = 5.0


@dataclass(frozen=True)
class Lost:
    """A job whose worker died or was killed."""

    job: Job
    reason: str  # "worker-crashed" or "worker-timeout"


@dataclass
class _Slot:
    process: BaseProcess
    conn: Connection
    ready: bool = False
    job: Job | None = None
    deadline: float = 0.0
    started: float = 0.0
    generation: int = 0  # of the settings it runs under (0: those the gateway started with)
    offered: int = 0  # the latest generation sent to it


class WorkerPool:
    def __init__(
        self,
        settings: Settings,
        count: int,
        *,
        target: Callable[[Settings, Connection], None] = serve,
        on_restart: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.settings = settings
        self.count = count
        self.timeout = settings.workers.instance_timeout_seconds
        self._target = target
        self._on_restart = on_restart
        self._context = multiprocessing.get_context("spawn")
        self._slots: list[_Slot] = []
        self.generation = 0
        self._reconfiguring: float | None = None  # since when, until every worker took them

    def start(self) -> None:
        """Start every worker and wait until each has loaded its models; GatewayError if one
        cannot (bad key, models missing): the daemon must not start half-able."""
        self._slots = [self._spawn() for _ in range(self.count)]
        deadline = time.monotonic() + _START_SECONDS
        for slot in self._slots:
            remaining = deadline - time.monotonic()
            if not slot.conn.poll(max(0.0, remaining)):
                self.stop(0)
                raise GatewayError("a worker process did not start in time")
            try:
                message = slot.conn.recv()
            except EOFError:
                message = ("failed", "exited")
            if message[0] != "ready":
                self.stop(0)
                raise GatewayError(f"a worker process could not start ({message[1]})")
            slot.ready = True

    def _spawn(self) -> _Slot:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=self._target, args=(self.settings, child), name="dicom-gateway-worker"
        )
        process.daemon = True
        process.start()
        child.close()
        now, generation = time.monotonic(), self.generation
        return _Slot(process, parent, started=now, generation=generation, offered=generation)

    def reconfigure(self, settings: Settings) -> None:
        """Reloaded settings: each free worker gets them now, a busy one when it returns its
        job; replacements start under them."""
        self.settings = settings
        self.timeout = settings.workers.instance_timeout_seconds
        self.generation += 1
        self._reconfiguring = time.monotonic()
        for slot in self._slots:
            self._offer(slot)

    def _offer(self, slot: _Slot) -> None:
        """Send the latest settings to a free worker that has not had them (the pipe keeps the
        order: a job sent after them runs under them)."""
        if not slot.ready or slot.job is not None or slot.offered == self.generation:
            return
        slot.offered = self.generation
        with contextlib.suppress(OSError, ValueError):  # a dead one is replaced under them
            slot.conn.send(Reconfigure(self.settings, self.generation))

    def free(self) -> int:
        return sum(1 for s in self._slots if s.ready and s.job is None)

    def busy(self) -> int:
        return sum(1 for s in self._slots if s.job is not None)

    def alive(self) -> int:
        return sum(1 for s in self._slots if s.process.is_alive())

    def submit(self, job: Job) -> None:
        slot = next(s for s in self._slots if s.ready and s.job is None)
        slot.job = job
        slot.deadline = time.monotonic() + self.timeout
        slot.conn.send(job)

    def waitables(self) -> list[Any]:
        live = [s for s in self._slots if s.process.exitcode is None]
        return [s.conn for s in live] + [s.process.sentinel for s in live]

    def poll(self, timeout: float, extra: Sequence[Any] = ()) -> list[tuple[Job, Summary | Lost]]:
        """Wait up to `timeout` for results, deaths and deadlines (or one of `extra` to be
        readable); return what finished."""
        due = [s.deadline for s in self._slots if s.job is not None]
        due += [s.started + _RESPAWN_SECONDS for s in self._slots if s.process.exitcode is not None]
        if due:
            timeout = max(0.0, min(timeout, min(due) - time.monotonic()))
        wait([*self.waitables(), *extra], timeout)
        finished: list[tuple[Job, Summary | Lost]] = []
        now = time.monotonic()
        for i, slot in enumerate(self._slots):
            message = None
            if slot.process.is_alive() or slot.conn.poll():
                try:
                    while slot.conn.poll():
                        message = slot.conn.recv()
                        if isinstance(message, tuple) and message[0] == "ready":
                            slot.ready = True
                        elif isinstance(message, tuple) and message[0] == "reconfigured":
                            slot.generation = message[1]
                        elif isinstance(message, tuple):  # could not start, or rebuild
                            slot.process.join(1)
                        elif slot.job is not None and isinstance(message, Summary):
                            finished.append((slot.job, message))
                            slot.job = None
                except (EOFError, OSError):
                    pass
            self._offer(slot)
            if not slot.process.is_alive():
                # one that died while starting (models gone?) is retried every few seconds,
                # not in a tight loop
                if slot.ready or slot.job is not None or now >= slot.started + _RESPAWN_SECONDS:
                    self._replace(i, "worker-crashed", finished)
            elif slot.job is not None and now >= slot.deadline:
                slot.process.kill()  # by PID; a worker may be stuck in native code
                slot.process.join(5)
                self._replace(i, "worker-timeout", finished)
        self._check_reconfigured()
        return finished

    def _check_reconfigured(self) -> None:
        """Log once every worker runs under the latest settings, and how long that took."""
        if self._reconfiguring is None:
            return
        if all(s.ready and s.generation == self.generation for s in self._slots):
            seconds = round(time.monotonic() - self._reconfiguring, 3)
            log.info("workers.reconfigured", generation=self.generation, seconds=seconds)
            self._reconfiguring = None

    def _replace(self, index: int, reason: str, finished: list[tuple[Job, Summary | Lost]]) -> None:
        slot = self._slots[index]
        if slot.job is not None:
            finished.append((slot.job, Lost(slot.job, reason)))
        log.warning("worker.replaced", reason=reason, exitcode=slot.process.exitcode)
        slot.conn.close()
        slot.process.join(1)
        self._on_restart(reason)
        self._slots[index] = self._spawn()

    def stop(self, timeout: float) -> None:
        """Ask every worker to finish (they have no job by then) and wait; kill the rest."""
        for slot in self._slots:
            with contextlib.suppress(OSError, ValueError):
                slot.conn.send(None)
        deadline = time.monotonic() + timeout
        for slot in self._slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(5)
            slot.conn.close()
        self._slots = []
