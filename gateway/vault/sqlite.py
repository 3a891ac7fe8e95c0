"""The vault in one SQLite file (WAL): the embedded default, for one gateway on one box.

One table, one row per mapping (`base`); the (kind, lookup) pair is the primary key and
(kind, pseudonym) unique. Commits are synchronous (WAL, synchronous=FULL): a pseudonym handed
out survives a power cut, so a re-sent study can never get a second one. Every process opens
its own connection; SQLite's locking makes the first writer win among them. Schema version:
`PRAGMA user_version` (`migrate`).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from gateway.errors import VaultError
from gateway.vault.base import Copied, Proposal, Row, Vault

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mapping (
    kind TEXT NOT NULL,
    lookup BLOB NOT NULL,
    original BLOB NOT NULL,
    pseudonym TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (kind, lookup)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS mapping_pseudonym ON mapping (kind, pseudonym);
"""
_VERSION = 1  # the schema above; `PRAGMA user_version` records it
_OPEN_SECONDS = 30.0  # opening waits this long for other processes opening it at once


class SqliteVault(Vault):
    """One connection per process (and per vault file); thread-safe within the process."""

    engine = "sqlite"

    def __init__(self, path: Path, key: bytes, *, durable: bool = True) -> None:
        """`durable=False` (benchmarks only) leaves each commit to the OS: a power cut may
        lose the latest mappings."""
        super().__init__(key)
        self.path = path
        self._lock = threading.Lock()
        self._db, self._found_version = self._connect(path)
        if not durable:
            self._db.execute("PRAGMA synchronous=NORMAL")

    @staticmethod
    def _connect(path: Path) -> tuple[sqlite3.Connection, int]:
        """Open (creating if needed) in WAL mode, the schema brought up to date; the
        connection and the schema version found. Processes opening a new vault at the same
        moment (the workers at first start) can be told "locked" by the journal-mode switch
        without SQLite's busy timeout applying: that is retried for up to `_OPEN_SECONDS`."""
        deadline = time.monotonic() + _OPEN_SECONDS
        while True:
            try:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                if not path.exists():  # SQLite gives its -wal and -shm files the database's mode
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
                db = sqlite3.connect(
                    path, timeout=_OPEN_SECONDS, isolation_level=None, check_same_thread=False
                )
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute("PRAGMA synchronous=FULL")
                    version = int(db.execute("PRAGMA user_version").fetchone()[0])
                    if version > _VERSION:
                        db.close()
                        raise VaultError(
                            f"vault.path {path}: schema version {version} is newer than this "
                            f"gateway knows ({_VERSION}): upgrade the gateway"
                        )
                    if version < _VERSION:
                        db.executescript(_SCHEMA + f"PRAGMA user_version = {_VERSION};")
                except sqlite3.Error:
                    db.close()
                    raise
            except sqlite3.OperationalError as exc:
                if _busy(exc) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise VaultError(
                    f"vault.path {path}: cannot open ({exc.__class__.__name__})"
                ) from None
            except (OSError, sqlite3.Error) as exc:
                raise VaultError(
                    f"vault.path {path}: cannot open ({exc.__class__.__name__})"
                ) from None
            return db, version

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _claim(self, kind: str, lookup: bytes, propose: Callable[[], Proposal]) -> str | None:
        with self._lock:
            found = self._find(kind, lookup)
            if found is not None:
                return found
            proposal = propose()
            self._insert(Row(kind, lookup, proposal.sealed, proposal.pseudonym, _now()))
            return self._find(kind, lookup)  # ours, another process's, or None: taken

    def _find(self, kind: str, lookup: bytes) -> str | None:
        row = self._db.execute(
            "SELECT pseudonym FROM mapping WHERE kind = ? AND lookup = ?", (kind, lookup)
        ).fetchone()
        return None if row is None else str(row[0])

    def _insert(self, row: Row) -> bool:
        try:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO mapping VALUES (?, ?, ?, ?, ?)",
                (row.kind, row.lookup, row.original, row.pseudonym, row.created),
            )
        except sqlite3.Error as exc:
            raise VaultError(f"vault: cannot record a mapping ({exc.__class__.__name__})") from None
        return cursor.rowcount == 1

    def _find_original(self, kind: str, pseudonym: str) -> tuple[bytes, bytes] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT lookup, original FROM mapping WHERE kind = ? AND pseudonym = ?",
                (kind, pseudonym),
            ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def rows(self) -> Iterator[Row]:
        with self._lock:
            found = self._db.execute(
                "SELECT kind, lookup, original, pseudonym, created FROM mapping "
                "ORDER BY kind, lookup"
            ).fetchall()
        for kind, lookup, original, pseudonym, created in found:
            yield Row(str(kind), bytes(lookup), bytes(original), str(pseudonym), str(created))

    def add_rows(self, rows: Iterable[Row]) -> Copied:
        done = Copied()
        for row in rows:
            with self._lock:
                if self._insert(row):
                    done += Copied(added=1)
                elif self._find(row.kind, row.lookup) == row.pseudonym:
                    done += Copied(present=1)
                else:
                    done += Copied(conflicting=1)
        return done

    def ping(self) -> None:
        with self._lock:
            self._db.execute("SELECT 1").fetchone()

    def migrate(self) -> tuple[int, int]:
        """Opening brought the schema up to date already (one file, one gateway): the version
        the file had when this process opened it, and now."""
        return self._found_version, _VERSION


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc)
