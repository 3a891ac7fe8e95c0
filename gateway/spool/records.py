"""Study records: what the spool keeps about a study beside its items.

`studies/<study-id>.json` holds the study's last manifest (pseudonymous study UID, version,
the instances it listed, which delivered items were looked at) and whether the study is held
as a whole (its instances name more than one patient): pseudonymous names and digests only.
A record is replaced durably as a whole.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from gateway.errors import SpoolCorrupt
from gateway.spool.durable import Durable
from gateway.spool.layout import Layout

_HELD = "mixed"  # the record's flag: the study is held as a whole


class StudyRecords:
    """Thread-safe for `hold` and `held` (the senders ask); the rest is the scheduler's."""

    def __init__(self, layout: Layout, durable: Durable) -> None:
        self._layout = layout
        self._durable = durable
        self._lock = threading.Lock()
        self._held: set[str] = set()

    def load(self) -> None:
        """Read which studies are held (at start, by the spool's owner)."""
        held = {s for s in self.ids() if self.read(s).get(_HELD)}
        with self._lock:
            self._held = held

    def path(self, study_id: str) -> Path:
        """The record's file (its modification time: when it was last written)."""
        return self._layout.record_path(study_id)

    def ids(self) -> list[str]:
        """The studies that have a record."""
        return self._layout.record_ids()

    def read(self, study_id: str) -> dict[str, Any]:
        try:
            loaded = json.loads(self.path(study_id).read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError:
            raise SpoolCorrupt(f"study record {study_id}: not JSON") from None
        return loaded if isinstance(loaded, dict) else {}

    def write(self, study_id: str, record: dict[str, Any]) -> None:
        """Replace a study's record durably (pseudonymous names and counts only); a held
        study stays held."""
        if self.held(study_id):
            record = {**record, _HELD: True}
        data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode("ascii")
        self._durable.write(self.path(study_id), [data])

    def drop(self, study_id: str) -> None:
        self.path(study_id).unlink(missing_ok=True)

    def hold(self, study_id: str) -> bool:
        """Hold the whole study (its instances name more than one patient), durably, so a
        restart keeps holding it; True when it was not held before."""
        with self._lock:
            if study_id in self._held:
                return False
            self._held.add(study_id)
        self.write(study_id, self.read(study_id))
        return True

    def held(self, study_id: str) -> bool:
        """Whether the study is held as a whole (any thread)."""
        with self._lock:
            return study_id in self._held
