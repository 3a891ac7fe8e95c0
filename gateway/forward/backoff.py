"""When to try again: capped exponential backoff with equal jitter, Retry-After honoured.

Attempt n (0-based) has the step min(`ceiling`, base * 2**n) and waits a uniform random time
between half the step and the whole step ("equal jitter": never less than half the step,
never more than `ceiling`). A Retry-After from the server is honoured when it asks for longer
(up to the hour: a server cannot park an instance for a day with one header). A rejected
server certificate waits the ceiling every time. An item still failing `give_up_after` seconds
after it was sealed is dead-lettered (`retries-exhausted`, the outbox: `pipeline.delivery`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gateway.forward.classify import Kind, Verdict

_RETRY_AFTER_CAP = 3600.0


@dataclass(frozen=True)
class Backoff:
    base: float = 1.0
    ceiling: float = 300.0
    give_up_after: float = 72 * 3600.0

    def delay(self, attempt: int, verdict: Verdict, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1` after `verdict`."""
        if verdict.kind is Kind.REJECTED:
            return self.ceiling
        upper = min(self.ceiling, self.base * (2.0 ** min(attempt, 30)))
        wait = (rng or random).uniform(upper / 2, upper)
        if verdict.retry_after is not None:
            wait = max(wait, min(verdict.retry_after, _RETRY_AFTER_CAP))
        return wait

    def exhausted(self, first_attempt: float, now: float) -> bool:
        """Whether an item first tried (for the outbox: sealed) at `first_attempt` has been
        tried long enough."""
        return now - first_attempt >= self.give_up_after
