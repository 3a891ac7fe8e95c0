"""describe-profile says what the engine does: every row against `Engine.action`, and each kind
of description against what a real run does to a value."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom._dicom_dict import DicomDictionary
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement

from gateway.deidentify import actions, temporal
from gateway.deidentify.actions import (
    ACCESSION,
    CLEAN_DESCRIPTOR,
    EMPTY,
    KEEP,
    MAP_UID,
    RECURSE,
    REMOVE,
    SCRUB,
    STUDY_ID,
    Action,
    Dummy,
)
from gateway.deidentify.decide import REWRITTEN, ActionTable
from gateway.deidentify.engine import Engine
from gateway.deidentify.explain import (
    Effect,
    Explanation,
    effect,
    explain,
    representative,
    unnamed,
)
from gateway.deidentify.iod import Kind
from gateway.deidentify.profile import Profile
from gateway.deidentify.temporal import AGGREGATE_AGE, KeepForm, ShiftDate, YearOnly
from gateway.release.allowed import FIXED_DUMMIES
from gateway.settings import DeidentifySettings
from gateway.vault.sqlite import SqliteVault
from tests.dicom_builders import NEUTRAL, item, part10, synthetic

DEFAULTS = DeidentifySettings()
NOTHING = DeidentifySettings(
    retain_patient_characteristics=False, longitudinal_dates="off", clean_descriptors=False
)
ALL_RETAINED = dataclasses.replace(
    DEFAULTS,
    retain_device_identity=True,
    retain_institution_identity=True,
    retain_uids=True,
    retain_safe_private=True,
)
OPTIONS = {
    "defaults": DEFAULTS,
    "nothing": NOTHING,
    "all-retained": ALL_RETAINED,
    "all-retained-and-cleaned": dataclasses.replace(
        ALL_RETAINED, clean_structured_content=True, clean_graphics=True
    ),
    "dates-off": dataclasses.replace(DEFAULTS, longitudinal_dates="off"),
    "dates-year": dataclasses.replace(DEFAULTS, longitudinal_dates="year"),
    "dates-full": dataclasses.replace(DEFAULTS, longitudinal_dates="full"),
    "no-clean-descriptors": dataclasses.replace(DEFAULTS, clean_descriptors=False),
}
# PS3.15 Table E.1-1 says D for these sequences; no dummy item can stand for what identified
# someone, so the engine removes them (the issue: describe-profile said "dummy").
SEQUENCES_REMOVED = {
    "(0008,0082)": "Institution Code Sequence",
    "(0008,1072)": "Operator Identification Sequence",
    "(0040,1101)": "Person Identification Code Sequence",
    "(0040,A073)": "Verifying Observer Sequence",
    "(0034,0001)": "Flow Identifier Sequence",
    "(0008,1111)": "Referenced Performed Procedure Step Sequence",
}


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[SqliteVault]:
    store = SqliteVault(tmp_path / "vault.sqlite3", b"e" * 32)
    yield store
    store.close()


@pytest.fixture(params=list(OPTIONS))
def engine(request: pytest.FixtureRequest, vault: SqliteVault) -> Engine:
    """A real engine, with a real vault, built apart from the one explain() builds."""
    return Engine(OPTIONS[request.param], vault, ae_title="GATEWAY_UT")


def _kinds(cls: type) -> set[type]:
    """Every concrete kind of action below `cls`."""
    found: set[type] = set()
    subclasses: list[type] = cls.__subclasses__()
    for sub in subclasses:
        found |= _kinds(sub)
        if not getattr(sub, "__abstractmethods__", None):
            found.add(sub)
    return found


# One action of each kind, and a dummy of each sort (random ID, fixed, none possible)
EVERY_KIND = (
    *(
        value
        for module in (actions, temporal)
        for value in vars(module).values()
        if isinstance(value, Action)
    ),
    Dummy("PN"),
    Dummy("LO"),
    Dummy("OB"),
    ShiftDate("DA"),
    YearOnly("DA"),
    KeepForm("TM"),
)
RANDOM_ID = Effect("D", "replace with a random ID, the same for the same value (vault)")
YEAR_ONLY = Effect("C", "keep the year only")


def test_describe_every_step_with_a_table_code() -> None:
    """An action added to the engine without a description fails here, not in front of a
    privacy officer."""
    assert {type(action) for action in EVERY_KIND} == _kinds(Action)
    assert {effect(action).action for action in EVERY_KIND} <= set("XZDKCU")
    assert all(effect(action).does for action in EVERY_KIND)


def test_describe_each_step_by_the_code_for_what_it_does() -> None:
    """X remove, Z empty, D dummy, K keep, U new UID; C whatever keeps a changed value."""
    expected: dict[Action, Effect] = {
        REMOVE: Effect("X", "remove"),
        EMPTY: Effect("Z", "replace with an empty value"),
        Dummy("PN"): Effect("D", "replace with a dummy value of the same VR"),
        KEEP: Effect("K", "keep"),
        MAP_UID: Effect("U", "replace with a new UID, consistently mapped"),
        ShiftDate("DA"): Effect("C", "shift by the patient's date offset (intervals kept)"),
        AGGREGATE_AGE: Effect("C", "keep, ages over 89 as 090Y"),
        RECURSE: Effect("C", "keep the sequence, de-identify its items"),
    }
    assert {action: effect(action) for action in expected} == expected
    assert effect(CLEAN_DESCRIPTOR).action == effect(SCRUB).action == "C"
    assert effect(ACCESSION).action == effect(STUDY_ID).action == "D"


def test_describe_every_row_as_engine_step_decides(engine: Engine) -> None:
    """For every gateway rule and every Table E.1-1 row, the action explain() reports is the
    action a separately built engine chooses for the row's tag, and what is printed is that
    action's own description."""
    options = engine.options
    rows = explain(options)
    assert [r.row for r in rows if r.source == "table"] == list(engine.profile)
    assert [r.row for r in rows if r.source == "gateway"] == list(engine.profile.overrides)
    for r in rows:
        tag = representative(r.row)
        if tag is None:  # private attributes: Engine.walk keeps only the safe-private list
            assert r.action is None
            assert r.effect.action == ("C" if options.retain_safe_private else "X")
            continue
        action = engine.action(tag)
        assert r.action == action, r.row.rule.tag
        expected = effect(action)
        if tag in REWRITTEN:  # written afresh at the top level; `expected` in items
            assert r.effect.does.endswith(expected.does), r.row.rule.tag
        elif tag != 0x00020003:  # the file meta's copy of the SOP Instance UID
            assert r.effect == expected, r.row.rule.tag


def test_a_dummy_the_engine_cannot_make_is_described_as_what_it_does() -> None:
    assert effect(Dummy("LO")) == RANDOM_ID
    assert effect(Dummy("PN")) == Effect("D", "replace with a dummy value of the same VR")
    assert effect(Dummy("OB")) == effect(EMPTY)
    year = OPTIONS["dates-year"]
    study_date = ActionTable(year, Profile(year)).action(0x00080020)  # cleaned: cut to the year
    assert effect(study_date) == YEAR_ONLY


@pytest.mark.parametrize("name", ["defaults", "nothing", "all-retained"])
def test_sequences_the_table_gives_a_dummy_are_described_as_removed(name: str) -> None:
    rows = {r.row.rule.tag: r for r in explain(OPTIONS[name]) if r.source == "table"}
    for tag, sequence in SEQUENCES_REMOVED.items():
        row = rows[tag]
        assert row.row.rule.name == sequence
        if row.rule.action.value == "D":  # an option may keep one (Retain Institution Identity)
            assert (row.action, row.effect) == (REMOVE, Effect("X", "remove")), tag


def test_describe_rows_the_engine_writes_afresh() -> None:
    rows = {r.row.rule.tag: r for r in explain(DEFAULTS) if r.source == "gateway"}
    name = rows["(0010,0010)"].effect
    assert name.action == "D"
    assert name.does.startswith("replace with the patient's pseudonym (vault)")
    assert rows["(0008,0050)"].effect.does.startswith(ACCESSION.describe())
    assert rows["(0020,0010)"].effect.does.startswith(STUDY_ID.describe())


# -- what a run does ---------------------------------------------------------------------------


def _sample(options: DeidentifySettings) -> dict[int, Explanation]:
    """One table row per description and VR, for public tags a data set can hold, and the
    sequences of the issue."""
    chosen: dict[tuple[Effect, str, str], tuple[int, Explanation]] = {}
    present = synthetic()
    for r in explain(options):
        tag = r.row.rule.exact_tag
        if tag is None or tag in REWRITTEN or tag >> 16 in (0x0000, 0x0002, 0xFFFC):
            continue
        if not dictionary_has_tag(tag) or tag in present:
            continue
        vr = dictionary_VR(tag).split(" or ")[0]
        if vr in NEUTRAL or vr == "SQ":
            kind = r.row.rule.tag if r.row.rule.tag in SEQUENCES_REMOVED else vr
            chosen.setdefault((r.effect, r.required, kind), (tag, r))
    return dict(chosen.values())


def _holds(elem: DataElement) -> bool:
    return elem.value not in (None, "", b"", [])


@pytest.mark.parametrize("name", list(OPTIONS))
def test_what_is_described_is_what_a_run_does(name: str, vault: SqliteVault) -> None:
    """An instance holding one attribute per description and VR, de-identified by a real
    engine: each comes out as its row says (removed, emptied, kept, replaced, mapped...)."""
    options = OPTIONS[name]
    sample = _sample(options)
    ds = synthetic()
    for tag in sample:
        vr = dictionary_VR(tag).split(" or ")[0]
        ds.add_new(tag, vr, [item(CodeValue="QX1")] if vr == "SQ" else NEUTRAL[vr])
    engine = Engine(options, vault, ae_title="GATEWAY_UT")
    out = dcmread(io.BytesIO(engine.run(part10(ds)).data))
    replaced = {effect(Dummy("PN")), RANDOM_ID, effect(MAP_UID), effect(ShiftDate("DA"))}
    node = engine.requirements.for_sop_class(ds.SOPClassUID)
    for tag, r in sample.items():
        given, does = ds[tag].value, r.effect
        if does == effect(REMOVE) and node.kind(tag) not in (Kind.OPTIONAL, Kind.VALUED_IF):
            assert r.required, r.row.rule.tag  # the IOD requires it: the row says what then
            assert not _holds(out[tag]) or out[tag].value in FIXED_DUMMIES, r.row.rule.tag
        elif does == effect(REMOVE):
            assert tag not in out, r.row.rule.tag
        elif does == effect(EMPTY):
            assert not _holds(out[tag]), r.row.rule.tag
        elif does in (effect(KEEP), effect(KeepForm("TM"))):  # given in today's form
            assert out[tag].value == given, r.row.rule.tag
        elif does in replaced:
            assert _holds(out[tag]), r.row.rule.tag
            assert out[tag].value != given, r.row.rule.tag
        elif does == YEAR_ONLY:
            assert out[tag].value == given[:4], r.row.rule.tag
        elif does == effect(AGGREGATE_AGE):
            assert out[tag].value == "090Y", r.row.rule.tag
        else:  # text cleaned, sequences de-identified: kept, whatever cleaning leaves
            assert tag in out, (r.row.rule.tag, does)


def test_what_is_said_of_unnamed_attributes_per_vr_is_what_the_engine_chooses(
    engine: Engine,
) -> None:
    """Every current dictionary attribute Table E.1-1 does not name gets either the action
    `unnamed()` states for its VR or, when it names a person or organisation, removal."""
    said = dict(unnamed(engine.options))
    checked = 0
    for tag, (vr, _vm, _name, retired, keyword) in DicomDictionary.items():
        vr = vr.split(" or ")[0]
        if retired or tag >> 16 in (0x0000, 0x0002, 0xFFFE) or engine.profile.lookup(tag):
            continue
        if tag & 0xFFFF == 0 or vr not in said:
            continue
        done = effect(engine.action(tag))
        assert done in (said[vr], effect(REMOVE)), keyword
        checked += done == said[vr]
    assert checked > 3000
