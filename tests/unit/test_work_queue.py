"""The scheduler's order of work: oldest first, a crashed worker's instance once more at the
front, what was put off back at the front when due, and the worker's holding time."""

from __future__ import annotations

import time
from pathlib import Path

from gateway.pipeline.work import WorkQueue


def test_oldest_first_and_a_crashed_instance_goes_to_the_front_once() -> None:
    work = WorkQueue(crash_retries=1)
    a, b = Path("incoming/s/a.dgs"), Path("incoming/s/b.dgs")
    work.add(a)
    work.add(b)
    now = time.monotonic()
    assert work.next(now) == a
    work.dispatched("a", now)
    assert work.waiting == 2
    assert work.in_flight == 1
    assert work.returned("a") == now
    assert work.in_flight == 0
    assert work.retry_crashed("a", a)
    assert work.oldest() == a  # before b
    assert work.next(now) == a
    assert not work.retry_crashed("a", a)  # its one retry is spent: the caller quarantines
    work.settled("a")
    assert work.retry_crashed("a", a)  # settled: a later release starts afresh
    assert [work.next(now), work.next(now), work.next(now)] == [a, b, None]


def test_what_was_put_off_waits_then_comes_back_before_the_rest() -> None:
    work = WorkQueue(defer_seconds=60)
    late, new = Path("incoming/s/late.dgs"), Path("incoming/s/new.dgs")
    work.defer(late)
    work.add(new)
    now = time.monotonic()
    assert work.waiting == 2
    assert work.queued == 1
    assert work.next(now) == new
    assert work.next(now) is None  # not due yet
    assert work.next(now + 61) == late
    assert work.waiting == 0
