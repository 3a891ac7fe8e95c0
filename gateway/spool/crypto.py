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
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from gateway.errors import SpoolCorrupt

BytesLike = bytes | bytearray | memoryview
NONCE_BYTES = 12


def _derive(master: bytes, purpose: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=None, info=b"dicom-gateway/spool/" + purpose).derive(
        master
    )


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
