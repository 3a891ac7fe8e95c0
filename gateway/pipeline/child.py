"""The worker process: one received instance in, one sealed file (or a verdict) out.

Each child builds its own objects once (vault connection, de-identifier, pixel models, the
receiver's public key) and then answers jobs from the parent over a pipe, one at a time:
read the encrypted original -> `Worker.process` (policy, pixels, header, release check) ->
seal for the analysis server -> write the sealed file durably into the outbox. It returns a
small `Summary` (fixed reason codes, counts, timings, pseudonymous names: never a value from
the instance); the parent moves the original to its next state and records metrics. Nothing
here raises for a bad instance; an unexpected exception becomes the reason `worker-error:<Type>`.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import resource
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

from gateway.errors import GatewayError, SpoolCorrupt, VaultUnavailable
from gateway.fate import Fate
from gateway.logs import configure, get_logger
from gateway.seal.envelope import Name, seal
from gateway.seal.keys import PublicKey, read_public
from gateway.settings import Settings
from gateway.spool import OutgoingHeader, Spool
from gateway.vault import open_vault
from gateway.worker import Worker

log = get_logger("gateway.worker")


@dataclass(frozen=True)
class Job:
    path: str  # the original in incoming/
    instance_id: str


@dataclass(frozen=True)
class Summary:
    """What became of one job; safe to log and count (no value from the instance)."""

    instance_id: str
    result: Fate  # SEALED, DROPPED, QUARANTINED or DEFERRED (the original stays, tried later:
    # the spool could not take the sealed copy, or the vault could not be reached)
    reason: str | None = None
    where: tuple[str, ...] = ()  # tag paths a finding points at
    sealed: str | None = None  # the sealed file's path
    study: str = ""  # the pseudonymous StudyInstanceUID
    patient: str = ""  # the patient pseudonym
    size: int = 0  # of the de-identified file
    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Reconfigure:
    """Between two jobs: rebuild the worker for reloaded settings (SIGHUP), then answer
    ("reconfigured", generation); or ("failed", reason) and exit, to be replaced."""

    settings: Settings
    generation: int


class Child:
    """The objects one worker process builds once; `handle` runs one job."""

    def __init__(self, settings: Settings) -> None:
        if settings.forward.receiver_key is None:
            raise GatewayError("forward.receiver_key is not set")
        self.site = settings.deidentify.site_code
        self.vault = open_vault(settings.vault)
        self.spool = Spool.open_readonly(settings.spool)
        self.worker = Worker.for_settings(settings, self.vault)
        self.key: PublicKey = read_public(settings.forward.receiver_key)

    def reconfigure(self, settings: Settings) -> None:
        """Policy, pixel rules, de-identification options and log level from reloaded
        settings; the vault, spool, key and the text detector's models are kept (the keys
        behind them need a restart). Raises ConfigError and keeps the old worker when the
        new one cannot be built."""
        worker = Worker.for_settings(settings, self.vault, self.worker.pixels.finder)
        configure(settings.logging)
        self.worker = worker

    def handle(self, job: Job) -> Summary:
        log.debug("worker.job_started", pid=os.getpid())
        started = time.perf_counter()
        try:
            header, data = self.spool.read(Path(job.path))
        except FileNotFoundError:
            return Summary(job.instance_id, Fate.DROPPED, "original-gone")
        except SpoolCorrupt:
            return Summary(job.instance_id, Fate.QUARANTINED, "spool-corrupt")
        read = time.perf_counter()
        self.vault.usage()  # what earlier jobs used is theirs
        try:
            outcome = self.worker.process(data, header.peer)
        except VaultUnavailable as exc:
            log.warning("worker.vault_unavailable", reason=exc.reason, error=str(exc))
            return Summary(job.instance_id, Fate.DEFERRED, exc.reason)
        done = time.perf_counter()
        seconds = {"read": read - started, "deidentify": done - read}
        used = self.vault.usage()
        if used.round_trips:
            seconds["vault"] = used.seconds
        if outcome.status is not Fate.WRITTEN or outcome.result is None:
            fate = Fate.DROPPED if outcome.status is Fate.DROPPED else Fate.QUARANTINED
            return Summary(
                job.instance_id,
                fate,
                outcome.reason,
                where=outcome.where,
                counts=outcome.counts,
                seconds=seconds,
            )
        result = outcome.result
        name = Name("instance", self.site, result.study_instance_uid, result.sop_instance_uid)
        body = seal(result.data, name, self.key)
        sealed_at = time.perf_counter()
        outgoing = OutgoingHeader(
            name=job.instance_id,
            study_id=header.study_id,
            kind="instance",
            site=self.site,
            study=result.study_instance_uid,
            item=result.sop_instance_uid,
            key_id=self.key.key_id,
            sha256=hashlib.sha256(result.data).hexdigest(),
            size=len(result.data),
            received_at=header.received_at,
            sealed_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            series=result.series_instance_uid,
            sop_class=result.sop_class_uid,
            patient=result.patient,
        )
        try:
            path = self.spool.write_sealed(outgoing, body)
        except OSError:
            return Summary(job.instance_id, Fate.DEFERRED, "spool-write-failed", seconds=seconds)
        seconds.update(seal=sealed_at - done, write=time.perf_counter() - sealed_at)
        return Summary(
            job.instance_id,
            Fate.SEALED,
            sealed=str(path),
            study=result.study_instance_uid,
            patient=result.patient,
            size=len(result.data),
            counts=outcome.counts,
            seconds=seconds,
        )

    def close(self) -> None:
        self.spool.close()
        self.vault.close()


def serve(settings: Settings, conn: Connection) -> None:
    """The child's main loop (multiprocessing target). Sends ("ready", pid) once set up, or
    ("failed", reason) and exits; then one Summary per Job until it receives None."""
    # the parent decides when workers stop; a hang-up (a closed terminal) is the parent's too
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    _die_with_parent()
    configure(settings.logging)
    limit = settings.workers.max_memory_mib * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        child = Child(settings)
    except (GatewayError, OSError, MemoryError) as exc:
        conn.send(("failed", exc.__class__.__name__))
        return
    conn.send(("ready", os.getpid()))
    try:
        while (job := conn.recv()) is not None:
            if isinstance(job, Reconfigure):
                if not _reconfigure(child, job, conn):
                    return
                continue
            try:
                summary = child.handle(job)
            except Exception as exc:  # noqa: BLE001 - one bad instance must not end the worker
                log.error("worker.job_failed", error=exc.__class__.__name__)
                summary = Summary(job.instance_id, Fate.QUARANTINED, f"worker-error:{_name(exc)}")
            conn.send(summary)
    except (EOFError, OSError):
        pass  # the parent went away
    finally:
        child.close()


def _reconfigure(child: Child, message: Reconfigure, conn: Connection) -> bool:
    """Rebuild for reloaded settings; False when that failed and this worker must end (the
    pool starts a fresh one under the new settings: no instance is processed under rules the
    operator replaced)."""
    try:
        child.reconfigure(message.settings)
    except (GatewayError, OSError, MemoryError) as exc:
        log.error("worker.reconfigure_failed", error=str(exc), generation=message.generation)
        conn.send(("failed", exc.__class__.__name__))
        return False
    conn.send(("reconfigured", message.generation))
    return True


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the gateway process dies (even by SIGKILL), so no
    orphan writes into a spool a restarted gateway already owns. (Strictly: when the thread
    that started it ends; the scheduler thread starts workers and stops them before it ends.)"""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call
        os._exit(1)


_PR_SET_PDEATHSIG = 1


def _name(exc: BaseException) -> str:
    return exc.__class__.__name__
