"""PS3.15 Table E.1-1 (Basic Application Level Confidentiality Profile, rev 2024b) as data.

The table ships as package data (`data/ps3.15_table_e1-1_rev2024b.json`, 621 rows, from
innolitics/dicom-standard, MIT). Each row becomes one `Rule`: which attributes it matches, the
basic-profile code, and what each option column says. `Profile` resolves every rule once, for
the options a site turned on, into one `Code` with the reason for it, so the privacy officer
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

Before the table, the gateway's own rules (`GATEWAY_RULES`): the patient's name and ID, the
accession number and study ID get vault pseudonyms (where the table says Z: an AI result must
find its way back to the patient, on site); and what may carry identifying text or pictures is
removed whatever the table's code for it: icon images, overlays and curves, graphic
annotations (unless Clean Graphics) and SR content (unless Clean Structured Content).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources

from pydicom.datadict import dictionary_description, tag_for_keyword

from gateway.settings import DeidentifySettings


class Code(enum.StrEnum):
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
    Code.REMOVE: "remove",
    Code.EMPTY: "replace with an empty value",
    Code.DUMMY: "replace with a dummy value of the same VR",
    Code.KEEP: "keep",
    Code.CLEAN: "keep, cleaned of identifying content",
    Code.NEW_UID: "replace with a new UID, consistently mapped",
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
        "rtnLongModifDatesOpt": options.longitudinal_dates in ("modified", "year"),
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


def _basic_action(code: str) -> Code:
    """Compound codes resolve to the last (always conforming) code; U* means U."""
    parts = [part.rstrip("*") for part in code.split("/")]
    return Code(parts[-1])


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
    action: Code
    reason: str  # "Basic Profile" or the option(s) that decided it

    def describe(self) -> str:
        if self.action is Code.CLEAN and self.reason == OPTION_COLUMNS["rtnLongModifDatesOpt"]:
            return "shift by the patient's date offset (intervals kept)"
        return self.action.describe()


def resolve(rule: Rule, columns: frozenset[str]) -> Resolved:
    codes = {column: code for column, code in rule.options.items() if column in columns}
    if not codes:
        return Resolved(rule, _basic_action(rule.basic), "Basic Profile")
    code = "C" if "C" in codes.values() else "K"
    deciding = sorted(OPTION_COLUMNS[column] for column, c in codes.items() if c == code)
    return Resolved(rule, Code(code), ", ".join(deciding))


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


@dataclass(frozen=True)
class GatewayRule:
    """A rule of the gateway's own, applied before Table E.1-1."""

    tag: str
    name: str
    why: str
    action: Code = Code.REMOVE
    unless: str | None = None  # the DeidentifySettings flag that hands the attribute back


_PSEUDONYM = "replaced by a random pseudonym, the same for every instance (vault)"
GATEWAY_RULES = (
    GatewayRule("(0010,0010)", "Patient's Name", f"{_PSEUDONYM}: site code + code", Code.DUMMY),
    GatewayRule("(0010,0020)", "Patient ID", f"{_PSEUDONYM}: site code + code", Code.DUMMY),
    GatewayRule("(0008,0050)", "Accession Number", _PSEUDONYM, Code.DUMMY),
    GatewayRule("(0020,0010)", "Study ID", f"{_PSEUDONYM} of the study", Code.DUMMY),
    GatewayRule("(0088,0200)", "Icon Image Sequence", "a small copy of the image: may show text"),
    GatewayRule("(0010,0033)", "Patient's Birth Date in Alternative Calendar", "a birth date"),
    GatewayRule("(0010,0034)", "Patient's Death Date in Alternative Calendar", "a death date"),
    GatewayRule("(0010,0035)", "Patient's Alternative Calendar", "goes with those dates"),
    GatewayRule("(0088,0130)", "Storage Media File-set ID", "a site's media label"),
    GatewayRule("(FFFC,FFFC)", "Data Set Trailing Padding", "bytes nobody checks"),
    # the gateway may rewrite the pixel data container: its offsets and lengths would be stale,
    # and an offset table is room for any 8-byte values (a Basic Offset Table is written)
    GatewayRule("(7FE0,0001)", "Extended Offset Table", "stale once frames are rewritten"),
    GatewayRule("(7FE0,0002)", "Extended Offset Table Lengths", "stale once frames are rewritten"),
    GatewayRule("(7FE0,0003)", "Encapsulated Pixel Data Value Total Length", "stale likewise"),
    GatewayRule("(60XX,XXXX)", "Overlay group", "overlay planes may carry text or marks"),
    GatewayRule("(50XX,XXXX)", "Curve group", "retired curves may carry annotations"),
    GatewayRule(
        "(0070,0001)",
        "Graphic Annotation Sequence",
        "text annotations on the image",
        unless="clean_graphics",
    ),
    GatewayRule(
        "(0040,A730)",
        "Content Sequence",
        "SR and other content items carry free text",
        unless="clean_structured_content",
    ),
)


def gateway_rules(options: DeidentifySettings) -> tuple[Resolved, ...]:
    """The gateway's rules in force under `options`, each with its reason."""
    fixed = tuple(
        Resolved(Rule(g.name, g.tag, "-", {}), g.action, f"Gateway: {g.why}")
        for g in GATEWAY_RULES
        if g.unless is None or not getattr(options, g.unless)
    )
    return fixed + narrative_rules(options)


@cache
def narrative() -> dict[str, int]:
    """Free-narrative attributes (keyword -> tag): prose about a patient, a visit, a request or
    a procedure, at any depth (`data/vocabulary/narrative.txt`, made by its build.py from the
    DICOM dictionary; docs/deidentify.md lists them)."""
    text = resources.files("gateway.deidentify").joinpath("data/vocabulary/narrative.txt")
    out: dict[str, int] = {}
    for line in text.read_text(encoding="utf-8").splitlines():
        keyword = line.split("#", 1)[0].strip()
        tag = tag_for_keyword(keyword) if keyword else None
        if tag is not None:
            out[keyword] = int(tag)
    return out


def narrative_rules(options: DeidentifySettings) -> tuple[Resolved, ...]:
    """Narrative attributes are removed whatever Clean Descriptors says (a comment names
    relatives, clinicians and places no header element names); a site keeps the ones it lists
    in `keep_cleaned`, cleaned by the allow-list of words."""
    out = []
    for keyword, tag in sorted(narrative().items(), key=lambda kv: kv[1]):
        name = dictionary_description(tag)
        where = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if keyword in options.keep_cleaned:
            why = "free narrative kept by [deidentify] keep_cleaned: allow-list of words"
            out.append(Resolved(Rule(name, where, "-", {}), Code.CLEAN, f"Gateway: {why}"))
        else:
            why = "free narrative (names relatives, clinicians, places): removed"
            out.append(Resolved(Rule(name, where, "-", {}), Code.REMOVE, f"Gateway: {why}"))
    return tuple(out)


def keep_cleaned_problems(options: DeidentifySettings) -> list[str]:
    """`keep_cleaned` entries that are not narrative attribute keywords."""
    known = narrative()
    return [
        f"deidentify.keep_cleaned[{i}]: {keyword!r} is not a free-narrative attribute keyword "
        "(docs/deidentify.md lists them)"
        for i, keyword in enumerate(options.keep_cleaned)
        if keyword not in known
    ]


class Profile:
    """Table E.1-1 resolved once for a site's options, behind the gateway's own rules.

    Iterating yields the table's rows (what describe-profile prints); `overrides` are the
    gateway rules in force; `lookup` gives the one that applies to a tag."""

    def __init__(self, options: DeidentifySettings) -> None:
        self.options = options
        columns = enabled_columns(options)
        self.resolved = tuple(resolve(rule, columns) for rule in table_rules())
        self.overrides = gateway_rules(options)
        self._exact: dict[int, Resolved] = {}
        patterns: list[Resolved] = []
        for r in self.overrides + self.resolved:
            tag = r.rule.exact_tag
            if tag is None:
                patterns.append(r)
            else:
                self._exact.setdefault(tag, r)
        self._patterns = tuple(patterns)

    def lookup(self, tag: int) -> Resolved | None:
        """The rule for `tag`, or None: the table does not name it (the allow-list decides)."""
        found = next((r for r in self._patterns if r.rule.matches(tag)), None)
        if found is not None and found.reason.startswith("Gateway:"):
            return found  # a gateway pattern (overlays, curves) beats any table row
        return self._exact.get(tag, found)

    def effective(self, r: Resolved) -> Resolved:
        """What really happens to a table row's attributes: a gateway rule may come first."""
        sample = r.rule.exact_tag
        if sample is None and not r.rule.tag.upper().startswith("(GGGG"):
            group, element = r.rule.tag.upper().replace("X", "0").strip("()").split(",")
            sample = (int(group, 16) << 16) | int(element, 16)
        found = None if sample is None else self.lookup(sample)
        return found if found is not None and found.reason.startswith("Gateway:") else r

    def __iter__(self) -> Iterator[Resolved]:
        return iter(self.resolved)

    def __len__(self) -> int:
        return len(self.resolved)
