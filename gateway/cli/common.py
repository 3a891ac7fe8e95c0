"""What every `dicom-gateway` command shares: exit codes and a configuration read in full."""

from __future__ import annotations

from pathlib import Path

from gateway.deidentify.pixels.stage import rule_problems
from gateway.deidentify.words import settings_problems
from gateway.errors import ConfigError, KeyFileError, TlsSetupError
from gateway.ingest.scp import tls_context
from gateway.keyfiles import read_key, read_secret_text
from gateway.settings import Settings, file_problems, load

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def settings_from(path: Path, *, files: bool = True) -> Settings:
    settings = load(path)
    problems = (
        file_problems(settings) + settings_problems(settings) + rule_problems(settings)
        if files
        else []
    )
    if files and not problems:
        for key, secret in (
            ("spool.master_key", settings.spool.master_key),
            ("vault.key", settings.vault.key),
        ):
            try:
                read_key(secret)
            except KeyFileError as exc:
                problems.append(f"{settings.source}: {key}: {exc}")
        pg = settings.vault.postgresql
        if settings.vault.engine == "postgresql" and pg is not None and pg.password is not None:
            try:
                read_secret_text(pg.password)
            except KeyFileError as exc:
                problems.append(f"{settings.source}: vault.postgresql.password: {exc}")
        if settings.ingest.tls.enabled:
            try:
                tls_context(settings.ingest.tls)
            except TlsSetupError as exc:
                problems.append(f"{settings.source}: {exc}")
    if problems:
        raise ConfigError(problems)
    return settings
