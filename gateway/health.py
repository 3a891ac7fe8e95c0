"""Liveness, readiness and the metrics endpoint: one small HTTP server on `[metrics]` host:port
(loopback by default).

    GET /metrics   Prometheus exposition
    GET /healthz   200 while the process serves (liveness)
    GET /readyz    200 when every check passes, else 503; the body says which failed and why:
                   {"ready": false, "checks": {"destination": {"ok": false, "reason":
                                                               "connection-refused"}, ...}}

Checks, each also the gauge `dicom_gateway_readiness_check{check}`:

- `spool_writable`: a probe file can be created, synced and removed where new studies go;
- `disk_reserve`: free space on the spool filesystem is above `spool.min_free_mib`;
- `vault`: the vault answers and was made with this `vault.key` (PostgreSQL: reached within
  `connect_timeout`, the login and TLS accepted, its schema not newer than this gateway
  knows; the reason says which failed); while it does not, instances wait in `incoming/`;
- `workers` (forwarding on): the worker pool started and at least one worker is alive;
- `destination` (forwarding on): a mutual-TLS handshake with the analysis server succeeds
  (CA, host name, pin), and requests to it are not failing (the outbox is not backing off);
- `forwarding` (forwarding off, `forward.enabled = false`): always fails with `disabled`.
  Receive-only is a legitimate mode, but nothing leaves the spool in it; an operator who did
  not mean it must see it, not a gateway that looks healthy while `incoming/` grows.

Not ready is a signal for operations, not a gate: while the destination is down, C-STOREs are
still acknowledged and wait in the spool. Only an unwritable spool or a disk below the reserve
makes the gateway refuse instances (Out of Resources).

The checks run every `_INTERVAL` seconds in a background thread, and when /readyz is asked
and the last result is older than a second. The same pass refreshes the certificate-expiry
gauges (the server certificate as the last handshake showed it) and the depth and oldest age
of the quarantine and dead-letter states.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from prometheus_client import CollectorRegistry, make_wsgi_app

from gateway.errors import VaultError, VaultUnavailable
from gateway.httpserver import HttpServer
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.pipeline import Scheduler
from gateway.settings import MetricsSettings, Settings
from gateway.spool import HELD, Spool, State
from gateway.vault import Vault

log = get_logger("gateway.health")
_INTERVAL = 5.0  # seconds between background passes
_FRESH = 1.0  # a /readyz request reuses a result younger than this
_PROBE_TIMEOUT = 3.0  # seconds for the TLS handshake with the destination

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


@dataclass(frozen=True)
class Check:
    ok: bool
    reason: str = "ok"  # a fixed code, never a value from the wire


class Health:
    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        metrics: Metrics,
        scheduler: Scheduler | None,
        vault: Vault | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool = spool
        self.vault = vault
        self.metrics = metrics
        self.scheduler = scheduler
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._checks: dict[str, Check] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)
        metrics.spool_reserve_bytes.set(spool.reserve)
        if scheduler is None:  # no scheduler keeps the incoming gauges: read them at each scrape
            metrics.watch_incoming(lambda: spool.stamps(State.INCOMING))
        self.watch_certificates(settings)

    def watch_certificates(self, settings: Settings, only: str = "") -> None:
        """The expiry gauges of the configured certificates (`only`: those whose name starts
        with it: after a reload, the listener's, the one certificate read again)."""
        for name, when in certificate_expiries(settings).items():
            if name.startswith(only):
                self.metrics.certificate_expiry.labels(certificate=name).set(when)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def checks(self) -> dict[str, Check]:
        """The current result, refreshed when older than a second."""
        with self._lock:
            if self._clock() - self._checked_at >= _FRESH:
                self._refresh()
            return dict(self._checks)

    def _run(self) -> None:
        while not self._stop.wait(_INTERVAL):
            with self._lock:
                self._refresh()

    def _refresh(self) -> None:
        try:
            room = self.spool.free_bytes() >= self.spool.reserve
        except OSError:  # the spool's filesystem is gone: no room to speak of
            room = False
        checks = {
            "spool_writable": _check(self.spool.writable(), "not-writable"),
            "disk_reserve": _check(room, "below-reserve"),
        }
        if self.vault is not None:
            checks["vault"] = self._vault(self.vault)
        if self.scheduler is not None:
            checks["workers"] = _check(self.scheduler.workers_ready(), "no-worker-alive")
            checks["destination"] = self._destination(self.scheduler)
        else:
            checks["forwarding"] = Check(False, "disabled")
        self._checked_at = self._clock()
        changed = {n: c for n, c in checks.items() if self._checks.get(n) != c}
        self._checks = checks
        ready = all(c.ok for c in checks.values())
        for name, check in checks.items():
            self.metrics.readiness.labels(check=name).set(1 if check.ok else 0)
        self.metrics.ready.set(1 if ready else 0)
        if changed:
            failing = {n: c.reason for n, c in checks.items() if not c.ok}
            if ready:
                log.info("readiness.changed", ready=True)
            else:
                log.warning("readiness.changed", ready=False, failing=failing)
        self._held_gauges()

    def _destination(self, scheduler: Scheduler) -> Check:
        probe = scheduler.outbox.forwarder.probe(timeout=_PROBE_TIMEOUT)
        if probe.not_after is not None:
            self.metrics.certificate_expiry.labels(certificate="forward_server").set(
                probe.not_after
            )
        if not probe.reachable:
            return Check(False, probe.reason)
        if scheduler.outbox.gate.failing:
            return Check(False, "requests-failing")
        return Check(True)

    def _vault(self, vault: Vault) -> Check:
        try:
            vault.ping()
        except VaultUnavailable as exc:
            return Check(False, exc.reason)
        except VaultError:
            return Check(False, "vault-error")
        return Check(True)

    def _held_gauges(self) -> None:
        now = time.time()
        for state in HELD:
            try:
                stamps = self.spool.held_since(state)
            except OSError:
                continue  # the spool check above says why
            self.metrics.queue_depth.labels(state=state.value).set(len(stamps))
            self.metrics.oldest_age.labels(state=state.value).set(
                max(0.0, now - min(stamps)) if stamps else 0.0
            )


def _check(ok: bool, reason: str) -> Check:
    return Check(True) if ok else Check(False, reason)


def certificate_expiries(settings: Settings) -> dict[str, float]:
    """notAfter (Unix time) of each configured certificate: the first in a certificate file,
    the earliest in a CA bundle. A file that cannot be read is left out (the component that
    uses it reports that)."""
    files: dict[str, tuple[Path | None, bool]] = {}
    if settings.ingest.tls.enabled:
        files["ingest_server"] = (settings.ingest.tls.certificate, False)
        files["ingest_client_ca"] = (settings.ingest.tls.client_ca, True)
    if settings.forward.enabled:
        files["forward_client"] = (settings.forward.client_certificate, False)
        files["forward_ca"] = (settings.forward.ca_bundle, True)
    vault = settings.vault.postgresql
    if settings.vault.engine == "postgresql" and vault is not None:
        files["vault_client"] = (vault.certificate, False)
        files["vault_ca"] = (vault.ca, True)
    found = {}
    for name, (path, bundle) in files.items():
        if path is None:
            continue
        try:
            certificates = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError):
            log.warning("certificate.unreadable", certificate=name)
            continue
        stamps = [c.not_valid_after_utc.timestamp() for c in certificates]
        found[name] = min(stamps) if bundle else stamps[0]
    return found


class HttpEndpoint:
    """/metrics, /healthz and /readyz on one listening socket, bounded in threads, connections
    and time (`gateway.httpserver`); /healthz is answered without waiting for a worker."""

    def __init__(self, settings: MetricsSettings, registry: CollectorRegistry, health: Health):
        self.health = health
        self._metrics = make_wsgi_app(registry)
        self.server = HttpServer(
            settings.host,
            settings.port,
            self._app,
            max_connections=settings.max_connections,
            request_timeout=settings.request_timeout,
            inline=frozenset({"/healthz"}),
            on_closed=lambda reason: health.metrics.http_closed.labels(reason=reason).inc(),
        )
        self.port = self.server.port

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/healthz":
            return _json(start_response, "200 OK", {"status": "alive"})
        if path == "/readyz":
            checks = self.health.checks()
            ready = all(c.ok for c in checks.values())
            body = {
                "ready": ready,
                "checks": {n: {"ok": c.ok, "reason": c.reason} for n, c in checks.items()},
            }
            return _json(start_response, "200 OK" if ready else "503 Service Unavailable", body)
        return _json(start_response, "404 Not Found", {"error": "not-found"})


def _json(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body, sort_keys=True).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [data]
