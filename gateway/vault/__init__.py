"""The on-site vault of pseudonyms, UID maps and date offsets. Never leaves the site.

Two engines behind one interface (`base.Vault`): SQLite, a file for one gateway (the default),
and PostgreSQL, shared by several gateways so that a patient, a study and its dates get the
same pseudonyms through any of them (docs/scaling.md). `open_vault` opens the configured one.
"""

from __future__ import annotations

from gateway.errors import VaultError
from gateway.keyfiles import read_key
from gateway.settings import VaultSettings
from gateway.vault.base import Copied, Entry, Row, Usage, Vault
from gateway.vault.sqlite import SqliteVault

__all__ = ["Copied", "Entry", "Row", "SqliteVault", "Usage", "Vault", "open_vault"]


def open_vault(settings: VaultSettings) -> Vault:
    """The configured vault for this process (the key read from its file or variable)."""
    key = read_key(settings.key)
    if settings.engine == "postgresql":
        if settings.postgresql is None:
            raise VaultError("vault.postgresql is not set")
        from gateway.vault.postgres import PostgresVault  # psycopg only where it is used

        return PostgresVault(settings.postgresql, key)
    if settings.path is None:
        raise VaultError("vault.path is not set")
    return SqliteVault(settings.path, key)
