"""What the engine does to every attribute Table E.1-1 and the gateway's rules name.

`dicom-gateway describe-profile` prints this, not the table: each row is explained from the
`Step` that `Engine.step` decides for the row's tag, the same decision the engine applies to an
instance. Where the engine departs from the table's code (a D on a sequence removes it, a C on
a time keeps it, a dummy for a binary value is empty), the description says what the engine
does. The row's code and reason stay as the profile resolved them (PS3.15 E.1-1, E.3).

Descriptions are fixed strings, one per `Step` (`EFFECTS`), with the action code (PS3.15
Table E.1-1: X remove, Z empty, D dummy, K keep, C clean, U new UID) that says the same thing.
Where an IOD may require the attribute (`iod.py`: its type in any module of any IOD), a note
says what the engine does there instead (`Explanation.required`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gateway.deidentify.elements import ACCESSION_NUMBER, PATIENT_ID, PATIENT_NAME, STUDY_ID
from gateway.deidentify.engine import REWRITTEN, Engine, Step
from gateway.deidentify.iod import Kind
from gateway.deidentify.profile import Resolved
from gateway.settings import DeidentifySettings


@dataclass(frozen=True)
class Effect:
    """What happens to an attribute's value, and the Table E.1-1 code that says so."""

    action: str  # X Z D K C U
    does: str


#: What each step does to a value; a step missing here is a step nobody can read about.
EFFECTS: dict[Step, Effect] = {
    Step.REMOVE: Effect("X", "remove"),
    Step.EMPTY: Effect("Z", "replace with an empty value"),
    Step.DUMMY: Effect("D", "replace with a dummy value of the same VR"),
    Step.KEEP: Effect("K", "keep"),
    Step.FORM: Effect("K", "keep; the retired forms YYYY.MM.DD, HH:MM:SS written as now"),
    # descriptors (PS3.15 E.3.5), kept short text and codes: the allow-list of words (words.py)
    Step.CLEAN: Effect("C", "keep, known words only; the instance's identifiers removed"),
    Step.SCRUB: Effect("C", "keep, known words only (codes whole or empty); identifiers removed"),
    Step.DATE: Effect("C", "shift by the patient's date offset (intervals kept)"),
    Step.UID: Effect("U", "replace with a new UID, consistently mapped"),
    Step.AGE: Effect("C", "keep, ages over 89 as 090Y"),
    Step.SEQUENCE: Effect("C", "keep the sequence, de-identify its items"),
    Step.ACCESSION: Effect(
        "D", "replace with a random ID, the same for the same accession (vault)"
    ),
    Step.STUDY_ID: Effect("D", "replace with a random ID, the same for the same study (vault)"),
}
YEAR_ONLY = Effect("C", "keep the year only")  # Step.DATE under longitudinal_dates = "year"
RANDOM_ID = Effect("D", "replace with a random ID, the same for the same value (vault)")

# Step.DUMMY by VR, as the engine's dummy writes it: LO and SH get a random ID from the vault,
# these a fixed dummy value; numbers and binary values are emptied (no dummy says less).
# tests/unit/test_explain.py runs the engine over one attribute of each to hold this true.
_RANDOM_ID_VRS = frozenset({"LO", "SH"})
_FIXED_DUMMY_VRS = frozenset(
    {"AE", "CS", "DA", "DS", "DT", "IS", "LT", "PN", "ST", "TM", "UC", "UT"}
)

# What Engine.walk does where the instance's IOD requires an attribute (iod.py)
_WITHOUT_ITEMS = "kept with no items where the IOD requires the sequence"
_EMPTY_IF_TYPE_2 = "kept empty where the IOD requires it present (Type 2, 2C)"
_DUMMY_IF_TYPE_1 = "a fixed dummy where the IOD requires a value (Type 1)"
_DUMMY_IF_NOTHING_LEFT = "a fixed dummy if nothing is left where the IOD requires a value"
_EMPTYING = frozenset({Step.EMPTY, Step.CLEAN, Step.SCRUB, Step.DATE, Step.AGE, Step.FORM})

# At the top level the engine writes these afresh (engine.REWRITTEN); the rest of REWRITTEN
# is the provenance it writes for every instance.
_PATIENT = Effect("D", "replace with the patient's pseudonym (vault): site code + code")
_WRITTEN = {
    PATIENT_NAME: _PATIENT,
    PATIENT_ID: _PATIENT,
    ACCESSION_NUMBER: EFFECTS[Step.ACCESSION],
    STUDY_ID: EFFECTS[Step.STUDY_ID],
}
_PROVENANCE = Effect("D", "written afresh: how the instance was de-identified (PS3.15 E.1.1)")
# Group 0002 is removed with the rest of the header; the engine writes its own (PS3.10 7.1).
_FILE_META = {0x00020003: Effect("U", "written afresh in the file meta: the new SOP Instance UID")}


Source = Literal["gateway", "table"]


@dataclass(frozen=True)
class Explanation:
    """One row of describe-profile: the row as written, the rule in force, what is done."""

    source: Source  # the gateway's own rules, or Table E.1-1
    row: Resolved  # tag, name and basic code as the table or the gateway rule writes them
    rule: Resolved  # the rule in force for the row's attributes: a gateway rule comes first
    step: Step | None  # Engine.step for the row's tag; None: private, Engine.walk decides
    effect: Effect
    required: str = ""  # what differs where the instance's IOD requires the attribute

    @property
    def does(self) -> str:
        return f"{self.effect.does}; {self.required}" if self.required else self.effect.does

    @property
    def reason(self) -> str:
        return self.rule.reason


class _NoPseudonyms:
    """The vault of an engine that only describes: steps are decided per tag, before any
    value is seen, so no pseudonym is ever drawn (`uids.PseudonymStore`)."""

    def pseudonym(self, kind: str, original: str, make: Callable[[], str]) -> str:
        raise RuntimeError("describing the profile draws no pseudonym")


def explain(options: DeidentifySettings) -> tuple[Explanation, ...]:
    """The gateway's rules in force, then every row of Table E.1-1, as the engine built for
    `options` treats them."""
    engine = Engine(options, _NoPseudonyms(), ae_title="DESCRIBE")
    profile = engine.profile
    rows = [_explain(engine, "gateway", r, r) for r in profile.overrides]
    return tuple(rows + [_explain(engine, "table", r, profile.effective(r)) for r in profile])


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
        return Explanation(source, row, rule, None, _private(engine))
    step = engine.step(tag)
    effect = _effect(engine, tag, step)
    required = "" if tag in REWRITTEN else where_required(step, engine.vr(tag), engine, tag)
    return Explanation(source, row, rule, step, effect, required)


def where_required(step: Step, vr: str | None, engine: Engine, tag: int) -> str:
    """What `Engine.walk` does instead where the IOD of an instance requires the attribute
    (`iod.py`), for the types it has in any IOD: removed -> empty (Type 2, 2C) or a fixed
    dummy (Type 1; a sequence: no items); emptied -> a fixed dummy (Type 1, 1C)."""
    kinds = engine.requirements.kinds_anywhere(tag)
    present = bool(kinds & {Kind.PRESENT, Kind.PRESENT_IF})
    valued = Kind.VALUED in kinds
    if step is Step.REMOVE:
        if vr == "SQ":
            return _WITHOUT_ITEMS if present or valued else ""
        notes = [_EMPTY_IF_TYPE_2] if present else []
        if valued and vr in _FIXED_DUMMY_VRS | _RANDOM_ID_VRS:
            notes.append(_DUMMY_IF_TYPE_1)
        return "; ".join(notes)
    can_empty = step in _EMPTYING or (step is Step.DUMMY and vr not in _FIXED_DUMMY_VRS)
    if (
        can_empty
        and (valued or Kind.VALUED_IF in kinds)
        and vr in _FIXED_DUMMY_VRS | _RANDOM_ID_VRS
    ):
        return _DUMMY_IF_NOTHING_LEFT
    return ""


def _effect(engine: Engine, tag: int, step: Step) -> Effect:
    effect = effect_of(step, engine.vr(tag), engine.options)
    if tag in REWRITTEN:
        return _rewritten(tag, effect)
    if step is Step.REMOVE and tag in _FILE_META:
        return _FILE_META[tag]
    return effect


def effect_of(step: Step, vr: str | None, options: DeidentifySettings) -> Effect:
    """What `step` does to a value of dictionary VR `vr` under `options`."""
    if step is Step.DATE and options.longitudinal_dates == "year":
        return YEAR_ONLY
    if step is Step.DUMMY and vr in _RANDOM_ID_VRS:
        return RANDOM_ID
    if step is Step.DUMMY and vr not in _FIXED_DUMMY_VRS:
        return EFFECTS[Step.EMPTY]
    return EFFECTS[step]


def _rewritten(tag: int, nested: Effect) -> Effect:
    """A top-level attribute the engine writes afresh; in sequence items, `nested` applies."""
    top = _WRITTEN.get(tag, _PROVENANCE)
    if nested == top:
        return top
    return Effect(top.action, f"{top.does}; in sequence items: {nested.does}")


def _private(engine: Engine) -> Effect:
    """Private attributes (odd groups) go, except the safe-private list when it is on."""
    if engine.safe_private is None:
        return EFFECTS[Step.REMOVE]
    kept = len(engine.safe_private.entries)
    return Effect(
        "C",
        f"keep the safe-private list only ({kept} numbers and codes, PS3.15 E.3.10, with "
        "their private creators); remove the rest",
    )
