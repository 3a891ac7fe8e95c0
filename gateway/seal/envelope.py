"""One HPKE envelope per de-identified instance or manifest, bound to its name.

The HPKE `info` (RFC 9180 5.1: bound into the key schedule, so a wrong `info` fails to open)
names what the body is: protocol version, kind, site code, study, and the instance UID or the
manifest version - fields that never hold NUL (UIDs are digits and dots, site codes capitals
and digits), joined by NUL:

    b"dicom-gateway/1\\0instance\\0<site>\\0<study uid>\\0<instance uid>"
    b"dicom-gateway/1\\0manifest\\0<site>\\0<study uid>\\0<version>"
    b"dicom-gateway/1\\0result\\0<site>\\0<study uid>\\0<result id>"   (to the gateway)

A body sealed for one study and instance therefore cannot be opened as another: a replay under
another URL is refused by the receiver, which rebuilds `info` from the URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import InvalidTag

from gateway.errors import SealError
from gateway.seal.keys import PrivateKey, PublicKey, suite

PROTOCOL = "dicom-gateway/1"
#: Protocol v1 on the wire (docs/protocol.md): the body's media type and the headers that name
#: what the sender sealed (HTTP header names are case-insensitive).
CONTENT_TYPE = "application/vnd.dicom-gateway.sealed"
SITE_HEADER = "Dicom-Gateway-Site"
KEY_ID_HEADER = "Dicom-Gateway-Key-Id"
VERSION_HEADER = "Dicom-Gateway-Manifest-Version"
STUDY_HEADER = "Dicom-Gateway-Study"
_FIELD = re.compile(r"[0-9A-Za-z.\-]{1,64}")


@dataclass(frozen=True)
class Name:
    """What a sealed body is: an instance of a study, a study's manifest version, or a result
    of a study coming back (sealed by the analysis server to the gateway's own key)."""

    kind: Literal["instance", "manifest", "result"]
    site: str
    study: str
    item: str  # the instance UID, the manifest version as decimal digits, or the result id

    def __post_init__(self) -> None:
        for value in (self.site, self.study, self.item):
            if not _FIELD.fullmatch(value):
                raise ValueError("a sealed name holds only letters, digits, '.' and '-'")

    def info(self) -> bytes:
        return "\0".join((PROTOCOL, self.kind, self.site, self.study, self.item)).encode("ascii")


@dataclass(frozen=True)
class Sealed:
    """A sealed body, what it is, and the id of the key it was sealed to."""

    name: Name
    key_id: str
    body: bytes


def seal(data: bytes, name: Name, key: PublicKey) -> bytes:
    """The HPKE envelope (encapsulated key, then ciphertext) of `data` for `name`."""
    return suite(key.suite).encrypt(data, key.key, info=name.info())


def sealed(data: bytes, name: Name, key: PublicKey) -> Sealed:
    return Sealed(name, key.key_id, seal(data, name, key))


def open_sealed(body: bytes, name: Name, key: PrivateKey) -> bytes:
    """The plaintext of `body`, if it was sealed to `key` for exactly `name`."""
    try:
        return suite(key.suite).decrypt(body, key.key, info=name.info())
    except (InvalidTag, ValueError):
        raise SealError("the body does not open under this name and key") from None
