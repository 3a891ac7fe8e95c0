"""The durable, encrypted spool: acknowledge only what is on disk.

Layout (no PHI in any name: study directories are keyed hashes, instance files are random):

    <spool>/.lock                          held (flock) by the one gateway that owns the spool
    <spool>/keys/<study-id>.key            the study's data key, wrapped by the master key
    <spool>/incoming/<study-id>/<instance-id>.dgs      received, acknowledged, not yet sealed
    <spool>/outbox/<study-id>/<instance-id>.sealed     de-identified, sealed, waiting to be sent
    <spool>/outbox/<study-id>/manifest-<n>.sealed      a study's manifest, version n
    <spool>/sent/<study-id>/<name>.sealed              delivered; kept for the support window
    <spool>/dead/<study-id>/<name>.sealed (+ .reason.json)       refused by the server for good
    <spool>/quarantine/<study-id>/<instance-id>.dgs (+ .reason.json)   held: not proven clean
    <spool>/studies/<study-id>.json        the study's last manifest: version and instance ids
    <spool>/requests/<id>.json             an operator's request to the running gateway
    .../.<random>.part                     a write in progress, beside its final name; removed
                                           at start (it was never acknowledged)

Each state is a directory and a change of state is one rename (the Postfix model), made durable
by fsyncing both directories. An instance is in exactly one state, named by its instance id:
its original (`.dgs`, PHI, encrypted under the study key) until its sealed copy exists, then
the sealed copy (`.sealed`, encrypted to the analysis server's key: the gateway cannot read it
back). Recovery at start removes originals whose sealed copy was written just before a crash.

A write is tmp file -> write -> fdatasync -> rename -> fsync(directory), all in one directory,
so one directory fsync makes it durable (POSIX keeps the name in the directory).

A spool file is `MAGIC | u32 header length | header JSON | nonce | AES-GCM(Part 10 bytes)`.
The header holds only what later stages need without decrypting (configured peer name, receive
time, sizes, SOP class and transfer syntax UIDs, which are standard UIDs, not patient data).
A sealed file is `SEALED_MAGIC | u32 header length | header JSON | HPKE envelope`; its header
holds the pseudonymous names the request needs (`OutgoingHeader`), never an original value.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

from gateway.errors import SpoolCorrupt, SpoolError, SpoolFull, SpoolLocked
from gateway.keyfiles import fsync_directory, read_key
from gateway.settings import SpoolSettings
from gateway.spool import crypto
from gateway.spool.crypto import BytesLike

MAGIC = b"DGSPOOL1"
SEALED_MAGIC = b"DGSEALD1"
State = Literal["incoming", "outbox", "sent", "dead", "quarantine"]
STATES: tuple[State, ...] = ("incoming", "outbox", "sent", "dead", "quarantine")
REASON_SUFFIX = ".reason.json"
_HEADER_LEN = struct.Struct(">I")
_KEY_CACHE_SIZE = 256
_DIR_FD_CACHE_SIZE = 64
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@dataclass(frozen=True)
class InstanceHeader:
    """What the spool records in clear for each instance. Never add patient data here."""

    instance_id: str
    study_id: str
    peer: str
    received_at: str
    size: int
    sop_class_uid: str
    transfer_syntax_uid: str
    version: int = 1

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode("ascii")


@dataclass(frozen=True)
class OutgoingHeader:
    """What the spool records in clear beside a sealed body: the pseudonymous names the request
    needs and what the manifest lists. Never an original value."""

    name: str  # the file's stem: the instance id, or "manifest-<version>"
    study_id: str
    kind: str  # "instance" or "manifest"
    site: str
    study: str  # pseudonymous StudyInstanceUID
    item: str  # pseudonymous SOPInstanceUID, or the manifest version
    key_id: str
    sha256: str  # of the plaintext (the de-identified Part 10 file or the manifest JSON)
    size: int  # of the plaintext
    received_at: str  # when the original arrived (instance) or the manifest was made
    sealed_at: str
    series: str = ""  # pseudonymous SeriesInstanceUID
    sop_class: str = ""
    patient: str = ""  # the patient's pseudonym (what the receiver sees as PatientID)
    version: int = 1

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True).encode("ascii")


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


class _DirSync:
    """A cached directory descriptor and its fsync generations (see `Spool._fsync_dir`)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()  # one fsync of this directory at a time
        self.requested = 0  # changes announced (guarded by the spool's directory lock)
        self.synced = 0  # changes known durable
        self.users = 0
        self.evicted = False

    def close(self) -> None:
        """Close now, or when the last thread using it is done (callers hold the spool's
        directory lock)."""
        self.evicted = True
        if self.users == 0 and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Spool:
    """Owns one spool directory. Thread-safe: associations store concurrently."""

    def __init__(self, settings: SpoolSettings, keys: crypto.SpoolKeys) -> None:
        self.root = settings.directory
        self.reserve = settings.min_free_bytes
        self._keys = keys
        self.incoming = self.root / "incoming"
        self.key_dir = self.root / "keys"
        self.records = self.root / "studies"
        self.requests = self.root / "requests"  # operator requests to the running gateway
        self._writers: dict[str, int] = {}  # study id -> stores in progress
        self._listeners: list[Callable[[InstanceHeader], None]] = []
        self.recovery = Recovery()
        self._lock_file: IO[bytes] | None = None
        self._key_lock = threading.Lock()
        self._data_keys: OrderedDict[str, bytes] = OrderedDict()
        self._known_dirs: set[tuple[str, str]] = set()
        self._local = threading.local()
        self._dir_syncs: OrderedDict[Path, _DirSync] = OrderedDict()
        self._dir_lock = threading.Lock()

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
        layout = (self.key_dir, self.records, self.requests, *(self.root / s for s in STATES))
        for directory in layout:
            directory.mkdir(mode=0o700, exist_ok=True)
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

    def partial_files(self) -> list[Path]:
        """Writes that never completed: nothing here was ever acknowledged."""
        found = [*self.key_dir.glob(".*.part"), *self.records.glob(".*.part")]
        found.extend(self.incoming.glob(".*.part"))  # a readiness probe cut short
        for state in STATES:
            found.extend((self.root / state).glob("*/.*.part"))
        return found

    def _recover(self) -> Recovery:
        """Put right what a crash left half-done; every step is safe to repeat."""
        partial = self.partial_files()
        for leftover in partial:
            leftover.unlink()
        sealed = {p.stem for s in ("outbox", "sent", "dead") for p in self.files(s, "*.sealed")}
        already = [p for p in self.files("incoming") if p.stem in sealed]
        for original in already:
            self.discard(original)
        stray = [
            reason
            for state in ("dead", "quarantine")
            for reason in (self.root / state).glob(f"*/*{REASON_SUFFIX}")
            if not any(reason.with_name(_item_name(reason) + s).exists() for s in _ITEM_SUFFIXES)
        ]
        for reason in stray:
            reason.unlink()
        return Recovery(len(partial), len(already), len(stray))

    def close(self) -> None:
        with self._dir_lock:
            while self._dir_syncs:
                self._dir_syncs.popitem()[1].close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def writable(self) -> bool:
        """Can a new instance be written durably? Creates, syncs and removes a probe file where
        new studies go (for readiness; a full disk shows in `free_bytes` instead)."""
        probe = self.incoming / f".{secrets.token_hex(8)}.probe.part"
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
        study_id = self._keys.study_id(item.study_instance_uid)
        header = InstanceHeader(
            instance_id=secrets.token_hex(16),
            study_id=study_id,
            peer=item.peer,
            received_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            size=size,
            sop_class_uid=item.sop_class_uid,
            transfer_syntax_uid=item.transfer_syntax_uid,
        )
        with self._key_lock:
            self._writers[study_id] = self._writers.get(study_id, 0) + 1
        try:
            stored = self._store(item, header, size)
        finally:
            with self._key_lock:
                left = self._writers[study_id] - 1
                if left:
                    self._writers[study_id] = left
                else:
                    del self._writers[study_id]
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
            data_key = self._data_key(study_id, create=True)
            encoded = header.encode()
            prefix = MAGIC + _HEADER_LEN.pack(len(encoded)) + encoded
            body = self._sealer().seal(data_key, prefix, (item.head, item.dataset))
            directory = self._study_dir(study_id)
            final = directory / f"{header.instance_id}.dgs"
            self._write_durably(final, [prefix, *body])
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
        with self._key_lock:
            if (self.key_dir / f"{study_id}.key").exists():
                return
        final.unlink(missing_ok=True)
        raise SpoolError("study erased while an instance was being written")

    def _study_dir(self, study_id: str, state: State = "incoming") -> Path:
        directory = self.root / state / study_id
        if (state, study_id) not in self._known_dirs:
            directory.mkdir(mode=0o700, exist_ok=True)
            self._fsync_dir(directory.parent)
            self._known_dirs.add((state, study_id))
        return directory

    def _sealer(self) -> crypto.Sealer:
        sealer: crypto.Sealer | None = getattr(self._local, "sealer", None)
        if sealer is None:
            sealer = self._local.sealer = crypto.Sealer()
        return sealer

    def _write_durably(self, final: Path, chunks: list[BytesLike]) -> None:
        """tmp -> write -> fdatasync -> rename -> fsync(dir); on any failure nothing remains."""
        tmp = final.with_name(f".{secrets.token_hex(16)}.part")
        renamed = False
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, chunks)
                os.fdatasync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, final)
            renamed = True
            self._fsync_dir(final.parent)
        except BaseException:
            (final if renamed else tmp).unlink(missing_ok=True)
            raise

    def _fsync_dir(self, directory: Path) -> None:
        """fsync a directory after a change in it (rename, unlink). Threads changing the same
        directory share fsyncs (group commit): one that began after a caller's change covers
        it. Directories do not wait for each other; descriptors are cached (opening one costs
        as much as the sync)."""
        with self._dir_lock:
            sync = self._dir_syncs.get(directory)
            if sync is None:
                sync = self._dir_syncs[directory] = _DirSync(
                    os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                )
                if len(self._dir_syncs) > _DIR_FD_CACHE_SIZE:
                    self._dir_syncs.popitem(last=False)[1].close()
            else:
                self._dir_syncs.move_to_end(directory)
            sync.requested += 1
            ticket = sync.requested
            sync.users += 1
        try:
            with sync.lock:
                if sync.synced >= ticket:
                    return  # an fsync that began after this change has finished
                with self._dir_lock:
                    upto = sync.requested  # every change so far is in the directory now
                os.fsync(sync.fd)
                sync.synced = upto
        finally:
            with self._dir_lock:
                sync.users -= 1
                if sync.evicted and sync.users == 0:
                    sync.close()

    def _data_key(self, study_id: str, *, create: bool) -> bytes:
        with self._key_lock:
            key = self._data_keys.get(study_id)
            if key is None:
                key = self._load_key(study_id, create=create)
                self._data_keys[study_id] = key
                if len(self._data_keys) > _KEY_CACHE_SIZE:
                    self._data_keys.popitem(last=False)
            else:
                self._data_keys.move_to_end(study_id)
            return key

    def _load_key(self, study_id: str, *, create: bool) -> bytes:
        path = self.key_dir / f"{study_id}.key"
        try:
            return self._keys.unwrap(path.read_bytes(), f"study key {study_id}")
        except FileNotFoundError:
            if not create:
                raise SpoolCorrupt(f"study key {study_id} is gone (study erased?)") from None
            key = crypto.new_data_key()
            self._write_durably(path, [self._keys.wrap(key)])
            return key

    def erase_study(self, study_id: str) -> int:
        """Destroy the study's key, then unlink its files; returns how many instances went.

        The key goes first: from then on the files are unreadable whatever happens next.
        Returns 0 for an unknown study. The cached key is dropped under the same lock that
        hands keys to writers, so no later instance is sealed with a destroyed key.
        """
        with self._key_lock:
            return self._erase_locked(study_id)

    def _erase_locked(self, study_id: str) -> int:
        self._data_keys.pop(study_id, None)
        (self.key_dir / f"{study_id}.key").unlink(missing_ok=True)
        self._fsync_dir(self.key_dir)
        erased = 0
        for state in ("incoming", "quarantine"):
            directory = self.root / state / study_id
            self._known_dirs.discard((state, study_id))
            files = list(directory.iterdir()) if directory.is_dir() else []
            for path in files:
                path.unlink()
            if directory.is_dir():
                directory.rmdir()
                self._fsync_dir(directory.parent)
            erased += sum(1 for p in files if p.suffix == ".dgs")
        return erased

    def _idle_locked(self, study_id: str, leaving: frozenset[Path] = frozenset()) -> bool:
        """No original of the study is being stored, waits in incoming/ or is held in
        quarantine (other than `leaving`). Call with the key lock held."""
        if self._writers.get(study_id):
            return False
        for state in ("incoming", "quarantine"):
            if any(p not in leaving for p in (self.root / state / study_id).glob("*.dgs")):
                return False
        return True

    def erase_if_idle(self, study_id: str) -> bool:
        """Destroy the study's key once no original of it is left (none stored, being stored,
        or held in quarantine); True if it was destroyed. Checked and done under one lock, so
        an instance being stored meanwhile keeps it. A later instance gets a fresh key."""
        with self._key_lock:
            if not (self.key_dir / f"{study_id}.key").exists() or not self._idle_locked(study_id):
                return False
            self._erase_locked(study_id)
            return True

    def erase_held(self, study_id: str, paths: list[Path]) -> bool:
        """Erase held originals of one study. When they are the last originals of the study
        (nothing stored, being stored or held besides them), the key goes first (crypto-
        erasure) and True is returned; otherwise only these files are unlinked."""
        with self._key_lock:
            if self._idle_locked(study_id, frozenset(paths)):
                self._erase_locked(study_id)
                return True
        for path in paths:
            self.discard(path)
        return False

    # -- states -------------------------------------------------------------------------------

    def held_since(self, state: Literal["dead", "quarantine"]) -> list[float]:
        """When each item in dead/ or quarantine/ was held (its reason file's time)."""
        stamps = []
        for reason in (self.root / state).glob(f"*/*{REASON_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                stamps.append(reason.stat().st_mtime)
        return stamps

    def files(self, state: State, pattern: str = "*.dgs") -> list[Path]:
        """The items in one state (all studies), in name order."""
        return sorted((self.root / state).glob(f"*/{pattern}"))

    def write_sealed(self, header: OutgoingHeader, body: bytes) -> Path:
        """Write a sealed item durably into the outbox; returns its path."""
        encoded = header.encode()
        chunks: list[BytesLike] = [SEALED_MAGIC, _HEADER_LEN.pack(len(encoded)), encoded, body]
        return self._in_study_dir(
            header.study_id,
            "outbox",
            lambda d: self._write_durably(d / f"{header.name}.sealed", chunks),
            f"{header.name}.sealed",
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
        with path.open("rb") as f:
            start = f.read(len(SEALED_MAGIC) + _HEADER_LEN.size)
            if start[: len(SEALED_MAGIC)] != SEALED_MAGIC or len(start) < _HEADER_LEN.size + 8:
                raise SpoolCorrupt(f"sealed file {path.name}: not a sealed file")
            (length,) = _HEADER_LEN.unpack(start[len(SEALED_MAGIC) :])
            try:
                header = OutgoingHeader(**json.loads(f.read(length)))
            except (ValueError, TypeError):
                raise SpoolCorrupt(f"sealed file {path.name}: bad header") from None
            return header, (f.read() if body else b"")

    def read_header(self, path: Path) -> InstanceHeader:
        """The clear header of an original, without decrypting it."""
        with path.open("rb") as f:
            start = f.read(len(MAGIC) + _HEADER_LEN.size)
            if start[: len(MAGIC)] != MAGIC or len(start) < len(MAGIC) + _HEADER_LEN.size:
                raise SpoolCorrupt(f"spool file {path.name}: not a spool file")
            (length,) = _HEADER_LEN.unpack(start[len(MAGIC) :])
            return _instance_header(f.read(length), path)

    def move(self, path: Path, state: State, *, stamp: bool = False) -> Path:
        """Rename one item into the same study's directory of another state, durably;
        `stamp` sets its modification time to now (retention counts from it)."""
        if stamp:
            os.utime(path)
        target = self._in_study_dir(
            path.parent.name, state, lambda d: os.rename(path, d / path.name), path.name
        )
        self._fsync_dir(target.parent)
        self._fsync_dir(path.parent)
        return target

    def hold(
        self, path: Path, state: Literal["dead", "quarantine"], reason: dict[str, Any]
    ) -> Path:
        """Move an item to quarantine or the dead letters with a reason file beside it (written
        first: a crash in between leaves a stray reason file, which recovery removes)."""
        note = json.dumps(reason, sort_keys=True, indent=1).encode("utf-8")
        name = _item_name(path) + REASON_SUFFIX
        self._in_study_dir(
            path.parent.name, state, lambda d: self._write_durably(d / name, [note]), name
        )
        return self.move(path, state, stamp=state == "dead")

    def reason(self, path: Path) -> dict[str, Any]:
        """The reason file of a held item ({} when there is none)."""
        try:
            loaded = json.loads((path.parent / (_item_name(path) + REASON_SUFFIX)).read_bytes())
        except (FileNotFoundError, ValueError):
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def discard(self, path: Path) -> None:
        """Unlink one item (and its reason file), durably."""
        path.unlink(missing_ok=True)
        (path.parent / (_item_name(path) + REASON_SUFFIX)).unlink(missing_ok=True)
        self._fsync_dir(path.parent)

    def write_record(self, study_id: str, record: dict[str, Any]) -> None:
        """Replace a study's record durably (pseudonymous names and counts only)."""
        data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode("ascii")
        self._write_durably(self.records / f"{study_id}.json", [data])

    def read_record(self, study_id: str) -> dict[str, Any]:
        try:
            loaded = json.loads((self.records / f"{study_id}.json").read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError:
            raise SpoolCorrupt(f"study record {study_id}: not JSON") from None
        return loaded if isinstance(loaded, dict) else {}

    def drop_record(self, study_id: str) -> None:
        (self.records / f"{study_id}.json").unlink(missing_ok=True)

    def prune(self, state: State, study_id: str) -> None:
        """Remove a study's directory in `state` if it is empty (best effort)."""
        directory = self.root / state / study_id
        with self._key_lock:
            if self._writers.get(study_id):
                return
            try:
                directory.rmdir()
            except OSError:
                return
            self._known_dirs.discard((state, study_id))
        self._fsync_dir(directory.parent)

    # -- reading ------------------------------------------------------------------------------

    def instance_files(self) -> Iterator[Path]:
        yield from sorted(self.incoming.glob("*/*.dgs"))

    def read(self, path: Path) -> tuple[InstanceHeader, bytes]:
        """Return the clear header and the decrypted Part 10 bytes of one spool file."""
        blob = path.read_bytes()
        where = f"spool file {path.name}"
        if blob[: len(MAGIC)] != MAGIC:
            raise SpoolCorrupt(f"{where}: not a spool file")
        start = len(MAGIC) + _HEADER_LEN.size
        (length,) = _HEADER_LEN.unpack(blob[len(MAGIC) : start])
        header = _instance_header(blob[start : start + length], path)
        key = self._data_key(header.study_id, create=False)
        try:
            plain = crypto.unseal(key, blob[: start + length], blob[start + length :], where)
        except SpoolCorrupt:
            # another process (the gateway) may have destroyed the study key this process had
            # cached, and a later instance of the study came under a fresh key: read it again
            with self._key_lock:
                self._data_keys.pop(header.study_id, None)
            key = self._data_key(header.study_id, create=False)
            plain = crypto.unseal(key, blob[: start + length], blob[start + length :], where)
        return header, plain


_ITEM_SUFFIXES = (".dgs", ".sealed")


def _item_name(path: Path) -> str:
    """The item's name without its suffix (`<instance-id>`, `manifest-3`)."""
    name = path.name
    for suffix in (REASON_SUFFIX, *_ITEM_SUFFIXES):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _instance_header(raw: bytes, path: Path) -> InstanceHeader:
    try:
        return InstanceHeader(**json.loads(raw))
    except (ValueError, TypeError):
        raise SpoolCorrupt(f"spool file {path.name}: bad header") from None


def _write_all(fd: int, chunks: list[BytesLike]) -> None:
    """One writev for all chunks, continuing after short writes."""
    views = [memoryview(c).cast("B") for c in chunks]
    while views:
        written = os.writev(fd, views)
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]
