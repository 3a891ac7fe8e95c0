"""What every `dicom-gateway` command shares: exit codes, a configuration read in full, and
the way a command and its --help are declared (`command`: written for its user)."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

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


def trust_warnings(settings: Settings) -> list[tuple[str, str]]:
    """Configurations that work but should not be used in production: the forwarder's client
    certificate would be admitted as a PACS on the DICOM TLS port, because ingest trusts the
    CA that issued it (the development setup has one CA for everything). Warnings, not
    errors: `check-config` prints them and `run` logs them (deploy/README.md, "One CA per
    trust"). Each is (a reason code for the log, the sentence for the operator)."""
    tls, forward = settings.ingest.tls, settings.forward
    if not (tls.enabled and forward.enabled and tls.client_ca and forward.client_certificate):
        return []
    try:
        cas = x509.load_pem_x509_certificates(tls.client_ca.read_bytes())
        chain = x509.load_pem_x509_certificates(forward.client_certificate.read_bytes())
    except (OSError, ValueError):
        return []  # file_problems and the TLS setup name an unreadable file
    warnings = []
    if any(_issued_by(cert, ca) for cert in chain for ca in cas):
        warnings.append(
            (
                "forward-client-certificate-trusted-by-ingest",
                f"{settings.source}: forward.client_certificate is issued by a CA in "
                "ingest.tls.client_ca: the forwarder's certificate would be admitted as a PACS "
                "on the DICOM TLS port; give PACS clients and the analysis server separate CAs",
            )
        )
    if forward.ca_bundle is not None and _same_bytes(tls.client_ca, forward.ca_bundle):
        warnings.append(
            (
                "ingest-client-ca-is-forward-ca",
                f"{settings.source}: ingest.tls.client_ca and forward.ca_bundle are the same CA: "
                "whatever that CA issued for the analysis server's side is admitted as a PACS",
            )
        )
    return warnings


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    if cert == ca:
        return True
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _same_bytes(a: Path, b: Path) -> bool:
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


CONFIG_HELP = "the gateway's configuration file (TOML; config/gateway.example.toml explains it)"


def command(
    sub: Any, name: str, summary: str, about: str = "", example: str = ""
) -> argparse.ArgumentParser:
    """A command: `summary` is its line in the list of commands; its own --help starts with
    `about` (default: the summary as a sentence) and ends with `example`."""
    text = about or f"{summary[:1].upper()}{summary[1:]}."
    description = "\n\n".join(textwrap.fill(p, 88) for p in text.split("\n\n"))
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog=f"example:\n  {example}" if example else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def commands(parser: argparse.ArgumentParser, dest: str) -> Any:
    """The sub-commands of `parser` (one is required)."""
    return parser.add_subparsers(
        dest=dest, required=True, metavar="COMMAND", help="one of these; COMMAND --help for more"
    )


def config_option(parser: argparse.ArgumentParser, required: bool = True, help: str = "") -> None:
    parser.add_argument(
        "--config", type=Path, required=required, metavar="FILE", help=help or CONFIG_HELP
    )
