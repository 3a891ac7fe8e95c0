"""The conformance statement leaves no setting undescribed and records each option in force."""

from __future__ import annotations

import dataclasses
from datetime import date

from gateway.conformance import Site, meanings, statement
from gateway.settings import DeidentifySettings, PixelSettings

EVERY_OPTION = DeidentifySettings(
    retain_device_identity=True,
    retain_institution_identity=True,
    retain_uids=True,
    retain_safe_private=True,
    clean_structured_content=True,
    clean_graphics=True,
)


def test_every_setting_that_changes_what_leaves_has_a_meaning() -> None:
    """A setting added to [deidentify] or [pixels] without a meaning fails here, not in front
    of a privacy officer."""
    names = {f.name for cls in (DeidentifySettings, PixelSettings) for f in dataclasses.fields(cls)}
    assert names - set(meanings()) == set()


def test_each_option_in_force_names_the_code_every_output_records() -> None:
    text = statement(Site(deidentify=EVERY_OPTION), date(2026, 12, 6))
    options = text[text.index("## 1.") : text.index("## 2.")]
    in_force = [line for line in options.splitlines() if "| Yes |" in line]
    assert len(in_force) == 11  # basic, pixels, 9 of the 10 Table E.1-1 columns (not Full Dates)
    assert all(line.rstrip(" |").split("| ")[-1][:6].isdigit() for line in in_force), in_force
    pixels = next(line for line in in_force if line.startswith("| Clean Pixel Data |"))
    assert "113101 Clean Pixel Data Option on each image whose every frame was checked" in pixels
    assert "| Retain Longitudinal Temporal Information with Full Dates | No |" in options
