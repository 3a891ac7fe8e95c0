"""The spool's file formats: what is written in clear beside the encrypted bodies.

A spool file (an original) is `MAGIC | u32 header length | header JSON | nonce |
AES-GCM(Part 10 bytes)`. The header holds only what later stages need without decrypting
(configured peer name, receive time, sizes, SOP class and transfer syntax UIDs, which are
standard UIDs, not patient data); the whole prefix is the AEAD's associated data.

A sealed file is `SEALED_MAGIC | u32 header length | header JSON | HPKE envelope`; its header
holds the pseudonymous names the request needs (`OutgoingHeader`), never an original value.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

from gateway.errors import SpoolCorrupt

MAGIC = b"DGSPOOL1"
SEALED_MAGIC = b"DGSEALD1"
HEADER_LENGTH = struct.Struct(">I")


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

    def prefix(self) -> bytes:
        """What an original's file begins with (and its encryption authenticates)."""
        encoded = self.encode()
        return MAGIC + HEADER_LENGTH.pack(len(encoded)) + encoded


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

    def prefix(self) -> list[bytes]:
        encoded = self.encode()
        return [SEALED_MAGIC, HEADER_LENGTH.pack(len(encoded)), encoded]


def split_original(blob: bytes, path: Path) -> tuple[InstanceHeader, int]:
    """An original's clear header and where its encrypted body starts."""
    if blob[: len(MAGIC)] != MAGIC or len(blob) < len(MAGIC) + HEADER_LENGTH.size:
        raise SpoolCorrupt(f"spool file {path.name}: not a spool file")
    start = len(MAGIC) + HEADER_LENGTH.size
    (length,) = HEADER_LENGTH.unpack(blob[len(MAGIC) : start])
    return instance_header(blob[start : start + length], path), start + length


def read_header(path: Path) -> InstanceHeader:
    """The clear header of an original, without decrypting it."""
    with path.open("rb") as f:
        start = f.read(len(MAGIC) + HEADER_LENGTH.size)
        if start[: len(MAGIC)] != MAGIC or len(start) < len(MAGIC) + HEADER_LENGTH.size:
            raise SpoolCorrupt(f"spool file {path.name}: not a spool file")
        (length,) = HEADER_LENGTH.unpack(start[len(MAGIC) :])
        return instance_header(f.read(length), path)


def read_sealed(path: Path, *, body: bool = True) -> tuple[OutgoingHeader, bytes]:
    """The clear header and (unless body=False) the sealed body of a sealed file."""
    with path.open("rb") as f:
        start = f.read(len(SEALED_MAGIC) + HEADER_LENGTH.size)
        if start[: len(SEALED_MAGIC)] != SEALED_MAGIC or len(start) < HEADER_LENGTH.size + 8:
            raise SpoolCorrupt(f"sealed file {path.name}: not a sealed file")
        (length,) = HEADER_LENGTH.unpack(start[len(SEALED_MAGIC) :])
        try:
            header = OutgoingHeader(**json.loads(f.read(length)))
        except (ValueError, TypeError):
            raise SpoolCorrupt(f"sealed file {path.name}: bad header") from None
        return header, (f.read() if body else b"")


def instance_header(raw: bytes, path: Path) -> InstanceHeader:
    try:
        return InstanceHeader(**json.loads(raw))
    except (ValueError, TypeError):
        raise SpoolCorrupt(f"spool file {path.name}: bad header") from None
