"""What the engine does to every attribute Table E.1-1 and the gateway's rules name.

`dicom-gateway describe-profile` prints this, not the table: each row is explained by the
action object (`actions.py`) that the engine's table chooses for the row's tag
(`Engine.action`), the very object the walker applies to an instance, in that object's own
words (`describe()`, with its Table E.1-1 code: X remove, Z empty, D dummy, K keep, C clean,
U new UID). What is printed cannot drift from what runs. Where the engine departs from the
table's code (a D on a sequence removes it, a C on a time keeps it, a dummy for a binary
value is empty), the action chosen says so. The row's code and reason stay as the profile
resolved them (PS3.15 E.1-1, E.3).

Where an IOD may require the attribute (`iod.py`: its type in any module of any IOD), a note
says what the walker does there instead (`Explanation.required`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Protocol

from gateway.deidentify.actions import DUMMY_TEXT, Action
from gateway.deidentify.decide import TOP_LEVEL
from gateway.deidentify.engine import Engine
from gateway.deidentify.iod import Kind
from gateway.deidentify.profile import Resolved
from gateway.settings import DeidentifySettings


class Describes(Protocol):
    """An action (or the private filter): its Table E.1-1 code and what it does."""

    @property
    def code(self) -> str: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Effect:
    """What happens to an attribute's value, and the Table E.1-1 code that says so."""

    action: str  # X Z D K C U
    does: str


def effect(action: Describes) -> Effect:
    """What an action object says of itself."""
    return Effect(action.code, action.describe())


# What the walker does where the instance's IOD requires an attribute (iod.py)
_WITHOUT_ITEMS = "kept with no items where the IOD requires the sequence"
_EMPTY_IF_TYPE_2 = "kept empty where the IOD requires it present (Type 2, 2C)"
_DUMMY_IF_TYPE_1 = "a fixed dummy where the IOD requires a value (Type 1)"
_DUMMY_IF_NOTHING_LEFT = "a fixed dummy if nothing is left where the IOD requires a value"


Source = Literal["gateway", "table"]


@dataclass(frozen=True)
class Explanation:
    """One row of describe-profile: the row as written, the rule in force, what is done."""

    source: Source  # the gateway's own rules, or Table E.1-1
    row: Resolved  # tag, name and basic code as the table or the gateway rule writes them
    rule: Resolved  # the rule in force for the row's attributes: a gateway rule comes first
    action: Action | None  # Engine.action for the row's tag; None: private (PrivateFilter)
    effect: Effect  # what the objects that run say they do
    required: str = ""  # what differs where the instance's IOD requires the attribute
    top: Action | None = None  # at the top level instead of `action` (decide.TOP_LEVEL)

    @property
    def does(self) -> str:
        return f"{self.effect.does}; {self.required}" if self.required else self.effect.does

    @property
    def reason(self) -> str:
        return self.rule.reason


#: What the allow-list does with attributes the table does not name (docs/deidentify.md, §3);
#: `unnamed()` gives the action per VR under a site's options.
UNNAMED_ATTRIBUTES = (
    "Attributes the table does not name: kept if the DICOM dictionary knows them, unless "
    "retired, person names, URLs, or (by keyword) about a person or organisation; kept UIDs "
    "and dates are treated as the options treat the table's (mapped; shifted, cut to the "
    "year, kept or removed); every kept text keeps only known words (the shipped vocabulary "
    "and the site's), then this instance's identifiers are removed from it; narrative "
    "(comments, histories, reasons) goes unless kept cleaned. Everything else is removed "
    "(allow-lists; docs/deidentify.md). Where the IOD of an instance's SOP class requires an "
    "attribute (PS3.3 types): what would be removed stays empty (Type 2, 2C) or with a fixed "
    "dummy (Type 1); what would be emptied keeps a fixed dummy (Type 1, 1C); a sequence the "
    "IOD does not require goes when no item is left."
)

#: The value representations of PS3.5 Table 6.2-1 an attribute of the dictionary may have.
VRS = (
    *("AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD"),
    *("OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI"),
    *("UL", "UN", "UR", "US", "UT", "UV"),
)


class _NoPseudonyms:
    """The vault of an engine that only describes: steps are decided per tag, before any
    value is seen, so no pseudonym is ever drawn (`uids.PseudonymStore`)."""

    def pseudonym(self, kind: str, original: str, make: Callable[[], str]) -> str:
        raise RuntimeError("describing the profile draws no pseudonym")


@lru_cache(maxsize=4)
def _engine(options: DeidentifySettings) -> Engine:
    """An engine that only describes (it never sees an instance)."""
    return Engine(options, _NoPseudonyms(), ae_title="DESCRIBE")


def explain(options: DeidentifySettings) -> tuple[Explanation, ...]:
    """The gateway's rules in force, then every row of Table E.1-1, as the engine built for
    `options` treats them."""
    engine = _engine(options)
    profile = engine.profile
    rows = [_explain(engine, "gateway", r, r) for r in profile.overrides]
    return tuple(rows + [_explain(engine, "table", r, profile.effective(r)) for r in profile])


def unnamed(options: DeidentifySettings) -> tuple[tuple[str, Effect], ...]:
    """What the engine built for `options` does, per VR, to a known, current attribute the
    table does not name and whose keyword names no person or organisation
    (`ActionTable.unnamed`)."""
    table = _engine(options).table
    return tuple((vr, effect(table.unnamed(vr))) for vr in VRS)


def representative(row: Resolved) -> int | None:
    """The tag a row stands for; for a pattern its first group, as `Profile.effective` takes
    it, and element 0010 for a whole group (element 0000, the group length, is removed
    whatever the rules say). None for the private attributes."""
    tag = row.rule.exact_tag
    if tag is not None or row.rule.tag.upper().startswith("(GGGG"):
        return tag
    group, element = row.rule.tag.upper().strip("()").split(",")
    number = int(element.replace("X", "0"), 16) if element != "XXXX" else 0x0010
    return (int(group.replace("X", "0"), 16) << 16) | number


def _explain(engine: Engine, source: Source, row: Resolved, rule: Resolved) -> Explanation:
    tag = representative(row)
    if tag is None:
        return Explanation(source, row, rule, None, effect(engine.private))
    action = engine.action(tag)
    top = TOP_LEVEL.get(tag)
    if top is not None:
        return Explanation(source, row, rule, action, _rewritten(top, action), top=top)
    required = where_required(action, engine.vr(tag), engine, tag)
    return Explanation(source, row, rule, action, effect(action), required)


def where_required(action: Action, vr: str | None, engine: Engine, tag: int) -> str:
    """What `Walker.conform` does instead where the IOD of an instance requires the attribute
    (`iod.py`), for the types it has in any IOD: removed -> empty (Type 2, 2C) or a fixed
    dummy (Type 1; a sequence: no items); emptied -> a fixed dummy (Type 1, 1C)."""
    kinds = engine.requirements.kinds_anywhere(tag)
    present = bool(kinds & {Kind.PRESENT, Kind.PRESENT_IF})
    valued = Kind.VALUED in kinds
    if action.removes:
        if vr == "SQ":
            return _WITHOUT_ITEMS if present or valued else ""
        notes = [_EMPTY_IF_TYPE_2] if present else []
        if valued and vr in DUMMY_TEXT:
            notes.append(_DUMMY_IF_TYPE_1)
        return "; ".join(notes)
    if action.may_empty and (valued or Kind.VALUED_IF in kinds) and vr in DUMMY_TEXT:
        return _DUMMY_IF_NOTHING_LEFT
    return ""


def _rewritten(top: Action, nested: Action) -> Effect:
    """A top-level attribute the engine writes afresh; in sequence items, `nested` applies."""
    written, inside = effect(top), effect(nested)
    if inside == written:
        return written
    return Effect(written.action, f"{written.does}; in sequence items: {inside.does}")
