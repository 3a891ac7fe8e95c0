"""The offline commands: `describe-profile` (what de-identification does to every attribute)
and `deidentify` (the worker's code path over files and folders)."""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cli.common import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, settings_from
from gateway.deidentify.pixels.stage import rule_problems
from gateway.deidentify.words import settings_problems
from gateway.errors import ConfigError
from gateway.logs import configure
from gateway.settings import (
    DeidentifySettings,
    LoggingSettings,
    SecretSource,
    Settings,
    SpoolSettings,
    VaultSettings,
)
from gateway.vault import SqliteVault, Vault, open_vault
from gateway.worker import Worker

if TYPE_CHECKING:  # for annotations; imported where used (a command pays only for itself)
    from gateway import conformance
    from gateway.deidentify.explain import Explanation


def cmd_describe_profile(args: argparse.Namespace) -> int:
    """Every Table E.1-1 attribute and what the engine does to it under the configured options
    (`deidentify.explain`: from the engine's own decision for each tag, not the table's code)."""
    from gateway.deidentify.explain import UNNAMED_ATTRIBUTES, explain
    from gateway.deidentify.profile import OPTION_COLUMNS, enabled_columns

    if args.conformance:
        if args.format != "text":
            print("dicom-gateway describe-profile: --conformance writes Markdown", file=sys.stderr)
            return EXIT_CONFIG
        return _conformance(args.config, args.output)
    if args.output is not None:
        print("dicom-gateway describe-profile: --output goes with --conformance", file=sys.stderr)
        return EXIT_CONFIG
    config = settings_from(args.config, files=False) if args.config else None
    options = config.deidentify if config is not None else DeidentifySettings()
    rows = explain(options)
    if args.format == "json":
        print(json.dumps([_profile_row(r) for r in rows], indent=1))
        return EXIT_OK
    on = sorted(OPTION_COLUMNS[c] for c in enabled_columns(options))
    print("PS3.15 Table E.1-1 (rev 2024b), Basic Application Level Confidentiality Profile")
    print(f"Options in force: {', '.join(on) if on else 'none'}")
    print(textwrap.fill(UNNAMED_ATTRIBUTES, width=92), end="\n\n")
    print("Gateway rules, before the table:")
    for r in rows:
        if r.source == "gateway":
            tag, name = r.row.rule.tag, r.row.rule.name
            print(f"{tag:<13} {name[:48]:<48} -> {r.effect.action}  [{r.reason}]")
    print("\nTable E.1-1:")
    for r in rows:
        if r.source == "table":
            print(_table_line(r))
    return EXIT_OK


def _conformance(config: Path | None, output: Path | None) -> int:
    """The de-identification section of a Conformance Statement for `config` (or for the
    defaults), as Markdown on stdout or in `output`."""
    from gateway import conformance

    text = conformance.statement(_site(config), datetime.now(UTC).date())
    if output is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        print(
            f"dicom-gateway describe-profile: cannot write {output}: {exc.strerror}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(f"conformance statement written: {output}")
    return EXIT_OK


def _site(config: Path | None) -> conformance.Site:
    """The settings a statement describes, with the configuration file and the word file and
    pixel rule scripts it names, by SHA-256; a file that cannot be used is a ConfigError
    naming the key and the file (and line), as for `check-config`."""
    from gateway import conformance

    if config is None:
        return conformance.Site()
    settings = settings_from(config, files=False)
    problems = settings_problems(settings) + rule_problems(settings)
    if problems:
        raise ConfigError(problems)
    try:
        return conformance.site_of(settings, config)
    except OSError as exc:  # changed since it was read
        raise ConfigError([f"{config}: cannot read {exc.filename}: {exc.strerror}"]) from None


def _table_line(r: Explanation) -> str:
    rule = r.row.rule
    return (
        f"{rule.tag:<13} {rule.name[:48]:<48} {rule.basic:<7} -> {r.effect.action}  "
        f"{r.does}  [{r.reason}]"
    )


def cmd_deidentify(args: argparse.Namespace) -> int:
    """The worker's code path over files and folders: outputs plus a JSON report, and with
    --preview the sign-off page (it holds PHI: said on stderr)."""
    from gateway import batch
    from gateway.review.preview import Preview

    configure(LoggingSettings(level="warning", format="console"))  # library records redacted
    inputs = list(batch.iter_inputs(args.inputs))
    missing = [str(p) for p in args.inputs if not p.exists()]
    if missing:
        print(
            f"dicom-gateway deidentify: no such file or folder: {', '.join(missing)}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    preview = Preview() if args.preview else None
    if preview is not None:
        print(
            f"dicom-gateway deidentify: --preview writes {args.out / batch.PREVIEW_NAME}: it "
            "holds PHI (original images and header values); keep it on site, delete it after "
            "sign-off, and never send that folder on as it is",
            file=sys.stderr,
        )
    with _offline_vault(args.config) as (settings, vault):
        worker = Worker.for_settings(settings, vault)
        progress = _Progress() if sys.stderr.isatty() else None
        entries = batch.run(worker, inputs, args.out, progress, preview)
    document = batch.report(entries)
    batch.write_report(args.report, document)
    s = document["summary"]
    shown = f"; preview: {args.out / batch.PREVIEW_NAME}" if preview is not None else ""
    print(
        f"{s['inputs']} inputs: {s['written']} written, {s['dropped']} dropped, "
        f"{s['quarantined']} quarantined; report: {args.report}{shown}"
    )
    _explain(s)
    return EXIT_OK


def _explain(summary: dict[str, Any]) -> None:
    """What the count line leaves open: inputs that were the same instance as an earlier one
    (their paths: the user's own files), and what pydicom warned about (kinds, no values)."""
    same = summary["same_sop_instance"]
    if same:
        print(
            f"{len(same)} inputs not written: the same SOP Instance UID as an earlier input, "
            "whose output stands (report: summary.same_sop_instance):"
        )
        for pair in same[:_SHOWN]:
            print(f"  {pair['input']}  (same instance as {pair['same_as']})")
        if len(same) > _SHOWN:
            print(f"  ... and {len(same) - _SHOWN} more")
    warned = summary["pydicom_warnings"]
    if warned:
        kinds = ", ".join(f"{kind} ({n})" for kind, n in warned.items())
        print(f"pydicom warnings, by kind (inputs): {kinds}; per input in the report")


_SHOWN = 10


@contextmanager
def _offline_vault(config: Path | None) -> Iterator[tuple[Settings, Vault]]:
    """The site's settings and vault; without a config, the defaults and a throwaway vault."""
    if config is not None:
        settings = settings_from(config)
        vault = open_vault(settings.vault)
        try:
            yield settings, vault
        finally:
            vault.close()
        return
    print(
        "dicom-gateway deidentify: no --config: default options, and pseudonyms that are not "
        "kept (a temporary vault)",
        file=sys.stderr,
    )
    with tempfile.TemporaryDirectory(prefix="dicom-gateway-") as tmp:
        root = Path(tmp)
        settings = Settings(
            spool=SpoolSettings(root / "spool", SecretSource(env="UNUSED")),
            vault=VaultSettings(SecretSource(env="UNUSED"), path=root / "vault.sqlite3"),
        )
        vault = SqliteVault(root / "vault.sqlite3", secrets.token_bytes(32))
        try:
            yield settings, vault
        finally:
            vault.close()


class _Progress:
    """One line on stderr (a terminal only), rewritten after each input: done/total, rate."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        rate = done / max(time.monotonic() - self.start, 1e-6)
        end = "\n" if done == total else ""
        bar = f"[{'#' * filled}{'.' * (width - filled)}]"
        print(f"\r{bar} {done}/{total} files, {rate:.1f} files/s", end=end, file=sys.stderr)


def _profile_row(r: Explanation) -> dict[str, str]:
    """A describe-profile row as JSON: "action" and "does" say what the engine does."""
    return {
        "source": r.source,
        "tag": r.row.rule.tag,
        "name": r.row.rule.name,
        "basic": r.row.rule.basic,
        "action": r.effect.action,
        "does": r.does,
        "reason": r.reason,
    }
