"""One UID map for everything an instance references (PS3.15 E.1.1, action U).

Every instance-specific UID — top level or deep in a sequence — goes through the same vault
mapping, so a reference (ReferencedSOPInstanceUID, FrameOfReferenceUID, ...) still points at the
new UID of what it referenced, across instances, associations and restarts. UIDs the DICOM
standard itself defines (SOP classes, transfer syntaxes, coding schemes, ...) identify nothing
and are never changed. New UIDs are random (not derived from the original): `2.25.<uuid4>`
(PS3.5 B.2) or a site's own root followed by random digits.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from typing import Protocol

from pydicom.uid import UID

UID_KIND = "uid"
_MAX_UID = 64
_REMEMBERED = 4096  # UIDs whose "standard or not" answer is kept (SOP classes, a study's UIDs)


class PseudonymStore(Protocol):
    """What the mapper needs of the vault."""

    def pseudonym(self, kind: str, original: str, make: Callable[[], str]) -> str: ...


def is_standard_uid(uid: str) -> bool:
    """True for UIDs the standard defines (PS3.6 Annex A): never remapped."""
    return UID(uid).name != uid  # pydicom names exactly the UIDs of PS3.6 Annex A


def new_uid(root: str | None = None) -> str:
    """A fresh random UID: 2.25.<128-bit UUID as an integer>, or <root>.<random digits>."""
    if root is None:
        return f"2.25.{uuid.uuid4().int}"
    room = _MAX_UID - len(root) - 1
    if room < 10:
        raise ValueError("UID root too long to leave room for random digits")
    digits = str(secrets.randbelow(10 ** min(room, 38)))
    return f"{root}.{digits}"


class UidMapper:
    def __init__(self, store: PseudonymStore, root: str | None = None) -> None:
        self.store = store
        self.root = root
        self._standard: dict[str, bool] = {}  # UID -> defined by the standard (bounded)

    def map(self, uid: str) -> str:
        """The new UID for `uid`; standard UIDs and empty values pass unchanged."""
        uid = uid.strip("\0 ")
        if not uid:
            return uid
        standard = self._standard.get(uid)
        if standard is None:
            standard = is_standard_uid(uid)
            if standard or len(self._standard) < _REMEMBERED:
                self._standard[uid] = standard
        if standard:
            return uid
        return self.store.pseudonym(UID_KIND, uid, lambda: new_uid(self.root))

    def map_value(self, value: str) -> str:
        """A UI value, possibly multi-valued (backslash-separated)."""
        return "\\".join(self.map(part) for part in value.split("\\"))
