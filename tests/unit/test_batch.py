"""`deidentify`'s account of pydicom's warnings: counted by kind, never with their text."""

from __future__ import annotations

import logging

import pytest
from pydicom import config
from pydicom.charset import decode_bytes
from pydicom.valuerep import validate_value

from gateway import batch


def test_pydicom_warnings_are_counted_by_kind_once_each_without_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """pydicom logs and warns the same text (`warn_and_log`): each is one warning; the VR is
    kept, the value ("2023AB01", "Smith") is not; nothing reaches the log."""
    with caplog.at_level(logging.DEBUG), batch.pydicom_warnings() as kinds:
        validate_value("DA", "2023AB01", config.WARN)
        validate_value("DA", "2023AB02", config.WARN)
        validate_value("CS", "SMITH" * 4, config.WARN)
        decode_bytes(b"Smith", ["ISO_IR 999"], set())
    assert kinds == {
        "invalid-value:DA": 2,
        "too-long:CS": 1,
        "unknown-character-set": 1,
    }
    assert caplog.records == []


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (
            "Expected explicit VR, but found implicit VR - using implicit VR for reading",
            "implicit-vr-in-explicit-file",
        ),
        ("Invalid value for VR XX: 'Smith'.", "invalid-value:unknown"),
        (
            "Failed to decode byte string with encodings: iso8859 - using replacement characters",
            "undecodable-text",
        ),
        ("'Smith^John' is not what pydicom usually says", "other"),
    ],
)
def test_a_warning_text_maps_to_a_kind_from_the_allow_list(message: str, kind: str) -> None:
    assert batch.warning_kind(message) == kind
