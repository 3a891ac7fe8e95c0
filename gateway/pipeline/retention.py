"""Erase on schedule: what the receivers' 3-day policies promise, kept true at the sending site.

- Originals (PHI) go as soon as their sealed copy exists (the scheduler does that); a study's
  key is destroyed once none of its originals is left.
- Delivered sealed copies: `retention.delivered_hours` after delivery (the support window).
- Dead letters: `retention.dead_letter_hours` after the server refused them.
- Quarantined originals: `retention.quarantine_hours` after they were received. When every
  original of a study has expired, the study key is destroyed first (crypto-erasure), then the
  files are unlinked; otherwise the expired files are unlinked one by one.
- Held results (`returns-held/`: results of the analysis server the gateway could not tie to
  one original study, or that PACS refused): sealed to the gateway's key and naming only
  pseudonyms, kept for an operator like the instances held beside them - quarantined ones
  `retention.quarantine_hours`, dead-lettered ones `retention.dead_letter_hours` after they
  were held (the stamp of their reason file) - then unlinked, one `result.erased` record each.
  Results still waiting for PACS are not retention's: the way back dead-letters them after
  `results.retry_hours`.
- Study records (the last manifest's list): once nothing of the study is left anywhere and the
  record is older than the delivered window.
- The vault's study ledger (what each gateway delivered of a study, the manifest versions
  claimed): entries older than the delivered window, whichever gateway recorded them; the
  receivers keep nothing longer. Holds of two-patient studies stay.

Each item's age comes from its stamp in the file system: the receive time of an original (its
write), the time of delivery or refusal (stamped when it moved). A stamp in the future means
the clock went back: it is reset to now, so erasure is late by at most one window, never
indefinitely; a clock that jumps forward erases early, which is the safe side for privacy.
Every erasure is counted, logged (state and count, no names) and written to the audit trail
per study.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from gateway.audit import AuditLog
from gateway.errors import GatewayError, VaultUnavailable
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.settings import RetentionSettings
from gateway.spool import Spool, State
from gateway.vault import Vault

log = get_logger("gateway.retention")
_FUTURE_SLACK = 60.0
#: the states whose empty study directories a sweep removes (incoming/ is the scheduler's)
_PRUNED = (State.OUTBOX, State.SENT, State.DEAD, State.QUARANTINE)


class Retention:
    def __init__(
        self,
        settings: RetentionSettings,
        spool: Spool,
        metrics: Metrics,
        audit: AuditLog,
        ledger: Vault | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.spool = spool
        self.ledger = ledger
        self.metrics = metrics
        self.audit = audit
        self.clock = clock

    def sweep(self, busy: set[str]) -> Counter[str]:
        """Erase what is due; `busy` studies still have originals on their way (their key and
        record stay). Returns what was erased, by kind."""
        now = self.clock()
        erased: Counter[str] = Counter()
        per_study: dict[str, Counter[str]] = defaultdict(Counter)
        windows: tuple[tuple[State, str, float], ...] = (
            (State.SENT, "delivered", self.settings.delivered_hours),
            (State.DEAD, "dead", self.settings.dead_letter_hours),
        )
        for state, what, hours in windows:
            for item in self.spool.items(state):
                if self._expired(item.path, now, hours):
                    self.spool.discard(item.path)
                    erased[what] += 1
                    per_study[item.study_id][what] += 1
        self._quarantine(now, erased, per_study)
        self._held_results(now, erased)
        self._records(now, busy, erased)
        self._ledger(erased)
        for study_id, counts in per_study.items():
            for what, count in counts.items():
                self.audit.record("study.erased", study_id=study_id, kind=what, count=count)
        for state in _PRUNED:
            for study_id in self.spool.studies(state):
                self.spool.prune(state, study_id)
        for what, count in erased.items():
            self.metrics.erased.labels(what=what).inc(count)
        if erased:
            log.info("retention.erased", **dict(erased))
        return erased

    def _quarantine(
        self,
        now: float,
        erased: Counter[str],
        per_study: dict[str, Counter[str]],
    ) -> None:
        hours = self.settings.quarantine_hours
        by_study: dict[str, list[Path]] = defaultdict(list)
        for item in self.spool.items(State.QUARANTINE):
            by_study[item.study_id].append(item.path)
        for study_id, paths in by_study.items():
            expired = [p for p in paths if self._expired(p, now, hours)]
            if not expired:
                continue
            # the key goes first when these are the study's last originals (decided by the
            # spool under its lock, whatever `busy` says): crypto-erasure
            if self.spool.erase_held(study_id, expired):
                erased["study_key"] += 1
                per_study[study_id]["study_key"] += 1
            erased["quarantine"] += len(expired)
            per_study[study_id]["quarantine"] += len(expired)

    def _held_results(self, now: float, erased: Counter[str]) -> None:
        windows = {"quarantine": self.settings.quarantine_hours}
        returns = self.spool.returns
        for note in returns.held():
            result, kind = str(note["result"]), str(note.get("kind", "dead"))
            hours = windows.get(kind, self.settings.dead_letter_hours)
            if not self._expired(returns.reason_path(result), now, hours):
                continue
            with contextlib.suppress(GatewayError):  # an operator acted on it meanwhile
                returns.erase(result)
                erased["result"] += 1
                self.audit.record("result.erased", result=result, kind=kind)

    def _records(self, now: float, busy: set[str], erased: Counter[str]) -> None:
        hours = self.settings.delivered_hours
        for study_id in self.spool.records.ids():
            if study_id in busy or not self._expired(self.spool.records.path(study_id), now, hours):
                continue
            if self.spool.occupied(study_id):
                continue
            self.spool.records.drop(study_id)
            erased["study_record"] += 1

    def _ledger(self, erased: Counter[str]) -> None:
        if self.ledger is None:
            return
        try:
            forgotten = self.ledger.prune_ledger(self.settings.delivered_hours * 3600.0)
        except VaultUnavailable as exc:  # the next sweep tries again
            self.metrics.vault_errors.labels(reason=exc.reason).inc()
            return
        if forgotten:
            erased["study_ledger"] += forgotten

    def _expired(self, path: Path, now: float, hours: float) -> bool:
        try:
            stamp = path.stat().st_mtime
        except FileNotFoundError:
            return False
        if stamp > now + _FUTURE_SLACK:  # the clock went back: start the window again
            os.utime(path, (now, now))
            return False
        return now - stamp >= hours * 3600.0
