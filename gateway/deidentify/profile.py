"""PS3.15 Table E.1-1 (Basic Application Level Confidentiality Profile, rev 2024b) as data.

The table ships as package data (`data/ps3.15_table_e1-1_rev2024b.json`, 621 rows, from
innolitics/dicom-standard, MIT). Each row becomes one `Rule`: which attributes it matches, the
basic-profile code, and what each option column says. `Profile` resolves every rule once, for
the options a site turned on, into one `Action` with the reason for it, so the privacy officer
reads exactly what will be done (`dicom-gateway describe-profile`).

Resolution, in this order (PS3.15 E.1.1, E.3):
1. Basic code. A compound code (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) means "the weakest action that
   still leaves a conforming IOD": X for a Type 3, Z for a Type 2, D (or U for UIDs) for a
   Type 1 attribute. Without the IOD's module tables per SOP class, the gateway takes the
   choice that is conforming whatever the IOD: the last code (D, or U) when there is one,
   else Z.
2. Each enabled option whose column names the attribute replaces that code: K (keep) or
   C (clean). When two enabled options both name an attribute and one says C, C wins: the
   cleaning option is the one that still protects.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources

from gateway.settings import DeidentifySettings


class Action(enum.StrEnum):
    """PS3.15 Table E.1-1 action codes, resolved to one per attribute."""

    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    KEEP = "K"
    CLEAN = "C"
    NEW_UID = "U"

    def describe(self) -> str:
        return _DESCRIPTIONS[self]


_DESCRIPTIONS = {
    Action.REMOVE: "remove",
    Action.EMPTY: "replace with an empty value",
    Action.DUMMY: "replace with a dummy value of the same VR",
    Action.KEEP: "keep",
    Action.CLEAN: "keep, cleaned of identifying content",
    Action.NEW_UID: "replace with a new UID, consistently mapped",
}

# Table column -> the option (DeidentifySettings) that enables it; PS3.15 Table E.3.x names.
OPTION_COLUMNS: dict[str, str] = {
    "rtnSafePrivOpt": "Retain Safe Private Option",
    "rtnUIDsOpt": "Retain UIDs Option",
    "rtnDevIdOpt": "Retain Device Identity Option",
    "rtnInstIdOpt": "Retain Institution Identity Option",
    "rtnPatCharsOpt": "Retain Patient Characteristics Option",
    "rtnLongFullDatesOpt": "Retain Longitudinal Temporal Information Full Dates Option",
    "rtnLongModifDatesOpt": "Retain Longitudinal Temporal Information Modified Dates Option",
    "cleanDescOpt": "Clean Descriptors Option",
    "cleanStructContOpt": "Clean Structured Content Option",
    "cleanGraphOpt": "Clean Graphics Option",
}


def enabled_columns(options: DeidentifySettings) -> frozenset[str]:
    """The table's option columns that the site's settings switch on."""
    on = {
        "rtnSafePrivOpt": options.retain_safe_private,
        "rtnUIDsOpt": options.retain_uids,
        "rtnDevIdOpt": options.retain_device_identity,
        "rtnInstIdOpt": options.retain_institution_identity,
        "rtnPatCharsOpt": options.retain_patient_characteristics,
        "rtnLongFullDatesOpt": options.longitudinal_dates == "full",
        "rtnLongModifDatesOpt": options.longitudinal_dates == "modified",
        "cleanDescOpt": options.clean_descriptors,
        "cleanStructContOpt": options.clean_structured_content,
        "cleanGraphOpt": options.clean_graphics,
    }
    return frozenset(column for column, enabled in on.items() if enabled)


@dataclass(frozen=True)
class Rule:
    """One row of Table E.1-1."""

    name: str
    tag: str  # as the table writes it: "(0010,0010)", "(60XX,3000)", "(GGGG,EEEE) WHERE ..."
    basic: str  # basic-profile code, possibly compound ("X/Z/D")
    options: dict[str, str]  # option column -> "K" or "C"

    def matches(self, tag: int) -> bool:
        return _matcher(self.tag)(tag)

    @property
    def exact_tag(self) -> int | None:
        """The tag as an int for ordinary rows; None for the wildcard rows."""
        text = self.tag.strip("()")
        try:
            group, element = (int(part, 16) for part in text.split(","))
        except ValueError:
            return None
        return (group << 16) | element


def _basic_action(code: str) -> Action:
    """Compound codes resolve to the last (always conforming) code; U* means U."""
    parts = [part.rstrip("*") for part in code.split("/")]
    return Action(parts[-1])


@cache
def _matcher(tag_text: str) -> Callable[[int], bool]:
    text = tag_text.upper()
    if text.startswith("(GGGG,EEEE)"):  # private attributes: odd groups
        return lambda tag: bool((tag >> 16) & 1)
    group, element = text.strip("()").split(",")
    group_mask = 0xFF00 if group.endswith("XX") else 0xFFFF
    group_value = int(group.replace("X", "0"), 16)
    element_any = element == "XXXX"
    element_value = 0 if element_any else int(element, 16)

    def match(tag: int) -> bool:
        if ((tag >> 16) & group_mask) != group_value:
            return False
        return element_any or (tag & 0xFFFF) == element_value

    return match


@dataclass(frozen=True)
class Resolved:
    """What happens to the attributes one rule matches, and why."""

    rule: Rule
    action: Action
    reason: str  # "Basic Profile" or the option(s) that decided it

    def describe(self) -> str:
        if self.action is Action.CLEAN and self.reason == OPTION_COLUMNS["rtnLongModifDatesOpt"]:
            return "shift by the patient's date offset (intervals kept)"
        return self.action.describe()


def resolve(rule: Rule, columns: frozenset[str]) -> Resolved:
    codes = {column: code for column, code in rule.options.items() if column in columns}
    if not codes:
        return Resolved(rule, _basic_action(rule.basic), "Basic Profile")
    code = "C" if "C" in codes.values() else "K"
    deciding = sorted(OPTION_COLUMNS[column] for column, c in codes.items() if c == code)
    return Resolved(rule, Action(code), ", ".join(deciding))


@cache
def table_rules() -> tuple[Rule, ...]:
    """The packaged Table E.1-1, in the table's order."""
    text = resources.files("gateway.deidentify").joinpath("data/ps3.15_table_e1-1_rev2024b.json")
    rows = json.loads(text.read_text(encoding="utf-8"))
    return tuple(
        Rule(
            name=row["name"],
            tag=row["tag"],
            basic=row["basicProfile"],
            options={column: row[column] for column in OPTION_COLUMNS if column in row},
        )
        for row in rows
    )


class Profile:
    """Table E.1-1 resolved once for a site's options; looked up per tag."""

    def __init__(self, options: DeidentifySettings) -> None:
        self.options = options
        columns = enabled_columns(options)
        self.resolved = tuple(resolve(rule, columns) for rule in table_rules())
        self._exact = {tag: r for r in self.resolved if (tag := r.rule.exact_tag) is not None}
        self._patterns = tuple(r for r in self.resolved if r.rule.exact_tag is None)

    def lookup(self, tag: int) -> Resolved | None:
        """The rule for `tag`, or None: the table does not name it (the allow-list decides)."""
        found = self._exact.get(tag)
        if found is not None:
            return found
        return next((r for r in self._patterns if r.rule.matches(tag)), None)

    def __iter__(self) -> Iterator[Resolved]:
        return iter(self.resolved)

    def __len__(self) -> int:
        return len(self.resolved)
