"""Table E.1-1 as data: every row loaded, codes and options resolved as PS3.15 says."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gateway.deidentify.profile import Code, Profile, table_rules
from gateway.settings import DeidentifySettings
from tests.support import shared_dir

DEFAULTS = DeidentifySettings()
NOTHING = DeidentifySettings(
    retain_patient_characteristics=False, longitudinal_dates="off", clean_descriptors=False
)


def action(profile: Profile, tag: int) -> Code | None:
    found = profile.lookup(tag)
    return None if found is None else found.action


def test_every_row_of_the_table_is_a_rule() -> None:
    reference = (
        shared_dir()
        / "reference"
        / ("ps3.15_tableE1-1_confidentiality_profile_attributes.innolitics_rev2024b.json")
    )
    if not reference.is_file():
        pytest.skip(f"shared reference table not found at {reference}")
    rows = json.loads(reference.read_text())
    rules = table_rules()
    assert [(r.tag, r.name, r.basic) for r in rules] == [
        (row["tag"], row["name"], row["basicProfile"]) for row in rows
    ]
    assert len(Profile(DEFAULTS)) == 621


@pytest.mark.parametrize(
    ("tag", "options", "expected"),
    [
        # basic profile, single codes
        (0x00100010, NOTHING, Code.DUMMY),  # Patient's Name: Z, but the gateway's pseudonym
        (0x00100020, NOTHING, Code.DUMMY),  # Patient ID: Z/D -> D (conforming for Type 1)
        (0x00080050, NOTHING, Code.DUMMY),  # Accession Number: Z, but a random pseudonym
        (0x00100030, NOTHING, Code.EMPTY),  # Patient's Birth Date: Z
        (0x0020000D, NOTHING, Code.NEW_UID),  # Study Instance UID: U
        (0x00081030, NOTHING, Code.REMOVE),  # Study Description: X
        # compound codes take the always-conforming choice
        (0x00080080, NOTHING, Code.DUMMY),  # Institution Name: X/Z/D
        (0x00181000, NOTHING, Code.DUMMY),  # Device Serial Number: X/Z/D
        (0x00081140, NOTHING, Code.NEW_UID),  # Referenced Image Sequence: X/Z/U*
        (0x00400555, NOTHING, Code.EMPTY),  # Acquisition Context Sequence: X/Z
        # wildcard rows
        (0x00091010, NOTHING, Code.REMOVE),  # private
        (0x60003000, NOTHING, Code.REMOVE),  # Overlay Data
        (0x50021234, NOTHING, Code.REMOVE),  # Curve Data
        # options
        (0x00101010, DEFAULTS, Code.KEEP),  # Patient's Age: Retain Patient Characteristics
        (0x00101010, NOTHING, Code.REMOVE),
        (0x00080020, DEFAULTS, Code.CLEAN),  # Study Date: modified dates
        (0x00080020, dataclasses.replace(DEFAULTS, longitudinal_dates="full"), Code.KEEP),
        (0x00081030, DEFAULTS, Code.CLEAN),  # Study Description: Clean Descriptors
        (0x0020000D, dataclasses.replace(NOTHING, retain_uids=True), Code.KEEP),
        (0x00080080, dataclasses.replace(NOTHING, retain_institution_identity=True), Code.KEEP),
        (0x00181000, dataclasses.replace(NOTHING, retain_device_identity=True), Code.KEEP),
        (0x00091010, dataclasses.replace(NOTHING, retain_safe_private=True), Code.CLEAN),
        # the gateway's own rules: overlays go even under Clean Graphics (nothing cleans them)
        (0x60003000, dataclasses.replace(NOTHING, clean_graphics=True), Code.REMOVE),
        (0x60000010, DEFAULTS, Code.REMOVE),  # Overlay Rows: not in the table, still gone
        (0x00880200, DEFAULTS, Code.REMOVE),  # Icon Image Sequence
        (0x00700001, DEFAULTS, Code.REMOVE),  # Graphic Annotation Sequence
        (0x00700001, dataclasses.replace(DEFAULTS, clean_graphics=True), Code.CLEAN),
        (0x0040A730, DEFAULTS, Code.REMOVE),  # Content Sequence
        (0x0040A730, dataclasses.replace(DEFAULTS, clean_structured_content=True), Code.CLEAN),
    ],
)
def test_resolution(tag: int, options: DeidentifySettings, expected: Code) -> None:
    assert action(Profile(options), tag) is expected


def test_the_table_rows_under_a_gateway_rule_keep_their_own_code() -> None:
    rows = {r.rule.exact_tag: r for r in Profile(NOTHING)}
    assert rows[0x00100010].action is Code.EMPTY
    assert rows[0x00080050].action is Code.EMPTY


def test_a_cleaning_option_beats_a_keeping_one() -> None:
    """Date of Last Calibration: Retain Device Identity says K, Modified Dates says C."""
    both = dataclasses.replace(NOTHING, retain_device_identity=True, longitudinal_dates="modified")
    found = Profile(both).lookup(0x00181200)
    assert found is not None
    assert found.action is Code.CLEAN


def test_attributes_the_table_does_not_name_are_not_in_the_profile() -> None:
    profile = Profile(DEFAULTS)
    assert profile.lookup(0x00280010) is None  # Rows: not identifying, not in Table E.1-1
    assert profile.lookup(0x7FE00010) is None  # Pixel Data
