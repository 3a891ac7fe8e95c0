"""Moves work between spool states: received -> worker pool -> outbox -> sent, and the rest.

One scheduler thread owns the decisions; everything else hands it events:

- the ingest threads say an instance is durable (`notify`, called by the spool);
- the worker pool returns a `Summary` per instance (or says the worker was lost);
- the sender threads (`delivery.Outbox`) say what the analysis server answered.

For each result the scheduler makes one durable state change in the spool: the original is
removed once its sealed copy exists (the child wrote it), moved to quarantine with a reason
file, or removed when the policy drops it. A worker that crashed gets its instance once more,
then it is quarantined (`worker-crashed`); one that ran past `workers.instance_timeout_seconds`
is killed and its instance quarantined (`worker-timeout`).

In-flight work is bounded: each worker holds one instance; everything else waits as a path in
a queue (paths, not data: a 10,000-instance backlog costs about a megabyte). After a crash,
`recover` rebuilds the queues from the spool alone (`recovery`); instances whose sealed copy
was written before the crash were already tidied by the spool. Where an item is, and whether
a study still waits or is held, only the spool knows; `work.WorkQueue` keeps the order of
work.

A worker that could not reach the vault gives its instance back untouched: it goes to the
front and nothing is handed out for a while (`WorkQueue.pause`, 1 s doubling to 30 s), so an
outage costs one attempt per pause, not one per waiting instance.

Every second the scheduler also seals manifests of stable studies (`studies`, `manifests`),
applies operators' requests (`operations`) and refreshes the queue gauges; every
`retention.sweep_seconds` it erases what is due (`retention`).

(About 420 lines: the one thread that decides, with one small method per event; what it
delegates - order of work, recovery, manifests, retention, operator requests - lives beside it.)
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gateway.audit import AuditLog
from gateway.errors import GatewayError, VaultUnavailable
from gateway.fate import VAULT_REASONS, Fate
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.pipeline.child import Job, Summary
from gateway.pipeline.delivery import Answered, Outbox
from gateway.pipeline.manifests import Manifests
from gateway.pipeline.operations import ResultApplied, serve_requests
from gateway.pipeline.pool import Lost, WorkerPool
from gateway.pipeline.recovery import backlog
from gateway.pipeline.retention import Retention
from gateway.pipeline.studies import Studies
from gateway.pipeline.work import WorkQueue
from gateway.seal.keys import PublicKey
from gateway.settings import Settings
from gateway.spool import InstanceHeader, Spool, State
from gateway.vault import Vault

log = get_logger("gateway.scheduler")
_TICK = 1.0  # seconds between assembly / gauge passes
MIXED = "study-mixed-patients"


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        spool: Spool,
        metrics: Metrics,
        audit: AuditLog,
        pool: WorkerPool,
        outbox: Outbox,
        key: PublicKey,
        vault: Vault,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.metrics = metrics
        self.audit = audit
        self.pool = pool
        self.outbox = outbox
        outbox.on_answered = self.answered
        self.key = key
        self.site = settings.deidentify.site_code
        self.studies = Studies(settings.studies.stable_seconds, spool.busy)
        self.retention = Retention(settings.retention, spool, metrics, audit, vault)
        self.manifests = Manifests(spool, key, self.site, metrics, vault, self._mark_mixed)
        #: from other threads: an instance stored (ingest), a sealed item answered (senders),
        #: reloaded settings (the main thread, on SIGHUP)
        self._events: queue.SimpleQueue[InstanceHeader | Answered | Settings] = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.work = WorkQueue()
        self._stopping = threading.Event()
        self._draining = False
        self._thread = threading.Thread(target=self._run, name="scheduler", daemon=True)
        self._next_tick = 0.0
        self._next_sweep = 0.0
        self._on_fatal: Callable[[str], None] = lambda reason: None
        self.ready = threading.Event()  # the workers are up
        self._deadline = 0.0  # when stopping: by when the workers must be gone

    # -- called from other threads ------------------------------------------------------------

    def notify(self, header: InstanceHeader) -> None:
        """An instance is durable in incoming/ (ingest thread, via Spool.subscribe)."""
        self._events.put(header)
        self._wake()

    def answered(self, answered: Answered) -> None:
        """The analysis server took or refused a sealed item for good (sender thread)."""
        self._events.put(answered)
        self._wake()

    def reconfigure(self, settings: Settings) -> None:
        """Reloaded settings (main thread): the workers take them between jobs, retention
        from its next sweep."""
        self._events.put(settings)
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe: it is awake already
            os.write(self._wake_w, b"x")

    # -- life cycle ---------------------------------------------------------------------------

    def start(self, on_fatal: Callable[[str], None]) -> None:
        """Rebuild the queues, start the senders, and start the workers in the scheduler
        thread (loading models takes seconds; associations are accepted meanwhile). If the
        workers cannot start, `on_fatal` is called with the reason."""
        self._on_fatal = on_fatal
        self.recover()
        self.outbox.start()
        self._thread.start()

    def recover(self) -> None:
        """Rebuild the queues from the spool: oldest original first."""
        now = time.monotonic()
        found = backlog(self.spool)
        for item in found.originals:
            self.work.add(item.path)
            self.studies.received(item.study_id, now)
        for item in found.sealed:
            self.studies.get(item.study_id, now)
            self.outbox.put(item.path)
        for study_id in found.unlisted:
            self.studies.get(study_id, now).dirty = True
        recovered = self.spool.recovery
        log.info(
            "scheduler.recovered",
            waiting=self.work.queued,
            outbox=len(found.sealed),
            partial_writes=recovered.partial_writes,
            originals_already_sealed=recovered.originals_already_sealed,
        )
        self._gauges()  # the queues are known now: exported from the first scrape

    def stop(self, timeout: float) -> bool:
        """Stop taking new work, let workers finish what they hold (up to `timeout`), stop
        the senders; True if everything in flight finished in time."""
        deadline = time.monotonic() + timeout
        self._draining = True
        self._wake()
        while self.work.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        finished = not self.work.in_flight
        self._deadline = deadline
        self._stopping.set()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(max(1.0, deadline - time.monotonic()) + 5.0)
        else:
            self.pool.stop(0)  # it never started, or failed to start
        self.outbox.stop(max(1.0, deadline - time.monotonic()))
        os.close(self._wake_r)
        os.close(self._wake_w)
        return finished

    # -- the scheduler thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.pool.start()
        except GatewayError as exc:
            log.error("workers.failed", error=str(exc))
            self._on_fatal(str(exc))
            return
        self.ready.set()
        log.info("workers.started", count=self.pool.count)
        try:
            while not self._stopping.is_set():
                try:
                    self._step()
                except Exception as exc:  # noqa: BLE001 - the one guard of the work loop
                    # the spool or audit trail failed, or a bug: nothing is lost (every state
                    # change is a rename), so pause and go on; the log and metrics show it
                    log.error("scheduler.failed", error=exc.__class__.__name__)
                    time.sleep(1.0)
        finally:
            # from this thread: the workers die with the thread that started them (Linux
            # parent-death signal), so they are stopped before it ends
            self.pool.stop(max(1.0, self._deadline - time.monotonic()))

    def _step(self) -> None:
        self._dispatch()
        for job, result in self.pool.poll(timeout=0.5, extra=[self._wake_r]):
            self._finished(job, result)
        self._drain_wakeups()
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, InstanceHeader):
                self._stored(event)
            elif isinstance(event, Settings):
                self._reconfigured(event)
            else:
                self._answered(event)
        now = time.monotonic()
        if now >= self._next_tick:
            self._next_tick = now + _TICK
            self._requests(now)
            self._assemble(now)
            self._gauges()
        if now >= self._next_sweep:
            self._next_sweep = now + self.settings.retention.sweep_seconds
            self.retention.sweep(self._busy_studies())

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _busy_studies(self) -> set[str]:
        return {s for s in self.studies.known if self.spool.busy(s)}

    def _dispatch(self) -> None:
        now = time.monotonic()
        while not self._draining and self.pool.free():
            path = self.work.next(now)
            if path is None:
                return
            item = self.spool.item(path)
            if self.spool.records.held(item.study_id):
                self._quarantine(path, Summary(item.name, Fate.QUARANTINED, MIXED))
                continue
            job = Job(str(path), path.stem)
            self.work.dispatched(job.instance_id, now)
            self.pool.submit(job)

    def _reconfigured(self, settings: Settings) -> None:
        self.settings = settings
        self.retention.settings = settings.retention
        self.pool.reconfigure(settings)

    def _stored(self, header: InstanceHeader) -> None:
        path = self.spool.path(State.INCOMING, header.study_id, header.instance_id)
        now = time.monotonic()
        if header.study_id not in self.studies.known:
            self.audit.record("study.received", peer=header.peer, study_id=header.study_id)
        self.studies.received(header.study_id, now)
        self.work.add(path)

    def _finished(self, job: Job, result: Summary | Lost) -> None:
        dispatched = self.work.returned(job.instance_id)
        path = Path(job.path)
        study_id = self.spool.item(path).study_id
        if isinstance(result, Lost):
            crashed = result.reason == "worker-crashed"
            if crashed and self.work.retry_crashed(job.instance_id, path):
                return
            result = Summary(job.instance_id, Fate.QUARANTINED, result.reason)
        self.work.settled(job.instance_id)
        self.metrics.instances_processed.labels(result=result.result.value).inc()
        for stage, seconds in result.seconds.items():
            if stage == "vault":
                self.metrics.vault_seconds.observe(seconds)
            else:
                self.metrics.stage_seconds.labels(stage=stage).observe(seconds)
        if dispatched is not None:
            self.metrics.stage_seconds.labels(stage="worker").observe(time.monotonic() - dispatched)
        if result.result is Fate.DEFERRED and result.reason in VAULT_REASONS:
            self.metrics.vault_errors.labels(reason=result.reason).inc()
            pause = self.work.pause(path, time.monotonic())
            log.warning("instance.waits_for_vault", reason=result.reason, seconds=pause)
            return
        self.work.resumed()
        if result.result is Fate.DEFERRED:
            log.warning("instance.deferred", reason=result.reason)
            self.work.defer(path)
            return
        if result.reason == MIXED:
            self._mark_mixed(study_id)
        if result.result is Fate.SEALED and result.sealed:
            self.spool.discard(path)  # the original: its sealed copy is durable
            self.outbox.put(Path(result.sealed))  # of a held study: dead-lettered unsent
        elif result.result is Fate.DROPPED:
            self.spool.discard(path)
            if result.reason != "original-gone":
                self.metrics.dropped.labels(reason=result.reason or "policy").inc()
                self.audit.record("instance.dropped", reason=result.reason or "policy",
                            study_id=study_id, instance_id=job.instance_id)  # fmt: skip
        else:
            self._quarantine(path, result)

    def _quarantine(self, path: Path, result: Summary) -> None:
        reason = result.reason or "unknown"
        try:
            self.spool.hold(
                path,
                State.QUARANTINE,
                {
                    "reason": reason,
                    "where": list(result.where),
                    "at": datetime.now(UTC).isoformat(timespec="seconds"),
                },
            )
        except FileNotFoundError:
            return
        self.metrics.quarantined.labels(reason=reason).inc()
        log.warning("instance.quarantined", reason=reason, where=list(result.where))
        item = self.spool.item(path)
        self.audit.record(
            "instance.quarantined", reason=reason, study_id=item.study_id, instance_id=item.name
        )

    def _mark_mixed(self, study_id: str) -> None:
        """Hold the whole study: what waits is quarantined, the outbox sends none of it, and
        no manifest is made. Recorded in the study record, so a restart keeps holding it."""
        if not self.spool.records.hold(study_id):
            return
        log.error("study.mixed_patients", study_id=study_id)
        self.audit.record("instance.quarantined", reason=MIXED, study_id=study_id)

    def _answered(self, answered: Answered) -> None:
        header = answered.header
        study = self.studies.get(header.study_id, time.monotonic())
        delivered = self.spool.item(answered.path).state is State.SENT
        if header.kind == "manifest":
            if delivered:
                self.audit.record("study.delivered", study=header.study, study_id=header.study_id,
                            version=int(header.item))  # fmt: skip
            return
        if delivered:
            study.dirty = True
            received = _timestamp(header.received_at)
            if received is not None:
                self.metrics.stage_seconds.labels(stage="receive_to_delivered").observe(
                    max(0.0, time.time() - received)
                )
        else:
            self.audit.record("instance.dead-lettered", reason=answered.verdict.reason,
                        study_id=header.study_id, instance_id=header.name)  # fmt: skip

    def _requests(self, now: float) -> None:
        """Apply operators' requests (`dicom-gateway spool ...`) and queue what they freed."""
        for applied in serve_requests(self.spool, self.audit):
            if isinstance(applied, ResultApplied):
                self._result_request(applied)
                continue
            item = applied.item
            fields = {"study_id": item.study_id, "instance_id": item.name}
            if applied.officer is not None:
                fields["officer"] = applied.officer
            if applied.op == "release" and applied.path is not None:
                self.studies.received(item.study_id, now)
                self.work.add(applied.path)
                self.audit.record("instance.released", **fields)
            elif applied.op == "retry" and applied.path is not None:
                self.studies.get(item.study_id, now)
                self.outbox.put(applied.path)
                self.audit.record("instance.retried", **fields)
            else:
                self.metrics.erased.labels(what="purged").inc()
                self.audit.record("instance.purged", kind=item.state.value, **fields)
            log.info("operator.request", op=applied.op, state=item.state)

    def _result_request(self, applied: ResultApplied) -> None:
        """A held result retried (the way back picks it up) or purged."""
        if applied.op == "purge":
            self.metrics.erased.labels(what="purged").inc()
        self.audit.record(applied.event, result=applied.result, kind=applied.kind)
        log.info("operator.request", op=applied.op, state="results")

    def _assemble(self, now: float) -> None:
        for study in self.studies.stable(now):
            study.dirty = False
            if self.spool.records.held(study.study_id):
                continue
            try:
                sealed = self.manifests.assemble(study.study_id)
            except VaultUnavailable as exc:  # the study ledger: again on a later pass
                study.dirty = True
                self.metrics.vault_errors.labels(reason=exc.reason).inc()
                log.warning("study.manifest_waits_for_vault", reason=exc.reason)
                break
            if sealed is not None:
                self.outbox.put(sealed)
        for study in self.studies.idle(now):
            del self.studies.known[study.study_id]
            if self.spool.erase_if_idle(study.study_id):
                self.metrics.erased.labels(what="study_key").inc()
                log.info("retention.erased", study_key=1)
                self.audit.record(
                    "study.erased", study_id=study.study_id, kind="study_key", count=1
                )
            self.spool.prune(State.INCOMING, study.study_id)

    def _gauges(self) -> None:
        self.metrics.queue_depth.labels(state="incoming").set(self.work.waiting)
        self.metrics.queue_depth.labels(state="outbox").set(self.outbox.waiting())
        self.metrics.workers_alive.set(self.pool.alive())
        now = time.time()
        for state, oldest in (
            ("incoming", self.work.oldest()),
            ("outbox", self.outbox.head()),
        ):
            self.metrics.oldest_age.labels(state=state).set(_age(oldest, now))

    def workers_ready(self) -> bool:
        """The workers started and at least one is alive, and the scheduler thread runs."""
        return self.ready.is_set() and self._thread.is_alive() and self.pool.alive() > 0

    @property
    def idle(self) -> bool:
        """Nothing waiting anywhere (tests and benchmarks wait for this)."""
        return not (self.work.waiting or self.outbox.waiting())


def _age(path: Path | None, now: float) -> float:
    """Seconds since a spool file was written (its receive or seal time); 0 for none."""
    if path is None:
        return 0.0
    try:
        return max(0.0, now - path.stat().st_mtime)
    except FileNotFoundError:
        return 0.0


def _timestamp(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None
