"""The spool on a real filesystem: encrypted, durable, no PHI in names, nothing partial."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.errors import KeyFileError, SpoolCorrupt, SpoolError, SpoolFull, SpoolLocked
from gateway.settings import SecretSource, SpoolSettings
from gateway.spool import Received, Spool
from gateway.spool.crypto import generate_master_key_file, read_master_key

STUDY = "1.2.826.0.1.3680043.8.498.1"
PAYLOAD = b"\0" * 128 + b"DICM" + b"pretend this is a data set with PATIENT^NAME in it" * 100


def settings(tmp_path: Path, reserve_mib: int = 0) -> SpoolSettings:
    key = tmp_path / "keys" / "master.key"
    if not key.exists():
        generate_master_key_file(key)
    return SpoolSettings(tmp_path / "spool", SecretSource(file=key), reserve_mib)


def received(study: str = STUDY, payload: bytes = PAYLOAD) -> Received:
    ct, explicit_le = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1"
    return Received(payload[:132], payload[132:], study, "test-pacs", ct, explicit_le)


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Spool]:
    s = Spool.open(settings(tmp_path))
    yield s
    s.close()


def test_round_trip_and_clear_header(spool: Spool) -> None:
    header = spool.store(received())
    [path] = spool.instance_files()
    got_header, part10 = spool.read(path)
    assert part10 == PAYLOAD
    assert got_header == header
    assert header.peer == "test-pacs"
    assert header.size == len(PAYLOAD)


def test_nothing_readable_on_disk(spool: Spool) -> None:
    spool.store(received())
    for path in spool.root.rglob("*"):
        assert STUDY not in str(path)
        if path.is_file():
            raw = path.read_bytes()
            assert b"PATIENT^NAME" not in raw
            assert STUDY.encode() not in raw
            assert os.stat(path).st_mode & 0o077 == 0


def test_one_key_per_study(spool: Spool) -> None:
    a1 = spool.store(received("1.2.3"))
    a2 = spool.store(received("1.2.3"))
    b = spool.store(received("1.2.4"))
    assert a1.study_id == a2.study_id != b.study_id
    assert sorted(p.stem for p in spool.key_dir.iterdir()) == sorted({a1.study_id, b.study_id})


def test_uid_shaped_like_a_path_stays_inside_the_spool(spool: Spool) -> None:
    header = spool.store(received("../../../../tmp/x"))
    [path] = spool.instance_files()
    assert path.parent.parent == spool.incoming
    assert path.parent.name == header.study_id
    assert all(c in "0123456789abcdef" for c in header.study_id)


def test_tampering_is_detected(spool: Spool) -> None:
    spool.store(received())
    [path] = spool.instance_files()
    blob = bytearray(path.read_bytes())
    blob[-20] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(SpoolCorrupt, match="does not authenticate"):
        spool.read(path)


def test_header_cannot_be_altered_either(spool: Spool) -> None:
    spool.store(received())
    [path] = spool.instance_files()
    path.write_bytes(path.read_bytes().replace(b"test-pacs", b"evil-pacs"))
    with pytest.raises(SpoolCorrupt):
        spool.read(path)


def test_destroying_the_study_key_erases_the_study(tmp_path: Path) -> None:
    spool = Spool.open(settings(tmp_path))
    header = spool.store(received())
    spool.close()
    (tmp_path / "spool" / "keys" / f"{header.study_id}.key").unlink()
    fresh = Spool.open(settings(tmp_path))
    [path] = fresh.instance_files()
    with pytest.raises(SpoolCorrupt, match="is gone"):
        fresh.read(path)
    fresh.close()


def test_reserve_refuses_and_leaves_nothing(tmp_path: Path) -> None:
    spool = Spool.open(settings(tmp_path, reserve_mib=1 << 29))  # more than any disk has
    with pytest.raises(SpoolFull):
        spool.store(received())
    assert list(spool.instance_files()) == []
    assert spool.partial_files() == []
    spool.close()


def test_partial_writes_are_dropped_at_start(tmp_path: Path) -> None:
    spool = Spool.open(settings(tmp_path))
    spool.store(received())
    [done] = spool.instance_files()
    (done.parent / ".deadbeef.part").write_bytes(b"half an instance")
    (spool.key_dir / ".cafe.part").write_bytes(b"half a key")
    spool.close()
    reopened = Spool.open(settings(tmp_path))
    assert reopened.partial_files() == []
    assert list(reopened.instance_files()) == [done]
    reopened.close()


def test_one_owner_per_spool(spool: Spool, tmp_path: Path) -> None:
    with pytest.raises(SpoolLocked):
        Spool.open(settings(tmp_path))


def test_read_only_view_cannot_store(spool: Spool, tmp_path: Path) -> None:
    spool.store(received())
    view = Spool.open_readonly(settings(tmp_path))
    [path] = view.instance_files()
    assert view.read(path)[1] == PAYLOAD
    with pytest.raises(SpoolError, match="read-only"):
        view.store(received())


def test_a_different_master_key_cannot_read(spool: Spool, tmp_path: Path) -> None:
    spool.store(received())
    other = tmp_path / "other.key"
    generate_master_key_file(other)
    view = Spool.open_readonly(SpoolSettings(tmp_path / "spool", SecretSource(file=other)))
    [path] = view.instance_files()
    with pytest.raises(SpoolCorrupt, match="another master key"):
        view.read(path)


def test_master_key_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "k"
    generate_master_key_file(key)
    assert len(read_master_key(SecretSource(file=key))) == 32
    with pytest.raises(FileExistsError):
        generate_master_key_file(key)
    key.chmod(0o640)
    with pytest.raises(KeyFileError, match="mode 0600"):
        read_master_key(SecretSource(file=key))
    monkeypatch.setenv("GW_TEST_KEY", "00" * 31)
    with pytest.raises(KeyFileError, match="must hold 32 bytes"):
        read_master_key(SecretSource(env="GW_TEST_KEY"))
    monkeypatch.setenv("GW_TEST_KEY", "ab" * 32)
    assert read_master_key(SecretSource(env="GW_TEST_KEY")) == bytes.fromhex("ab" * 32)
