"""Builds every object once, starts them in order, and drains on SIGTERM.

Start order: spool (recovery, lock) -> audit trail -> pipeline (queues rebuilt from the spool,
senders; the worker processes load their models in the background) -> metrics, health and
readiness endpoint (`health`) -> DICOM listener last, so nothing is acknowledged before the
place it goes to is ready. Stop order is the reverse: stop accepting, let running
associations finish (bounded), let the workers finish what they hold and requests in flight
end (bounded by the same drain time), then exit 0. A second signal exits at once; nothing
acknowledged can be lost by that, because acknowledged instances are already fsynced and
every later step is a rename.

With `forward.enabled = false` there is no pipeline: instances are received and stay in the
spool until forwarding is configured.

SIGHUP reloads the configuration file (`_reload`): read and checked in full as at start; an
invalid file is refused and the running configuration stays. A valid one is applied where that
drops nothing (`settings.RUNTIME_KEYS`: peers and admission limits from the next association,
the workers' rules from their next instance, log level, retention); a changed key that needs a
restart is named and left as it was.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from types import FrameType

from prometheus_client import CollectorRegistry
from pydicom.dataset import Dataset

from gateway import scu
from gateway.audit import AuditLog
from gateway.errors import ConfigError, GatewayError, ListenError
from gateway.forward.results import ResultsClient
from gateway.health import Health, HttpEndpoint
from gateway.ingest import IngestService
from gateway.logs import configure, get_logger
from gateway.metrics import Metrics
from gateway.pipeline import Scheduler, build
from gateway.pipeline.results import ResultsDeliverer, ResultsPoller, ReturnPath
from gateway.reidentify.restore import Reidentifier
from gateway.seal.keys import read_private
from gateway.settings import Settings, reloadable
from gateway.spool import Spool
from gateway.vault import Vault, open_vault

log = get_logger("gateway.app")


class Gateway:
    def __init__(self, settings: Settings, load: Callable[[], Settings]) -> None:
        """`load` reads and checks the configuration file again (SIGHUP); ConfigError when
        it cannot be used."""
        self.settings = settings
        self._load = load
        self._generation = 0
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        # closed last, in reverse: the "gateway.stopped" record (once started), the audit
        # trail, the spool (and its lock)
        self._files = contextlib.ExitStack()
        self.spool = Spool.open(settings.spool)
        self._files.callback(self.spool.close)
        self.metrics.watch_free_space(self.spool.free_bytes)
        try:
            self.audit = AuditLog(settings.audit_path)
            self._files.callback(self.audit.close)
            # readiness and the study ledger (manifests); the workers open their own
            self.vault = open_vault(settings.vault)
            self._files.callback(self.vault.close)
            self.pipeline = (
                build(settings, self.spool, self.metrics, self.audit, self.vault)
                if (settings.forward.enabled)
                else None
            )
        except BaseException:
            self._files.close()
            raise
        self.results = (
            return_path(settings, self.spool, self.vault, self.audit, self.pipeline, self.metrics)
            if self.pipeline is not None and settings.results.enabled
            else None
        )
        self.ingest = IngestService(settings.ingest, self.spool, self.metrics, self._audit)
        self.health = Health(settings, self.spool, self.metrics, self.pipeline, self.vault)
        self.http: HttpEndpoint | None = None
        # the main thread sleeps on this pipe; signal handlers and a failing scheduler write
        # one byte to it (os.write takes no lock): STOP, FATAL or RELOAD
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._signals = 0
        self._signal: int = signal.SIGTERM
        self._fatal: str | None = None

    def _audit(self, event: str, **fields: str | int) -> None:
        """Append to the audit trail from any thread; a refused record is logged, not raised."""
        self.audit.record(event, **fields)

    def _on_fatal(self, reason: str) -> None:
        self._fatal = reason
        self._wake(_FATAL)

    def _wake(self, why: bytes) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe: the main thread is awake
            os.write(self._wake_w, why)

    def _listen(self) -> None:
        if self.pipeline is not None:
            self.pipeline.start(self._on_fatal)
            self.spool.subscribe(self.pipeline.notify)
        else:
            log.warning("gateway.forwarding_disabled")
        if self.results is not None:
            self.results.start()
        if self.settings.metrics.enabled:
            m = self.settings.metrics
            try:
                self.http = HttpEndpoint(m, self.registry, self.health)
            except OSError as exc:
                raise ListenError.binding(exc, "metrics.port", m.host, m.port) from None
            self.http.start()
            log.info("metrics.listening", host=m.host, port=self.http.port)
        self.health.start()
        try:
            self.ingest.start()
        except OSError as exc:
            i = self.settings.ingest
            raise ListenError.binding(exc, "ingest.port", i.host, i.port) from None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # No logging here: the signal may interrupt this thread while it holds the log
        # writer's lock, and logging again would wait for it forever (seen under load).
        self._signals += 1
        if self._signals > 1:
            os.write(2, b'{"event": "gateway.forced_exit", "level": "warning"}\n')
            os._exit(128 + signum)
        self._signal = signum
        self._wake(_STOP)

    def _on_hangup(self, signum: int, frame: FrameType | None) -> None:
        self._wake(_RELOAD)  # no logging here either; the main thread reloads

    def serve(self) -> int:
        """Run until SIGTERM or SIGINT, reloading on SIGHUP; returns the process exit code."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)
        try:
            self._listen()
        except (ListenError, OSError) as exc:
            self._shut_down(drain_until=None)
            if isinstance(exc, ListenError):
                raise
            raise ListenError(f"cannot listen: {exc.strerror or exc.__class__.__name__}") from None
        log.info("gateway.started", spool=str(self.spool.root))
        self.audit.append("gateway.started")
        self._files.callback(self.audit.append, "gateway.stopped")
        self._wait_for_stop()
        log.info("gateway.stopping", signal=signal.Signals(self._signal).name)
        # one drain budget for all: associations, then the workers and requests in flight
        deadline = time.monotonic() + self.settings.ingest.drain_seconds
        aborted, finished = self._shut_down(drain_until=deadline)
        log.info("gateway.stopped", aborted_associations=aborted, workers_drained=finished)
        return 0 if self._fatal is None else 1

    def _wait_for_stop(self) -> None:
        """Sleep until a stop signal or a fatal error; reload on every SIGHUP meanwhile (several
        at once: one reload)."""
        while True:
            why = os.read(self._wake_r, 64)
            if _STOP in why or _FATAL in why:
                return
            running = self.settings
            try:
                self._reload()
            except Exception as exc:  # noqa: BLE001 - the main thread must go on serving
                self._refused(kept=self.settings is running)
                log.error("config.reload_failed", error=exc.__class__.__name__)

    def _reload(self) -> None:
        """Read the file again; refuse it whole when invalid, else apply what can change
        without dropping an association and name the keys that need a restart."""
        try:
            new = self._load()
        except ConfigError as exc:
            self._refused()
            log.error("config.reload_refused", problems=exc.problems)
            self.audit.record("config.reload-refused", count=len(exc.problems))
            return
        settings, restart = reloadable(self.settings, new)
        self.ingest.reconfigure(settings.ingest)  # first: it may fail (TLS), changing nothing
        self.health.watch_certificates(settings, only="ingest_")
        self.settings = settings
        if self.pipeline is not None:
            self.pipeline.reconfigure(settings)
        self._generation += 1
        self.metrics.config_generation.set(self._generation)
        self.metrics.config_loaded.set_to_current_time()
        self.metrics.config_reloads.labels(result="partial" if restart else "applied").inc()
        if restart:
            log.warning("config.reload_partial", generation=self._generation, restart=restart)
        else:
            log.info("config.reloaded", generation=self._generation)
        self.audit.record("config.reloaded", version=self._generation, count=len(restart))
        configure(settings.logging)  # last: the line above is written at the level it replaces

    def _refused(self, *, kept: bool = True) -> None:
        """A reload failed: counted; and when it `kept` the running configuration (it failed
        before applying any of the new one), its time is kept until a later reload is applied
        (the alert fires while the file on disk is not what runs)."""
        self.metrics.config_reloads.labels(result="refused").inc()
        if kept:
            self.metrics.config_refused.set_to_current_time()

    def _shut_down(self, drain_until: float | None) -> tuple[int, bool]:
        """The one stop sequence; returns (associations cut off, workers drained).

        Stop accepting and drain the associations, let the workers finish in what is left of
        the budget (no wait when `drain_until` is None: listening failed, nothing was
        accepted), stop health checks and the metrics endpoint, then the audit trail and spool.
        """
        aborted = self.ingest.stop()
        if self.results is not None:
            self.results.stop(timeout=10.0)
        finished = True
        if self.pipeline is not None:
            budget = 0.0 if drain_until is None else max(0.5, drain_until - time.monotonic())
            finished = self.pipeline.stop(budget)
        self.health.stop()
        if self.http is not None:
            self.http.stop()
        self._files.close()
        return aborted, finished


_STOP, _FATAL, _RELOAD = b"s", b"f", b"r"


def return_path(
    settings: Settings,
    spool: Spool,
    vault: Vault,
    audit: AuditLog,
    pipeline: Scheduler,
    metrics: Metrics,
) -> ReturnPath:
    """The way back (`pipeline.results`): results fetched over the forwarder's connection,
    re-identified from this gateway's vault and stored in the configured PACS. Its gauges
    read the return queue at each scrape."""
    results = settings.results
    if results.private_key is None or results.pacs is None:
        raise GatewayError("results: private_key and pacs are required")
    key = read_private(results.private_key)
    pacs = results.pacs
    tls = scu.client_tls(pacs.tls_ca, pacs.tls_certificate, pacs.tls_key) if pacs.tls_ca else None
    node = scu.Node(pacs.host, pacs.port, pacs.calling_ae_title, pacs.ae_title, tls)
    forwarder = pipeline.outbox.forwarder
    site = settings.deidentify.site_code
    client = ResultsClient(forwarder.http, forwarder.base, site, key.public.key_id)

    def store(ds: Dataset) -> int | None:
        with metrics.results_pacs_seconds.time():
            return scu.store(node, ds)

    deliverer = ResultsDeliverer(
        spool.returns,
        client,
        Reidentifier(vault, site),
        key,
        store,
        audit,
        results.retry_hours,
        results.ledger_wait_seconds,
        metrics=metrics,
    )
    poller = ResultsPoller(client, spool.returns, metrics)
    metrics.watch_results(spool.returns.waiting_since, spool.returns.held_by_kind)
    return ReturnPath(poller, deliverer, results.poll_seconds, results.max_backoff_seconds, metrics)
