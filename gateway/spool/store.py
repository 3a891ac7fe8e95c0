"""The durable, encrypted spool: acknowledge only what is on disk.

Layout (no PHI in any name: study directories are keyed hashes, instance files are random):

    <spool>/.lock                          held (flock) by the one gateway that owns the spool
    <spool>/keys/<study-id>.key            the study's data key, wrapped by the master key
    <spool>/incoming/<study-id>/<instance-id>.dgs   one received instance, encrypted
    .../.<random>.part                     a write in progress, beside its final name; removed
                                           at start (it was never acknowledged)

A write is tmp file -> write -> fdatasync -> rename -> fsync(directory), all in one directory,
so one directory fsync makes it durable (POSIX keeps the name in the directory).

A spool file is `MAGIC | u32 header length | header JSON | nonce | AES-GCM(Part 10 bytes)`.
The header holds only what later stages need without decrypting (configured peer name, receive
time, sizes, SOP class and transfer syntax UIDs, which are standard UIDs, not patient data).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import shutil
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from gateway.errors import SpoolCorrupt, SpoolError, SpoolFull, SpoolLocked
from gateway.keyfiles import fsync_directory, read_key
from gateway.settings import SpoolSettings
from gateway.spool import crypto
from gateway.spool.crypto import BytesLike

MAGIC = b"DGSPOOL1"
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
        self.root = settings.directory
        self.reserve = settings.min_free_bytes
        self._keys = keys
        self.incoming = self.root / "incoming"
        self.key_dir = self.root / "keys"
        self._lock_file: IO[bytes] | None = None
        self._key_lock = threading.Lock()
        self._data_keys: OrderedDict[str, bytes] = OrderedDict()
        self._known_dirs: set[str] = set()
        self._local = threading.local()
        self._dir_fds: OrderedDict[Path, int] = OrderedDict()
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
        for directory in (self.root, self.incoming, self.key_dir):
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for directory in (self.root.parent, self.root):  # the new entries themselves durable
            fsync_directory(directory)
        lock_fd = os.open(self.root / ".lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._lock_file = os.fdopen(lock_fd, "ab")
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SpoolLocked(f"{self.root}: another gateway process owns this spool") from None
        for leftover in self.partial_files():
            leftover.unlink()

    def partial_files(self) -> list[Path]:
        """Writes that never completed: nothing here was ever acknowledged."""
        return [*self.incoming.glob("*/.*.part"), *self.key_dir.glob(".*.part")]

    def close(self) -> None:
        with self._dir_lock:
            while self._dir_fds:
                os.close(self._dir_fds.popitem()[1])
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

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

    def _study_dir(self, study_id: str) -> Path:
        directory = self.incoming / study_id
        if study_id not in self._known_dirs:
            directory.mkdir(mode=0o700, exist_ok=True)
            self._fsync_dir(self.incoming)
            self._known_dirs.add(study_id)
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
        """fsync a directory through a cached descriptor (opening it costs as much as the sync)."""
        with self._dir_lock:
            fd = self._dir_fds.get(directory)
            if fd is None:
                fd = self._dir_fds[directory] = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                if len(self._dir_fds) > _DIR_FD_CACHE_SIZE:
                    os.close(self._dir_fds.popitem(last=False)[1])
            else:
                self._dir_fds.move_to_end(directory)
            os.fsync(fd)

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
        directory = self.incoming / study_id
        with self._key_lock:
            self._data_keys.pop(study_id, None)
            (self.key_dir / f"{study_id}.key").unlink(missing_ok=True)
            self._fsync_dir(self.key_dir)
            self._known_dirs.discard(study_id)
            files = list(directory.iterdir()) if directory.is_dir() else []
            for path in files:
                path.unlink()
            if directory.is_dir():
                directory.rmdir()
                self._fsync_dir(self.incoming)
        return sum(1 for p in files if p.suffix == ".dgs")

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
        header = InstanceHeader(**json.loads(blob[start : start + length]))
        key = self._data_key(header.study_id, create=False)
        return header, crypto.unseal(key, blob[: start + length], blob[start + length :], where)


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
