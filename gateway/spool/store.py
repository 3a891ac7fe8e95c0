"""The durable, encrypted spool: acknowledge only what is on disk, and the one holder of where
each item is.

Each state is a directory (`layout`) and a change of state is one rename (the Postfix model),
made durable by fsyncing both directories (`durable`). An instance is in exactly one state,
named by its instance id: its original (`.dgs`, PHI, encrypted under the study key, `keys`)
until its sealed copy exists, then the sealed copy (`.sealed`, encrypted to the analysis
server's key: the gateway cannot read it back). Recovery at start removes originals whose
sealed copy was written just before a crash. File formats: `format`.

Everyone else names items through this class (`Item`, `items`, `path`); no other module builds
a spool path. (About 470 lines: the one door to item state - storing, listing, moving, holding,
erasing - kept in one class so that no transition can bypass it; what it is built from lives
beside it: `layout`, `format`, `durable`, `keys`, `records`.)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from gateway.errors import SpoolCorrupt, SpoolError, SpoolFull, SpoolLocked
from gateway.keyfiles import fsync_directory, read_key
from gateway.settings import SpoolSettings
from gateway.spool import crypto
from gateway.spool.crypto import BytesLike
from gateway.spool.durable import Durable
from gateway.spool.format import (
    InstanceHeader,
    OutgoingHeader,
    read_header,
    read_sealed,
    split_original,
)
from gateway.spool.keys import StudyKeys
from gateway.spool.layout import (
    HELD,
    PARTIAL,
    SEALED_STATES,
    STATES,
    Item,
    Layout,
    State,
    reason_path,
)
from gateway.spool.records import StudyRecords
from gateway.spool.returns import Returns

_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass(frozen=True)
class Recovery:
    """What the spool put right at start."""

    partial_writes: int = 0  # never acknowledged
    originals_already_sealed: int = 0  # crash between sealing and removing the original
    stray_reason_files: int = 0


@dataclass(frozen=True)
class Received:
    """One instance as the ingest stage hands it over: Part 10 = `head` (preamble, file meta)
    followed by `dataset` (the encoded data set exactly as it arrived)."""

    head: bytes
    dataset: BytesLike
    study_instance_uid: str
    peer: str
    sop_class_uid: str
    transfer_syntax_uid: str


class Spool:
    """Owns one spool directory. Thread-safe: associations store concurrently."""

    def __init__(self, settings: SpoolSettings, keys: crypto.SpoolKeys) -> None:
        self.layout = Layout(settings.directory)
        self.root = self.layout.root
        self.reserve = settings.min_free_bytes
        self.incoming = self.root / State.INCOMING
        self.key_dir = self.layout.keys
        self.requests = self.layout.requests  # operator requests to the running gateway
        self._durable = Durable()
        self._keys = StudyKeys(self.layout, keys, self._durable)
        self.records = StudyRecords(self.layout, self._durable)
        self.returns = Returns(self.root, self._durable)  # results on their way to PACS
        self._listeners: list[Callable[[InstanceHeader], None]] = []
        self.recovery = Recovery()
        self._lock_file: IO[bytes] | None = None
        self._known_dirs: set[tuple[State, str]] = set()
        self._local = threading.local()

    @classmethod
    def open(cls, settings: SpoolSettings) -> Spool:
        """Create the layout, take the spool lock and drop unacknowledged partial writes."""
        spool = cls.open_readonly(settings)
        try:
            spool._prepare()
        except OSError as exc:
            spool.close()
            code = errno.errorcode.get(exc.errno or 0, exc.__class__.__name__)
            raise SpoolError(f"spool.directory {spool.root}: cannot prepare ({code})") from None
        return spool

    @classmethod
    def open_readonly(cls, settings: SpoolSettings) -> Spool:
        """For inspection beside a running gateway: no lock, no recovery; never store with it."""
        keys = crypto.SpoolKeys.from_master(read_key(settings.master_key))
        return cls(settings, keys)

    def _prepare(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        layout = (
            self.key_dir,
            self.layout.records,
            self.requests,
            *(self.root / s for s in STATES),
        )
        for directory in layout:
            directory.mkdir(mode=0o700, exist_ok=True)
        self.returns.prepare()
        for directory in (self.root.parent, self.root):  # the new entries themselves durable
            fsync_directory(directory)
        lock_fd = os.open(self.root / ".lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._lock_file = os.fdopen(lock_fd, "ab")
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SpoolLocked(f"{self.root}: another gateway process owns this spool") from None
        self.recovery = self._recover()
        self.records.load()

    def partial_files(self) -> list[Path]:
        """Writes that never completed: nothing here was ever acknowledged."""
        return self.layout.partial()

    def _recover(self) -> Recovery:
        """Put right what a crash left half-done; every step is safe to repeat."""
        partial = self.partial_files()
        for leftover in partial:
            leftover.unlink()
        sealed = {i.name for s in SEALED_STATES for i in self.items(s)}
        already = [i for i in self.items(State.INCOMING) if i.name in sealed]
        for original in already:
            self.discard(original.path)
        stray = self.layout.stray_reasons()
        for reason in stray:
            reason.unlink()
        return Recovery(len(partial), len(already), len(stray))

    def close(self) -> None:
        self._durable.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def writable(self) -> bool:
        """Can a new instance be written durably? Creates, syncs and removes a probe file where
        new studies go (for readiness; a full disk shows in `free_bytes` instead)."""
        probe = self.incoming / f".{secrets.token_hex(8)}.probe{PARTIAL}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, b"\0")
                os.fdatasync(fd)
            finally:
                os.close(fd)
                probe.unlink(missing_ok=True)
        except OSError:
            return False
        return True

    # -- writing ------------------------------------------------------------------------------

    def store(self, item: Received) -> InstanceHeader:
        """Encrypt and write one instance durably; on SpoolFull or SpoolError nothing is left."""
        if self._lock_file is None:
            raise SpoolError("spool opened read-only")
        size = len(item.head) + len(memoryview(item.dataset))
        header = InstanceHeader(
            instance_id=secrets.token_hex(16),
            study_id=self._keys.study_id(item.study_instance_uid),
            peer=item.peer,
            received_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            size=size,
            sop_class_uid=item.sop_class_uid,
            transfer_syntax_uid=item.transfer_syntax_uid,
        )
        with self._keys.writing(header.study_id):
            stored = self._store(item, header, size)
        for listener in self._listeners:
            listener(stored)
        return stored

    def subscribe(self, listener: Callable[[InstanceHeader], None]) -> None:
        """Call `listener` (on the storing thread, after the instance is durable) for every
        instance stored from now on. It must be quick and must not raise."""
        self._listeners.append(listener)

    def _store(self, item: Received, header: InstanceHeader, size: int) -> InstanceHeader:
        study_id = header.study_id
        try:
            if self.free_bytes() - size < self.reserve:
                raise SpoolFull("free space below the configured reserve")
            data_key = self._keys.get(study_id, create=True)
            prefix = header.prefix()
            body = self._sealer().seal(data_key, prefix, (item.head, item.dataset))
            self._study_dir(study_id, State.INCOMING)
            final = self.path(State.INCOMING, study_id, header.instance_id)
            self._durable.write(final, [prefix, *body])
            self._check_not_erased(study_id, final)
        except OSError as exc:
            if exc.errno in _DISK_FULL:
                raise SpoolFull(f"disk full ({errno.errorcode[exc.errno]})") from None
            code = errno.errorcode.get(exc.errno or 0, exc.__class__.__name__)
            raise SpoolError(f"spool write failed ({code})") from None
        return header

    def _check_not_erased(self, study_id: str, final: Path) -> None:
        """A study erased while this instance was being written must not keep it (its key is
        gone); the sender gets Out of Resources and sends it again into a fresh study key."""
        with self._keys.lock:
            if self._keys.exists(study_id):
                return
        final.unlink(missing_ok=True)
        raise SpoolError("study erased while an instance was being written")

    def _study_dir(self, study_id: str, state: State) -> Path:
        directory = self.layout.directory(state, study_id)
        if (state, study_id) not in self._known_dirs:
            directory.mkdir(mode=0o700, exist_ok=True)
            self._durable.sync(directory.parent)
            self._known_dirs.add((state, study_id))
        return directory

    def _sealer(self) -> crypto.Sealer:
        sealer: crypto.Sealer | None = getattr(self._local, "sealer", None)
        if sealer is None:
            sealer = self._local.sealer = crypto.Sealer()
        return sealer

    # -- erasure ------------------------------------------------------------------------------

    def erase_study(self, study_id: str) -> int:
        """Destroy the study's key, then unlink its files; returns how many instances went.

        The key goes first: from then on the files are unreadable whatever happens next.
        Returns 0 for an unknown study. The cached key is dropped under the same lock that
        hands keys to writers, so no later instance is sealed with a destroyed key.
        """
        with self._keys.lock:
            return self._erase_locked(study_id)

    def _erase_locked(self, study_id: str) -> int:
        self._keys.destroy(study_id)
        erased = 0
        for state in (State.INCOMING, State.QUARANTINE):
            directory = self.layout.directory(state, study_id)
            self._known_dirs.discard((state, study_id))
            files = list(directory.iterdir()) if directory.is_dir() else []
            for path in files:
                path.unlink()
            if directory.is_dir():
                directory.rmdir()
                self._durable.sync(directory.parent)
            erased += sum(1 for p in files if p.suffix == state.suffix)
        return erased

    def _idle_locked(self, study_id: str, leaving: frozenset[Path] = frozenset()) -> bool:
        """No original of the study is being stored, waits in incoming/ or is held in
        quarantine (other than `leaving`). Call with the key lock held."""
        if self._keys.busy(study_id):
            return False
        for state in (State.INCOMING, State.QUARANTINE):
            if any(i.path not in leaving for i in self.items(state, study_id)):
                return False
        return True

    def erase_if_idle(self, study_id: str) -> bool:
        """Destroy the study's key once no original of it is left (none stored, being stored,
        or held in quarantine); True if it was destroyed. Checked and done under one lock, so
        an instance being stored meanwhile keeps it. A later instance gets a fresh key."""
        with self._keys.lock:
            if not self._keys.exists(study_id) or not self._idle_locked(study_id):
                return False
            self._erase_locked(study_id)
            return True

    def erase_held(self, study_id: str, paths: list[Path]) -> bool:
        """Erase held originals of one study. When they are the last originals of the study
        (nothing stored, being stored or held besides them), the key goes first (crypto-
        erasure) and True is returned; otherwise only these files are unlinked."""
        with self._keys.lock:
            if self._idle_locked(study_id, frozenset(paths)):
                self._erase_locked(study_id)
                return True
        for path in paths:
            self.discard(path)
        return False

    # -- items and states ---------------------------------------------------------------------

    def items(self, state: State, study_id: str | None = None) -> list[Item]:
        """The items in one state (of one study, or all), in (study, name) order."""
        return self.layout.items(state, study_id)

    def item(self, path: Path) -> Item:
        """The item at a path the spool handed out."""
        return self.layout.item(path)

    def path(self, state: State, study_id: str, name: str) -> Path:
        """Where the item `name` of a study is in `state`."""
        return self.layout.path(state, study_id, name)

    def studies(self, state: State) -> list[str]:
        """The studies with a directory in `state`."""
        return self.layout.studies(state)

    def busy(self, study_id: str) -> bool:
        """Whether an original of the study is being stored or waits to be sealed (incoming/),
        or a sealed copy of it waits to be sent (outbox/): read from the spool, never counted."""
        with self._keys.lock:
            if self._keys.busy(study_id):
                return True
        return self.layout.has_items(State.INCOMING, study_id) or self.layout.has_items(
            State.OUTBOX, study_id
        )

    def delivered(self, study_id: str) -> list[Item]:
        """The study's delivered instances (not its manifests), in name order."""
        return [i for i in self.items(State.SENT, study_id) if not i.is_manifest]

    def next_manifest(self, study_id: str, after: int) -> int:
        """The version the study's next manifest gets: above `after` (its record's) and above
        every manifest of it still in the spool."""
        return 1 + max([after, *self.layout.manifest_versions(study_id)])

    def occupied(self, study_id: str) -> bool:
        """Whether any item or file of the study is left in any state."""
        return self.layout.occupied(study_id)

    def held_since(self, state: State) -> list[float]:
        """When each item in dead/ or quarantine/ was held (its reason file's time)."""
        stamps = []
        for item in self.items(state):
            with contextlib.suppress(FileNotFoundError):
                stamps.append(item.reason_path.stat().st_mtime)
        return stamps

    def stamps(self, state: State) -> list[float]:
        """When each item in a state got there (its file's time: received, sealed...)."""
        return [t for t in (item.stamp() for item in self.items(state)) if t is not None]

    def files(self, state: State) -> list[Path]:
        """The paths of the items in one state (all studies), in order."""
        return [i.path for i in self.items(state)]

    def write_sealed(self, header: OutgoingHeader, body: bytes) -> Path:
        """Write a sealed item durably into the outbox; returns its path."""
        chunks: list[BytesLike] = [*header.prefix(), body]
        name = self.path(State.OUTBOX, header.study_id, header.name).name
        return self._in_study_dir(
            header.study_id,
            State.OUTBOX,
            lambda d: self._durable.write(d / name, chunks),
            name,
        )

    def _in_study_dir(
        self, study_id: str, state: State, action: Callable[[Path], object], name: str
    ) -> Path:
        """Run `action(directory)` for a study's directory in `state`; when the gateway pruned
        that (empty) directory after this process last made it, make it again and retry."""
        for attempt in range(3):
            directory = self._study_dir(study_id, state)
            try:
                action(directory)
                return directory / name
            except FileNotFoundError:
                if attempt == 2 or directory.exists():
                    raise
                self._known_dirs.discard((state, study_id))
        raise AssertionError("unreachable")

    def read_sealed(self, path: Path, *, body: bool = True) -> tuple[OutgoingHeader, bytes]:
        """The clear header and (unless body=False) the sealed body of a sealed file."""
        return read_sealed(path, body=body)

    def read_header(self, path: Path) -> InstanceHeader:
        """The clear header of an original, without decrypting it."""
        return read_header(path)

    def move(self, path: Path, state: State, *, stamp: bool = False) -> Path:
        """Rename one item into the same study's directory of another state, durably;
        `stamp` sets its modification time to now (retention counts from it)."""
        if stamp:
            os.utime(path)
        target = self._in_study_dir(
            path.parent.name, state, lambda d: os.rename(path, d / path.name), path.name
        )
        self._durable.sync(target.parent)
        self._durable.sync(path.parent)
        return target

    def hold(self, path: Path, state: State, reason: dict[str, Any]) -> Path:
        """Move an item to quarantine or the dead letters with a reason file beside it (written
        first: a crash in between leaves a stray reason file, which recovery removes)."""
        if state not in HELD:
            raise ValueError(f"{state} holds no items")
        note = json.dumps(reason, sort_keys=True, indent=1).encode("utf-8")
        name = reason_path(path).name
        self._in_study_dir(
            path.parent.name, state, lambda d: self._durable.write(d / name, [note]), name
        )
        return self.move(path, state, stamp=state == State.DEAD)

    def reason(self, path: Path) -> dict[str, Any]:
        """The reason file of a held item ({} when there is none)."""
        try:
            loaded = json.loads(reason_path(path).read_bytes())
        except (FileNotFoundError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def discard(self, path: Path) -> None:
        """Unlink one item (and its reason file), durably."""
        path.unlink(missing_ok=True)
        reason_path(path).unlink(missing_ok=True)
        self._durable.sync(path.parent)

    def prune(self, state: State, study_id: str) -> None:
        """Remove a study's directory in `state` if it is empty (best effort)."""
        directory = self.layout.directory(state, study_id)
        with self._keys.lock:
            if self._keys.busy(study_id):
                return
            try:
                directory.rmdir()
            except OSError:
                return
            self._known_dirs.discard((state, study_id))
        self._durable.sync(directory.parent)

    # -- reading ------------------------------------------------------------------------------

    def instance_files(self) -> Iterator[Path]:
        yield from self.files(State.INCOMING)

    def read(self, path: Path) -> tuple[InstanceHeader, bytes]:
        """Return the clear header and the decrypted Part 10 bytes of one spool file."""
        blob = path.read_bytes()
        where = f"spool file {path.name}"
        header, start = split_original(blob, path)
        key = self._keys.get(header.study_id, create=False)
        try:
            plain = crypto.unseal(key, blob[:start], blob[start:], where)
        except SpoolCorrupt:
            # another process (the gateway) may have destroyed the study key this process had
            # cached, and a later instance of the study came under a fresh key: read it again
            self._keys.forget(header.study_id)
            key = self._keys.get(header.study_id, create=False)
            plain = crypto.unseal(key, blob[:start], blob[start:], where)
        return header, plain
