"""What de-identification does to one element: a small object per kind of action.

`decide.ActionTable` chooses one action per attribute, once, from the profile and the
allow-list; `walker.Walker` applies it to the attribute at every depth. Each action says what
it does under the site's options (`describe()`, with the PS3.15 Table E.1-1 `code` that says the
same: X remove, Z empty, D dummy, K keep, C clean, U new UID), and `describe-profile` prints
the descriptions of these very objects (`explain.py`): what is printed is what runs.

Actions are immutable values, chosen before any instance is seen. `apply` returns the element
after the action, or None: it goes. What an action needs of the instance (counts, its
identifiers, the patient's date offset, the walk into items) and of the site (UID map,
pseudonyms, allow-list of words) comes through the `Job` it is given. Every action but `Keep`
and `Recurse` leaves an empty value as it is (`OnValue`). The actions on dates, times and ages
are in `temporal.py`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar, Protocol

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from gateway.deidentify.descriptors import Identifiers
from gateway.deidentify.elements import (
    CODED,
    Element,
    ascii_element,
    ascii_map,
    emptied,
    is_empty,
    keyword,
    text,
    text_values,
)
from gateway.deidentify.elements import (
    encodings as charset_of,
)
from gateway.deidentify.encode import Encodings, Item, Out, Seq
from gateway.deidentify.iod import Node
from gateway.deidentify.pseudonyms import Pseudonyms
from gateway.deidentify.uids import UidMapper
from gateway.deidentify.words import CODE_ATTRIBUTES, Cleaner

#: The fixed dummy of each VR; also the value a Type 1 attribute keeps when nothing of its
#: own can stay (`walker.Walker.required`).
DUMMY_TEXT = {
    **dict.fromkeys(("SH", "LO", "PN", "LT", "ST", "UT", "UC", "CS"), "ANONYMIZED"),
    "AE": "ANONYMOUS",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "IS": "0",
    "DS": "0",
}
#: A dummy for these is a random ID from the vault, of this length, not the fixed dummy.
ID_LENGTH = {"SH": 10, "LO": 16}
FIXED_DUMMY_VRS = frozenset(DUMMY_TEXT) - frozenset(ID_LENGTH)
# IDs that must read the same nested as at the top level (an order's accession number)
_ID_KINDS = {0x00080050: ("accession", 12)}


@dataclass(frozen=True)
class Level:
    """Where an element stands: its data set (the top level or a sequence item), the
    character set in force there, and what the IOD requires at that level (`iod.py`)."""

    ds: Dataset
    encodings: Encodings
    node: Node


class Job(Protocol):
    """What an action may use of the instance being de-identified (`walker.Job`)."""

    counts: Counter[str]
    identifiers: Identifiers  # what identifies this instance's patient, staff and site
    study_uid: str
    uids: UidMapper
    pseudonyms: Pseudonyms
    words: Cleaner

    def offset(self) -> int:
        """The patient's date offset in days (vault)."""
        ...

    def walk(self, ds: Dataset, encodings: Encodings, node: Node) -> list[Out]:
        """The de-identified elements of a sequence item."""
        ...


class Action(ABC):
    """One kind of thing done to an element, the same at every depth."""

    CODE: ClassVar[str]
    EMPTIES: ClassVar[bool] = False
    #: it removes the element (the IOD may still require it: `walker.Walker.conform`)
    removes: ClassVar[bool] = False
    #: it keeps the value's bytes: they are checked for what the attribute can hold first
    keeps_bytes: ClassVar[bool] = False
    #: it returns the element as it is: the walker writes it as read, without calling it
    unchanged: ClassVar[bool] = False

    @property
    def code(self) -> str:
        """The PS3.15 Table E.1-1 code that says what this action does."""
        return self.CODE

    @property
    def may_empty(self) -> bool:
        """Whether it may leave an emptied value (where the IOD requires a value, the walker
        writes a fixed dummy instead)."""
        return self.EMPTIES

    @abstractmethod
    def describe(self) -> str:
        """What the action does to a value, in words for a privacy officer."""

    @abstractmethod
    def apply(self, job: Job, at: Level, elem: Element) -> Out | None:
        """The element after the action (None: it goes)."""


@dataclass(frozen=True)
class Remove(Action):
    CODE = "X"
    removes = True

    def describe(self) -> str:
        return "remove"

    def apply(self, job: Job, at: Level, elem: Element) -> Out | None:
        return None


@dataclass(frozen=True)
class Rewritten(Remove):
    """Removed where it stands because the engine writes it afresh elsewhere: the patient's
    pseudonym and the provenance at the top level, the file meta's copy of the UID."""

    written_code: str
    written: str

    @property
    def code(self) -> str:
        return self.written_code

    def describe(self) -> str:
        return self.written


@dataclass(frozen=True)
class Keep(Action):
    """Written as read, never decoded (pixel data above all)."""

    CODE = "K"
    keeps_bytes = True
    unchanged = True

    def describe(self) -> str:
        return "keep"

    def apply(self, job: Job, at: Level, elem: Element) -> Out | None:
        return elem


@dataclass(frozen=True)
class Recurse(Action):
    """The sequence stays; each item is de-identified like a data set of its own."""

    CODE = "C"

    def describe(self) -> str:
        return "keep the sequence, de-identify its items"

    def apply(self, job: Job, at: Level, elem: Element) -> Out | None:
        node = at.node.item(int(elem.tag))  # what the IOD requires of the items
        items = []
        for item in at.ds[elem.tag].value or ():
            inner = charset_of(item, at.encodings)
            items.append(Item(job.walk(item, inner, node), inner))
        return Seq(elem.tag, items)


class OnValue(Action):
    """An action on a value: an empty value stays as it is."""

    def apply(self, job: Job, at: Level, elem: Element) -> Out | None:
        if is_empty(elem):
            return elem
        return self.change(job, at.ds, elem)

    @abstractmethod
    def change(self, job: Job, ds: Dataset, elem: Element) -> Out | None:
        """The element with its (non-empty) value changed."""


@dataclass(frozen=True)
class Empty(OnValue):
    CODE = "Z"
    EMPTIES = True

    def describe(self) -> str:
        return "replace with an empty value"

    def change(self, job: Job, ds: Dataset, elem: Element) -> Out | None:
        job.counts["emptied"] += 1
        return emptied(elem)


@dataclass(frozen=True)
class Dummy(OnValue):
    """A dummy value of the VR the element was read with: a random ID from the vault for LO
    and SH, the same for the same value; the fixed dummy for other text, dates, times and
    numbers; empty where any dummy would say more than nothing (binary values, UN, UR, AS).
    `vr` is the dictionary's, which the description speaks of; an element read with another
    VR gets that VR's dummy, as it always has."""

    vr: str | None

    @property
    def code(self) -> str:
        return "D" if self.vr in DUMMY_TEXT else "Z"

    @property
    def may_empty(self) -> bool:
        return self.vr not in FIXED_DUMMY_VRS

    def describe(self) -> str:
        if self.vr in ID_LENGTH:
            return "replace with a random ID, the same for the same value (vault)"
        if self.vr in FIXED_DUMMY_VRS:
            return "replace with a dummy value of the same VR"
        return "replace with an empty value"

    def change(self, job: Job, ds: Dataset, elem: Element) -> Out | None:
        converted = ds[elem.tag]
        vr = converted.VR
        job.counts["replaced"] += 1
        if vr in ID_LENGTH:
            kind, length = _ID_KINDS.get(int(elem.tag), (f"id:{elem.tag:08X}", ID_LENGTH[vr]))
            values = converted.value
            many = isinstance(values, MultiValue | list)
            new = [
                job.pseudonyms.identifier(kind, str(v), length)
                for v in (values if many else [values])
            ]
            return ascii_element(elem.tag, vr, "\\".join(new))
        if vr in DUMMY_TEXT:
            return ascii_element(elem.tag, vr, DUMMY_TEXT[vr])
        return emptied(elem)  # numbers and binary values: no dummy says less than nothing


@dataclass(frozen=True)
class Pseudonym(OnValue):
    """A random ID from the vault, the same for the same original: the accession number
    (`same_for` "accession"), or the study ID of one study ("study", keyed by its UID)."""

    kind: str
    length: int
    same_for: str
    CODE = "D"

    def describe(self) -> str:
        return f"replace with a random ID, the same for the same {self.same_for} (vault)"

    def change(self, job: Job, ds: Dataset, elem: Element) -> Out | None:
        job.counts["pseudonyms"] += 1
        original = text(ds, elem.tag)
        if self.same_for == "study":
            original = f"{job.study_uid}\0{original}"
        value = job.pseudonyms.identifier(self.kind, original, self.length)
        return ascii_element(elem.tag, "SH", value)


@dataclass(frozen=True)
class MapUid(OnValue):
    CODE = "U"

    def describe(self) -> str:
        return "replace with a new UID, consistently mapped"

    def change(self, job: Job, ds: Dataset, elem: Element) -> Out | None:
        job.counts["uids"] += 1
        return ascii_map(ds, elem, job.uids.map_value, b"\0")


@dataclass(frozen=True)
class CleanText(OnValue):
    """Allow-list cleaning of each value (`words.py`), then this instance's identifiers
    removed on top (`descriptors.py`): `descriptor` also removes what looks like a date, a
    telephone number or an ID (Clean Descriptors, PS3.15 E.3.5; free text), else only the
    identifiers (a scrub). A coded value (CS, AE) that is a defined term stays whole."""

    descriptor: bool
    CODE = "C"
    EMPTIES = True

    def describe(self) -> str:
        if self.descriptor:
            return "keep, known words only; the instance's identifiers removed"
        return "keep, known words only (codes whole or empty); identifiers removed"

    def change(self, job: Job, ds: Dataset, elem: Element) -> Out | None:
        values, vr = text_values(ds, elem)
        words, ids = job.words, job.identifiers
        tag = int(elem.tag)
        coded = vr in CODED or tag in CODE_ATTRIBUTES
        removed = identifiers = 0
        new = []
        for value in values:
            cleaned, n = words.code(tag, value) if coded else words.text(value)
            removed += n
            if cleaned and not (coded and words.is_term(tag, cleaned)):
                cleaned, m = ids.clean(cleaned) if self.descriptor else ids.scrub(cleaned)
                identifiers += m
            new.append(cleaned)
        if not removed and not identifiers:
            return elem
        if not any(new):
            new = [""]  # nothing left of any value: empty, not a row of backslashes
        if removed:
            job.counts[f"words_removed:{keyword(tag)}"] += removed
        if identifiers:
            job.counts["descriptor_parts_removed" if self.descriptor else "scrubbed"] += identifiers
        return DataElement(elem.tag, vr, new if len(new) > 1 else new[0])


REMOVE = Remove()
KEEP = Keep()
EMPTY = Empty()
RECURSE = Recurse()
MAP_UID = MapUid()
CLEAN_DESCRIPTOR = CleanText(descriptor=True)
SCRUB = CleanText(descriptor=False)
ACCESSION = Pseudonym("accession", 12, "accession")
STUDY_ID = Pseudonym("study_id", 10, "study")
PATIENT_PSEUDONYM = Rewritten("D", "replace with the patient's pseudonym (vault): site code + code")
PROVENANCE_WRITTEN = Rewritten(
    "D", "written afresh: how the instance was de-identified (PS3.15 E.1.1)"
)
FILE_META_UID = Rewritten("U", "written afresh in the file meta: the new SOP Instance UID")
