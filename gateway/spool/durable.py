"""Durable writes and renames in the spool's directories, with shared directory fsyncs.

A write is tmp file -> write -> fdatasync -> rename -> fsync(directory), all in one directory,
so one directory fsync makes it durable (POSIX keeps the name in the directory). Threads that
change the same directory share fsyncs (group commit): one that began after a caller's change
covers it. Directories do not wait for each other; descriptors are cached (opening one costs
as much as the sync).
"""

from __future__ import annotations

import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path

from gateway.spool.crypto import BytesLike
from gateway.spool.layout import PARTIAL

_DIR_FD_CACHE_SIZE = 64


class _DirSync:
    """A cached directory descriptor and its fsync generations."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()  # one fsync of this directory at a time
        self.requested = 0  # changes announced (guarded by the directories' lock)
        self.synced = 0  # changes known durable
        self.users = 0
        self.evicted = False

    def close(self) -> None:
        """Close now, or when the last thread using it is done (callers hold the
        directories' lock)."""
        self.evicted = True
        if self.users == 0 and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Durable:
    """Makes files and renames durable; thread-safe."""

    def __init__(self) -> None:
        self._syncs: OrderedDict[Path, _DirSync] = OrderedDict()
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            while self._syncs:
                self._syncs.popitem()[1].close()

    def write(self, final: Path, chunks: list[BytesLike]) -> None:
        """tmp -> write -> fdatasync -> rename -> fsync(dir); on any failure nothing remains."""
        tmp = final.with_name(f".{secrets.token_hex(16)}{PARTIAL}")
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
            self.sync(final.parent)
        except BaseException:
            (final if renamed else tmp).unlink(missing_ok=True)
            raise

    def sync(self, directory: Path) -> None:
        """fsync a directory after a change in it (rename, unlink), sharing the fsync with
        other threads that changed it meanwhile."""
        with self._lock:
            sync = self._syncs.get(directory)
            if sync is None:
                sync = self._syncs[directory] = _DirSync(
                    os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
                )
                if len(self._syncs) > _DIR_FD_CACHE_SIZE:
                    self._syncs.popitem(last=False)[1].close()
            else:
                self._syncs.move_to_end(directory)
            sync.requested += 1
            ticket = sync.requested
            sync.users += 1
        try:
            with sync.lock:
                if sync.synced >= ticket:
                    return  # an fsync that began after this change has finished
                with self._lock:
                    upto = sync.requested  # every change so far is in the directory now
                os.fsync(sync.fd)
                sync.synced = upto
        finally:
            with self._lock:
                sync.users -= 1
                if sync.evicted and sync.users == 0:
                    sync.close()


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
