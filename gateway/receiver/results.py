"""Results the reference receiver offers to a site's gateway (the analysis server's end of the
results channel, docs/protocol.md).

    <storage>/<site>/results/<cursor>-<result id>.dcm          offered, not yet acknowledged
    <storage>/<site>/results/<cursor>-<result id>.dcm.acked    acknowledged (kept as a tombstone)

A result is a DICOM file naming only pseudonymous UIDs (an analysis of a study the gateway
sent); its id is its SOP Instance UID, its cursor a number that grows with each result
offered, so a gateway asks only for what came after the last it took. `offer` is how an
analysis (the demo, or a test) puts one there; offering an id again is a repeat.
Acknowledging twice is acknowledging.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread

from gateway.keyfiles import fsync_directory
from gateway.receiver.store import write_new

_FILE = re.compile(r"(?P<cursor>[0-9]{12})-(?P<id>[0-9]+(\.[0-9]+)*)\.dcm(?P<acked>\.acked)?")


@dataclass(frozen=True)
class Offer:
    cursor: int
    result: str  # the result's id: its SOP Instance UID
    study: str  # the pseudonymous Study Instance UID it belongs to


class Results:
    def __init__(self, root: Path) -> None:
        self.root = root

    def offer(self, site: str, data: bytes) -> Offer:
        """Put a result where the site's gateway will find it; written durably. A result
        offered before (the same id, acknowledged or not) is not offered again: its offer is
        returned as it was."""
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
        result, study = str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)
        folder = self._folder(site)
        folder.mkdir(parents=True, exist_ok=True)
        files = self._files(site)
        for before, _ in files:
            if before.result == result:
                return Offer(before.cursor, result, study)
        cursor = 1 + max((o.cursor for o, _ in files), default=0)
        target = folder / f"{cursor:012d}-{result}.dcm"
        write_new(target, data)
        return Offer(cursor, result, study)

    def waiting(self, site: str, after: int, limit: int) -> list[Offer]:
        """Results not acknowledged, cursor above `after`, oldest first."""
        found = [o for o, acked in self._files(site) if not acked and o.cursor > after]
        first = sorted(found, key=lambda o: o.cursor)[:limit]
        return [Offer(o.cursor, o.result, self._study(site, o)) for o in first]

    def read(self, site: str, result: str) -> tuple[Offer, bytes] | None:
        for offer, acked in self._files(site):
            if offer.result == result and not acked:
                data = self._path(site, offer).read_bytes()
                return Offer(offer.cursor, offer.result, self._study(site, offer)), data
        return None

    def acknowledge(self, site: str, result: str) -> bool:
        """Mark a result taken; False if it was never offered."""
        for offer, acked in self._files(site):
            if offer.result == result:
                if not acked:
                    path = self._path(site, offer)
                    path.rename(path.with_name(path.name + ".acked"))
                    fsync_directory(path.parent)
                return True
        return False

    def _folder(self, site: str) -> Path:
        return self.root / site / "results"

    def _path(self, site: str, offer: Offer) -> Path:
        return self._folder(site) / f"{offer.cursor:012d}-{offer.result}.dcm"

    def _files(self, site: str) -> list[tuple[Offer, bool]]:
        folder = self._folder(site)
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            match = _FILE.fullmatch(path.name)
            if match is None:
                continue
            offer = Offer(int(match["cursor"]), match["id"], "")  # the study: `_study`
            found.append((offer, match["acked"] is not None))
        return found

    def _study(self, site: str, offer: Offer) -> str:
        path = self._path(site, offer)
        return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)
