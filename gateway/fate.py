"""What became of one instance: the one vocabulary of worker, pool, scheduler, report, metrics
and audit (each value is also the `result` label of `instances_processed` and the status in
`deidentify`'s report)."""

from __future__ import annotations

from enum import StrEnum


class Fate(StrEnum):
    WRITTEN = "written"  # de-identified and found clean (the worker; not yet sealed)
    SEALED = "sealed"  # written, then sealed into the outbox (the daemon's worker)
    DROPPED = "dropped"  # by policy (a reason code says which rule), or its original is gone
    QUARANTINED = "quarantined"  # held: not proven clean (a reason code says why)
    DEFERRED = "deferred"  # not done now (the spool could not take the sealed copy): again later


#: the fates a daemon worker reports (the `instances_processed` series made at start)
PROCESSED: tuple[Fate, ...] = (Fate.SEALED, Fate.DROPPED, Fate.QUARANTINED, Fate.DEFERRED)

#: why a vault call failed (a DEFERRED instance's reason, a readiness check's, the
#: `vault_errors` label): the instance waits in incoming/, nothing is held for it
VAULT_REASONS: tuple[str, ...] = (
    "vault-unavailable",
    "vault-refused",
    "vault-tls-failed",
    "vault-key-mismatch",
    "vault-schema-newer",
    "vault-error",
)
