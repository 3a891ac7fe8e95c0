"""`dicom-gateway vault ...`: bring the vault's schema up to date, and move a site's mappings
from its SQLite file into the configured vault (PostgreSQL, when one box is outgrown)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import EXIT_FAILED, EXIT_OK, command, commands, config_option, settings_from
from gateway.keyfiles import read_key
from gateway.vault import SqliteVault, open_vault


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = settings_from(args.config, files=False)
    vault = open_vault(settings.vault)
    try:
        vault.reachable()  # a refused login or TLS failure named as such
        before, after = vault.migrate()
    finally:
        vault.close()
    if before == after:
        print(f"vault ({settings.vault.engine}): schema version {after}, up to date")
    else:
        print(f"vault ({settings.vault.engine}): schema version {before} -> {after}")
    return EXIT_OK


def cmd_copy(args: argparse.Namespace) -> int:
    """Every mapping of a SQLite vault into the configured one, as it is (same vault key:
    each row is proven to open under it first), and its study ledger (what was delivered of
    each study, the manifest versions sent, the held studies: a late instance arriving through
    another gateway then continues the study). Nothing in the target is changed; running it
    again adds nothing."""
    settings = settings_from(args.config, files=False)
    source_path: Path = args.from_sqlite.resolve()
    if settings.vault.engine == "sqlite" and settings.vault.path == source_path:
        print("dicom-gateway vault copy: the source is the configured vault", file=sys.stderr)
        return EXIT_FAILED
    if not source_path.is_file():
        print(f"dicom-gateway vault copy: no such file {source_path}", file=sys.stderr)
        return EXIT_FAILED
    source = SqliteVault(source_path, read_key(settings.vault.key))
    target = open_vault(settings.vault)
    try:
        target.reachable()  # a refused login or TLS failure named as such
        target.migrate()
        target.ping()  # the target holds, or now records, proof of this key
        done = target.add_rows(target.check_rows(source.rows()))
        ledger = source.ledger()
        ledger_added = target.add_ledger(ledger)
    finally:
        source.close()
        target.close()
    print(
        f"vault copy -> {settings.vault.engine}: {done.added} added, {done.present} already "
        f"there, {done.conflicting} mapped otherwise in the target (kept as they were); "
        f"study ledger: {ledger_added} of {len(ledger)} entries added"
    )
    return EXIT_OK if not done.conflicting else EXIT_FAILED


def add_commands(sub: Any) -> None:
    vault = command(
        sub,
        "vault",
        "the vault: its schema, and moving a site's mappings",
        "The vault keeps the mapping from real identifiers to pseudonyms (encrypted): bring "
        "its schema up to date, or move a site's SQLite vault into PostgreSQL.",
    )
    verbs = commands(vault, "vault_command")
    p = command(
        verbs,
        "migrate",
        "create or bring up to date the vault's schema (safe to run again)",
        "Create the vault's tables, or bring them up to date after an upgrade; running it "
        "again changes nothing.",
        "dicom-gateway vault migrate --config gateway.toml",
    )
    config_option(p)
    p.set_defaults(func=cmd_migrate)
    p = command(
        verbs,
        "copy",
        "copy every mapping of a SQLite vault into the configured vault (same key)",
        "Copy every mapping and the study ledger of a SQLite vault into the configured vault "
        "(PostgreSQL, when one box is outgrown); both must use the same vault key. Nothing in "
        "the target is changed; running it again adds nothing.",
        "dicom-gateway vault copy --config gateway.toml --from-sqlite var/vault/vault.sqlite3",
    )
    config_option(p, help="the configuration naming the target vault and the vault key")
    p.add_argument(
        "--from-sqlite",
        type=Path,
        required=True,
        metavar="FILE",
        help="the SQLite vault file to copy from",
    )
    p.set_defaults(func=cmd_copy)
