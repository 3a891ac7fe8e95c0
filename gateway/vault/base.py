"""What every vault engine shares: keyed lookups, encrypted originals, first writer wins.

A mapping is (kind, lookup, original, pseudonym): the kind ("patient", "uid", "date_offset",
...), a keyed hash of the original (HMAC-SHA256 under a key derived from `vault.key`: the
original is found again without being stored in clear, and the hash cannot be checked against
guesses without the key), the original encrypted with AES-256-GCM (the lookup as associated
data, so a row cannot be moved to another original) for re-identification on site, and the
pseudonym. A mapping is written once and never changed: the (kind, lookup) pair and the (kind,
pseudonym) pair are each unique, the first writer wins and every other process - on this box
or another gateway sharing the engine - reads the winner's pseudonym. So what a process has
read may be remembered (a bounded cache).

Pseudonyms are drawn at random by the caller (`make`), never derived from the original
(docs/deidentify.md, "Pseudonyms"); the engine only makes them consistent.

Beside the mappings, the vault keeps a study ledger, so that gateways sharing it agree on a
study they each received part of: the instances each delivered (a manifest lists them all),
the manifest versions claimed (no two gateways send the same version), and which studies are
held because their instances name two patients. It holds pseudonymous UIDs and digests only.

An engine (`sqlite`, `postgresql`) implements the few storage steps below; this class does
the rest, the same for both.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import VaultError, VaultUnavailable

_ATTEMPTS = 8  # fresh pseudonyms to try when one is already taken (random codes rarely collide)
KEY_CHECK = "vault-key-check"  # the kind of the one mapping that proves the key
PAGE = 1000  # rows read, or written in one transaction, at a time when copying a vault
_CACHE_ENTRIES = 65_536  # mappings this process remembers (a study's UIDs, its patient, ...)
_P = ParamSpec("_P")
_T = TypeVar("_T")


@dataclass(frozen=True)
class Row:
    """One mapping as stored: what `copy` moves from one engine to another, byte for byte."""

    kind: str
    lookup: bytes
    original: bytes  # nonce + AES-256-GCM ciphertext, the lookup as associated data
    pseudonym: str
    created: str  # ISO 8601, UTC


@dataclass(frozen=True)
class Entry:
    """A delivered instance as a manifest lists it (protocol v1): pseudonymous UIDs and the
    SHA-256 of the de-identified file."""

    instance: str
    series: str
    sop_class: str
    sha256: str


@dataclass(frozen=True)
class Ledger:
    """A vault's whole study ledger, as `vault copy` moves it: deliveries (study, entry),
    manifest versions claimed (study, version) and held studies."""

    delivered: list[tuple[str, Entry]]
    versions: list[tuple[str, int]]
    held: list[str]

    def __len__(self) -> int:
        return len(self.delivered) + len(self.versions) + len(self.held)


@dataclass(frozen=True)
class Proposal:
    """A new mapping's sealed original and proposed pseudonym."""

    sealed: bytes
    pseudonym: str


@dataclass(frozen=True)
class Copied:
    """What `Vault.add_rows` did: rows added, rows already there alike, and rows the target
    maps otherwise (never overwritten)."""

    added: int = 0
    present: int = 0
    conflicting: int = 0

    def __add__(self, other: Copied) -> Copied:
        return Copied(
            self.added + other.added,
            self.present + other.present,
            self.conflicting + other.conflicting,
        )


@dataclass
class Usage:
    """Round trips to the engine and the seconds they took, since the last `Vault.usage()`."""

    round_trips: int = 0
    seconds: float = 0.0


def _derive(key: bytes, purpose: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"dicom-gateway/vault/" + purpose).derive(key)


class Vault(ABC):
    """The vault of one process; thread-safe. `engine` names it in logs and metrics."""

    engine: str = ""

    def __init__(self, key: bytes) -> None:
        self._lookup_key = _derive(key, b"lookup/v1")
        self._aead = AESGCM(_derive(key, b"original/v1"))
        self._cache: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._usage = Usage()
        self._held: set[str] = set()  # studies known to be held
        self._key_verified = False

    # -- what callers use ---------------------------------------------------------------------

    def pseudonym(self, kind: str, original: str, make: Callable[[], str]) -> str:
        """The pseudonym of `original` within `kind`; `make()` proposes one if there is none.
        Raises VaultUnavailable when the engine cannot be reached."""
        key = (kind, original)
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        self._verify_key()
        lookup = self._lookup(kind, original)

        def propose() -> Proposal:
            return Proposal(self._seal(original, lookup), make())

        for _ in range(_ATTEMPTS):
            found = self._timed(self._claim, kind, lookup, propose)
            if found is not None:
                self._remember(key, found)
                return found
        raise VaultError(f"vault: no free pseudonym of kind {kind} after {_ATTEMPTS} tries")

    def original(self, kind: str, pseudonym: str) -> str | None:
        """Re-identification, on site only: the original behind a pseudonym, or None."""
        self._verify_key()
        row = self._timed(self._find_original, kind, pseudonym)
        if row is None:
            return None
        lookup, sealed = row
        return self._open(sealed, lookup).decode("utf-8", "surrogateescape")

    def record_identity(self, study: str, identity: str) -> None:
        """Keep what re-identifying a result of the (pseudonymous) study needs - the original
        patient and study attributes, as text - encrypted like an original, bound to the
        study; the first record of a study stands."""
        self._verify_key()
        aad = b"identity\0" + study.encode("ascii")
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._aead.encrypt(nonce, identity.encode("utf-8"), aad)
        self._timed(self._put_identity, study, sealed)

    def identity(self, study: str) -> str | None:
        """What `record_identity` kept for the study, or None (a study this vault never
        de-identified)."""
        self._verify_key()
        sealed = self._timed(self._get_identity, study)
        if sealed is None:
            return None
        aad = b"identity\0" + study.encode("ascii")
        return self._open(sealed, aad).decode("utf-8")

    def usage(self) -> Usage:
        """Round trips and their seconds since the last call (a worker reports them per
        instance)."""
        used, self._usage = self._usage, Usage()
        return used

    def check_rows(self, rows: Iterable[Row]) -> Iterator[Row]:
        """`rows` as they pass, each proven to open under this vault's key (a copy between
        vaults of different keys would keep pseudonyms nobody can re-identify)."""
        for row in rows:
            self._open(row.original, row.lookup)
            yield row

    # -- what an engine implements ------------------------------------------------------------

    @abstractmethod
    def _claim(self, kind: str, lookup: bytes, propose: Callable[[], Proposal]) -> str | None:
        """Record (kind, lookup) -> a proposed pseudonym unless (kind, lookup) is mapped
        already (`propose` may be called before looking, to save a round trip); the pseudonym
        that stands (ours or the first writer's), or None when the proposal is taken by
        another original (the caller proposes again)."""

    @abstractmethod
    def _put_identity(self, study: str, sealed: bytes) -> None:
        """Store a study's sealed identity unless one is stored."""

    @abstractmethod
    def _get_identity(self, study: str) -> bytes | None: ...

    @abstractmethod
    def _find_original(self, kind: str, pseudonym: str) -> tuple[bytes, bytes] | None:
        """(lookup, sealed original) of a pseudonym, or None."""

    @abstractmethod
    def rows(self) -> Iterator[Row]:
        """Every mapping but the key check, in a stable order."""

    @abstractmethod
    def add_rows(self, rows: Iterable[Row]) -> Copied:
        """Add mappings as they are (first writer wins: none is changed)."""

    # the study ledger: what every gateway sharing the vault delivered of a study, the
    # manifest versions claimed for it, and whether it is held (pseudonymous UIDs only)

    @abstractmethod
    def record_delivered(self, study: str, entries: Iterable[Entry]) -> None:
        """Add delivered instances of a study (first record of an instance stands)."""

    @abstractmethod
    def delivered(self, study: str) -> dict[str, Entry]:
        """Every instance of the study any gateway recorded, by pseudonymous SOP Instance
        UID."""

    @abstractmethod
    def claim_manifest(self, study: str, at_least: int) -> int:
        """A manifest version of the study no gateway has claimed: above every claimed one,
        and at least `at_least`."""

    @abstractmethod
    def ledger(self) -> Ledger:
        """The whole study ledger (bounded: `prune_ledger` keeps it to the delivered window)."""

    @abstractmethod
    def add_ledger(self, ledger: Ledger) -> int:
        """Add another vault's ledger (what is there stays); the rows added."""

    @abstractmethod
    def prune_ledger(self, older_than: float) -> int:
        """Forget deliveries and manifest versions recorded more than `older_than` seconds
        ago (the receivers keep nothing longer); holds stay. The deliveries forgotten."""

    @abstractmethod
    def hold_study(self, study: str) -> None:
        """Record that the study is held (its instances name two patients)."""

    def study_held(self, study: str) -> bool:
        """Whether any gateway sharing the vault holds the study (a hold is never lifted, so
        a yes is remembered; a no is asked again, one round trip)."""
        if study in self._held:
            return True
        held = self._timed(self._study_held, study)
        if held:
            self._held.add(study)
        return held

    @abstractmethod
    def _study_held(self, study: str) -> bool: ...

    def ping(self) -> None:
        """Reach the engine once and check the key (readiness); raises VaultUnavailable when
        it cannot be reached or was made with another key."""
        self._ping()
        self._verify_key()

    def reachable(self) -> None:
        """Reach the engine once, the schema and key left alone (before a migration); raises
        VaultUnavailable, its reason saying why, when it cannot."""
        self._ping()

    @abstractmethod
    def _ping(self) -> None: ...

    @abstractmethod
    def migrate(self) -> tuple[int, int]:
        """Bring the schema to this gateway's version: (version before, version after)."""

    @abstractmethod
    def close(self) -> None: ...

    # -- shared steps -------------------------------------------------------------------------

    def _timed(self, step: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        started = time.perf_counter()
        try:
            return step(*args, **kwargs)
        finally:
            self._usage.round_trips += 1
            self._usage.seconds += time.perf_counter() - started

    def _verify_key(self) -> None:
        """Once per process: the vault's first writer recorded a value only its key gives (at
        a fixed lookup); another key gives another value. A gateway given the wrong key would
        otherwise mint new pseudonyms for every patient and study without a word."""
        if self._key_verified:
            return
        lookup = bytes(32)
        expected = hmac.new(self._lookup_key, KEY_CHECK.encode(), hashlib.sha256).hexdigest()
        standing = self._timed(
            self._claim,
            KEY_CHECK,
            lookup,
            lambda: Proposal(self._seal(KEY_CHECK, lookup), expected),
        )
        if standing != expected:
            raise VaultUnavailable(
                "vault-key-mismatch",
                "vault: vault.key is not the key this vault was made with (every gateway "
                "sharing a vault needs the same key)",
            )
        self._key_verified = True

    def _lookup(self, kind: str, original: str) -> bytes:
        message = kind.encode() + b"\0" + original.encode("utf-8", "surrogateescape")
        return hmac.new(self._lookup_key, message, hashlib.sha256).digest()

    def _seal(self, original: str, lookup: bytes) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(
            nonce, original.encode("utf-8", "surrogateescape"), lookup
        )

    def _open(self, sealed: bytes, lookup: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], lookup)
        except InvalidTag:
            raise VaultError("vault: a mapping does not decrypt (wrong vault key?)") from None

    def _remember(self, key: tuple[str, str], pseudonym: str) -> None:
        with self._cache_lock:
            self._cache[key] = pseudonym
            if len(self._cache) > _CACHE_ENTRIES:
                self._cache.popitem(last=False)
