"""The safe-private list (PS3.15 E.3.10, Retain Safe Private Option) as data.

`data/safe_private.json` lists the private attributes of the standard's Table E.3.10-1, each by
private creator, group and element offset, with the reason it is safe. The gateway keeps only
those whose value is a number or a code (`KEPT_VRS`); it leaves out the table's UIDs (they
would bypass the UID map), sequences and binary payloads (they may hold anything, burned-in
pixels included) and free text (it may hold names). Every other private attribute is removed,
in any sequence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

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
