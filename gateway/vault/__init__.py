"""The on-site vault of pseudonyms, UID maps and date offsets. Never leaves the site."""

from gateway.vault.sqlite import SqliteVault

__all__ = ["SqliteVault"]
