"""Encryption at rest for the spool (DESIGN promise 5).

- A site **master key** (32 random bytes, hex in a 0600 file or an environment variable) never
  touches data directly. HKDF derives from it a key-encryption key and a naming key.
- Every study gets a random 256-bit **data key**, stored wrapped (RFC 3394 AES key wrap) under
  the key-encryption key. Erasing a study = destroying its wrapped key, then unlinking its files.
- Each instance is one AES-256-GCM message under its study's data key; the file's plaintext
  header (no PHI) is the associated data, so header and body cannot be swapped or altered.
- Study directory names are HMAC-SHA256(naming key, StudyInstanceUID): stable, but neither a UID
  nor guessable from one without the master key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from gateway.errors import KeyFileError, SpoolCorrupt
from gateway.settings import SecretSource

BytesLike = bytes | bytearray | memoryview
MASTER_KEY_BYTES = 32
NONCE_BYTES = 12


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"dicom-gateway/spool/" + purpose).derive(
        master
    )


def _parse_master_key(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise KeyFileError(f"{where}: not a hex-encoded key") from None
    if len(key) != MASTER_KEY_BYTES:
        raise KeyFileError(f"{where}: must hold {MASTER_KEY_BYTES} bytes, holds {len(key)}")
    return key


def read_master_key(secret: SecretSource) -> bytes:
    """Read the master key; a key file readable by group or others is refused."""
    if secret.env is not None:
        value = os.environ.get(secret.env)
        if not value:
            raise KeyFileError(f"environment variable {secret.env} is not set")
        return _parse_master_key(value, f"environment variable {secret.env}")
    assert secret.file is not None
    try:
        mode = secret.file.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"{secret.file}: key file must be mode 0600, is {mode & 0o777:04o}")
        return _parse_master_key(secret.file.read_text(encoding="ascii"), str(secret.file))
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(
            f"{secret.file}: cannot read key file: {exc.__class__.__name__}"
        ) from None


def write_key_file(path: Path, content: bytes) -> None:
    """Create `path` with mode 0600, durably; never overwrite an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_directory(path.parent)


def generate_master_key_file(path: Path) -> None:
    write_key_file(path, secrets.token_bytes(MASTER_KEY_BYTES).hex().encode("ascii") + b"\n")


def fsync_directory(path: Path) -> None:
    """Make a rename or create in `path` durable (POSIX: the entry lives in the directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class SpoolKeys:
    """Keys derived from the master key; `kek_id` tells which master key wrapped a study key."""

    kek: bytes
    naming: bytes
    kek_id: bytes

    @classmethod
    def from_master(cls, master: bytes) -> SpoolKeys:
        kek = _derive(master, b"kek/v1")
        return cls(kek, _derive(master, b"study-name/v1"), hashlib.sha256(kek).digest()[:8])

    def study_id(self, study_instance_uid: str) -> str:
        digest = hmac.new(self.naming, study_instance_uid.encode("ascii", "replace"), "sha256")
        return digest.hexdigest()[:32]

    def wrap(self, data_key: bytes) -> bytes:
        return self.kek_id + aes_key_wrap(self.kek, data_key)

    def unwrap(self, blob: bytes, where: str) -> bytes:
        if blob[:8] != self.kek_id:
            raise SpoolCorrupt(f"{where}: study key was wrapped with another master key")
        try:
            return aes_key_unwrap(self.kek, blob[8:])
        except InvalidUnwrap:
            raise SpoolCorrupt(f"{where}: study key does not unwrap") from None


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


class Sealer:
    """AES-256-GCM over several chunks into one reused buffer: `nonce || ciphertext || tag`.

    The same bytes as `AESGCM.encrypt` of the concatenated chunks, without building that
    concatenation: a fresh 0.5 MiB allocation per instance costs more (page faults) than the
    encryption itself. One Sealer per thread; the returned views are valid until the next call.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def seal(
        self, data_key: bytes, associated: bytes, chunks: Sequence[BytesLike]
    ) -> list[BytesLike]:
        size = sum(len(memoryview(c)) for c in chunks) + 16
        if len(self._buffer) < size:
            self._buffer = bytearray(size)
        nonce = secrets.token_bytes(NONCE_BYTES)
        encryptor = Cipher(algorithms.AES(data_key), modes.GCM(nonce)).encryptor()
        encryptor.authenticate_additional_data(associated)
        out = memoryview(self._buffer)
        written = 0
        for chunk in chunks:
            written += encryptor.update_into(chunk, out[written:])
        encryptor.finalize()
        return [nonce, out[:written], encryptor.tag]


def unseal(data_key: bytes, associated: bytes, sealed: bytes, where: str) -> bytes:
    try:
        return AESGCM(data_key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
    except InvalidTag:
        raise SpoolCorrupt(f"{where}: instance does not authenticate") from None
