"""The spool on a real filesystem: encrypted, durable, no PHI in names, nothing partial."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import KeyFileError, SpoolCorrupt, SpoolError, SpoolFull, SpoolLocked
from gateway.keyfiles import generate_key_file, read_key
from gateway.settings import SecretSource, SpoolSettings
from gateway.spool import (
    OutgoingHeader,
    Received,
    Spool,
    State,
    manifest_name,
    manifest_version,
)

STUDY = "1.2.826.0.1.3680043.8.498.1"
PAYLOAD = b"\0" * 128 + b"DICM" + b"pretend this is a data set with PATIENT^NAME in it" * 100


def settings(tmp_path: Path, reserve_mib: int = 0) -> SpoolSettings:
    key = tmp_path / "keys" / "master.key"
    if not key.exists():
        generate_key_file(key)
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
    generate_key_file(other)
    view = Spool.open_readonly(SpoolSettings(tmp_path / "spool", SecretSource(file=other)))
    [path] = view.instance_files()
    with pytest.raises(SpoolCorrupt, match="another master key"):
        view.read(path)


def test_master_key_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "k"
    generate_key_file(key)
    assert len(read_key(SecretSource(file=key))) == 32
    with pytest.raises(FileExistsError):
        generate_key_file(key)
    key.chmod(0o640)
    with pytest.raises(KeyFileError, match="mode 0600"):
        read_key(SecretSource(file=key))
    monkeypatch.setenv("GW_TEST_KEY", "00" * 31)
    with pytest.raises(KeyFileError, match="must hold 32 bytes"):
        read_key(SecretSource(env="GW_TEST_KEY"))
    monkeypatch.setenv("GW_TEST_KEY", "ab" * 32)
    assert read_key(SecretSource(env="GW_TEST_KEY")) == bytes.fromhex("ab" * 32)


def test_durable_order_before_store_returns(spool: Spool, monkeypatch: pytest.MonkeyPatch) -> None:
    """write -> fdatasync(file) -> rename -> fsync(directory); spies pass every call through."""
    calls: list[tuple[str, str]] = []
    real = {name: getattr(os, name) for name in ("fdatasync", "fsync", "rename")}
    paths: dict[int, str] = {}
    real_open = os.open

    def spy_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        paths[fd] = Path(path).name if not flags & os.O_DIRECTORY else "dir:" + Path(path).name
        return fd

    def spy(name: str) -> Any:
        def call(*args: Any) -> Any:
            target = paths.get(args[0], "?") if isinstance(args[0], int) else Path(args[1]).name
            calls.append((name, target))
            return real[name](*args)

        return call

    monkeypatch.setattr(os, "open", spy_open)
    for name in real:
        monkeypatch.setattr(os, name, spy(name))
    header = spool.store(received("1.2.99"))
    final = f"{header.instance_id}.dgs"
    key = f"{header.study_id}.key"
    names = [name for name, _ in calls]
    # the study key first, durably, then the instance
    assert calls.index(("rename", key)) < calls.index(("rename", final))
    assert names[-3:] == ["fdatasync", "rename", "fsync"]
    assert calls[-2] == ("rename", final)
    assert calls[-1] == ("fsync", f"dir:{header.study_id}")
    assert ("fsync", "dir:keys") in calls
    assert ("fsync", "dir:incoming") in calls  # the new study directory itself


def test_erasing_a_study_destroys_its_key_and_files(spool: Spool) -> None:
    a = spool.store(received("1.2.3"))
    spool.store(received("1.2.3"))
    b = spool.store(received("1.2.4"))
    assert spool.erase_study(a.study_id) == 2
    assert not (spool.key_dir / f"{a.study_id}.key").exists()
    assert not (spool.incoming / a.study_id).exists()
    assert [p.parent.name for p in spool.instance_files()] == [b.study_id]
    # the same study arriving again gets a fresh key and is readable
    again = spool.store(received("1.2.3"))
    assert again.study_id == a.study_id
    assert spool.read(spool.incoming / a.study_id / f"{again.instance_id}.dgs")[1] == PAYLOAD
    assert spool.erase_study("0" * 32) == 0


def test_a_study_is_busy_while_an_instance_of_it_waits_in_incoming_or_the_outbox(
    spool: Spool,
) -> None:
    header = spool.store(received())
    study = header.study_id
    assert spool.busy(study)  # the original waits to be sealed
    sealed = spool.write_sealed(outgoing(study, header.instance_id), b"body")
    spool.discard(spool.path(State.INCOMING, study, header.instance_id))
    assert spool.busy(study)  # its sealed copy waits to be sent
    spool.move(sealed, State.SENT)
    assert not spool.busy(study)
    assert [i.name for i in spool.delivered(study)] == [header.instance_id]
    assert not spool.busy("ab" * 16)  # a study the spool never saw


def test_a_held_study_stays_held_after_a_restart(tmp_path: Path) -> None:
    first = Spool.open(settings(tmp_path))
    study = first.store(received()).study_id
    assert not first.records.held(study)
    assert first.records.hold(study)
    assert not first.records.hold(study)  # held already
    assert first.records.held(study)
    first.close()
    again = Spool.open(settings(tmp_path))
    try:
        assert again.records.held(study)
        assert again.records.read(study)["mixed"] is True
    finally:
        again.close()


def test_manifest_versions_count_on_past_every_manifest_left_in_the_spool(spool: Spool) -> None:
    study = spool.store(received()).study_id
    assert spool.next_manifest(study, 0) == 1
    assert spool.next_manifest(study, 4) == 5  # the record's version
    spool.move(spool.write_sealed(outgoing(study, manifest_name(7)), b"m"), State.SENT)
    spool.hold(spool.write_sealed(outgoing(study, manifest_name(9)), b"m"), State.DEAD, {})
    assert spool.next_manifest(study, 4) == 10
    assert [i.name for i in spool.items(State.DEAD, study)] == [manifest_name(9)]
    assert spool.delivered(study) == []  # a manifest is no delivered instance


def outgoing(study_id: str, name: str) -> OutgoingHeader:
    version = manifest_version(name)
    return OutgoingHeader(
        name=name,
        study_id=study_id,
        kind="instance" if version is None else "manifest",
        site="SITE",
        study="2.25.1",
        item=name if version is None else str(version),
        key_id="k",
        sha256="",
        size=4,
        received_at="2026-12-06T10:00:00+00:00",
        sealed_at="2026-12-06T10:00:01+00:00",
    )
