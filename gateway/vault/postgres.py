"""The vault in PostgreSQL: one store shared by several gateways (docs/scaling.md).

Every gateway process (the daemon and each worker) keeps a small pool of connections
(psycopg_pool; `vault.postgresql.pool_size`). A new mapping is one round trip: an insert that
does nothing when the (kind, lookup) or (kind, pseudonym) pair exists, returning the pseudonym
that stands (`_CLAIM`); unique constraints make the first writer win across processes and
hosts, and each statement commits on its own (autocommit), so a pseudonym handed out is
durable before it is used. Originals stay encrypted under the site's vault key and are found
by keyed hash (`base`): the database server never sees a value in clear.

The schema is versioned (`vault_schema`) and migrated by the gateway under an advisory lock,
so gateways starting together do it once: `dicom-gateway vault migrate`, or each process on
first use. A schema newer than this gateway knows is not touched; the vault is then
unavailable until the gateway is upgraded.

When the server cannot be reached (down, restarting, a network cut, the pool waiting longer
than `connect_timeout`), every call raises `VaultUnavailable`: the worker leaves the instance
in `incoming/` and the scheduler waits before trying again (docs/pipeline.md). A connection
the server dropped (a restart) is discarded by the pool and the call tried once more on a
fresh one.

(About 440 lines: the engine's SQL, one small function per storage step of `base.Vault`, and
the one place that talks to psycopg; `sqlite.py` is its twin.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from gateway.errors import VaultUnavailable
from gateway.keyfiles import read_secret_text
from gateway.settings import PostgresSettings
from gateway.vault.base import KEY_CHECK, PAGE, Copied, Entry, Ledger, Proposal, Row, Vault

_T = TypeVar("_T")

#: (version, statements): applied in order, each in the transaction that records it
_MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE mapping (
            kind text NOT NULL,
            lookup bytea NOT NULL,
            original bytea NOT NULL,
            pseudonym text NOT NULL,
            created text NOT NULL,
            PRIMARY KEY (kind, lookup),
            CONSTRAINT mapping_pseudonym UNIQUE (kind, pseudonym)
        )
        """,
    ),
    (
        2,
        """
        CREATE TABLE delivered (
            study text NOT NULL,
            instance text NOT NULL,
            series text NOT NULL,
            sop_class text NOT NULL,
            sha256 text NOT NULL,
            recorded timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (study, instance)
        );
        CREATE INDEX delivered_recorded ON delivered (recorded);
        CREATE TABLE manifest_version (
            study text NOT NULL,
            version integer NOT NULL,
            recorded timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (study, version)
        );
        CREATE INDEX manifest_version_recorded ON manifest_version (recorded);
        CREATE TABLE held_study (
            study text PRIMARY KEY,
            held timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
    (
        3,
        """
        CREATE TABLE identity (
            study text PRIMARY KEY,
            sealed bytea NOT NULL,
            recorded timestamptz NOT NULL DEFAULT now()
        );
        """,
    ),
)
VERSION = _MIGRATIONS[-1][0]
#: the advisory lock migrations take (any 64-bit number other applications do not use)
_LOCK = int.from_bytes(hashlib.sha256(b"dicom-gateway/vault/schema").digest()[:8], "big") >> 1
_CLAIM = """
WITH new AS (
    INSERT INTO mapping (kind, lookup, original, pseudonym, created)
    VALUES (%(kind)s, %(lookup)s, %(original)s, %(pseudonym)s, %(created)s)
    ON CONFLICT DO NOTHING
    RETURNING pseudonym
)
SELECT pseudonym FROM new
UNION ALL
SELECT pseudonym FROM mapping WHERE kind = %(kind)s AND lookup = %(lookup)s
LIMIT 1
"""
_FIND = "SELECT pseudonym FROM mapping WHERE kind = %s AND lookup = %s"


class PostgresVault(Vault):
    engine = "postgresql"

    def __init__(self, settings: PostgresSettings, key: bytes) -> None:
        super().__init__(key)
        self.settings = settings
        self._timeout = settings.connect_timeout
        self._schema_checked = False
        self._arguments = _connection_arguments(settings)
        self._pool = ConnectionPool(
            kwargs=self._arguments,
            min_size=1,
            max_size=settings.pool_size,
            timeout=settings.connect_timeout,
            name="vault",
            open=False,
        )
        self._pool.open(wait=False)  # an unreachable server is not a start failure

    def close(self) -> None:
        self._pool.close()

    # -- the storage steps (base.Vault) -------------------------------------------------------

    def _claim(self, kind: str, lookup: bytes, propose: Callable[[], Proposal]) -> str | None:
        proposal = propose()
        values = {
            "kind": kind,
            "lookup": lookup,
            "original": proposal.sealed,
            "pseudonym": proposal.pseudonym,
            "created": datetime.now(UTC).isoformat(),
        }

        def claim(conn: psycopg.Connection[Any]) -> str | None:
            row = conn.execute(_CLAIM, values).fetchone()
            if row is None:  # another writer committed after this statement began, or taken
                row = conn.execute(_FIND, (kind, lookup)).fetchone()
            return None if row is None else str(row[0])

        return self._run(claim)

    def _find_original(self, kind: str, pseudonym: str) -> tuple[bytes, bytes] | None:
        def find(conn: psycopg.Connection[Any]) -> tuple[bytes, bytes] | None:
            row = conn.execute(
                "SELECT lookup, original FROM mapping WHERE kind = %s AND pseudonym = %s",
                (kind, pseudonym),
            ).fetchone()
            return None if row is None else (bytes(row[0]), bytes(row[1]))

        return self._run(find)

    def rows(self) -> Iterator[Row]:
        after: tuple[str, bytes] = ("", b"")
        while True:  # a page at a time, in key order: a large vault is not held in memory

            def read(conn: psycopg.Connection[Any], after: tuple[str, bytes] = after) -> list[Row]:
                found = conn.execute(
                    "SELECT kind, lookup, original, pseudonym, created FROM mapping "
                    "WHERE (kind, lookup) > (%s, %s) AND kind <> %s "
                    "ORDER BY kind, lookup LIMIT %s",
                    (*after, KEY_CHECK, PAGE),
                ).fetchall()
                return [
                    Row(str(k), bytes(lk), bytes(o), str(p), str(c)) for k, lk, o, p, c in found
                ]

            page = self._run(read)
            yield from page
            if len(page) < PAGE:
                return
            after = (page[-1].kind, page[-1].lookup)

    def add_rows(self, rows: Iterable[Row]) -> Copied:
        done = Copied()
        batch: list[Row] = []
        for row in rows:
            batch.append(row)
            if len(batch) == PAGE:
                done += self._run(_adder(batch))
                batch = []
        return done + self._run(_adder(batch)) if batch else done

    def record_delivered(self, study: str, entries: Iterable[Entry]) -> None:
        rows = [(study, e.instance, e.series, e.sop_class, e.sha256) for e in entries]

        def record(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO delivered (study, instance, series, sop_class, sha256) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    rows,
                )

        if rows:
            self._run(record)

    def delivered(self, study: str) -> dict[str, Entry]:
        def read(conn: psycopg.Connection[Any]) -> dict[str, Entry]:
            rows = conn.execute(
                "SELECT instance, series, sop_class, sha256 FROM delivered WHERE study = %s",
                (study,),
            ).fetchall()
            return {str(r[0]): Entry(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows}

        return self._run(read)

    def claim_manifest(self, study: str, at_least: int) -> int:
        def claim(conn: psycopg.Connection[Any]) -> int | None:
            row = conn.execute(
                "INSERT INTO manifest_version (study, version) "
                "SELECT %s, greatest(coalesce(max(version), 0) + 1, %s) "
                "FROM manifest_version WHERE study = %s "
                "ON CONFLICT DO NOTHING RETURNING version",
                (study, at_least, study),
            ).fetchone()
            return None if row is None else int(row[0])

        while (version := self._run(claim)) is None:
            continue  # another gateway claimed that version a moment before: the next one
        return version

    def ledger(self) -> Ledger:
        def read(conn: psycopg.Connection[Any]) -> Ledger:
            delivered = conn.execute(
                "SELECT study, instance, series, sop_class, sha256 FROM delivered"
            ).fetchall()
            versions = conn.execute("SELECT study, version FROM manifest_version").fetchall()
            held = conn.execute("SELECT study FROM held_study").fetchall()
            return Ledger(
                [(str(r[0]), Entry(str(r[1]), str(r[2]), str(r[3]), str(r[4]))) for r in delivered],
                [(str(r[0]), int(r[1])) for r in versions],
                [str(r[0]) for r in held],
            )

        return self._run(read)

    def add_ledger(self, ledger: Ledger) -> int:
        def add(conn: psycopg.Connection[Any]) -> int:
            added = 0
            with conn.transaction(), conn.cursor() as cursor:
                for study, e in ledger.delivered:
                    cursor.execute(
                        "INSERT INTO delivered (study, instance, series, sop_class, sha256) "
                        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        (study, e.instance, e.series, e.sop_class, e.sha256),
                    )
                    added += cursor.rowcount
                for study, version in ledger.versions:
                    cursor.execute(
                        "INSERT INTO manifest_version (study, version) VALUES (%s, %s) "
                        "ON CONFLICT DO NOTHING",
                        (study, version),
                    )
                    added += cursor.rowcount
                for study in ledger.held:
                    cursor.execute(
                        "INSERT INTO held_study (study) VALUES (%s) ON CONFLICT DO NOTHING",
                        (study,),
                    )
                    added += cursor.rowcount
            return added

        return self._run(add)

    def prune_ledger(self, older_than: float) -> int:
        def prune(conn: psycopg.Connection[Any]) -> int:
            with conn.transaction():
                done = conn.execute(
                    "DELETE FROM delivered WHERE recorded < now() - make_interval(secs => %s)",
                    (older_than,),
                )
                conn.execute(
                    "DELETE FROM manifest_version "
                    "WHERE recorded < now() - make_interval(secs => %s)",
                    (older_than,),
                )
            return done.rowcount

        return self._run(prune)

    def hold_study(self, study: str) -> None:
        self._run(
            lambda conn: conn.execute(
                "INSERT INTO held_study (study) VALUES (%s) ON CONFLICT DO NOTHING", (study,)
            )
        )

    def _study_held(self, study: str) -> bool:
        def held(conn: psycopg.Connection[Any]) -> bool:
            return (
                conn.execute("SELECT 1 FROM held_study WHERE study = %s", (study,)).fetchone()
                is not None
            )

        return self._run(held)

    def _put_identity(self, study: str, sealed: bytes) -> None:
        self._run(
            lambda conn: conn.execute(
                "INSERT INTO identity (study, sealed) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (study, sealed),
            )
        )

    def _get_identity(self, study: str) -> bytes | None:
        def get(conn: psycopg.Connection[Any]) -> bytes | None:
            row = conn.execute("SELECT sealed FROM identity WHERE study = %s", (study,)).fetchone()
            return None if row is None else bytes(row[0])

        return self._run(get)

    def _ping(self) -> None:
        """One statement; when the pool found no connection, one direct attempt says why
        (readiness then names it: the server refused the login, TLS failed, or unreachable)."""
        try:
            self._run(lambda conn: conn.execute("SELECT 1").fetchone(), checked=False)
        except VaultUnavailable as exc:
            if exc.reason == "vault-unavailable":
                self._diagnose()
            raise

    def _diagnose(self) -> None:
        try:
            psycopg.connect(**self._arguments).close()
        except psycopg.OperationalError as exc:
            reason = _refusal(str(exc))
            if reason is not None:
                raise VaultUnavailable(
                    reason,
                    f"vault: PostgreSQL at {self.settings.host}:{self.settings.port}: "
                    + (
                        "the server refused the login (user, password, client certificate or "
                        "pg_hba.conf)"
                        if reason == "vault-refused"
                        else "TLS failed (the server's certificate, its name, or ours)"
                    ),
                ) from None

    def migrate(self) -> tuple[int, int]:
        return self._run(_migrate, checked=False)

    # -- one call on one pooled connection ----------------------------------------------------

    def _run(self, step: Callable[[psycopg.Connection[Any]], _T], *, checked: bool = True) -> _T:
        """`step` on a pooled connection, the schema checked on this process's first use;
        once more on a fresh connection if the server dropped the first (a restart)."""
        for attempt in (1, 2):
            try:
                with self._pool.connection(timeout=self._timeout) as conn:
                    if checked and not self._schema_checked:
                        _migrate(conn)
                        self._schema_checked = True
                    return step(conn)
            except psycopg.OperationalError as exc:
                if attempt == 2 or not _dropped(exc):
                    raise VaultUnavailable(
                        "vault-unavailable",
                        f"vault: PostgreSQL at {self.settings.host}:{self.settings.port} "
                        f"cannot be reached ({exc.__class__.__name__})",
                    ) from None
            except psycopg.Error as exc:
                raise VaultUnavailable(
                    "vault-error",
                    f"vault: PostgreSQL refused a vault statement ({exc.__class__.__name__})",
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover


def _refusal(message: str) -> str | None:
    """libpq's connection errors carry no SQLSTATE: what the server said (FATAL) or the TLS
    layer reported tells a refusal from an unreachable server."""
    if "FATAL:" in message:
        return "vault-refused"
    if "SSL" in message or "certificate" in message:
        return "vault-tls-failed"
    return None


def _dropped(exc: psycopg.OperationalError) -> bool:
    """The connection was lost under the call (a server restart): worth one more try on a
    fresh connection, unlike a pool that found no connection in time."""
    return not exc.__class__.__module__.startswith("psycopg_pool")


def _migrate(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """Bring the schema to `VERSION` under the advisory lock: (version before, after). Raises
    VaultUnavailable, touching nothing, when the database's schema is newer."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS vault_schema (version integer PRIMARY KEY)")
        row = conn.execute("SELECT coalesce(max(version), 0) FROM vault_schema").fetchone()
        before = int(row[0]) if row is not None else 0
        if before > VERSION:
            raise VaultUnavailable(
                "vault-schema-newer",
                f"vault: the database's schema version {before} is newer than this gateway "
                f"knows ({VERSION}): upgrade the gateway",
            )
        for version, statements in _MIGRATIONS:
            if version > before:
                conn.execute(statements)  # our own constant SQL
                conn.execute("INSERT INTO vault_schema (version) VALUES (%s)", (version,))
    return before, VERSION


def _adder(batch: list[Row]) -> Callable[[psycopg.Connection[Any]], Copied]:
    def add(conn: psycopg.Connection[Any]) -> Copied:
        done = Copied()
        with conn.transaction():
            for row in batch:
                added = conn.execute(
                    "INSERT INTO mapping (kind, lookup, original, pseudonym, created) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                    (row.kind, row.lookup, row.original, row.pseudonym, row.created),
                ).fetchone()
                if added is not None:
                    done += Copied(added=1)
                    continue
                found = conn.execute(_FIND, (row.kind, row.lookup)).fetchone()
                same = found is not None and str(found[0]) == row.pseudonym
                done += Copied(present=1) if same else Copied(conflicting=1)
        return done

    return add


def _connection_arguments(settings: PostgresSettings) -> dict[str, Any]:
    """libpq connection parameters (never a URL: the password stays out of any string that
    could be logged)."""
    arguments: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "dbname": settings.dbname,
        "user": settings.user,
        "sslmode": settings.sslmode,
        "connect_timeout": max(2, round(settings.connect_timeout)),  # libpq: whole seconds, >= 2
        "application_name": "dicom-gateway",
        "autocommit": True,
    }
    if settings.password is not None:
        arguments["password"] = read_secret_text(settings.password)
    for name, path in (
        ("sslrootcert", settings.ca),
        ("sslcert", settings.certificate),
        ("sslkey", settings.private_key),
    ):
        if path is not None:
            arguments[name] = str(path)
    return arguments
