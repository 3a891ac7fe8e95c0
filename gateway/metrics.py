"""Every Prometheus metric, declared once, on an injectable registry.

Label values are small fixed enums: never AE titles from the wire, UIDs or identifiers.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

import gateway
from gateway.fate import PROCESSED, VAULT_REASONS


class Refusal(enum.StrEnum):
    """Why a connection or association was not admitted, or was cut off."""

    CALLING_AE_UNKNOWN = "calling_ae_unknown"
    CALLED_AE_WRONG = "called_ae_wrong"
    PEER_ADDRESS_NOT_ALLOWED = "peer_address_not_allowed"
    TOO_MANY_ASSOCIATIONS = "too_many_associations"
    TOO_MANY_PENDING = "too_many_pending_connections"
    TLS_HANDSHAKE_FAILED = "tls_handshake_failed"
    PDU_TOO_LARGE = "pdu_too_large"
    INSTANCE_TOO_LARGE = "instance_too_large"


class HttpClosed(enum.StrEnum):
    """Why the metrics endpoint closed a connection without the answer it asked for."""

    TIMEOUT = "timeout"  # the request not complete, or the answer not taken, in time
    OVER_LIMIT = "over_limit"  # closed to stay within metrics.max_connections
    BAD_REQUEST = "bad_request"  # not a GET/HEAD of HTTP/1.x, or a head over 8 KiB


class StoreResult(enum.StrEnum):
    """Outcome of one C-STORE request."""

    STORED = "stored"
    OUT_OF_RESOURCES = "out_of_resources"
    NO_STUDY_UID = "no_study_instance_uid"
    UNPARSEABLE = "unparseable"
    SOP_CLASS_NOT_SUPPORTED = "sop_class_not_supported"


#: What became of a reload (`config_reloads_total{result}` has each from the start).
RELOAD_RESULTS = ("applied", "partial", "refused")

#: How a result can be held (`spool.returns`): `results_held_items{kind}` always has both.
RESULT_HOLDS = ("quarantine", "dead")


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = "dicom_gateway_"
        self.associations_accepted = Counter(
            p + "associations_accepted", "Associations admitted", registry=registry
        )
        self.associations_refused = Counter(
            p + "associations_refused",
            "Connections or associations refused or aborted, by reason",
            ["reason"],
            registry=registry,
        )
        self.store_requests = Counter(
            p + "store_requests", "C-STORE requests by result", ["result"], registry=registry
        )
        self.received_bytes = Counter(
            p + "received_bytes", "Bytes of instances made durable in the spool", registry=registry
        )
        self.store_seconds = Histogram(
            p + "store_duration_seconds",
            "Time to encrypt and durably write one instance",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=registry,
        )
        self.spool_free_bytes = Gauge(
            p + "spool_free_bytes", "Free bytes on the spool filesystem", registry=registry
        )
        self.spool_reserve_bytes = Gauge(
            p + "spool_reserve_bytes",
            "Free space that must remain on the spool filesystem (spool.min_free_mib); below it "
            "C-STORE answers Out of Resources",
            registry=registry,
        )
        self.certificate_expiry = Gauge(
            p + "certificate_expiry_timestamp_seconds",
            "notAfter of each configured certificate, Unix time (ingest_server, ingest_client_ca, "
            "forward_client, forward_ca; forward_server: what the analysis server presented at "
            "the last readiness probe)",
            ["certificate"],
            registry=registry,
        )
        self.ready = Gauge(
            p + "ready", "1 when every readiness check passes (what /readyz answers)",
            registry=registry,
        )  # fmt: skip
        self.readiness = Gauge(
            p + "readiness_check",
            "1 when the readiness check passes, 0 when it fails (spool_writable, disk_reserve, "
            "workers, destination)",
            ["check"],
            registry=registry,
        )
        self.http_closed = Counter(
            p + "http_connections_closed",
            "Connections to this endpoint closed unanswered, by reason (timeout: the request or "
            "the taking of the answer exceeded metrics.request_timeout; over_limit: closed to "
            "stay within metrics.max_connections; bad_request)",
            ["reason"],
            registry=registry,
        )
        self.instances_processed = Counter(
            p + "instances_processed",
            "Instances through the worker pool, by result (sealed, dropped, quarantined, deferred)",
            ["result"],
            registry=registry,
        )
        self.quarantined = Counter(
            p + "instances_quarantined", "Instances quarantined, by reason", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.dropped = Counter(
            p + "instances_dropped", "Instances dropped by policy, by reason", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.stage_seconds = Histogram(
            p + "stage_duration_seconds",
            "Time per instance in each stage (read, deidentify, seal, write, queue, "
            "receive_to_delivered)",
            ["stage"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
                     600.0, 3600.0),
            registry=registry,
        )  # fmt: skip
        self.vault_seconds = Histogram(
            p + "vault_duration_seconds",
            "Time per instance spent in round trips to the vault engine (SQLite or PostgreSQL): "
            "new mappings, and whether its study is held",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
            registry=registry,
        )
        self.vault_errors = Counter(
            p + "vault_errors",
            "Vault calls that failed, by reason (vault-unavailable: the engine cannot be "
            "reached; vault-refused, vault-tls-failed: the server refused the login, TLS "
            "failed; vault-key-mismatch: another vault.key; vault-schema-newer; vault-error: "
            "a statement refused); each instance affected waits in incoming/",
            ["reason"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            p + "queue_depth",
            "Items in each spool state (incoming: acknowledged, not yet sealed; outbox: sealed, "
            "not yet delivered; quarantine; dead)",
            ["state"],
            registry=registry,
        )
        self.oldest_age = Gauge(
            p + "queue_oldest_age_seconds",
            "Age of the oldest item waiting in each spool state",
            ["state"],
            registry=registry,
        )
        self.worker_restarts = Counter(
            p + "worker_restarts", "Worker processes replaced, by reason", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.workers_alive = Gauge(
            p + "workers_alive", "Worker processes running", registry=registry
        )
        self.forward_results = Counter(
            p + "forward_results",
            "Answers to PUTs to the analysis server, by destination, result and reason",
            ["destination", "result", "reason"],
            registry=registry,
        )
        self.forward_retries = Counter(
            p + "forward_retries", "Requests that will be retried", ["destination"],
            registry=registry,
        )  # fmt: skip
        self.forwarded_bytes = Counter(
            p + "forwarded_bytes", "Sealed bytes delivered", ["destination"], registry=registry
        )
        self.forward_seconds = Histogram(
            p + "forward_request_duration_seconds",
            "Time per PUT to the analysis server",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0),
            registry=registry,
        )
        self.dead_letters = Counter(
            p + "dead_letters",
            "Sealed items the analysis server refused for good, by destination and reason",
            ["destination", "reason"],
            registry=registry,
        )
        self.manifests = Counter(
            p + "manifests_sealed", "Study manifests sealed for sending", registry=registry
        )
        self.erased = Counter(
            p + "erased",
            "Items erased by retention or an operator, by what (delivered, dead, quarantine, "
            "study_key, study_record, study_ledger, result: a held result; purged)",
            ["what"],
            registry=registry,
        )
        # the way back (`pipeline.results`): exported from the start; `watch_results` ties the
        # gauges to the spool when [results] is enabled
        self.results_fetched = Counter(
            p + "results_fetched",
            "Results fetched from the analysis server's results channel into the spool",
            registry=registry,
        )
        self.results_stored = Counter(
            p + "results_stored",
            "Results re-identified, stored in PACS and acknowledged to the analysis server",
            registry=registry,
        )
        self.results_held = Counter(
            p + "results_held",
            "Results held by the gateway in returns-held/, by kind (quarantine: not tied to one "
            "original study; dead: PACS refused it, or its retries ran out) and reason code",
            ["kind", "reason"],
            registry=registry,
        )
        self.results_poll_failures = Counter(
            p + "results_poll_failures",
            "Polls of the results channel that failed, by reason (unreachable, refused-<http "
            "status>, bad-listing, content-digest-mismatch, server-seals-to-another-key...)",
            ["reason"],
            registry=registry,
        )
        self.results_last_poll = Gauge(
            p + "results_last_poll_success_timestamp_seconds",
            "When the results channel last answered a poll, Unix time (the start time until then)",
            registry=registry,
        )
        self.results_waiting = Gauge(
            p + "results_waiting", "Results fetched and waiting for PACS (returns/)",
            registry=registry,
        )  # fmt: skip
        self.results_oldest_age = Gauge(
            p + "results_oldest_waiting_age_seconds",
            "Age of the oldest result waiting for PACS, since it was fetched",
            registry=registry,
        )
        self.results_held_items = Gauge(
            p + "results_held_items",
            "Results held in returns-held/ until an operator retries or purges them or retention "
            "erases them, by kind (quarantine, dead)",
            ["kind"],
            registry=registry,
        )
        self.results_pacs_seconds = Histogram(
            p + "results_pacs_store_duration_seconds",
            "Time per C-STORE of a re-identified result to PACS (association included)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=registry,
        )
        self.config_reloads = Counter(
            p + "config_reloads",
            "Configuration reloads (SIGHUP), by result: applied; partial (applied, but keys "
            "that need a restart changed); refused (the file is invalid: the old one stays)",
            ["result"],
            registry=registry,
        )
        self.config_generation = Gauge(
            p + "config_generation",
            "The configuration in force: 0 as started, one more per applied reload",
            registry=registry,
        )
        self.config_loaded = Gauge(
            p + "config_loaded_timestamp_seconds",
            "When the configuration in force was read (start, or the last applied reload), "
            "Unix time",
            registry=registry,
        )
        self.config_loaded.set_to_current_time()
        self.config_refused = Gauge(
            p + "config_reload_refused_timestamp_seconds",
            "When a reload was last refused, Unix time; 0: none since start. Later than "
            "config_loaded_timestamp_seconds: the file on disk is not what runs",
            registry=registry,
        )
        Info(p + "build", "Build information", registry=registry).info(
            {"version": gateway.__version__}
        )
        for reason in Refusal:
            self.associations_refused.labels(reason=reason)
        for closed in HttpClosed:
            self.http_closed.labels(reason=closed)
        # series that alerts compare over time exist from the start (a counter born at its
        # first increment hides that increment from increase())
        for outcome in RELOAD_RESULTS:
            self.config_reloads.labels(result=outcome)
        for result in StoreResult:
            self.store_requests.labels(result=result)
        for processed in PROCESSED:
            self.instances_processed.labels(result=processed.value)
        for code in VAULT_REASONS:
            self.vault_errors.labels(reason=code)

    def watch_free_space(self, read: Callable[[], int]) -> None:
        self.spool_free_bytes.set_function(lambda: float(read()))

    def watch_incoming(self, stamps: Callable[[], list[float]]) -> None:
        """Read `incoming/` at each scrape when no scheduler keeps its gauges (forwarding
        off): its depth and oldest age are exported from the first scrape, so the backlog
        alert sees a receive-only gateway's queue grow. `stamps` gives the items' receive
        times (Unix); a spool that cannot be read counts as empty (/readyz reports it)."""

        def read() -> list[float]:
            try:
                return stamps()
            except OSError:
                return []

        def oldest() -> float:
            found = read()
            return max(0.0, time.time() - min(found)) if found else 0.0

        self.queue_depth.labels(state="incoming").set_function(lambda: float(len(read())))
        self.oldest_age.labels(state="incoming").set_function(oldest)

    def watch_results(
        self, waiting: Callable[[], list[float]], held: Callable[[], dict[str, int]]
    ) -> None:
        """Read the return queue at each scrape: `waiting` gives the fetch times (Unix) of the
        results in returns/, `held` the held results per kind. A spool that cannot be read
        counts as empty here (/readyz reports the spool)."""

        def ages() -> list[float]:
            try:
                return waiting()
            except OSError:
                return []

        def oldest() -> float:
            stamps = ages()
            return max(0.0, time.time() - min(stamps)) if stamps else 0.0

        def counter(kind: str) -> Callable[[], float]:
            def count() -> float:
                try:
                    return float(held().get(kind, 0))
                except OSError:
                    return 0.0

            return count

        self.results_waiting.set_function(lambda: float(len(ages())))
        self.results_oldest_age.set_function(oldest)
        for kind in RESULT_HOLDS:
            self.results_held_items.labels(kind=kind).set_function(counter(kind))
        self.results_last_poll.set(time.time())
        self.results_poll_failures.labels(reason="unreachable")
