"""Site key files: 32 random bytes as hex, in a mode-0600 file or an environment variable.

Shared by the spool (master key) and the vault (vault key); `dicom-gateway keys` creates them.
Other secrets (a vault database's password) are read the same way (`read_secret_text`).
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from gateway.errors import KeyFileError
from gateway.settings import SecretSource

KEY_BYTES = 32


def _parse_key(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise KeyFileError(f"{where}: not a hex-encoded key") from None
    if len(key) != KEY_BYTES:
        raise KeyFileError(f"{where}: must hold {KEY_BYTES} bytes, holds {len(key)}")
    return key


def read_key(secret: SecretSource) -> bytes:
    """Read a site key; a key file readable by group or others is refused."""
    where = f"environment variable {secret.env}" if secret.env is not None else str(secret.file)
    return _parse_key(read_secret_text(secret), where)


def read_secret_text(secret: SecretSource) -> str:
    """A secret's text (a key, a database password): from its environment variable, or from
    its file, which must not be readable by group or others; surrounding white space goes."""
    if secret.env is not None:
        value = os.environ.get(secret.env)
        if not value:
            raise KeyFileError(f"environment variable {secret.env} is not set")
        return value.strip()
    assert secret.file is not None
    try:
        mode = secret.file.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"{secret.file}: key file must be mode 0600, is {mode & 0o777:04o}")
        return secret.file.read_text(encoding="utf-8").strip()
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


def generate_key_file(path: Path) -> None:
    write_key_file(path, secrets.token_bytes(KEY_BYTES).hex().encode("ascii") + b"\n")


def fsync_directory(path: Path) -> None:
    """Make a rename or create in `path` durable (POSIX: the entry lives in the directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
