"""Deliver one sealed item: send, and on a transient failure wait and send again, until the
server has it, refuses it for good, or the retry window is over.

The daemon's scheduler keeps this state in the spool so a restart resumes it; this
loop is the same decision for a sender that can wait in place. Waiting honours Retry-After and
never hammers: see `backoff`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.forward.backoff import Backoff
from gateway.forward.classify import Kind, Verdict
from gateway.forward.client import Forwarder
from gateway.seal.envelope import Sealed


@dataclass(frozen=True)
class Delivery:
    verdict: Verdict  # the last answer: done, conflict, permanent - or why we gave up
    attempts: int
    gave_up: bool = False


def deliver(
    forwarder: Forwarder,
    item: Sealed,
    backoff: Backoff,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> Delivery:
    first = clock()
    attempt = 0
    while True:
        verdict = forwarder.send(item)
        attempt += 1
        if verdict.final:
            return Delivery(verdict, attempt)
        if backoff.exhausted(first, clock()):
            return Delivery(Verdict(Kind.PERMANENT, verdict.reason), attempt, gave_up=True)
        sleep(backoff.delay(attempt - 1, verdict, rng))
