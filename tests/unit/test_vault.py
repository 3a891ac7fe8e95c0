"""The vault on real SQLite files, with real processes racing for the same originals."""

from __future__ import annotations

import multiprocessing
import random
import secrets
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.errors import VaultError, VaultUnavailable
from gateway.vault import Entry, SqliteVault
from gateway.vault.sqlite import VERSION

ORIGINAL = "DOE^JOHN^Q"


def new_uid() -> str:
    return f"2.25.{secrets.randbits(120)}"


def vault(tmp_path: Path, key: bytes = b"k" * 32) -> SqliteVault:
    return SqliteVault(tmp_path / "vault" / "v.sqlite3", key)


def test_same_original_same_pseudonym_across_restarts(tmp_path: Path) -> None:
    first = vault(tmp_path)
    a = first.pseudonym("patient_name", ORIGINAL, lambda: "GW-" + secrets.token_hex(6))
    assert first.pseudonym("patient_name", ORIGINAL, lambda: "never used") == a
    first.close()
    again = vault(tmp_path)
    assert again.pseudonym("patient_name", ORIGINAL, lambda: "never used") == a
    assert again.original("patient_name", a) == ORIGINAL
    again.close()


def test_kinds_and_originals_are_kept_apart(tmp_path: Path) -> None:
    v = vault(tmp_path)
    uid = v.pseudonym("uid", "1.2.3", new_uid)
    assert v.pseudonym("uid", "1.2.4", new_uid) != uid
    assert v.pseudonym("study_uid", "1.2.3", new_uid) != uid
    assert v.original("uid", "2.25.0") is None
    v.close()


def test_a_fresh_vault_gives_different_pseudonyms(tmp_path: Path) -> None:
    a = vault(tmp_path / "a").pseudonym("uid", "1.2.3", new_uid)
    b = vault(tmp_path / "b").pseudonym("uid", "1.2.3", new_uid)
    assert a != b


def test_a_taken_pseudonym_is_not_handed_out_twice(tmp_path: Path) -> None:
    v = vault(tmp_path)
    proposals = iter(["P1", "P1", "P2"])
    assert v.pseudonym("patient_id", "111", lambda: next(proposals)) == "P1"
    assert v.pseudonym("patient_id", "222", lambda: next(proposals)) == "P2"
    with pytest.raises(VaultError, match="no free pseudonym"):
        v.pseudonym("patient_id", "333", lambda: "P1")
    v.close()


def test_nothing_original_is_readable_in_the_files(tmp_path: Path) -> None:
    v = vault(tmp_path)
    v.pseudonym("patient_name", ORIGINAL, lambda: "GW-1")
    v.pseudonym("patient_id", "MRN-0042", lambda: "GW-2")
    v.close()
    files = list((tmp_path / "vault").iterdir())
    assert files
    for path in files:
        raw = path.read_bytes()
        assert ORIGINAL.encode() not in raw
        assert b"MRN-0042" not in raw
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0


def test_the_wrong_key_is_refused_rather_than_minting_new_pseudonyms(tmp_path: Path) -> None:
    """Another key would find no mapping (the lookups are keyed) and silently give every
    patient and study new pseudonyms; the vault proves its key first and refuses."""
    v = vault(tmp_path)
    pseudonym = v.pseudonym("patient_name", ORIGINAL, lambda: "GW-9")
    v.close()
    other = vault(tmp_path, key=b"x" * 32)
    calls: tuple[Callable[[], object], ...] = (
        lambda: other.original("patient_name", pseudonym),
        lambda: other.pseudonym("patient_name", ORIGINAL, lambda: "GW-10"),
        other.ping,
    )
    for call in calls:
        with pytest.raises(VaultUnavailable, match="not the key this vault was made with") as e:
            call()
        assert e.value.reason == "vault-key-mismatch"
    other.close()
    again = vault(tmp_path)
    assert again.pseudonym("patient_name", ORIGINAL, lambda: "never") == pseudonym
    assert again.original("patient_name", pseudonym) == ORIGINAL
    again.close()


def _worker(args: tuple[str, int]) -> list[str]:
    path, seed = args
    order = list(range(40))
    random.Random(seed).shuffle(order)  # noqa: S311 - each process asks in its own order
    v = SqliteVault(Path(path), b"k" * 32)
    got = {i: v.pseudonym("uid", f"1.2.840.{i}", new_uid) for i in order}
    v.close()
    return [got[i] for i in range(40)]


def test_concurrent_processes_agree(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    SqliteVault(path, b"k" * 32).close()
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_worker, [(str(path), seed) for seed in range(4)], chunksize=1)
    assert all(r == results[0] for r in results)
    assert len(set(results[0])) == 40


def _open_and_close(path: str) -> str:
    try:
        SqliteVault(Path(path), b"k" * 32).close()
    except VaultError as exc:
        return str(exc)
    return "ok"


def test_processes_opening_a_new_vault_at_once_all_succeed(tmp_path: Path) -> None:
    """The workers open the vault together at first start: the switch to WAL mode answered
    "locked" to some of them (about one trial in five before the fix), and the gateway stopped."""
    context = multiprocessing.get_context("fork")
    with context.Pool(4) as pool:
        for trial in range(20):
            path = str(tmp_path / f"v{trial}" / "v.sqlite3")
            assert pool.map(_open_and_close, [path] * 4) == ["ok"] * 4


def test_an_existing_vault_is_migrated_in_place_and_keeps_its_mappings(tmp_path: Path) -> None:
    """A vault written before the study ledger (schema 1, or an unversioned file of the same
    table) opens with its mappings and gains the ledger; a newer schema is refused."""
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE mapping (kind TEXT NOT NULL, lookup BLOB NOT NULL, original BLOB NOT NULL,"
        " pseudonym TEXT NOT NULL, created TEXT NOT NULL, PRIMARY KEY (kind, lookup))"
        " WITHOUT ROWID;"
        "CREATE UNIQUE INDEX mapping_pseudonym ON mapping (kind, pseudonym);"
    )
    db.close()
    first = SqliteVault(path, b"k" * 32)
    uid = first.pseudonym("uid", "1.2.3", new_uid)
    first.close()
    db = sqlite3.connect(path)
    db.execute("DELETE FROM delivered")  # the ledger's tables exist
    db.execute("PRAGMA user_version = 1")  # as a schema-1 file would be
    db.execute("DROP TABLE delivered")
    db.commit()
    db.close()
    again = SqliteVault(path, b"k" * 32)
    assert again.migrate() == (1, VERSION)
    assert again.pseudonym("uid", "1.2.3", lambda: "no") == uid
    again.record_delivered("2.25.1", [Entry("2.25.2", "2.25.3", "1.2.840.10008.5.1.4.1.1.7", "ab")])
    assert set(again.delivered("2.25.1")) == {"2.25.2"}
    again.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    with pytest.raises(VaultError, match="newer than this gateway knows"):
        SqliteVault(path, b"k" * 32)


def test_the_study_ledger_lists_deliveries_claims_rising_versions_and_holds(
    tmp_path: Path,
) -> None:
    v = vault(tmp_path)
    entry = Entry("2.25.2", "2.25.3", "1.2.840.10008.5.1.4.1.1.7", "ab")
    v.record_delivered("2.25.1", [entry])
    v.record_delivered("2.25.1", [Entry("2.25.2", "2.25.3", "1.2.840.10008.5.1.4.1.1.7", "cd")])
    assert v.delivered("2.25.1") == {"2.25.2": entry}  # the first record stands
    assert v.delivered("2.25.9") == {}
    assert [v.claim_manifest("2.25.1", 1) for _ in range(3)] == [1, 2, 3]
    assert v.claim_manifest("2.25.1", 7) == 7  # above what this gateway's spool has seen
    assert v.claim_manifest("2.25.1", 1) == 8
    assert v.claim_manifest("2.25.4", 1) == 1  # per study
    assert not v.study_held("2.25.1")
    v.hold_study("2.25.1")
    v.hold_study("2.25.1")
    assert v.study_held("2.25.1")
    assert not v.study_held("2.25.4")
    v.close()


def test_a_failing_sqlite_file_makes_the_vault_unavailable_not_the_instance_bad(
    tmp_path: Path,
) -> None:
    """A write SQLite refuses (here: the connection made read-only, as a full disk or a
    read-only remount would) raises VaultUnavailable - the worker then leaves the instance
    waiting - and no SQLite message or value."""
    v = vault(tmp_path)
    v.pseudonym("uid", "1.2.3", new_uid)
    v._db.execute("PRAGMA query_only = ON")  # the file's failure, at its one boundary
    with pytest.raises(VaultUnavailable) as caught:
        v.pseudonym("uid", "1.2.4", new_uid)
    assert caught.value.reason == "vault-unavailable"
    assert "1.2.4" not in str(caught.value)
    assert "OperationalError" in str(caught.value)
    assert v.pseudonym("uid", "1.2.3", lambda: "no")  # what is known still answers
    v._db.execute("PRAGMA query_only = OFF")
    assert v.pseudonym("uid", "1.2.4", new_uid)
    v.close()


def test_a_study_identity_is_kept_encrypted_first_record_standing(tmp_path: Path) -> None:
    v = vault(tmp_path)
    v.record_identity("2.25.7", '{"PatientName": "Ørsted^Åse"}')
    v.record_identity("2.25.7", '{"PatientName": "someone else"}')
    assert v.identity("2.25.7") == '{"PatientName": "Ørsted^Åse"}'
    assert v.identity("2.25.8") is None
    v.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "vault").iterdir())
    assert "Ørsted".encode() not in raw
    other = vault(tmp_path, key=b"x" * 32)
    with pytest.raises(VaultUnavailable):
        other.identity("2.25.7")
    other.close()
