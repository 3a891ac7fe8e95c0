"""Study keys: each study's originals are encrypted under its own data key, wrapped by the
master key in `keys/<study-id>.key`; destroying that file erases the study (crypto-erasure),
whatever copies of its files remain.

One lock orders key hand-out against destruction: a key is never handed to a writer after it
was destroyed, and a study with a store in progress (`writing`) keeps its key.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

from gateway.errors import SpoolCorrupt
from gateway.spool import crypto
from gateway.spool.durable import Durable
from gateway.spool.layout import Layout

_CACHE_SIZE = 256


class StudyKeys:
    def __init__(self, layout: Layout, master: crypto.SpoolKeys, durable: Durable) -> None:
        self._layout = layout
        self._master = master
        self._durable = durable
        #: held while a key is handed out or destroyed, and by whoever decides a study is
        #: idle (`Spool`): nothing can start writing under a key in between
        self.lock = threading.Lock()
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._writers: dict[str, int] = {}  # study id -> stores in progress

    def study_id(self, study_instance_uid: str) -> str:
        """The study's spool id: a keyed hash of its Study Instance UID."""
        return self._master.study_id(study_instance_uid)

    @contextmanager
    def writing(self, study_id: str) -> Iterator[None]:
        """A store of the study is in progress for the duration."""
        with self.lock:
            self._writers[study_id] = self._writers.get(study_id, 0) + 1
        try:
            yield
        finally:
            with self.lock:
                left = self._writers[study_id] - 1
                if left:
                    self._writers[study_id] = left
                else:
                    del self._writers[study_id]

    def busy(self, study_id: str) -> bool:
        """A store of the study is in progress (call with `lock` held)."""
        return bool(self._writers.get(study_id))

    def exists(self, study_id: str) -> bool:
        """The study's key file exists (call with `lock` held)."""
        return self._layout.key_path(study_id).exists()

    def get(self, study_id: str, *, create: bool) -> bytes:
        """The study's data key; made (durably) when `create` and there is none, else
        SpoolCorrupt."""
        with self.lock:
            key = self._cache.get(study_id)
            if key is None:
                key = self._load(study_id, create=create)
                self._cache[study_id] = key
                if len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(study_id)
            return key

    def forget(self, study_id: str) -> None:
        """Drop the cached key (another process may have destroyed it and made a new one)."""
        with self.lock:
            self._cache.pop(study_id, None)

    def destroy(self, study_id: str) -> None:
        """Destroy the study's key, durably (call with `lock` held)."""
        self._cache.pop(study_id, None)
        self._layout.key_path(study_id).unlink(missing_ok=True)
        self._durable.sync(self._layout.keys)

    def _load(self, study_id: str, *, create: bool) -> bytes:
        path = self._layout.key_path(study_id)
        try:
            return self._master.unwrap(path.read_bytes(), f"study key {study_id}")
        except FileNotFoundError:
            if not create:
                raise SpoolCorrupt(f"study key {study_id} is gone (study erased?)") from None
            key = crypto.new_data_key()
            self._durable.write(path, [self._master.wrap(key)])
            return key
