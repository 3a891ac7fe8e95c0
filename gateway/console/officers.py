"""Officers' accounts: a name and a password hash each, in one JSON file (mode 0600).

    {"format": 1, "officers": {"a.jansen": "scrypt$32768$8$1$<salt b64>$<hash b64>"}}

Passwords are hashed with scrypt (RFC 7914; `hashlib.scrypt`, OpenSSL's): n = 2^15, r = 8,
p = 1 - about 32 MiB and 50-100 ms per check, which makes guessing a stolen file slow. The
parameters are stored with each hash, so they can be raised later without breaking old
accounts. Names are short ASCII (`NAME`): they appear in the audit trail.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
from pathlib import Path

from gateway.errors import GatewayError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", re.ASCII)
MIN_PASSWORD = 12
_N, _R, _P = 2**15, 8, 1
_MAXMEM = 64 * 1024 * 1024
_FORMAT = 1


class OfficerError(GatewayError):
    """An officers file that cannot be read or written, or an unusable name or password
    (messages never quote a password)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, maxmem=_MAXMEM, dklen=32
    )
    return "$".join(["scrypt", str(_N), str(_R), str(_P), _b64(salt), _b64(digest)])


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


#: checked when a name is unknown, so that an unknown name costs what a known one does
_DECOY = hash_password(secrets.token_hex(16))


class Officers:
    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, str]:
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise OfficerError(
                f"{self.path}: not an officers file ({type(exc).__name__})"
            ) from None
        if not isinstance(document, dict) or document.get("format") != _FORMAT:
            raise OfficerError(f"{self.path}: not an officers file of format {_FORMAT}")
        officers = document.get("officers")
        if not isinstance(officers, dict):
            raise OfficerError(f"{self.path}: no officers table")
        return {str(k): str(v) for k, v in officers.items()}

    def authenticate(self, name: str, password: str) -> bool:
        """Whether `password` is `name`'s (the same work for an unknown name)."""
        stored = self.read().get(name) if NAME.fullmatch(name) else None
        ok = check_password(password, stored or _DECOY)
        return ok and stored is not None

    def set(self, name: str, password: str) -> bool:
        """Add the officer, or set a new password; True when the name is new."""
        if not NAME.fullmatch(name):
            raise OfficerError("an officer's name is 1-64 ASCII letters, digits, '.', '_', '-'")
        if len(password) < MIN_PASSWORD:
            raise OfficerError(f"a password has at least {MIN_PASSWORD} characters")
        officers = self.read()
        new = name not in officers
        officers[name] = hash_password(password)
        self._write(officers)
        return new

    def remove(self, name: str) -> bool:
        officers = self.read()
        if officers.pop(name, None) is None:
            return False
        self._write(officers)
        return True

    def _write(self, officers: dict[str, str]) -> None:
        body = json.dumps({"format": _FORMAT, "officers": officers}, indent=1, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(body + "\n")
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
