"""`dicom-gateway`: entry point. Errors become clear messages and exit codes, not tracebacks.

Exit codes: 0 success; 1 the operation failed (a peer refused, a send failed, the gateway could
not start); 2 the configuration or the command line is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway import __version__, admin, batch, devpki, scu
from gateway.app import Gateway
from gateway.deidentify.explain import Explanation, explain
from gateway.deidentify.pixels.stage import PixelStage, rule_problems
from gateway.deidentify.profile import OPTION_COLUMNS, enabled_columns
from gateway.deidentify.words import settings_problems
from gateway.errors import ConfigError, GatewayError, KeyFileError, TlsSetupError
from gateway.ingest.scp import tls_context
from gateway.keyfiles import generate_key_file, read_key, write_key_file
from gateway.logs import configure
from gateway.receiver import server as receiver_server
from gateway.seal import keys as seal_keys
from gateway.settings import (
    DeidentifySettings,
    LoggingSettings,
    SecretSource,
    Settings,
    SpoolSettings,
    VaultSettings,
    file_problems,
    load,
)
from gateway.spool import State
from gateway.vault.sqlite import SqliteVault
from gateway.worker import Worker

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _settings(path: Path, *, files: bool = True) -> Settings:
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
        if settings.ingest.tls.enabled:
            try:
                tls_context(settings.ingest.tls)
            except TlsSetupError as exc:
                problems.append(f"{settings.source}: {exc}")
    if problems:
        raise ConfigError(problems)
    return settings


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    configure(settings.logging)
    try:
        return Gateway(settings).serve()
    except GatewayError as exc:
        print(f"dicom-gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILED


def cmd_receiver(args: argparse.Namespace) -> int:
    """The reference receiver (the analysis server's end of protocol v1)."""
    settings = _settings(args.config, files=False)
    configure(settings.logging)
    try:
        receiver_server.serve(settings)
    except (GatewayError, OSError) as exc:
        print(f"dicom-gateway receiver: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args.file)
    PixelStage.for_settings(settings)  # pixel rules readable, detector models present
    print(f"{args.file.resolve()}: ok")
    return EXIT_OK


def cmd_keys(args: argparse.Namespace) -> int:
    """Create what the configuration needs and is missing; never overwrite a key."""
    settings = _settings(args.config, files=False)
    for what, secret in (
        ("spool master key", settings.spool.master_key),
        ("vault key", settings.vault.key),
    ):
        if secret.file is not None:
            _create(secret.file, what, generate_key_file)
    pki = _DevPki()
    tls = settings.ingest.tls
    if tls.enabled and tls.certificate and tls.private_key and tls.client_ca:
        pki.pair(
            tls.client_ca,
            tls.certificate,
            tls.private_key,
            "dicom-gateway",
            (
                settings.ingest.host,
                "localhost",
            ),
        )
        stem = tls.client_ca.with_name(tls.client_ca.stem + "-client")
        pki.pair(
            tls.client_ca,
            stem.with_suffix(".crt"),
            stem.with_suffix(".key"),
            "dicom-gateway dev client",
        )
    forward, receiver = settings.forward, settings.receiver
    if forward.enabled and forward.ca_bundle and forward.client_certificate and forward.client_key:
        client_ca = receiver.client_ca or forward.ca_bundle
        pki.pair(
            client_ca, forward.client_certificate, forward.client_key, "dicom-gateway forwarder"
        )
        if receiver.certificate and receiver.private_key:
            hosts = (receiver.host, urlsplit(forward.url or "").hostname or "", "localhost")
            pki.pair(
                forward.ca_bundle,
                receiver.certificate,
                receiver.private_key,
                "dicom-gateway reference receiver",
                tuple(h for h in hosts if h),
            )
    if forward.enabled and forward.receiver_key and receiver.hpke_private_key:
        _hpke_pair(receiver.hpke_private_key, forward.receiver_key)
    return EXIT_OK


def _hpke_pair(private: Path, public: Path) -> None:
    if private.exists() and public.exists():
        print(f"kept    receiver HPKE key pair: {private}")
        return
    if private.exists() or public.exists():
        raise KeyFileError(
            f"only one half of the receiver HPKE key pair exists ({private}, {public}): "
            "move the other away and run keys again"
        )
    key_id = seal_keys.write_pair(private, public)
    print(f"created receiver HPKE key pair (key id {key_id}): {private}, {public}")


class _DevPki:
    """Development CAs (certificate + key beside it) and the pairs they issue; only what is
    missing is made, nothing is overwritten."""

    def __init__(self) -> None:
        self._cas: dict[Path, devpki.Issued] = {}

    def ca(self, certificate: Path) -> devpki.Issued:
        if certificate not in self._cas:
            key = certificate.with_suffix(".key")
            if certificate.exists() and key.exists():
                self._cas[certificate] = devpki.load(certificate, key)
            elif certificate.exists():
                raise KeyFileError(
                    f"{certificate}: a CA certificate without its key ({key}): new certificates "
                    "cannot be issued; remove the development PKI folder to start afresh"
                )
            else:
                ca = devpki.make_ca()
                devpki.write_pair(ca, certificate, key, write_key_file)
                print(f"created development CA: {certificate}")
                self._cas[certificate] = ca
        return self._cas[certificate]

    def pair(
        self,
        ca: Path,
        certificate: Path,
        key: Path,
        common_name: str,
        hosts: tuple[str, ...] = (),
    ) -> None:
        if certificate.exists() and key.exists():
            print(f"kept    {common_name} certificate: {certificate}")
            return
        issued = devpki.issue(self.ca(ca), common_name, server=bool(hosts), hosts=hosts)
        devpki.write_pair(issued, certificate, key, write_key_file)
        print(f"created {common_name} certificate: {certificate}")


def _create(path: Path, what: str, make: Callable[[Path], None]) -> None:
    if path.exists():
        print(f"kept    {what}: {path}")
        return
    make(path)
    print(f"created {what}: {path}")


def _node(args: argparse.Namespace, default_calling: str) -> scu.Node:
    configure(LoggingSettings(level="warning", format="console"))
    host, port, called, calling = "127.0.0.1", 11112, "DICOM_GATEWAY", default_calling
    if args.config is not None:
        ingest = _settings(args.config, files=False).ingest
        host, port, called = ingest.host, ingest.port, ingest.ae_title
        calling = ingest.peers[0].ae_title if ingest.peers else calling
    tls = None
    if args.tls_ca is not None:
        tls = scu.client_tls(args.tls_ca, args.tls_cert, args.tls_key)
    return scu.Node(
        host=args.host or host,
        port=args.port or port,
        calling_ae_title=args.aet or calling,
        called_ae_title=args.aec or called,
        tls=tls,
    )


def cmd_echo(args: argparse.Namespace) -> int:
    node = _node(args, "ECHOSCU")
    status = scu.echo(node)
    print(f"C-ECHO {node.host}:{node.port} {node.called_ae_title}: status 0x{status:04X}")
    return EXIT_OK if status == 0 else EXIT_FAILED


def cmd_send(args: argparse.Namespace) -> int:
    node = _node(args, "STORESCU")
    results = scu.send(node, args.paths)
    for r in results:
        outcome = f"0x{r.status:04X}" if r.status is not None else "not sent"
        detail = f" ({r.reason})" if r.reason else ""
        print(f"{'ok    ' if r.ok else 'FAILED'} {outcome} {r.path}{detail}")
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed} stored, {failed} failed")
    return EXIT_OK if results and not failed else EXIT_FAILED


def cmd_describe_profile(args: argparse.Namespace) -> int:
    """Every Table E.1-1 attribute and what the engine does to it under the configured options
    (`deidentify.explain`: from the engine's own decision for each tag, not the table's code)."""
    config = _settings(args.config, files=False) if args.config else None
    options = config.deidentify if config is not None else DeidentifySettings()
    rows = explain(options)
    if args.format == "json":
        print(json.dumps([_profile_row(r) for r in rows], indent=1))
        return EXIT_OK
    on = sorted(OPTION_COLUMNS[c] for c in enabled_columns(options))
    print("PS3.15 Table E.1-1 (rev 2024b), Basic Application Level Confidentiality Profile")
    print(f"Options in force: {', '.join(on) if on else 'none'}")
    print("Attributes the table does not name: kept if the DICOM dictionary knows them, unless")
    print("retired, person names, URLs, or (by keyword) about a person or organisation; kept")
    print("UIDs are mapped, dates shifted; every kept text keeps only known words (the shipped")
    print("vocabulary and the site's), then this instance's identifiers are removed from it;")
    print("narrative (comments, histories, reasons) goes unless kept cleaned. Everything else is")
    print("removed (allow-lists; docs/deidentify.md). Where the IOD of an instance's SOP class")
    print("requires an attribute (PS3.3 types): what would be removed stays empty (Type 2, 2C)")
    print("or with a fixed dummy (Type 1); what would be emptied keeps a fixed dummy (Type 1,")
    print("1C); a sequence the IOD does not require goes when no item is left.\n")
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


def _table_line(r: Explanation) -> str:
    rule = r.row.rule
    return (
        f"{rule.tag:<13} {rule.name[:48]:<48} {rule.basic:<7} -> {r.effect.action}  "
        f"{r.does}  [{r.reason}]"
    )


def cmd_deidentify(args: argparse.Namespace) -> int:
    """The worker's code path over files and folders: outputs plus a JSON report."""
    configure(LoggingSettings(level="warning", format="console"))  # library records redacted
    inputs = list(batch.iter_inputs(args.inputs))
    missing = [str(p) for p in args.inputs if not p.exists()]
    if missing:
        print(
            f"dicom-gateway deidentify: no such file or folder: {', '.join(missing)}",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    with _offline_vault(args.config) as (settings, vault):
        worker = Worker.for_settings(settings, vault)
        progress = _progress_bar if sys.stderr.isatty() else None
        entries = batch.run(worker, inputs, args.out, progress)
    document = batch.report(entries)
    batch.write_report(args.report, document)
    s = document["summary"]
    print(
        f"{s['inputs']} inputs: {s['written']} written, {s['dropped']} dropped, "
        f"{s['quarantined']} quarantined; report: {args.report}"
    )
    return EXIT_OK


@contextmanager
def _offline_vault(config: Path | None) -> Iterator[tuple[Settings, SqliteVault]]:
    """The site's settings and vault; without a config, the defaults and a throwaway vault."""
    if config is not None:
        settings = _settings(config)
        vault = SqliteVault.open(settings.vault)
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
            vault=VaultSettings(root / "vault.sqlite3", SecretSource(env="UNUSED")),
        )
        vault = SqliteVault(settings.vault.path, secrets.token_bytes(32))
        try:
            yield settings, vault
        finally:
            vault.close()


def _progress_bar(done: int, total: int) -> None:
    width = 40
    filled = width * done // max(total, 1)
    end = "\n" if done == total else ""
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr)


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


def _peer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="take host, port and AE titles from this config")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--aet", help="our (calling) AE title")
    p.add_argument("--aec", help="the peer's (called) AE title")
    p.add_argument("--tls-ca", type=Path, help="CA bundle to verify the peer; turns TLS on")
    p.add_argument("--tls-cert", type=Path, help="client certificate for mutual TLS")
    p.add_argument("--tls-key", type=Path, help="client private key for mutual TLS")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="dicom-gateway", description=__doc__.splitlines()[0])
    top.add_argument("--version", action="version", version=__version__)
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the gateway")
    p.add_argument("--config", type=Path, required=True)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("receiver", help="run the reference receiver (analysis server end)")
    p.add_argument("--config", type=Path, required=True)
    p.set_defaults(func=cmd_receiver)
    p = sub.add_parser("check-config", help="validate a configuration file")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_check_config)
    p = sub.add_parser("keys", help="create the keys and dev certificates a config needs")
    p.add_argument("--config", type=Path, required=True)
    p.set_defaults(func=cmd_keys)
    p = sub.add_parser(
        "describe-profile", help="print what de-identification does to every attribute"
    )
    p.add_argument("--config", type=Path, help="take the options from this config")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_describe_profile)
    p = sub.add_parser(
        "deidentify", help="de-identify files and folders offline, as the gateway would"
    )
    p.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="files or folders")
    p.add_argument("--config", type=Path, help="site options, policy and vault (default: none)")
    p.add_argument("--out", type=Path, required=True, help="folder for the outputs")
    p.add_argument("--report", type=Path, required=True, help="JSON report to write")
    p.set_defaults(func=cmd_deidentify)
    p = sub.add_parser("echo", help="C-ECHO a DICOM node")
    _peer_options(p)
    p.set_defaults(func=cmd_echo)
    p = sub.add_parser("send", help="C-STORE files or folders to a DICOM node")
    p.add_argument("paths", type=Path, nargs="+")
    _peer_options(p)
    p.set_defaults(func=cmd_send)
    _spool_commands(sub)
    return top


def _print(document: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(document, indent=1))
    elif isinstance(document, list):
        for row in document:
            print("  ".join(f"{k}={_short(v)}" for k, v in row.items()))
        if not document:
            print("(none)")
    else:
        print(json.dumps(document, indent=1))


def _short(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def cmd_spool_list(args: argparse.Namespace) -> int:
    _print(admin.overview(_settings(args.config)), args.json)
    return EXIT_OK


def cmd_held_list(args: argparse.Namespace) -> int:
    _print(admin.listing(_settings(args.config), args.state), args.json)
    return EXIT_OK


def cmd_held_show(args: argparse.Namespace) -> int:
    _print(admin.show(_settings(args.config), args.state, args.ref), True)
    return EXIT_OK


def cmd_held_act(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    if args.op == "release":
        configure(LoggingSettings(level="error"))  # the check below logs like a worker
        admin.check_release(settings, args.ref)
    print(admin.act(settings, args.op, args.state, args.ref))
    return EXIT_OK


def cmd_audit_verify(args: argparse.Namespace) -> int:
    settings = _settings(args.config, files=False)
    result = admin.audit_verify(settings, args.file)
    if result.ok:
        print(f"audit trail ok: {result.records} records")
        return EXIT_OK
    print(
        f"audit trail BROKEN at line {result.first_bad_line}: {result.problem} "
        f"({result.records} records verified before it)",
        file=sys.stderr,
    )
    return EXIT_FAILED


def _spool_commands(sub: Any) -> None:
    spool = sub.add_parser("spool", help="see and act on what the spool holds")
    verbs = spool.add_subparsers(dest="spool_command", required=True)
    p = verbs.add_parser("list", help="items and oldest age per state; held items by reason")
    _config_json(p)
    p.set_defaults(func=cmd_spool_list)
    for state, title in ((State.QUARANTINE, "quarantined instances"), (State.DEAD, "dead letters")):
        group = verbs.add_parser(state, help=f"{title}: list, show, act")
        actions = group.add_subparsers(dest="held_command", required=True)
        p = actions.add_parser("list", help=f"every one of the {title}, with its reason")
        _config_json(p)
        p.set_defaults(func=cmd_held_list, state=state)
        p = actions.add_parser("show", help="one item: reason, tag paths, sender, times")
        p.add_argument("ref", help="<study-id>/<name> or a unique <name>")
        p.add_argument("--config", type=Path, required=True)
        p.set_defaults(func=cmd_held_show, state=state)
        ops = ("release", "purge") if state == State.QUARANTINE else ("retry", "purge")
        for op in ops:
            p = actions.add_parser(op, help=_OP_HELP[op])
            p.add_argument("ref", help="<study-id>/<name> or a unique <name>")
            p.add_argument("--config", type=Path, required=True)
            p.set_defaults(func=cmd_held_act, state=state, op=op)
    p = verbs.add_parser("retry", help=_OP_HELP["retry"])
    p.add_argument("ref", help="<study-id>/<name> or a unique <name>")
    p.add_argument("--config", type=Path, required=True)
    p.set_defaults(func=cmd_held_act, state=State.DEAD, op="retry")
    audit = sub.add_parser("audit", help="the audit trail")
    verbs = audit.add_subparsers(dest="audit_command", required=True)
    p = verbs.add_parser("verify", help="check the audit trail's hash chain")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--file", type=Path, help="another audit file (default: the configured one)")
    p.set_defaults(func=cmd_audit_verify)


_OP_HELP = {
    "release": "re-run the worker path and the release check; if clean, send it",
    "purge": "erase it now",
    "retry": "put a dead letter back in the outbox",
}


def _config_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--json", action="store_true", help="machine-readable output")


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except GatewayError as exc:
        print(f"dicom-gateway: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
