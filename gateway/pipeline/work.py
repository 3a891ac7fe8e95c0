"""The order of work for the worker pool: what waits, what was put off, what a worker holds.

Only paths and times: where an item is, the spool alone says (an instance here is in
`incoming/` until its result moves it). What this adds is the order - oldest first; an
instance whose worker crashed goes to the front once more (`retry_crashed`); one whose sealed
copy the spool could not take is put off for `defer_seconds` (`defer`); when something every
instance needs cannot be reached (the vault), nothing is handed out for a while (`pause`) - and
when each instance was handed to a worker, for the worker time metric and the drain on stop.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

DEFER_SECONDS = 30.0  # a sealed copy the spool could not take is tried again after this
CRASH_RETRIES = 1  # a crashed worker's instance is given to a worker this many times more
PAUSE_FIRST, PAUSE_LONGEST = 1.0, 30.0  # seconds; pauses double while they last


class WorkQueue:
    def __init__(self, defer_seconds: float = DEFER_SECONDS, crash_retries: int = CRASH_RETRIES):
        self._defer_seconds = defer_seconds
        self._crash_retries = crash_retries
        self._pending: deque[Path] = deque()
        self._deferred: list[tuple[float, Path]] = []  # (due, path), in the order put off
        self._attempts: dict[str, int] = {}  # instance id -> crashed workers so far
        self._in_flight: dict[str, float] = {}  # instance id -> monotonic dispatch time
        self._pauses = 0  # in a row
        self._paused_until = 0.0

    def add(self, path: Path) -> None:
        """At the back: a new instance, a released one, one found at start."""
        self._pending.append(path)

    def next(self, now: float) -> Path | None:
        """The next instance to hand out (what was put off and is due first), or None (none,
        or paused)."""
        if now < self._paused_until:
            return None
        if self._deferred and self._deferred[0][0] <= now:
            due = [p for t, p in self._deferred if t <= now]
            self._deferred = [(t, p) for t, p in self._deferred if t > now]
            self._pending.extendleft(reversed(due))
        return self._pending.popleft() if self._pending else None

    def dispatched(self, instance_id: str, now: float) -> None:
        self._in_flight[instance_id] = now

    def returned(self, instance_id: str) -> float | None:
        """A worker gave the instance back (a result, or it was lost): when it got it."""
        return self._in_flight.pop(instance_id, None)

    def retry_crashed(self, instance_id: str, path: Path) -> bool:
        """Its worker crashed: True if it goes to the front once more; False when it has had
        its retries (the caller quarantines it)."""
        tries = self._attempts.get(instance_id, 0)
        if tries >= self._crash_retries:
            return False
        self._attempts[instance_id] = tries + 1
        self._pending.appendleft(path)
        return True

    def settled(self, instance_id: str) -> None:
        """A result that ends the instance's turn (whatever it is): its crash count goes."""
        self._attempts.pop(instance_id, None)

    def pause(self, path: Path, now: float) -> float:
        """Something every instance needs could not be reached for `path`: it goes back to
        the front and nothing is handed out for a while, 1 s doubling to 30 s while it lasts;
        the pause in seconds."""
        self._pending.appendleft(path)
        seconds = min(PAUSE_LONGEST, PAUSE_FIRST * 2.0**self._pauses)
        self._pauses += 1
        self._paused_until = max(self._paused_until, now + seconds)
        return seconds

    def resumed(self) -> None:
        """A worker got through: the next pause starts short again."""
        self._pauses = 0

    def defer(self, path: Path) -> None:
        self._deferred.append((time.monotonic() + self._defer_seconds, path))

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def waiting(self) -> int:
        """Everything not yet done: waiting, put off, or held by a worker."""
        return len(self._pending) + len(self._deferred) + len(self._in_flight)

    @property
    def queued(self) -> int:
        return len(self._pending)

    def oldest(self) -> Path | None:
        """The instance at the front of the queue (its age is the queue's)."""
        return self._pending[0] if self._pending else None
