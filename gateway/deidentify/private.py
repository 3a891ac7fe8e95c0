"""The safe-private list (PS3.15 E.3.10, Retain Safe Private Option) as data.

`data/safe_private.json` lists the private attributes of the standard's Table E.3.10-1, each by
private creator, group and element offset, with the reason it is safe. The gateway keeps only
those whose value is a number or a code (`KEPT_VRS`); it leaves out the table's UIDs (they
would bypass the UID map), sequences and binary payloads (they may hold anything, burned-in
pixels included) and free text (it may hold names). Every other private attribute is removed,
in any sequence (`PrivateFilter`, which the walker applies and describe-profile describes).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from gateway.deidentify.descriptors import Identifiers
from gateway.deidentify.elements import CODED, SINGLE_VALUED, TEXT, peek, plausible
from gateway.deidentify.words import Cleaner

KEPT_VRS = frozenset({"AT", "CS", "DS", "FD", "FL", "IS", "SL", "SS", "UL", "US"})


@dataclass(frozen=True)
class SafePrivate:
    """(creator, group, element offset) -> the VR the table gives, for the entries kept."""

    entries: dict[tuple[str, int, int], str]

    @classmethod
    def load(cls) -> SafePrivate:
        text = resources.files("gateway.deidentify").joinpath("data/safe_private.json")
        rows = json.loads(text.read_text(encoding="utf-8"))["entries"]
        return cls(
            {
                (_norm(row["creator"]), int(row["group"], 16), int(row["element"], 16)): row["vr"]
                for row in rows
                if row["vr"] in KEPT_VRS
            }
        )

    def vr(self, creator: str, tag: int) -> str | None:
        """The VR of the private element `tag` reserved by `creator`, if it is on the list."""
        return self.entries.get((_norm(creator), tag >> 16, tag & 0xFF))


def _norm(creator: str) -> str:
    return creator.strip(" \0").upper()


class PrivateFilter:
    """What happens to a private data element (odd group): it goes, except what is on the
    safe-private list when that option is on (`safe` not None), with a value of the VR the
    list gives whose words are all known; its private creator then stays too."""

    def __init__(self, safe: SafePrivate | None, words: Cleaner) -> None:
        self.safe = safe
        self.words = words

    @property
    def code(self) -> str:
        """The PS3.15 Table E.1-1 code that says what is done."""
        return "X" if self.safe is None else "C"

    def describe(self) -> str:
        if self.safe is None:
            return "remove"
        return (
            f"keep the safe-private list only ({len(self.safe.entries)} numbers and codes, "
            "PS3.15 E.3.10, with their private creators); remove the rest"
        )

    def keeps(
        self, ds: Dataset, elem: RawDataElement | DataElement, kept: set[int], ids: Identifiers
    ) -> bool:
        """Whether a private data element is on the safe-private list, with the VR the list
        gives and a value of that VR (its creator's tag is then added to `kept`)."""
        tag = int(elem.tag)
        element = tag & 0xFFFF
        if element < 0x1000 or self.safe is None or not isinstance(elem, RawDataElement):
            return False
        creator_tag = (tag & 0xFFFF0000) | (element >> 8)
        creator = peek(ds, creator_tag)
        name = creator.value if creator is not None else None
        if not isinstance(name, str):
            return False
        listed = self.safe.vr(name, tag)
        if listed is None or listed != elem.VR or not plausible(elem, listed):
            return False
        if listed == "CS" and ids.may_match(elem.value or b"", digits=False):
            return False  # a code that spells an identifier of this instance
        if listed in TEXT | CODED and not self._known_words(tag, listed, elem.value or b""):
            return False  # private text keeps its value only if every word is known
        kept.add(creator_tag)
        return True

    def _known_words(self, tag: int, vr: str, raw: bytes) -> bool:
        """Whether a private text value passes the allow-list of words untouched (it is kept
        as it is or not at all: the private block's meaning is the vendor's)."""
        if not raw.isascii():
            return False
        text = raw.decode("ascii").rstrip("\0 ")
        parts = [text] if vr in SINGLE_VALUED else text.split("\\")
        for part in parts:
            value = part.strip("\0 ")
            _, removed = self.words.code(tag, value) if vr in CODED else self.words.text(value)
            if removed:
                return False
        return True
