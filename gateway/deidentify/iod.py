"""What the IOD of a SOP class requires of each attribute at each depth (PS3.3; PS3.5 7.4).

De-identification removes and empties; the output must still be the object its SOP class says it
is, as PACS and viewers reject or mis-file objects with IOD errors.
`Requirements.for_sop_class(uid)` gives the `Node` of the top level: per tag the strongest type any
module of the IOD gives it (`data/iod/types.json.gz`, built from highdicom's tables of PS3.3 by
`data/iod/build.py`), and per sequence the `Node` of its items. A tag a node does not name is
optional there (Type 3, or unknown to the tables: a private or unlisted SOP class has an empty
node).

What the engine does with a type (`walker.Walker.conform`), to an attribute its input had:

- Type 2 or 2C the actions would remove: it stays, empty.
- Type 1 the actions would remove, or Type 1 or 1C they would empty: it stays with the fixed
  dummy of its VR (a value cleaned to nothing: a code value, a label, a code meaning).
- Type 1C the actions would remove: it goes. A 1C condition names other attributes ("required
  if Patient's Birth Date in Alternative Calendar is present"), and what removes one removes
  them too: a dummy would be the error. (Conditions are not evaluated otherwise: the input
  had the attribute, so its condition is taken to hold, and an empty value says nothing.)
- A sequence the IOD does not require that would be left without items: it goes.
"""

from __future__ import annotations

import enum
import gzip
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

_DATA = "data/iod/types.json.gz"


class Kind(enum.IntEnum):
    """An attribute's type (PS3.5 7.4), weakest first."""

    OPTIONAL = 0  # Type 3
    PRESENT_IF = 1  # Type 2C: present, maybe empty, under a condition
    PRESENT = 2  # Type 2: present, maybe empty
    VALUED_IF = 3  # Type 1C: present with a value, under a condition
    VALUED = 4  # Type 1: present with a value

    @property
    def valued(self) -> bool:
        return self >= Kind.VALUED_IF


OPTIONAL = Kind.OPTIONAL
_KINDS = {"1": Kind.VALUED, "1C": Kind.VALUED_IF, "2": Kind.PRESENT, "2C": Kind.PRESENT_IF}


@dataclass
class Node:
    """The typed attributes of one level: a data set or the items of one sequence."""

    kinds: dict[int, Kind] = field(default_factory=dict)
    items: dict[int, Node] = field(default_factory=dict)

    def kind(self, tag: int) -> Kind:
        return self.kinds.get(tag, OPTIONAL)

    def item(self, tag: int) -> Node:
        """The node of the items of sequence `tag` (an empty one if nothing in it is typed)."""
        return self.items.get(tag, EMPTY)

    def merge(self, tree: dict[str, Any]) -> None:
        """Add one module's tree (see build.py), keeping the stronger type of a tag."""
        for key, found in tree.items():
            tag = int(key, 16)
            code, inner = (found[0], found[1]) if isinstance(found, list) else (found, None)
            kind = _KINDS.get(code, Kind.OPTIONAL)
            if kind > self.kinds.get(tag, Kind.OPTIONAL):
                self.kinds[tag] = kind
            if inner:
                node = self.items.get(tag)
                if node is None:
                    node = self.items[tag] = Node()
                node.merge(inner)


EMPTY = Node()


class Requirements:
    """The IOD tables, read once; a module's tree is parsed when an IOD that has it is first
    met, and one merged `Node` is kept per IOD."""

    def __init__(self, head: dict[str, Any], modules: dict[str, str]) -> None:
        self._sop_classes: dict[str, str] = head["sop_classes"]
        self._iods: dict[str, list[str]] = head["iods"]
        self._modules = modules  # module key -> its tree as JSON text
        self._nodes: dict[str, Node] = {}
        self._anywhere: dict[int, frozenset[Kind]] | None = None

    @classmethod
    @cache
    def load(cls) -> Requirements:
        """The shipped tables (data/iod/build.py says how they are written)."""
        raw = resources.files("gateway.deidentify").joinpath(_DATA).read_bytes()
        head, *lines = gzip.decompress(raw).decode().splitlines()
        return cls(json.loads(head), dict(line.split(" ", 1) for line in lines))

    def iod(self, sop_class: str) -> str | None:
        return self._sop_classes.get(sop_class)

    def kinds_anywhere(self, tag: int) -> frozenset[Kind]:
        """Every type `tag` has in any module of any IOD, at any depth (describe-profile)."""
        if self._anywhere is None:
            found: dict[int, set[Kind]] = {}
            for tree in self._modules.values():
                _collect(json.loads(tree), found)
            self._anywhere = {t: frozenset(kinds) for t, kinds in found.items()}
        return self._anywhere.get(tag, frozenset())

    def for_sop_class(self, sop_class: str) -> Node:
        iod = self._sop_classes.get(sop_class)
        if iod is None:
            return EMPTY
        node = self._nodes.get(iod)
        if node is None:
            node = self._nodes[iod] = Node()
            for module in self._iods.get(iod, ()):
                node.merge(json.loads(self._modules[module]))
        return node


def _collect(tree: dict[str, Any], found: dict[int, set[Kind]]) -> None:
    for key, entry in tree.items():
        code, inner = (entry[0], entry[1]) if isinstance(entry, list) else (entry, None)
        found.setdefault(int(key, 16), set()).add(_KINDS.get(code, OPTIONAL))
        if inner:
            _collect(inner, found)
