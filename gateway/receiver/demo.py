"""`dicom-gateway receiver --demo-analysis`: the reference receiver analyses every complete
study it stores and offers the results (a SEG and a TID 1500 SR, `analysis`) on the results
channel, so the gateway's way back can be seen end to end without a vendor.

One background thread works through a queue of (site, study) to look at; the handlers only
put a study there after storing an instance or a manifest (the PUT never waits for an
analysis). Looking at a study means taking its newest manifest (a later version supersedes
the earlier ones, docs/protocol.md; results made for an older one stay) and, when every
instance it lists is stored with the digest it names, analysing it once:

    <storage>/<site>/<study>/demo-<version>.json    what was offered for that manifest version

is written after the results were offered. A manifest whose instances are not all there yet
waits: the instance that completes it puts the study on the queue again. At start the thread
first looks at every study that has a manifest without that record, so a receiver that was
stopped (or killed) between a store and its analysis catches up; results carry UIDs derived
from (site, study, version, kind) and offering one again is a repeat, so catching up makes no
duplicate. The log names reason codes and counts only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import re
import threading
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from gateway.logs import get_logger
from gateway.receiver.analysis import Names, Unusable, analyse
from gateway.receiver.results import Results
from gateway.receiver.store import write_new

log = get_logger("gateway.receiver")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_SITE = re.compile(r"[A-Z0-9]{1,8}")
_MANIFEST = re.compile(r"manifest-([1-9][0-9]{0,8})\.json")
_HEX = re.compile(r"[0-9a-f]{64}")
_STOP = None


class Incomplete(Exception):
    """The manifest lists an instance not stored (yet), or stored with another digest."""


def newest_manifest(folder: Path) -> tuple[str, Path] | None:
    """(version, path) of the study's highest manifest version, if any."""
    found = [
        (int(m[1]), p) for p in folder.glob("manifest-*.json") if (m := _MANIFEST.fullmatch(p.name))
    ]
    if not found:
        return None
    version, path = max(found)
    return str(version), path


def instances(manifest: Path, folder: Path) -> list[Path]:
    """The files of every instance the manifest lists; Incomplete unless each is stored with
    the SHA-256 the manifest names; Unusable when the manifest names no instance sensibly."""
    try:
        listed: Any = json.loads(manifest.read_bytes())["instances"]
        wanted = {str(i["instance"]): str(i["sha256"]) for i in listed}
    except (ValueError, KeyError, TypeError):
        raise Unusable("manifest-unusable") from None
    if not wanted or not all(_UID.fullmatch(u) and _HEX.fullmatch(d) for u, d in wanted.items()):
        raise Unusable("manifest-unusable")
    paths = []
    for uid, digest in sorted(wanted.items()):
        path = folder / f"{uid}.dcm"
        if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise Incomplete
        paths.append(path)
    return paths


def _header(path: Path) -> Dataset:
    return dcmread(path, stop_before_pixels=True)


def _full(ds: Dataset) -> Dataset:
    return dcmread(ds.filename)


class DemoAnalysis:
    """The background analysis of one receiver's storage; `submit` is all a handler calls."""

    def __init__(self, storage: Path, results: Results) -> None:
        self.storage = storage
        self.results = results
        self._queue: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._pending: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="demo-analysis", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Let the study in hand finish (results are written whole or not at all), then end."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def submit(self, site: str, study: str) -> None:
        """Look at this study soon (once, however often it is asked before)."""
        with self._lock:
            if (site, study) in self._pending:
                return
            self._pending.add((site, study))
        self._queue.put((site, study))

    def waiting(self) -> list[tuple[str, str]]:
        """Every (site, study) with a newest manifest not analysed yet: the start's catch-up."""
        found = []
        for site in sorted(p for p in self.storage.iterdir() if _SITE.fullmatch(p.name)):
            if not site.is_dir():
                continue
            for folder in sorted(p for p in site.iterdir() if _UID.fullmatch(p.name)):
                newest = newest_manifest(folder)
                if newest is not None and not (folder / f"demo-{newest[0]}.json").exists():
                    found.append((site.name, folder.name))
        return found

    def look_at(self, site: str, study: str) -> None:
        """Analyse the study's newest manifest if it is complete and not analysed yet."""
        folder = self.storage / site / study
        newest = newest_manifest(folder)
        if newest is None:
            return
        version, manifest = newest
        record = folder / f"demo-{version}.json"
        if record.exists():
            return
        try:
            headers = [_header(p) for p in instances(manifest, folder)]
            made, skipped = analyse(Names(site, study, version), headers, _full)
        except Incomplete:
            log.info("demo.waiting", reason="manifest-incomplete")
            return
        except Unusable as unusable:
            made, skipped = [], [unusable.reason]
        except (InvalidDicomError, OSError, EOFError):
            made, skipped = [], ["instance-unreadable"]
        offered = [self.results.offer(site, data).result for data in made]
        with contextlib.suppress(FileExistsError):  # written before: the same results
            write_new(record, json.dumps({"results": offered, "skipped": skipped}).encode())
        log.info("demo.analysed", results=len(offered), skipped=",".join(skipped) or None)

    def _run(self) -> None:
        try:
            for site, study in self.waiting():
                self.submit(site, study)
        except OSError as exc:
            log.error("demo.catch_up_failed", error=type(exc).__name__)
        while (item := self._queue.get()) is not _STOP:
            with self._lock:
                self._pending.discard(item)
            try:
                self.look_at(*item)
            except Exception as exc:  # noqa: BLE001 - the top of the thread: one study fails
                log.error("demo.failed", error=type(exc).__name__)
