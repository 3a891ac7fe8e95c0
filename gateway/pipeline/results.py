"""The way back: results fetched from the analysis server into the spool, then re-identified
and stored in PACS.

`ResultsPoller.poll_once` asks the results channel (docs/protocol.md) what waits after the
spool's cursor, fetches each result sealed to the gateway's key and keeps it durably in the
spool (`spool.returns`) before it moves the cursor past it: a crash between the two fetches
that result again, and keeping it again is one file. Nothing is acknowledged here - a result
is acknowledged to the server only once PACS stored it. `ReturnPath` runs both in one thread
every `results.poll_seconds`, and after a failure waits longer each time (up to
`results.max_backoff_seconds`).

`ResultsDeliverer.deliver_once` takes each result from the spool, opens it with the gateway's
key under its name, re-identifies it in memory (`reidentify.restore`) and C-STOREs it to PACS
(`store`, given by the caller: the SCU is above this layer). Only after PACS answered Success
(or a warning: stored) is the result marked stored in the spool (durably), then acknowledged
to the server and removed: a server that cannot be reached in between costs an acknowledgement
on a later pass, never a second C-STORE. A result that cannot be opened or tied to one
original study is quarantined (its reason code); one PACS refuses for good (a failure status)
is dead-lettered; either way the server is told it may forget it - the gateway holds it. A
result that references images the study ledger does not list yet (made before the study's
manifest) waits `results.ledger_wait_seconds` for them first: the ledger is written when the
study is stable, not per instance. PACS unreachable or out of resources: the pass stops and
the caller waits; after `results.retry_hours` a result is dead-lettered
(`pacs-retries-exhausted`).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from enum import StrEnum

from prometheus_client import CollectorRegistry
from pydicom import dcmread
from pydicom.dataset import Dataset

from gateway.audit import AuditLog
from gateway.errors import SealError, Unprocessable, VaultUnavailable
from gateway.forward.results import ResultsClient, ResultsError
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.reidentify.restore import Reidentifier
from gateway.seal.envelope import Name, open_sealed
from gateway.seal.keys import PrivateKey
from gateway.spool.returns import Returned, Returns

log = get_logger("gateway.results")
OUTSIDE = "result-reference-outside-study"


class ResultsPoller:
    def __init__(
        self, client: ResultsClient, returns: Returns, metrics: Metrics | None = None
    ) -> None:
        self.client = client
        self.returns = returns
        self.metrics = metrics or Metrics(CollectorRegistry())

    def poll_once(self) -> int:
        """Fetch what waits into the spool; how many results were kept."""
        cursor = self.returns.cursor()
        listed, following = self.client.waiting(cursor)
        for waiting in listed:
            sealed = self.client.fetch(waiting)
            self.returns.put(waiting.result, waiting.study, waiting.cursor, sealed.body)
            self.returns.set_cursor(waiting.cursor)
            self.metrics.results_fetched.inc()
        if following > self.returns.cursor():
            self.returns.set_cursor(following)
        if listed:
            log.info("results.fetched", count=len(listed))
        return len(listed)


class Pacs(StrEnum):
    """What a C-STORE status means for a result (PS3.4 B.2.3)."""

    STORED = "stored"  # 0x0000 Success, 0xB000-0xBFFF warnings (stored, maybe coerced)
    RETRY = "retry"  # no answer (PACS down), 0xA7xx out of resources, 0x0110 processing failure
    REFUSED = "refused"  # any other failure: the same object would be refused again


def pacs_verdict(status: int | None) -> Pacs:
    if status is None or 0xA700 <= status <= 0xA7FF or status == 0x0110:
        return Pacs.RETRY
    if status == 0x0000 or 0xB000 <= status <= 0xBFFF:
        return Pacs.STORED
    return Pacs.REFUSED


class ResultsDeliverer:
    def __init__(
        self,
        returns: Returns,
        client: ResultsClient,
        reidentifier: Reidentifier,
        key: PrivateKey,
        store: Callable[[Dataset], int | None],
        audit: AuditLog,
        retry_hours: float,
        ledger_wait_seconds: float = 900.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.returns = returns
        self.client = client
        self.reidentifier = reidentifier
        self.key = key
        self.store = store
        self.audit = audit
        self.retry_seconds = retry_hours * 3600.0
        self.ledger_wait_seconds = ledger_wait_seconds
        self.metrics = metrics or Metrics(CollectorRegistry())

    def deliver_once(self) -> bool:
        """Every waiting result once; False when PACS, the vault or the server cannot be
        reached now (the rest waits for the next pass)."""
        for item in self.returns.waiting():
            try:
                if not self._deliver(item):
                    return False
            except (VaultUnavailable, ResultsError) as exc:
                log.warning("results.waiting", reason=getattr(exc, "reason", "unavailable"))
                return False
        return True

    def _deliver(self, item: Returned) -> bool:
        if item.stored:  # PACS has it; the server was not told yet
            self._acknowledged(item)
            return True
        name = Name("result", self.client.site, item.study, item.result)
        try:
            plain = open_sealed(self.returns.body(item), name, self.key)
            restored = self.reidentifier.restore(plain)
        except SealError:
            self._hold(item, "quarantine", "result-seal-does-not-open")
            return True
        except Unprocessable as exc:
            if exc.reason == OUTSIDE and time.time() - item.fetched < self.ledger_wait_seconds:
                log.info("results.waits_for_ledger")  # the next pass tries it again
                return True
            self._hold(item, "quarantine", exc.reason)
            return True
        status = self.store(dcmread(io.BytesIO(restored.data)))
        verdict = pacs_verdict(status)
        if verdict is Pacs.RETRY:
            if time.time() - item.fetched < self.retry_seconds:
                log.warning("results.pacs_unavailable", status=status)
                return False
            self._hold(item, "dead", "pacs-retries-exhausted")
            return True
        if verdict is Pacs.REFUSED:
            self._hold(item, "dead", f"pacs-status-{status:04x}")
            return True
        item = self.returns.mark_stored(item)
        self.audit.record("result.stored", result=item.result, status=status or 0)
        self.metrics.results_stored.inc()
        log.info("results.stored", status=status)
        self._acknowledged(item)
        return True

    def _acknowledged(self, item: Returned) -> None:
        """Tell the server (ResultsError: not now, the mark stays for the next pass)."""
        self.client.acknowledge(item.result)
        self.returns.done(item)

    def _hold(self, item: Returned, kind: str, reason: str) -> None:
        """Held by the gateway (quarantine or dead letter); the server may forget it."""
        self.returns.hold(item, kind, reason)
        self.metrics.results_held.labels(kind=kind, reason=reason).inc()
        self.audit.record(f"result.{'quarantined' if kind == 'quarantine' else 'dead-lettered'}",
                          result=item.result, reason=reason)  # fmt: skip
        log.warning("results.held", kind=kind, reason=reason)
        self.client.acknowledge(item.result)


class ReturnPath:
    """One thread: fetch what waits, then deliver what the spool holds; every
    `poll_seconds`, or longer after a failure (doubling up to `max_backoff_seconds`)."""

    def __init__(
        self,
        poller: ResultsPoller,
        deliverer: ResultsDeliverer,
        poll_seconds: float,
        max_backoff_seconds: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.poller = poller
        self.metrics = metrics or Metrics(CollectorRegistry())
        self.deliverer = deliverer
        self.poll_seconds = poll_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="results", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        wait = 0.0
        while not self._stop.wait(wait):
            try:
                ok = self._pass()
            except Exception as exc:  # noqa: BLE001 - the one guard of the return path's thread
                # a bug or a spool/audit failure: what waits stays in spool/returns (every
                # step there is a rename), so log, count, back off and go on
                ok = False
                reason = f"error:{exc.__class__.__name__}"
                self.metrics.results_poll_failures.labels(reason=reason).inc()
                log.error("results.pass_failed", error=exc.__class__.__name__)
            if ok:
                wait = self.poll_seconds
            else:
                wait = min(max(wait * 2, self.poll_seconds), self.max_backoff_seconds)

    def _pass(self) -> bool:
        """Fetch what waits, then deliver what the spool holds; True when both went well."""
        fetched = True
        try:
            self.poller.poll_once()
            self.metrics.results_last_poll.set(time.time())
        except ResultsError as exc:
            fetched = False
            self.metrics.results_poll_failures.labels(reason=exc.reason).inc()
            log.warning("results.poll_failed", reason=exc.reason)
        delivered = self.deliverer.deliver_once()
        return fetched and delivered
