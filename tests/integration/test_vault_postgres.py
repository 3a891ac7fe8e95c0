"""The PostgreSQL vault on a real server (tests/postgres.py): the same pseudonyms for every
process and gateway, first writer wins under concurrency, versioned migration, a move from
SQLite, and an outage that makes calls wait rather than fail an instance."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import random
import secrets
import time
from pathlib import Path
from typing import Any

import pytest

from gateway import devpki
from gateway.deidentify.pseudonyms import PATIENT_KIND, Pseudonyms, patient_key
from gateway.deidentify.uids import UID_KIND, new_uid
from gateway.errors import ConfigError, VaultError, VaultUnavailable
from gateway.keyfiles import write_key_file
from gateway.settings import PostgresSettings, SecretSource, load
from gateway.vault import Entry, SqliteVault
from gateway.vault.base import KEY_CHECK
from gateway.vault.postgres import VERSION, PostgresVault
from tests.postgres import PostgresServer
from tests.support import cli

KEY = b"v" * 32
ORIGINAL = "KOWALSKI^ŁUCJA"


def settings(server: PostgresServer, dbname: str, folder: Path) -> PostgresSettings:
    password = folder / f"{dbname}.password"
    password.write_text(server.password)
    password.chmod(0o600)
    return PostgresSettings(
        host="127.0.0.1",
        port=server.port,
        dbname=dbname,
        user="dicom_gateway",
        password=SecretSource(file=password),
        sslmode="disable",
        connect_timeout=2.0,
    )


def test_two_gateways_get_the_same_pseudonyms_and_the_server_sees_no_original(
    postgres_server: PostgresServer, postgres_db: str, tmp_path: Path
) -> None:
    config = settings(postgres_server, postgres_db, tmp_path)
    first, second = PostgresVault(config, KEY), PostgresVault(config, KEY)
    try:
        name = first.pseudonym("patient", ORIGINAL, lambda: "GW-" + secrets.token_hex(5))
        assert second.pseudonym("patient", ORIGINAL, lambda: "never used") == name
        assert second.original("patient", name) == ORIGINAL
        uid = second.pseudonym(UID_KIND, "1.2.826.0.1.3680043.2.1", new_uid)
        assert first.pseudonym(UID_KIND, "1.2.826.0.1.3680043.2.1", new_uid) == uid
        assert first.original(UID_KIND, "2.25.0") is None
    finally:
        first.close()
        second.close()
    with postgres_server.connect(postgres_db) as conn:
        rows = conn.execute(
            "SELECT kind, lookup, original, pseudonym FROM mapping WHERE kind <> %s", (KEY_CHECK,)
        ).fetchall()
    assert len(rows) == 2
    stored = b"".join(bytes(r[1]) + bytes(r[2]) + r[3].encode() for r in rows)
    for clear in (ORIGINAL.encode(), b"KOWALSKI", b"1.2.826.0.1.3680043.2.1"):
        assert clear not in stored


def test_a_taken_pseudonym_is_never_handed_out_twice(
    postgres_server: PostgresServer, postgres_db: str, tmp_path: Path
) -> None:
    vault = PostgresVault(settings(postgres_server, postgres_db, tmp_path), KEY)
    try:
        proposals = iter(["P1", "P1", "P2"])
        assert vault.pseudonym("patient_id", "111", lambda: next(proposals)) == "P1"
        assert vault.pseudonym("patient_id", "222", lambda: next(proposals)) == "P2"
        with pytest.raises(VaultError, match="no free pseudonym"):
            vault.pseudonym("patient_id", "333", lambda: "P1")
    finally:
        vault.close()


def _picklable(raw: dict[str, Any]) -> PostgresSettings:
    """The settings a spawned process was given as a plain dict (`_plain`)."""
    return PostgresSettings(**{**raw, "password": SecretSource(file=Path(raw["password"]))})


def _plain(config: PostgresSettings) -> dict[str, Any]:
    assert config.password is not None
    return {**config.__dict__, "password": str(config.password.file)}


def _mint(args: tuple[dict[str, Any], int]) -> list[str]:
    """One worker process of one gateway: the 50 patients' pseudonyms, in its own order."""
    raw, seed = args
    vault = PostgresVault(_picklable(raw), KEY)
    pseudonyms = Pseudonyms(vault, "GW")
    order = list(range(50))
    random.Random(seed).shuffle(order)  # noqa: S311 - each process asks in its own order
    got = {i: pseudonyms.patient(patient_key("", f"MRN{i:04}", f"DOE^P{i}", "")) for i in order}
    vault.close()
    return [got[i] for i in range(50)]


def test_four_workers_of_two_gateways_mint_exactly_fifty_pseudonyms_for_fifty_patients(
    postgres_server: PostgresServer, postgres_db: str, tmp_path: Path
) -> None:
    config = settings(postgres_server, postgres_db, tmp_path)
    raw = _plain(config)
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        results = pool.map(_mint, [(raw, seed) for seed in range(8)], chunksize=1)
    assert all(r == results[0] for r in results)
    assert len(set(results[0])) == 50
    with postgres_server.connect(postgres_db) as conn:
        count = conn.execute("SELECT count(*) FROM mapping WHERE kind = %s", (PATIENT_KIND,))
        assert count.fetchone() == (50,)


def _migrate(raw: dict[str, Any]) -> tuple[int, int]:
    vault = PostgresVault(_picklable(raw), KEY)
    try:
        return vault.migrate()
    finally:
        vault.close()


def test_migration_is_versioned_runs_once_among_racers_and_refuses_a_newer_schema(
    postgres_server: PostgresServer, postgres_db: str, tmp_path: Path
) -> None:
    config = settings(postgres_server, postgres_db, tmp_path)
    raw = _plain(config)
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_migrate, [raw] * 4, chunksize=1)
    assert sorted(results) == [(0, VERSION)] + [(VERSION, VERSION)] * 3
    with postgres_server.connect(postgres_db) as conn:
        versions = conn.execute("SELECT version FROM vault_schema ORDER BY version").fetchall()
        assert [v[0] for v in versions] == list(range(1, VERSION + 1))
        conn.execute("INSERT INTO vault_schema VALUES (%s)", (VERSION + 1,))
    vault = PostgresVault(config, KEY)
    try:
        with pytest.raises(VaultUnavailable, match="newer than this gateway") as caught:
            vault.pseudonym("uid", "1.2.3", new_uid)
        assert caught.value.reason == "vault-schema-newer"
    finally:
        vault.close()


def test_vault_copy_from_sqlite_keeps_every_mapping_and_a_second_run_adds_nothing(
    postgres_server: PostgresServer, postgres_db: str, tmp_path: Path
) -> None:
    site = SqliteVault(tmp_path / "old.sqlite3", KEY, durable=False)
    expected = {  # more than one page (vault.base.PAGE) of mappings
        (kind, original): site.pseudonym(kind, original, make)
        for kind, original, make in [
            *((UID_KIND, f"1.2.3.{i}", new_uid) for i in range(1200)),
            *(("patient", f"DOE^{i}", lambda: "GW-" + secrets.token_hex(5)) for i in range(40)),
            ("date_offset", ORIGINAL, lambda: f"-400:{secrets.token_hex(8)}"),
        ]
    }
    ct = "1.2.840.10008.5.1.4.1.1.2"
    site.record_delivered("2.25.1", [Entry("2.25.11", "2.25.9", ct, "aa")])
    assert site.claim_manifest("2.25.1", 1) == 1
    assert site.claim_manifest("2.25.1", 1) == 2
    site.hold_study("2.25.5")
    site.close()
    key_file = tmp_path / "vault.key"
    key_file.write_text(KEY.hex())
    key_file.chmod(0o600)
    config = tmp_path / "target.toml"
    pg = postgres_server.vault_config(postgres_db, tmp_path / "pg.password")
    config.write_text(_toml(tmp_path, pg, key_file))
    migrate = cli("vault", "migrate", "--config", str(config))
    assert migrate.returncode == 0, migrate.stderr
    assert f"vault (postgresql): schema version 0 -> {VERSION}" in migrate.stdout
    migrate = cli("vault", "migrate", "--config", str(config))
    assert f"vault (postgresql): schema version {VERSION}, up to date" in migrate.stdout
    args = (
        "vault",
        "copy",
        "--config",
        str(config),
        "--from-sqlite",
        str(tmp_path / "old.sqlite3"),
    )
    first = cli(*args)
    assert first.returncode == 0, first.stderr
    assert "1241 added, 0 already there, 0 mapped otherwise" in first.stdout
    assert "study ledger: 4 of 4 entries added" in first.stdout
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert "0 added, 1241 already there, 0 mapped otherwise" in again.stdout
    assert "study ledger: 0 of 4 entries added" in again.stdout
    target = PostgresVault(load(config).vault.postgresql, KEY)  # type: ignore[arg-type]
    try:
        for (kind, original), pseudonym in expected.items():
            assert target.pseudonym(kind, original, lambda: "not this") == pseudonym
            assert target.original(kind, pseudonym) == original
        assert set(target.delivered("2.25.1")) == {"2.25.11"}
        assert target.claim_manifest("2.25.1", 1) == 3  # the study's manifests go on
        assert target.study_held("2.25.5")
    finally:
        target.close()


def test_vault_copy_never_overwrites_and_refuses_rows_of_another_key(
    postgres_server: PostgresServer, postgres_db: str, tmp_path: Path
) -> None:
    config = settings(postgres_server, postgres_db, tmp_path)
    target = PostgresVault(config, KEY)
    target.pseudonym(UID_KIND, "1.2.3", lambda: "2.25.111")
    site = SqliteVault(tmp_path / "old.sqlite3", KEY)
    site.pseudonym(UID_KIND, "1.2.3", lambda: "2.25.222")  # the same UID mapped otherwise
    site.pseudonym(UID_KIND, "1.2.4", lambda: "2.25.444")
    done = target.add_rows(target.check_rows(site.rows()))
    assert (done.added, done.present, done.conflicting) == (1, 0, 1)
    assert target.pseudonym(UID_KIND, "1.2.3", lambda: "no") == "2.25.111"
    other = SqliteVault(tmp_path / "other.sqlite3", b"x" * 32)
    other.pseudonym(UID_KIND, "1.2.5", lambda: "2.25.555")
    with pytest.raises(VaultError, match="does not decrypt"):
        target.add_rows(target.check_rows(other.rows()))
    assert target.original(UID_KIND, "2.25.555") is None
    for vault in (target, site, other):
        vault.close()


def test_a_stopped_server_makes_calls_wait_and_a_restarted_one_is_used_again(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """The pool's connections die with the server; calls raise VaultUnavailable at once or
    within connect_timeout, and work again once it is back, on the same vault object."""
    own = PostgresServer(postgres_server.bindir)
    try:
        own.start()
        own.create_database("vault")
        vault = PostgresVault(settings(own, "vault", tmp_path), KEY)
        before = vault.pseudonym(UID_KIND, "1.2.3", new_uid)
        own.stop()
        started = time.monotonic()
        with pytest.raises(VaultUnavailable) as caught:
            vault.pseudonym(UID_KIND, "1.2.4", new_uid)
        assert caught.value.reason == "vault-unavailable"
        assert time.monotonic() - started < 2.0 * 2 + 3.0  # two attempts at connect_timeout
        with pytest.raises(VaultUnavailable):
            vault.ping()
        assert "1.2.4" not in str(caught.value)
        own.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                vault.ping()
                break
            except VaultUnavailable:
                assert time.monotonic() < deadline, "the vault did not come back"
                time.sleep(0.2)
        assert vault.pseudonym(UID_KIND, "1.2.3", lambda: "no") == before
        assert vault.pseudonym(UID_KIND, "1.2.4", new_uid) != before
        vault.close()
    finally:
        own.remove()


@pytest.mark.parametrize(
    ("vault", "problem"),
    [
        ({"engine": "postgresql"},
         'vault.postgresql: is required when vault.engine = "postgresql"'),
        ({"path": None}, 'vault.path: is required when vault.engine = "sqlite"'),
        (
            {"engine": "postgresql", "postgresql": {"host": "db.example", "sslmode": "disable"}},
            "vault.postgresql.sslmode: \"disable\" is allowed only for a server on loopback",
        ),
        (
            {"engine": "postgresql", "postgresql": {"host": "db.example"}},
            'vault.postgresql.ca: is required when sslmode = "verify-full"',
        ),
        (
            {"engine": "postgresql", "postgresql": {"host": "::1", "password": "secret"}},
            "vault.postgresql.password: secrets are never inline",
        ),
        (
            {"engine": "postgresql", "postgresql": {"host": "::1", "sslmode": "disable",
                                                    "certificate": "c.pem"}},
            "vault.postgresql: certificate and private_key go together",
        ),
    ],
)  # fmt: skip
def test_vault_settings_problems_name_the_key(
    tmp_path: Path, vault: dict[str, Any], problem: str
) -> None:
    table: dict[str, Any] = {"path": "vault.sqlite3", "key": {"file": "vault.key"}, **vault}
    if table.get("path") is None or table.get("engine") == "postgresql":
        table.pop("path")
    config = tmp_path / "gateway.toml"
    config.write_text(_toml(tmp_path, table, None))
    with pytest.raises(ConfigError) as caught:
        load(config)
    assert any(str(config) in p and problem in p for p in caught.value.problems), (
        caught.value.problems
    )


def _toml(folder: Path, vault: dict[str, Any], key_file: Path | None) -> str:
    """A minimal gateway config with this `[vault]` table."""
    vault = {**vault}
    if key_file is not None:
        vault["key"] = {"file": str(key_file)}
    lines = [
        "[spool]",
        f"directory = {json.dumps(str(folder / 'spool'))}",
        f"master_key = {{ file = {json.dumps(str(folder / 'master.key'))} }}",
        "[[ingest.peers]]",
        'name = "pacs"',
        'ae_title = "PACS"',
        "[vault]",
    ]
    nested = {k: v for k, v in vault.items() if isinstance(v, dict) and k != "key"}
    for name, value in vault.items():
        if name not in nested:
            lines.append(f"{name} = {_value(value)}")
    for name, table in nested.items():
        lines.append(f"[vault.{name}]")
        lines += [f"{k} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def test_the_vault_reaches_postgresql_over_verified_tls_with_a_client_certificate(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """The server takes the gateway's role only over TLS with a client certificate (`cert`
    in pg_hba.conf); the gateway verifies the server's certificate and name (verify-full)."""
    ca, stranger = devpki.make_ca(), devpki.make_ca("another CA")
    own = PostgresServer(postgres_server.bindir)
    try:
        own.require_tls(ca)
        own.start()
        own.create_database("vault")
        pki = tmp_path / "pki"
        pki.mkdir()
        (pki / "ca.crt").write_bytes(devpki.certificate_pem(ca))
        (pki / "stranger.crt").write_bytes(devpki.certificate_pem(stranger))
        client = devpki.issue(ca, "dicom_gateway", server=False)
        devpki.write_pair(client, pki / "client.crt", pki / "client.key", write_key_file)
        tls = PostgresSettings(
            host="127.0.0.1",
            port=own.port,
            dbname="vault",
            sslmode="verify-full",
            ca=pki / "ca.crt",
            certificate=pki / "client.crt",
            private_key=pki / "client.key",
            connect_timeout=2.0,
        )
        vault = PostgresVault(tls, KEY)
        try:
            uid = vault.pseudonym(UID_KIND, "1.2.3", new_uid)
            assert vault.original(UID_KIND, uid) == "1.2.3"
            with own.connect("vault") as conn:  # the vault's open connections use TLS
                rows = conn.execute(
                    "SELECT s.ssl, s.client_dn FROM pg_stat_ssl s "
                    "JOIN pg_stat_activity a USING (pid) WHERE a.usename = 'dicom_gateway'"
                ).fetchall()
            assert rows
            assert all(ssl and dn.endswith("/CN=dicom_gateway") for ssl, dn in rows), rows
        finally:
            vault.close()
        refused = [  # and what readiness then says
            (dataclasses.replace(tls, certificate=None, private_key=None), "vault-refused"),
            (dataclasses.replace(tls, ca=pki / "stranger.crt"), "vault-tls-failed"),
            (dataclasses.replace(tls, sslmode="disable", ca=None), "vault-refused"),
        ]
        for settings_, reason in refused:
            other = PostgresVault(settings_, KEY)
            try:
                with pytest.raises(VaultUnavailable):
                    other.pseudonym(UID_KIND, "1.2.4", new_uid)
                with pytest.raises(VaultUnavailable) as caught:
                    other.ping()
                assert caught.value.reason == reason
            finally:
                other.close()
    finally:
        own.remove()


def test_the_study_ledger_is_shared_claims_versions_once_and_forgets_old_entries(
    postgres_server: PostgresServer, postgres_db: str, tmp_path: Path
) -> None:
    config = settings(postgres_server, postgres_db, tmp_path)
    first, second = PostgresVault(config, KEY), PostgresVault(config, KEY)
    try:
        ct = "1.2.840.10008.5.1.4.1.1.2"
        first.record_delivered("2.25.1", [Entry("2.25.11", "2.25.9", ct, "aa")])
        second.record_delivered("2.25.1", [Entry("2.25.12", "2.25.9", ct, "bb")])
        assert set(first.delivered("2.25.1")) == {"2.25.11", "2.25.12"}
        claims = [v.claim_manifest("2.25.1", 1) for v in (first, second, first, second)]
        assert claims == [1, 2, 3, 4]
        assert second.claim_manifest("2.25.1", 9) == 9
        second.hold_study("2.25.1")
        assert first.study_held("2.25.1")
        assert not first.study_held("2.25.2")
        with postgres_server.connect(postgres_db) as conn:
            conn.execute(
                "UPDATE delivered SET recorded = now() - interval '2 hours' "
                "WHERE instance = '2.25.11'"
            )
            conn.execute("UPDATE manifest_version SET recorded = now() - interval '2 hours'")
        assert first.prune_ledger(3600.0) == 1
        assert set(second.delivered("2.25.1")) == {"2.25.12"}
        assert second.claim_manifest("2.25.1", 1) == 1
        assert first.study_held("2.25.1")
    finally:
        first.close()
        second.close()


def test_a_gateway_with_another_vault_key_is_refused_not_given_new_pseudonyms(
    postgres_server: PostgresServer, postgres_db: str, tmp_path: Path
) -> None:
    config = settings(postgres_server, postgres_db, tmp_path)
    first, stranger = PostgresVault(config, KEY), PostgresVault(config, b"w" * 32)
    try:
        first.pseudonym("patient", ORIGINAL, lambda: "GW-1")
        with pytest.raises(VaultUnavailable, match="not the key this vault was made with") as e:
            stranger.pseudonym("patient", ORIGINAL, lambda: "GW-2")
        assert e.value.reason == "vault-key-mismatch"
        with pytest.raises(VaultUnavailable):
            stranger.ping()
    finally:
        first.close()
        stranger.close()


def test_check_config_refuses_a_database_password_file_others_can_read(tmp_path: Path) -> None:
    key_file = tmp_path / "vault.key"
    key_file.write_text(KEY.hex())
    key_file.chmod(0o600)
    (tmp_path / "master.key").write_text(KEY.hex())
    (tmp_path / "master.key").chmod(0o600)
    password = tmp_path / "db.password"
    password.write_text("a database password\n")
    password.chmod(0o644)
    pg = {"engine": "postgresql",
          "postgresql": {"host": "127.0.0.1", "sslmode": "disable",
                         "password": {"file": str(password)}}}  # fmt: skip
    config = tmp_path / "gateway.toml"
    config.write_text(_toml(tmp_path, pg, key_file))
    checked = cli("check-config", str(config))
    assert checked.returncode == 2
    assert f"{config}: vault.postgresql.password: {password}: key file must be mode 0600" in (
        checked.stderr
    )
    assert "a database password" not in checked.stderr + checked.stdout


def test_vault_migrate_says_when_the_server_refuses_the_login(
    postgres_server: PostgresServer, postgres_db: str, tmp_path: Path
) -> None:
    key_file = tmp_path / "vault.key"
    key_file.write_text(KEY.hex())
    key_file.chmod(0o600)
    pg = postgres_server.vault_config(postgres_db, tmp_path / "pg.password")
    (tmp_path / "pg.password").write_text("not-the-password\n")
    config = tmp_path / "gateway.toml"
    config.write_text(_toml(tmp_path, pg, key_file))
    migrate = cli("vault", "migrate", "--config", str(config))
    assert migrate.returncode == 1
    assert "the server refused the login" in migrate.stderr
    assert "not-the-password" not in migrate.stderr + migrate.stdout
