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
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from gateway.errors import VaultError, VaultUnavailable
from gateway.vault.base import KEY_CHECK, PAGE, Copied, Entry, Ledger, Proposal, Row, Vault

#: (version, script): applied in order on open; `PRAGMA user_version` records the last
_MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE IF NOT EXISTS mapping (
            kind TEXT NOT NULL,
            lookup BLOB NOT NULL,
            original BLOB NOT NULL,
            pseudonym TEXT NOT NULL,
            created TEXT NOT NULL,
            PRIMARY KEY (kind, lookup)
        ) WITHOUT ROWID;
        CREATE UNIQUE INDEX IF NOT EXISTS mapping_pseudonym ON mapping (kind, pseudonym);
        """,
    ),
    (
        2,
        """
        CREATE TABLE IF NOT EXISTS delivered (
            study TEXT NOT NULL,
            instance TEXT NOT NULL,
            series TEXT NOT NULL,
            sop_class TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            recorded REAL NOT NULL,
            PRIMARY KEY (study, instance)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS manifest_version (
            study TEXT NOT NULL,
            version INTEGER NOT NULL,
            recorded REAL NOT NULL,
            PRIMARY KEY (study, version)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS held_study (
            study TEXT PRIMARY KEY,
            held TEXT NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
    (
        3,
        """
        CREATE TABLE IF NOT EXISTS identity (
            study TEXT PRIMARY KEY,
            sealed BLOB NOT NULL,
            recorded TEXT NOT NULL
        ) WITHOUT ROWID;
        """,
    ),
)
VERSION = _MIGRATIONS[-1][0]
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
                    if version > VERSION:
                        db.close()
                        raise VaultError(
                            f"vault.path {path}: schema version {version} is newer than this "
                            f"gateway knows ({VERSION}): upgrade the gateway"
                        )
                    for number, script in _MIGRATIONS:
                        if number > version:
                            db.executescript(f"{script}\nPRAGMA user_version = {number};")
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

    @contextmanager
    def _using(self) -> Iterator[sqlite3.Connection]:
        """The connection, this process's threads one at a time; a failing file (locked past
        the busy timeout, an I/O error, a full disk) makes the vault unavailable: the
        instance waits, it is not quarantined."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.OperationalError as exc:
                raise VaultUnavailable(
                    "vault-unavailable",
                    f"vault.path {self.path}: {exc.__class__.__name__} ({_code(exc)})",
                ) from None
            except sqlite3.Error as exc:
                raise VaultUnavailable(
                    "vault-error", f"vault.path {self.path}: {exc.__class__.__name__}"
                ) from None

    def _claim(self, kind: str, lookup: bytes, propose: Callable[[], Proposal]) -> str | None:
        with self._using():
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
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO mapping VALUES (?, ?, ?, ?, ?)",
            (row.kind, row.lookup, row.original, row.pseudonym, row.created),
        )
        return cursor.rowcount == 1

    def _find_original(self, kind: str, pseudonym: str) -> tuple[bytes, bytes] | None:
        with self._using():
            row = self._db.execute(
                "SELECT lookup, original FROM mapping WHERE kind = ? AND pseudonym = ?",
                (kind, pseudonym),
            ).fetchone()
        return None if row is None else (bytes(row[0]), bytes(row[1]))

    def rows(self) -> Iterator[Row]:
        after: tuple[str, bytes] = ("", b"")
        while True:  # a page at a time, in key order: a large vault is not held in memory
            with self._using():
                found = self._db.execute(
                    "SELECT kind, lookup, original, pseudonym, created FROM mapping "
                    "WHERE (kind, lookup) > (?, ?) AND kind <> ? "
                    "ORDER BY kind, lookup LIMIT ?",
                    (*after, KEY_CHECK, PAGE),
                ).fetchall()
            for kind, lookup, original, pseudonym, created in found:
                yield Row(str(kind), bytes(lookup), bytes(original), str(pseudonym), str(created))
            if len(found) < PAGE:
                return
            after = (str(found[-1][0]), bytes(found[-1][1]))

    def add_rows(self, rows: Iterable[Row]) -> Copied:
        done = Copied()
        for row in rows:
            with self._using():
                if self._insert(row):
                    done += Copied(added=1)
                elif self._find(row.kind, row.lookup) == row.pseudonym:
                    done += Copied(present=1)
                else:
                    done += Copied(conflicting=1)
        return done

    def record_delivered(self, study: str, entries: Iterable[Entry]) -> None:
        now = time.time()
        rows = [(study, e.instance, e.series, e.sop_class, e.sha256, now) for e in entries]
        with self._using():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO delivered VALUES (?, ?, ?, ?, ?, ?)", rows
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def delivered(self, study: str) -> dict[str, Entry]:
        with self._using():
            rows = self._db.execute(
                "SELECT instance, series, sop_class, sha256 FROM delivered WHERE study = ?",
                (study,),
            ).fetchall()
        return {str(r[0]): Entry(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows}

    def claim_manifest(self, study: str, at_least: int) -> int:
        with self._using():
            while True:
                row = self._db.execute(
                    "SELECT max(version) FROM manifest_version WHERE study = ?", (study,)
                ).fetchone()
                version = max(int(row[0] or 0) + 1, at_least)
                claimed = self._db.execute(
                    "INSERT OR IGNORE INTO manifest_version VALUES (?, ?, ?)",
                    (study, version, time.time()),
                )
                if claimed.rowcount == 1:
                    return version

    def ledger(self) -> Ledger:
        with self._using() as db:
            delivered = db.execute(
                "SELECT study, instance, series, sop_class, sha256 FROM delivered"
            ).fetchall()
            versions = db.execute("SELECT study, version FROM manifest_version").fetchall()
            held = db.execute("SELECT study FROM held_study").fetchall()
        return Ledger(
            [(str(r[0]), Entry(str(r[1]), str(r[2]), str(r[3]), str(r[4]))) for r in delivered],
            [(str(r[0]), int(r[1])) for r in versions],
            [str(r[0]) for r in held],
        )

    def add_ledger(self, ledger: Ledger) -> int:
        now, stamp = time.time(), _now()
        with self._using() as db:
            before = db.total_changes
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT OR IGNORE INTO delivered VALUES (?, ?, ?, ?, ?, ?)",
                    [(st, e.instance, e.series, e.sop_class, e.sha256, now)
                     for st, e in ledger.delivered],
                )  # fmt: skip
                db.executemany(
                    "INSERT OR IGNORE INTO manifest_version VALUES (?, ?, ?)",
                    [(st, v, now) for st, v in ledger.versions],
                )
                db.executemany(
                    "INSERT OR IGNORE INTO held_study VALUES (?, ?)",
                    [(st, stamp) for st in ledger.held],
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return db.total_changes - before

    def prune_ledger(self, older_than: float) -> int:
        cutoff = time.time() - older_than
        with self._using():
            done = self._db.execute("DELETE FROM delivered WHERE recorded < ?", (cutoff,))
            count = done.rowcount
            self._db.execute("DELETE FROM manifest_version WHERE recorded < ?", (cutoff,))
        return count

    def hold_study(self, study: str) -> None:
        with self._using():
            self._db.execute("INSERT OR IGNORE INTO held_study VALUES (?, ?)", (study, _now()))

    def _study_held(self, study: str) -> bool:
        with self._using():
            row = self._db.execute("SELECT 1 FROM held_study WHERE study = ?", (study,))
            return row.fetchone() is not None

    def _put_identity(self, study: str, sealed: bytes) -> None:
        with self._using() as db:
            db.execute("INSERT OR IGNORE INTO identity VALUES (?, ?, ?)", (study, sealed, _now()))

    def _get_identity(self, study: str) -> bytes | None:
        with self._using() as db:
            row = db.execute("SELECT sealed FROM identity WHERE study = ?", (study,)).fetchone()
        return None if row is None else bytes(row[0])

    def _ping(self) -> None:
        with self._using():
            self._db.execute("SELECT 1").fetchone()

    def migrate(self) -> tuple[int, int]:
        """Opening brought the schema up to date already (one file, one gateway): the version
        the file had when this process opened it, and now."""
        return self._found_version, VERSION


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _code(exc: sqlite3.Error) -> str:
    return str(getattr(exc, "sqlite_errorname", "") or "unknown")


def _busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc)
