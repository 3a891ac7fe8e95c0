"""Every Prometheus metric, declared once, on an injectable registry.

Label values are small fixed enums: never AE titles from the wire, UIDs or identifiers.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

import gateway


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


class StoreResult(enum.StrEnum):
    """Outcome of one C-STORE request."""

    STORED = "stored"
    OUT_OF_RESOURCES = "out_of_resources"
    NO_STUDY_UID = "no_study_instance_uid"
    UNPARSEABLE = "unparseable"
    SOP_CLASS_NOT_SUPPORTED = "sop_class_not_supported"


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
        Info(p + "build", "Build information", registry=registry).info(
            {"version": gateway.__version__}
        )
        for reason in Refusal:
            self.associations_refused.labels(reason=reason)
        for result in StoreResult:
            self.store_requests.labels(result=result)

    def watch_free_space(self, read: Callable[[], int]) -> None:
        self.spool_free_bytes.set_function(lambda: float(read()))
