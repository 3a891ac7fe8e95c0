"""One UID map through the vault: references stay intact, the standard's UIDs stay put."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import UID

from gateway.deidentify.uids import UidMapper, is_standard_uid, new_uid
from gateway.vault import SqliteVault


@pytest.fixture
def mapper(tmp_path: Path) -> UidMapper:
    return UidMapper(SqliteVault(tmp_path / "v.sqlite3", b"k" * 32))


def test_the_same_uid_maps_the_same_way_everywhere(mapper: UidMapper) -> None:
    study = "1.2.826.0.1.3680043.8.498.12345"
    first = mapper.map(study)
    assert first != study
    assert first.startswith("2.25.")
    assert mapper.map(study) == first
    assert mapper.map(study + "\0") == first  # padding does not make it another UID
    assert mapper.map_value(f"{study}\\1.2.3") == f"{first}\\{mapper.map('1.2.3')}"


def test_standard_uids_are_never_changed(mapper: UidMapper) -> None:
    for standard in (
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
        "1.2.840.10008.2.16.4",  # DICOM Controlled Terminology
    ):
        assert is_standard_uid(standard)
        assert mapper.map(standard) == standard
    assert mapper.map("") == ""


def test_new_uids_are_valid_and_random() -> None:
    made = {new_uid() for _ in range(100)} | {
        new_uid("1.2.826.0.1.3680043.10.1") for _ in range(100)
    }
    assert len(made) == 200
    for uid in made:
        assert UID(uid).is_valid
        assert len(uid) <= 64
    with pytest.raises(ValueError, match="root too long"):
        new_uid("1." * 30)
