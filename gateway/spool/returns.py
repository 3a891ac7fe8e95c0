"""Results on their way back: fetched from the analysis server, waiting for PACS.

    <spool>/returns/<result id>.sealed                 fetched, sealed to the gateway's key
    <spool>/returns-held/<result id>.sealed (+ .reason.json)   quarantined or dead-lettered
    <spool>/returns/<result id>.stored                 PACS stored it; not yet acknowledged
    <spool>/returns/cursor                             the results channel's cursor

A result is kept as it came - sealed to the gateway's own key, naming only pseudonyms - with
one clear header line (JSON: the pseudonymous study it belongs to, the cursor it was listed
at, when it was fetched) before the body; it is opened and re-identified in memory only when
it is stored in PACS, so nothing re-identified is ever written here. Names are result ids (UIDs
the analysis server made), never values of the patient. Writes are durable before the server
is told anything (`Durable`). Once PACS answered Success the `.stored` mark is written before
the server is told: a crash, or a server that cannot be reached, between the two then costs an
acknowledgement again, never a second C-STORE.

A held result leaves by an operator (`retry`: back to returns/, where the next pass of the way
back picks it up; `erase`) or by retention (`erase`). The move into returns-held/ writes the
reason file first and then renames the result; the moves out rename (or unlink) the result
first and then unlink the reason file, so a result is never in returns-held/ without its
reason. A crash between the two steps can leave a reason file alone; it is listed like a held
result (without its body) until it is purged or expires.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import GatewayError
from gateway.spool.durable import Durable
from gateway.spool.layout import (
    REASON_SUFFIX,
    RETURNS,
    RETURNS_CURSOR,
    RETURNS_HELD,
    RETURNS_STORED,
    SEALED,
)


@dataclass(frozen=True)
class Returned:
    result: str  # the result id
    study: str  # the pseudonymous study
    cursor: int
    path: Path
    fetched: float = 0.0  # Unix time
    stored: bool = False  # PACS stored it (`Returns.mark_stored`); only the acknowledgement waits


class Returns:
    def __init__(self, root: Path, durable: Durable) -> None:
        self.folder = root / RETURNS
        self.held_folder = root / RETURNS_HELD
        self._durable = durable

    def prepare(self) -> None:
        for folder in (self.folder, self.held_folder):
            folder.mkdir(mode=0o700, exist_ok=True)

    def put(self, result: str, study: str, cursor: int, body: bytes) -> Returned:
        """Keep a fetched result durably (again: the same result is one file)."""
        fetched = time.time()
        header = {"study": study, "cursor": cursor, "fetched": fetched}
        path = self.folder / f"{result}{SEALED}"
        line = json.dumps(header, sort_keys=True).encode("ascii") + b"\n"
        self._durable.write(path, [line, body])
        return Returned(result, study, cursor, path, fetched)

    def waiting(self) -> list[Returned]:
        """The results waiting for PACS, in the order they were listed."""
        found = []
        for path in self.folder.glob(f"*{SEALED}"):
            with contextlib.suppress(FileNotFoundError, ValueError):
                found.append(self._item(path))
        return sorted(found, key=lambda r: (r.cursor, r.result))

    def body(self, item: Returned) -> bytes:
        with item.path.open("rb") as file:
            file.readline()
            return file.read()

    def mark_stored(self, item: Returned) -> Returned:
        """PACS stored it: durably, before the server is told (`done` follows)."""
        self._durable.write(self._mark(item.path), [b""])
        return Returned(item.result, item.study, item.cursor, item.path, item.fetched, True)

    def done(self, item: Returned) -> None:
        """Stored in PACS and acknowledged: gone."""
        for path in (item.path, self._mark(item.path)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self._durable.sync(self.folder)

    def _mark(self, path: Path) -> Path:
        return path.with_name(path.name.removesuffix(SEALED) + RETURNS_STORED)

    def hold(self, item: Returned, kind: str, reason: str) -> Path:
        """Quarantined (`kind` "quarantine": it could not be tied to one original study) or
        dead-lettered ("dead": PACS refused it for good), with a reason file."""
        target = self.held_folder / item.path.name
        note = {"kind": kind, "reason": reason, "study": item.study, "at": time.time()}
        reason_path = target.with_name(target.name.removesuffix(SEALED) + REASON_SUFFIX)
        self._durable.write(reason_path, [json.dumps(note, sort_keys=True).encode("ascii")])
        item.path.rename(target)
        self._durable.sync(self.held_folder)
        self._durable.sync(self.folder)
        return target

    def held(self) -> list[dict[str, object]]:
        """Each held result: its id and its reason file."""
        out: list[dict[str, object]] = []
        for path in sorted(self.held_folder.glob(f"*{REASON_SUFFIX}")):
            with contextlib.suppress(FileNotFoundError, ValueError):
                note = json.loads(path.read_text(encoding="ascii"))
                out.append({"result": path.name.removesuffix(REASON_SUFFIX), **note})
        return out

    def waiting_since(self) -> list[float]:
        """When each waiting result was fetched (Unix time; the file's stamp: it is written
        once and only renamed after), without opening any."""
        stamps = []
        for path in self.folder.glob(f"*{SEALED}"):
            with contextlib.suppress(FileNotFoundError):
                stamps.append(path.stat().st_mtime)
        return stamps

    def held_by_kind(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for note in self.held():
            kind = str(note.get("kind", "unknown"))
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def find_held(self, result: str) -> dict[str, object]:
        """The held result named `result` (its reason file), or GatewayError."""
        for note in self.held():
            if note["result"] == result:
                return note
        raise GatewayError(f"no held result {result!r}")

    def held_item(self, result: str) -> Returned | None:
        """A held result's header (None when only its reason file is left)."""
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            return self._item(self.held_path(result))
        return None

    def reason_path(self, result: str) -> Path:
        return self.held_folder / f"{result}{REASON_SUFFIX}"

    def held_path(self, result: str) -> Path:
        return self.held_folder / f"{result}{SEALED}"

    def retry(self, result: str) -> Path:
        """A held result back among the waiting, its retry window (`fetched`) starting again
        (a durable copy, then the held file and its reason file gone: a crash in between
        leaves it held too, until it is purged or expires)."""
        self.find_held(result)  # only names that are held: never a path from outside
        source, target = self.held_path(result), self.folder / f"{result}{SEALED}"
        try:
            with source.open("rb") as file:
                header = json.loads(file.readline())
                body = file.read()
        except FileNotFoundError:
            raise GatewayError(f"held result {result!r} has no body left to retry") from None
        header["fetched"] = time.time()
        line = json.dumps(header, sort_keys=True).encode("ascii") + b"\n"
        self._durable.write(target, [line, body])
        source.unlink(missing_ok=True)
        self.reason_path(result).unlink(missing_ok=True)
        self._durable.sync(self.held_folder)
        return target

    def erase(self, result: str) -> None:
        """A held result unlinked, then its reason file (purge, retention)."""
        self.find_held(result)
        self.held_path(result).unlink(missing_ok=True)
        self.reason_path(result).unlink(missing_ok=True)
        self._durable.sync(self.held_folder)

    def cursor(self) -> int:
        try:
            return int((self.folder / RETURNS_CURSOR).read_text(encoding="ascii"))
        except (FileNotFoundError, ValueError):
            return 0

    def set_cursor(self, cursor: int) -> None:
        self._durable.write(self.folder / RETURNS_CURSOR, [str(cursor).encode("ascii")])

    def _item(self, path: Path) -> Returned:
        with path.open("rb") as file:
            header = json.loads(file.readline())
        result = path.name.removesuffix(SEALED)
        study, cursor = str(header["study"]), int(header["cursor"])
        fetched = float(header.get("fetched", 0.0))
        return Returned(result, study, cursor, path, fetched, self._mark(path).exists())
