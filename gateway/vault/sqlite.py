"""The on-site vault: original value <-> pseudonym, one table, in SQLite (WAL).

What it stores per mapping: the kind ("patient_id", "uid", "date_offset", ...), a keyed hash of
the original (to find it again), the original encrypted with AES-256-GCM (to re-identify results
later, on site), and the pseudonym. Keys come from the vault key (`vault.key`) through HKDF;
without it the file reveals no original value, and the hash cannot be checked against guesses.

Consistency: the (kind, hash) pair is the primary key, so the first writer wins and everyone
else, in any process, reads the winner's pseudonym. Pseudonyms are unique per kind. Commits are
synchronous (WAL, synchronous=FULL): a pseudonym handed out survives a power cut, so a re-sent
study can never get a second one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import VaultError
from gateway.keyfiles import read_key
from gateway.settings import VaultSettings

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
_OPEN_SECONDS = 30.0  # opening waits this long for other processes opening it at once
_ATTEMPTS = 8  # fresh pseudonyms to try when one is already taken (random codes rarely collide)
_CACHE_ENTRIES = 65_536  # mappings this process remembers (a study's UIDs, its patient, ...)


def _derive(key: bytes, purpose: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"dicom-gateway/vault/" + purpose).derive(key)


class SqliteVault:
    """One connection per process (and per vault file); thread-safe within the process."""

    def __init__(self, path: Path, key: bytes, *, durable: bool = True) -> None:
        """`durable=False` (benchmarks only) leaves each commit to the OS: a power cut may
        lose the latest mappings."""
        self.path = path
        self._lookup_key = _derive(key, b"lookup/v1")
        self._aead = AESGCM(_derive(key, b"original/v1"))
        self._lock = threading.Lock()
        self._db = self._connect(path)
        if not durable:
            self._db.execute("PRAGMA synchronous=NORMAL")
        # A mapping never changes once written (first writer wins), so what this process has
        # read or written may be remembered; bounded, oldest first out.
        self._cache: OrderedDict[tuple[str, str], str] = OrderedDict()

    @classmethod
    def open(cls, settings: VaultSettings) -> SqliteVault:
        return cls(settings.path, read_key(settings.key))

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        """Open (creating if needed) in WAL mode. Processes opening a new vault at the same
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
                    db.executescript(_SCHEMA)
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
            return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _lookup(self, kind: str, original: str) -> bytes:
        message = kind.encode() + b"\0" + original.encode("utf-8", "surrogateescape")
        return hmac.new(self._lookup_key, message, hashlib.sha256).digest()

    def pseudonym(self, kind: str, original: str, make: Callable[[], str]) -> str:
        """The pseudonym of `original` within `kind`; `make()` proposes one if there is none."""
        key = (kind, original)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        lookup = self._lookup(kind, original)
        with self._lock:
            found = self._find(kind, lookup)
            for _ in range(_ATTEMPTS):
                if found is not None:
                    self._remember(key, found)
                    return found
                self._insert(kind, lookup, original, make())
                found = self._find(kind, lookup)
        raise VaultError(f"vault: no free pseudonym of kind {kind} after {_ATTEMPTS} tries")

    def _remember(self, key: tuple[str, str], pseudonym: str) -> None:
        self._cache[key] = pseudonym
        if len(self._cache) > _CACHE_ENTRIES:
            self._cache.popitem(last=False)

    def _find(self, kind: str, lookup: bytes) -> str | None:
        row = self._db.execute(
            "SELECT pseudonym FROM mapping WHERE kind = ? AND lookup = ?", (kind, lookup)
        ).fetchone()
        return None if row is None else str(row[0])

    def _insert(self, kind: str, lookup: bytes, original: str, pseudonym: str) -> None:
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._aead.encrypt(
            nonce, original.encode("utf-8", "surrogateescape"), lookup
        )
        try:
            self._db.execute(
                "INSERT OR IGNORE INTO mapping VALUES (?, ?, ?, ?, ?)",
                (kind, lookup, sealed, pseudonym, datetime.now(UTC).isoformat()),
            )
        except sqlite3.Error as exc:
            raise VaultError(f"vault: cannot record a mapping ({exc.__class__.__name__})") from None

    def original(self, kind: str, pseudonym: str) -> str | None:
        """Re-identification, on site only: the original behind a pseudonym, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT lookup, original FROM mapping WHERE kind = ? AND pseudonym = ?",
                (kind, pseudonym),
            ).fetchone()
        if row is None:
            return None
        lookup, sealed = bytes(row[0]), bytes(row[1])
        try:
            plain = self._aead.decrypt(sealed[:12], sealed[12:], lookup)
        except InvalidTag:
            raise VaultError("vault: a mapping does not decrypt (wrong vault key?)") from None
        return plain.decode("utf-8", "surrogateescape")


def _busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc)
