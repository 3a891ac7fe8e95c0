"""The receiver's HPKE key pair: suites, key files and key ids.

Default suite: ML-KEM-768 + X25519 hybrid KEM (post-quantum safe), HKDF-SHA256, AES-256-GCM
(RFC 9180 with cryptography's `hpke` module); X25519 alone for receivers that need it.

Key files are small JSON documents (mode 0600 for the private one) naming the suite and
holding the raw key components in base64: a private key as the ML-KEM-768 seed (64 bytes) and
the X25519 private key (32), a public key as the ML-KEM-768 encapsulation key (1,184 bytes) and
the X25519 public key (32). The key id is derived, never stored alone: the first 16 hex digits
of SHA-256 over the public key components; a file whose recorded id differs is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from gateway.errors import KeyFileError
from gateway.keyfiles import write_key_file

SuiteName = Literal["mlkem768-x25519", "x25519"]
DEFAULT_SUITE: SuiteName = "mlkem768-x25519"
_KEMS = {"mlkem768-x25519": hpke.KEM.MLKEM768_X25519, "x25519": hpke.KEM.X25519}
_FORMAT = "dicom-gateway-hpke-1"

HpkePrivateKey = hpke.MLKEM768X25519PrivateKey | x25519.X25519PrivateKey
HpkePublicKey = hpke.MLKEM768X25519PublicKey | x25519.X25519PublicKey


def suite(name: SuiteName) -> hpke.Suite:
    return hpke.Suite(_KEMS[name], hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


@dataclass(frozen=True)
class PublicKey:
    suite: SuiteName
    key: HpkePublicKey
    key_id: str


@dataclass(frozen=True)
class PrivateKey:
    suite: SuiteName
    key: HpkePrivateKey
    public: PublicKey


KeyT = TypeVar("KeyT", PublicKey, PrivateKey)


def _raw_public(x: x25519.X25519PublicKey, m: mlkem.MLKEM768PublicKey | None) -> dict[str, bytes]:
    parts = {"x25519": x.public_bytes_raw()}
    if m is not None:
        parts["mlkem768"] = m.public_bytes_raw()
    return parts


def _key_id(parts: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(parts):
        digest.update(name.encode() + b"\0" + parts[name])
    return digest.hexdigest()[:16]


def _public(name: SuiteName, parts: dict[str, bytes]) -> PublicKey:
    x = x25519.X25519PublicKey.from_public_bytes(parts["x25519"])
    key: HpkePublicKey = x
    if name == "mlkem768-x25519":
        m = mlkem.MLKEM768PublicKey.from_public_bytes(parts["mlkem768"])
        key = hpke.MLKEM768X25519PublicKey(m, x)
    return PublicKey(name, key, _key_id(parts))


def generate(name: SuiteName = DEFAULT_SUITE) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The raw components of a new key pair: (private, public)."""
    x = x25519.X25519PrivateKey.generate()
    secret = {"x25519": x.private_bytes_raw()}
    m = None
    if name == "mlkem768-x25519":
        m = mlkem.MLKEM768PrivateKey.generate()
        secret["mlkem768"] = m.private_bytes_raw()  # the 64-byte seed
    return secret, _raw_public(x.public_key(), m.public_key() if m is not None else None)


def _private(name: SuiteName, secret: dict[str, bytes]) -> PrivateKey:
    x = x25519.X25519PrivateKey.from_private_bytes(secret["x25519"])
    key: HpkePrivateKey = x
    m = None
    if name == "mlkem768-x25519":
        m = mlkem.MLKEM768PrivateKey.from_seed_bytes(secret["mlkem768"])
        key = hpke.MLKEM768X25519PrivateKey(m, x)
    parts = _raw_public(x.public_key(), m.public_key() if m is not None else None)
    return PrivateKey(name, key, _public(name, parts))


def write_pair(private_path: Path, public_path: Path, name: SuiteName = DEFAULT_SUITE) -> str:
    """Create a key pair: the private file mode 0600, the public file beside it (it may be
    handed to the gateway's operators); never overwrites. Returns the key id."""
    secret, public = generate(name)
    key_id = _key_id(public)
    write_key_file(private_path, _document("private", name, key_id, secret))
    write_key_file(public_path, _document("public", name, key_id, public))
    return key_id


def _document(kind: str, name: SuiteName, key_id: str, parts: dict[str, bytes]) -> bytes:
    body = {
        "format": _FORMAT,
        "kind": kind,
        "suite": name,
        "key_id": key_id,
        **{k: base64.b64encode(v).decode("ascii") for k, v in sorted(parts.items())},
    }
    return (json.dumps(body, indent=1) + "\n").encode("ascii")


def _read(path: Path, kind: str, private: bool) -> tuple[SuiteName, dict[str, bytes], str]:
    try:
        if private and path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"{path}: private key file must be mode 0600")
        document: Any = json.loads(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read {kind} key: {exc.__class__.__name__}") from None
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise KeyFileError(f"{path}: not a dicom-gateway HPKE key file")
    name = document.get("suite")
    if document.get("kind") != kind or name not in _KEMS:
        raise KeyFileError(f"{path}: not a {kind} key of a known suite")
    wanted = ["x25519"] + (["mlkem768"] if name == "mlkem768-x25519" else [])
    try:
        parts = {part: base64.b64decode(document[part], validate=True) for part in wanted}
    except (KeyError, TypeError, binascii.Error):
        raise KeyFileError(f"{path}: key components missing or not base64") from None
    return name, parts, str(document.get("key_id", ""))


def read_public(path: Path) -> PublicKey:
    name, parts, recorded = _read(path, "public", private=False)
    return _checked(path, recorded, lambda: _public(name, parts))


def read_private(path: Path) -> PrivateKey:
    name, parts, recorded = _read(path, "private", private=True)
    return _checked(path, recorded, lambda: _private(name, parts))


def _checked(path: Path, recorded: str, build: Callable[[], KeyT]) -> KeyT:
    """The key `build` makes from a file's components, if they fit and match its key id."""
    try:
        key = build()
    except ValueError:
        raise KeyFileError(f"{path}: key components of the wrong size") from None
    public = key.public if isinstance(key, PrivateKey) else key
    if public.key_id != recorded:
        raise KeyFileError(f"{path}: recorded key id does not match the key")
    return key
