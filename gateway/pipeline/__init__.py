"""The daemon's work after ingest: worker pool, outbox, study assembly and retention, driven
by one scheduler thread over the spool's states."""

from __future__ import annotations

import os

from gateway.audit import AuditLog
from gateway.errors import ConfigError
from gateway.forward.backoff import Backoff
from gateway.forward.client import Forwarder
from gateway.metrics import Metrics
from gateway.pipeline.delivery import Outbox
from gateway.pipeline.pool import WorkerPool
from gateway.pipeline.scheduler import Scheduler
from gateway.seal.keys import read_public
from gateway.settings import Settings
from gateway.spool import Spool
from gateway.vault import Vault

__all__ = ["Scheduler", "build"]


def build(
    settings: Settings, spool: Spool, metrics: Metrics, audit: AuditLog, vault: Vault
) -> Scheduler:
    """The scheduler with its worker pool and outbox for a site's settings (forwarding on);
    ConfigError when the receiver's key or the TLS files cannot be used."""
    forward = settings.forward
    if not forward.enabled or forward.receiver_key is None:
        raise ConfigError([f"{settings.source}: forward.enabled: the pipeline needs forwarding"])
    key = read_public(forward.receiver_key)
    forwarder = Forwarder.for_settings(settings)
    backoff = Backoff(
        base=1.0, ceiling=forward.max_backoff_seconds, give_up_after=forward.retry_hours * 3600
    )
    count = settings.workers.count or os.cpu_count() or 1
    pool = WorkerPool(
        settings, count, on_restart=lambda reason: metrics.worker_restarts.labels(reason).inc()
    )
    outbox = Outbox(spool, forwarder, backoff, metrics, connections=forward.connections)
    return Scheduler(settings, spool, metrics, audit, pool, outbox, key, vault)
