"""What de-identification changed in a header: every element removed, replaced or added, by tag
path, with the values before and after as a person reads them.

Paths are the release check's (`gateway.release.check`): `(gggg,eeee)`, and inside a sequence
`(gggg,eeee)[item].(gggg,eeee)`, items numbered from 0. Sequences are compared item by item
(by position); an item or a whole sequence on one side only is listed with every element in it.
The File Meta Information (group 0002) is not compared: it describes the file, and the gateway
writes its own (PS3.10 7.1).

The values are PHI: they are for an authenticated privacy officer's eyes (the console, the
`--preview` page), never for a log, a metric or an exception message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from gateway.deidentify.failures import guard
from gateway.errors import Unprocessable

#: values longer than this many characters are cut (with "…") for display
SHOWN = 200
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_UNREADABLE = "(unreadable)"

Kind = Literal["removed", "replaced", "added"]


@dataclass(frozen=True)
class Change:
    """One header difference. `before`/`after` are display strings (None on the side where
    the element is absent): text as read, cut at `SHOWN` characters; binary values as their
    length ("1024 bytes"), or as text when an unknown-VR value is printable; a sequence as its
    item count ("2 items")."""

    path: str
    keyword: str
    kind: Kind
    before: str | None
    after: str | None


def diff(original: Dataset, output: Dataset | None) -> tuple[Change, ...]:
    """Every difference between `original` and `output`, in tag order, sequences depth first;
    () when there is no output."""
    if output is None:
        return ()
    changes: list[Change] = []
    _compare(original, output, "", changes)
    return tuple(changes)


def _compare(before: Dataset | None, after: Dataset | None, prefix: str, out: list[Change]) -> None:
    tags: set[BaseTag] = set(before.keys() if before is not None else ())
    tags |= set(after.keys() if after is not None else ())
    for tag in sorted(tags):
        old = _element(before, tag)
        new = _element(after, tag)
        path = f"{prefix}({tag.group:04X},{tag.element:04X})"
        if old is not None and new is not None and old.VR == new.VR == "SQ":
            _compare_items(old, new, path, out)
            continue
        shown_old, shown_new = _full(old), _full(new)
        if shown_old == shown_new and _same(old, new):
            continue
        kind: Kind = "removed" if new is None else "added" if old is None else "replaced"
        keyword = _keyword(old if old is not None else new)
        out.append(Change(path, keyword, kind, _cut(shown_old), _cut(shown_new)))
        for side, first in ((old, True), (new, False)):
            if side is not None and side.VR == "SQ":  # on one side only: all that is in it
                for index, item in enumerate(side.value):
                    inside = f"{path}[{index}]."
                    _compare(item if first else None, None if first else item, inside, out)


def _compare_items(old: DataElement, new: DataElement, path: str, out: list[Change]) -> None:
    if len(old.value) != len(new.value):
        out.append(Change(path, _keyword(old), "replaced", _full(old), _full(new)))
    for index in range(max(len(old.value), len(new.value))):
        item_old = old.value[index] if index < len(old.value) else None
        item_new = new.value[index] if index < len(new.value) else None
        _compare(item_old, item_new, f"{path}[{index}].", out)


def _element(ds: Dataset | None, tag: BaseTag) -> DataElement | None:
    """The element at `tag`, converted from its raw bytes; a value pydicom cannot convert is
    shown as unreadable (the guard keeps pydicom's messages and warnings, which may quote the
    value, from anywhere)."""
    if ds is None or tag not in ds:
        return None
    try:
        with guard("unreadable"):
            return ds[tag]
    except Unprocessable:
        return DataElement(tag, "UN", _UNREADABLE.encode())


def _keyword(elem: DataElement | None) -> str:
    if elem is None:
        return ""
    return str(elem.keyword or elem.name)


def _full(elem: DataElement | None) -> str | None:
    """The element's value as a person reads it, uncut."""
    if elem is None:
        return None
    value = elem.value
    if elem.VR == "SQ":
        count = len(value)
        return f"{count} item" if count == 1 else f"{count} items"
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray, memoryview)) or elem.VR in _BINARY:
        return _binary(elem.VR, value)
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    return str(value)


def _binary(vr: str, value: object) -> str:
    raw = bytes(value) if isinstance(value, (bytes, bytearray, memoryview)) else b""
    if vr == "UN" and raw:
        text = raw.rstrip(b"\0 ").decode("latin-1")
        if text.isprintable():
            return text  # an implicit-VR private value is often plain text: show it
    if not raw and not isinstance(value, (bytes, bytearray, memoryview)):
        return str(value)  # a float or int array pydicom already converted
    return f"{len(raw)} bytes"


def _same(old: DataElement | None, new: DataElement | None) -> bool:
    """Whether two elements that read the same are the same: binary values show only their
    length, so their bytes are compared."""
    if old is None or new is None:
        return old is new
    raw = (bytes, bytearray, memoryview)
    if isinstance(old.value, raw) and isinstance(new.value, raw):
        return bytes(old.value) == bytes(new.value)
    return True


def _cut(text: str | None) -> str | None:
    if text is None or len(text) <= SHOWN:
        return text
    return text[:SHOWN] + "…"
