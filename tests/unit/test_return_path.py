"""The return path's thread survives what it did not expect: one failed pass is logged,
counted and backed off, and the next pass runs."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from gateway.metrics import Metrics
from gateway.pipeline.results import ResultsDeliverer, ResultsPoller, ReturnPath


class Poller(ResultsPoller):
    """The results channel's end: the first poll hits a bug, the rest succeed."""

    def __init__(self) -> None:  # no channel, no spool: only the thread is under test
        self.calls = 0

    def poll_once(self) -> int:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("a bug in a pass")
        return 0


class Deliverer(ResultsDeliverer):
    def __init__(self) -> None:
        self.passes = threading.Semaphore(0)

    def deliver_once(self) -> bool:
        self.passes.release()
        return True


def test_an_unexpected_error_in_a_pass_is_counted_and_the_thread_goes_on() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    poller, deliverer = Poller(), Deliverer()
    path = ReturnPath(poller, deliverer, 0.01, 0.02, metrics)
    path.start()
    try:
        assert deliverer.passes.acquire(timeout=10)  # the pass after the failed one delivered
    finally:
        path.stop(10)
    assert poller.calls >= 2
    failures = registry.get_sample_value(
        "dicom_gateway_results_poll_failures_total", {"reason": "error:RuntimeError"}
    )
    assert failures == 1
