"""What the reference receiver keeps: opened instances and manifests, idempotently.

    <storage>/<site>/<study>/<instance>.dcm       the opened DICOM file
    <storage>/<site>/<study>/manifest-<version>.json

Every name is a validated UID, site code or number (never a path from the wire as such). A
file is written to a temporary name, fsynced and renamed: a crash leaves no half file under a
real name. Storing what is already there with the same bytes is a repeat (200); with other
bytes a conflict (409).
"""

from __future__ import annotations

import enum
import hashlib
import os
import tempfile
from pathlib import Path

from gateway.keyfiles import fsync_directory


class Stored(enum.Enum):
    CREATED = 201
    REPEAT = 200
    CONFLICT = 409


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root

    def put(self, site: str, study: str, name: str, data: bytes) -> Stored:
        folder = self.root / site / study
        target = folder / name
        if target.exists():
            same = hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()
            return Stored.REPEAT if same else Stored.CONFLICT
        folder.mkdir(parents=True, exist_ok=True)
        try:
            write_new(target, data)  # fails if another request stored it meanwhile
        except FileExistsError:
            return self.put(site, study, name, data)
        return Stored.CREATED


def write_new(target: Path, data: bytes) -> None:
    """Write `target` durably under its name only when complete (a temporary file, fsynced,
    then linked: FileExistsError if the name is taken), and fsync its folder."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.link(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_directory(target.parent)
