"""What the console's pages show, gathered from the spool, the audit trail, the running
gateway's readiness endpoint and the configuration - plain data, rendered by `app`.

Nothing here is decrypted except in `Reviewing` (a held original, opened into memory for an
officer who is signed in and whose view is recorded); nothing decrypted is written anywhere.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydicom.uid import UID

from gateway import admin
from gateway.health import certificate_expiries
from gateway.pipeline import operations
from gateway.review import Review, review
from gateway.settings import Settings
from gateway.spool import Spool, State
from gateway.vault import open_vault
from gateway.worker import Worker

#: how far back the overview's counts by day reach, and how much of the audit trail's end is
#: read for them (the trail grows by every instance received; its end is what is recent)
DAYS = 7
AUDIT_TAIL_BYTES = 32 * 1024 * 1024
#: reviews held in memory for the images of a page just viewed
REVIEWS = 4
REVIEW_SECONDS = 300.0


@dataclass(frozen=True)
class Overview:
    states: dict[str, dict[str, Any]]
    held_by_reason: dict[str, dict[str, int]]
    readiness: dict[str, Any] | None  # None: the gateway does not answer
    days: list[str]  # oldest first, "2026-12-06"
    quarantined: dict[str, list[int]]  # reason -> count per day
    dropped: dict[str, list[int]]
    delivered: list[int]  # studies (manifest versions) delivered per day
    certificates: list[tuple[str, str, float]]  # name, notAfter (ISO), days left


def overview(settings: Settings, now: float | None = None) -> Overview:
    now = time.time() if now is None else now
    queues = admin.overview(settings)
    days = [
        (datetime.fromtimestamp(now, UTC) - timedelta(days=DAYS - 1 - i)).date().isoformat()
        for i in range(DAYS)
    ]
    quarantined: dict[str, list[int]] = {}
    dropped: dict[str, list[int]] = {}
    delivered = [0] * DAYS
    for record in _recent_audit(settings.audit_path):
        day = str(record.get("time", ""))[:10]
        if day not in days:
            continue
        i = days.index(day)
        event = record.get("event")
        if event in ("instance.quarantined", "instance.dropped"):
            table = quarantined if event == "instance.quarantined" else dropped
            reason = str(record.get("reason", "unknown"))
            table.setdefault(reason, [0] * DAYS)[i] += 1
        elif event == "study.delivered":
            delivered[i] += 1
    certificates = [
        (name, datetime.fromtimestamp(when, UTC).date().isoformat(), (when - now) / 86400)
        for name, when in sorted(certificate_expiries(settings).items(), key=lambda kv: kv[1])
    ]
    return Overview(
        queues["states"],
        queues["held_by_reason"],
        readiness(settings),
        days,
        quarantined,
        dropped,
        delivered,
        certificates,
    )


def readiness(settings: Settings) -> dict[str, Any] | None:
    """The running gateway's /readyz answer; None when it does not answer."""
    metrics = settings.metrics
    if not metrics.enabled:
        return None
    host = f"[{metrics.host}]" if ":" in metrics.host else metrics.host
    host = "127.0.0.1" if metrics.host in ("0.0.0.0", "") else host  # noqa: S104 - a bind-all
    try:
        answer = httpx.get(f"http://{host}:{metrics.port}/readyz", timeout=2.0)
        body = answer.json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _recent_audit(path: Path) -> list[dict[str, Any]]:
    try:
        with path.open("rb") as file:
            size = file.seek(0, 2)
            file.seek(max(0, size - AUDIT_TAIL_BYTES))
            data = file.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    if size > AUDIT_TAIL_BYTES:
        lines = lines[1:]  # cut into
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def quarantine(settings: Settings) -> list[dict[str, Any]]:
    """Every quarantined original: reason, received, peer, modality (from its SOP class),
    the pseudonymous study (spool id) - newest first."""
    rows = admin.listing(settings, State.QUARANTINE)
    for row in rows:
        row["study_id"], _, row["instance_id"] = str(row["ref"]).partition("/")
        row["modality"] = sop_class_name(row.get("sop_class"))
    return sorted(rows, key=lambda r: str(r.get("received_at") or ""), reverse=True)


def sop_class_name(uid: object) -> str:
    if not isinstance(uid, str) or not uid:
        return "unknown"
    name = UID(uid).name
    return name.removesuffix(" Storage") if name != uid else uid


def counts(table: dict[str, list[int]]) -> Counter[str]:
    return Counter({reason: sum(per_day) for reason, per_day in table.items()})


class Reviewing:
    """Held originals run through the worker path in this process (as `spool quarantine
    release` checks them), kept in memory for a few minutes so that a page and its images
    share one run; the worker (and its text detector) is made once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._worker: Worker | None = None
        self._vault: Any = None
        self._cache: OrderedDict[str, tuple[float, Review]] = OrderedDict()
        self._lock = threading.Lock()

    def review(self, ref: str) -> Review:
        """The held original `ref`, reviewed (GatewayError when it is not held)."""
        with self._lock:
            now = time.monotonic()
            kept = self._cache.get(ref)
            if kept is not None and now - kept[0] < REVIEW_SECONDS:
                self._cache.move_to_end(ref)
                return kept[1]
            spool = Spool.open_readonly(self.settings.spool)
            item = operations.find(spool, State.QUARANTINE, ref)
            header, data = spool.read(item.path)
            done = review(self._worker_made(), data, header.peer)
            self._cache[ref] = (now, done)
            while len(self._cache) > REVIEWS:
                self._cache.popitem(last=False)
            return done

    def forget(self, ref: str) -> None:
        with self._lock:
            self._cache.pop(ref, None)

    def _worker_made(self) -> Worker:
        if self._worker is None:
            self._vault = open_vault(self.settings.vault)
            self._worker = Worker.for_settings(self.settings, self._vault)
        return self._worker

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
            if self._vault is not None:
                self._vault.close()
                self._vault = None
                self._worker = None
