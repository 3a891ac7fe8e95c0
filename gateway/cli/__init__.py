# PYTHON_ARGCOMPLETE_OK (shell completion: argcomplete looks for this line)
"""`dicom-gateway`: entry point. Errors become clear messages and exit codes, not tracebacks.

Exit codes: 0 success; 1 the operation failed (a peer refused, a send failed, the gateway could
not start); 2 the configuration or the command line is wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import __version__
from gateway.cli import console, spool, vault
from gateway.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    command,
    commands,
    config_option,
    settings_from,
    trust_warnings,
)
from gateway.cli.keys import cmd_keys
from gateway.cli.offline import cmd_deidentify, cmd_describe_profile
from gateway.errors import ConfigError, GatewayError
from gateway.logs import configure, get_logger
from gateway.settings import LoggingSettings

if TYPE_CHECKING:
    from gateway import scu

# What a command runs is imported when it runs: a process pays only for its own command (the
# gateway's run no longer loads the console and the receiver, `keys` not the pipeline); worker
# processes, which start from this module too, are spared the same.

log = get_logger("gateway.cli")


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.app import Gateway

    settings = settings_from(args.config)
    configure(settings.logging)
    for reason, _ in trust_warnings(settings):
        log.warning("config.ca_shared", reason=reason)
    try:
        return Gateway(settings, lambda: settings_from(args.config)).serve()
    except GatewayError as exc:
        print(f"dicom-gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILED


def cmd_receiver(args: argparse.Namespace) -> int:
    """The reference receiver (the analysis server's end of protocol v1)."""
    from gateway.receiver import server as receiver_server

    settings = settings_from(args.config, files=False)
    configure(settings.logging)
    try:
        receiver_server.serve(settings, demo_analysis=args.demo_analysis)
    except (GatewayError, OSError) as exc:
        print(f"dicom-gateway receiver: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    from gateway.deidentify.pixels.stage import PixelStage

    settings = settings_from(args.file)
    PixelStage.for_settings(settings)  # pixel rules readable, detector models present
    for _, warning in trust_warnings(settings):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.file.resolve()}: ok")
    return EXIT_OK


def _node(args: argparse.Namespace, default_calling: str) -> scu.Node:
    from gateway import scu

    configure(LoggingSettings(level="warning", format="console"))
    host, port, called, calling = "127.0.0.1", 11112, "DICOM_GATEWAY", default_calling
    if args.config is not None:
        ingest = settings_from(args.config, files=False).ingest
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
    from gateway import scu

    node = _node(args, "ECHOSCU")
    status = scu.echo(node)
    print(f"C-ECHO {node.host}:{node.port} {node.called_ae_title}: status 0x{status:04X}")
    return EXIT_OK if status == 0 else EXIT_FAILED


def cmd_send(args: argparse.Namespace) -> int:
    from gateway import scu

    node = _node(args, "STORESCU")
    results = scu.send(node, args.paths)
    for r in results:
        outcome = f"0x{r.status:04X}" if r.status is not None else "not sent"
        detail = f" ({r.reason})" if r.reason else ""
        print(f"{'ok    ' if r.ok else 'FAILED'} {outcome} {r.path}{detail}")
    failed = sum(not r.ok for r in results)
    print(f"{len(results) - failed} stored, {failed} failed")
    return EXIT_OK if results and not failed else EXIT_FAILED


def _peer_options(p: argparse.ArgumentParser) -> None:
    config_option(
        p,
        required=False,
        help="take the host, port and AE titles from this configuration's [ingest] section "
        "(the gateway's own listener); the options below override it",
    )
    p.add_argument("--host", help="the node's host name or address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, help="the node's DICOM port (default: 11112)")
    p.add_argument(
        "--aet",
        metavar="AE_TITLE",
        help="our (calling) AE title: the node must know it (default: the config's first peer, "
        "else ECHOSCU or STORESCU)",
    )
    p.add_argument(
        "--aec",
        metavar="AE_TITLE",
        help="the node's (called) AE title (default: DICOM_GATEWAY)",
    )
    p.add_argument(
        "--tls-ca",
        type=Path,
        metavar="FILE",
        help="use DICOM TLS and verify the node's certificate against this CA bundle (PEM)",
    )
    p.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="our client certificate (PEM), when the node asks for one",
    )
    p.add_argument("--tls-key", type=Path, metavar="FILE", help="the private key of --tls-cert")


DESCRIPTION = (
    "A DICOM gateway at the hospital's edge: it receives studies from PACS, removes what "
    "identifies patients (header and burned-in text), encrypts them for the analysis server "
    "and sends them there, then stores the results it gets back in PACS. These commands run "
    "it, check its configuration, look after its spool and vault, and try de-identification "
    "offline."
)
EPILOG = """exit codes: 0 success, 1 the operation failed, 2 the configuration or the command line
is wrong.

start here:
  dicom-gateway keys --config gateway.toml          # make the keys it needs
  dicom-gateway check-config gateway.toml
  dicom-gateway run --config gateway.toml"""


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="dicom-gateway",
        description=textwrap.fill(DESCRIPTION, 88),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--version", action="version", version=__version__)
    sub = commands(top, "command")
    p = command(
        sub,
        "run",
        "run the gateway (until SIGTERM or Ctrl-C)",
        "Run the gateway: receive DICOM, de-identify, send on, bring results back; it logs "
        "JSON lines on stderr and stops cleanly on SIGTERM or Ctrl-C (a second one stops at "
        "once; nothing acknowledged is lost).",
        "dicom-gateway run --config /etc/dicom-gateway/gateway.toml",
    )
    config_option(p)
    p.set_defaults(func=cmd_run)
    p = command(
        sub,
        "receiver",
        "run the reference receiver: a stand-in for the analysis server",
        "Run the reference receiver, the analysis server's end of the gateway's protocol "
        "([receiver] in the configuration): for testing and for vendors to compare against.",
        "dicom-gateway receiver --config gateway.toml --demo-analysis",
    )
    config_option(p)
    p.add_argument(
        "--demo-analysis",
        action="store_true",
        help="offer a segmentation (SEG) and a report (SR) of every complete study as results, "
        "to try the way back to PACS (also: receiver.demo_analysis = true)",
    )
    p.set_defaults(func=cmd_receiver)
    p = command(
        sub,
        "check-config",
        "check a configuration file and every file it names, then say ok",
        "Check a configuration file and every file it names (keys, certificates, pixel rule "
        "scripts, word file, text detector models) without starting anything; each problem "
        "is named with its key and file. Run it after every edit.",
        "dicom-gateway check-config /etc/dicom-gateway/gateway.toml",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the configuration file (TOML)")
    p.set_defaults(func=cmd_check_config)
    p = command(
        sub,
        "keys",
        "create the keys (and development certificates) a configuration needs",
        "Create the keys a configuration names and lacks: the spool and vault keys, and with "
        "TLS or forwarding on, a development CA with certificates and the HPKE key pairs. "
        "Nothing that exists is overwritten; for production, put your own certificates there "
        "first.",
        "dicom-gateway keys --config gateway.toml",
    )
    config_option(p)
    p.set_defaults(func=cmd_keys)
    p = command(
        sub,
        "describe-profile",
        "print what de-identification does to every attribute",
        "Print what de-identification does to every attribute of the DICOM standard's "
        "confidentiality profile (PS3.15 Table E.1-1) under the configured options; or write "
        "the de-identification section of a conformance statement for the privacy officer.",
        "dicom-gateway describe-profile --config gateway.toml --conformance --output statement.md",
    )
    config_option(
        p,
        required=False,
        help="take the [deidentify] options from this configuration (default: the defaults)",
    )
    p.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text for people, json (one list) for scripts (default: text)",
    )
    p.add_argument(
        "--conformance",
        action="store_true",
        help="write the de-identification section of a DICOM Conformance Statement "
        "(PS3.2 Annex N), as Markdown, for the privacy officer to sign",
    )
    p.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="with --conformance: write it to this file (default: standard output)",
    )
    p.set_defaults(func=cmd_describe_profile)
    p = command(
        sub,
        "deidentify",
        "de-identify files and folders offline, as the gateway would",
        "De-identify DICOM files and folders offline, exactly as the gateway would, and write "
        "a JSON report of what happened to every input (written, dropped or quarantined, and "
        "why). Use it on sample data before go-live. Nothing is sent anywhere.",
        "dicom-gateway deidentify /data/sample --config gateway.toml --out review/out "
        "--report review/report.json",
    )
    p.add_argument(
        "inputs",
        type=Path,
        nargs="+",
        metavar="INPUT",
        help="DICOM files, or folders to walk (every file in them, in name order)",
    )
    config_option(
        p,
        required=False,
        help="the site's options, policy and vault, so pseudonyms match the "
        "gateway's (default: the defaults, and pseudonyms that are not kept)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder for the de-identified files (made if missing)",
    )
    p.add_argument(
        "--report",
        type=Path,
        required=True,
        metavar="FILE",
        help="the JSON report to write; it names your input files, so keep it on site",
    )
    p.add_argument(
        "--preview",
        action="store_true",
        help="also write DIR/preview.html for sign-off: every masked image before and after, "
        "with its header changes (it holds PHI: keep it on site)",
    )
    p.set_defaults(func=cmd_deidentify)
    p = command(
        sub,
        "echo",
        "check that a DICOM node answers (C-ECHO)",
        "Check that a DICOM node (the gateway, a PACS) accepts an association from us and "
        "answers a C-ECHO; exits 1 if not.",
        "dicom-gateway echo --host pacs.example --port 104 --aec PACS --aet DICOM_GATEWAY",
    )
    _peer_options(p)
    p.set_defaults(func=cmd_echo)
    p = command(
        sub,
        "send",
        "send DICOM files or folders to a DICOM node (C-STORE)",
        "Send DICOM files or folders to a DICOM node with C-STORE, one association, and say "
        "what happened to each file; exits 1 if any was refused.",
        "dicom-gateway send /data/sample --config gateway.toml",
    )
    p.add_argument(
        "paths", type=Path, nargs="+", metavar="PATH", help="DICOM files, or folders to walk"
    )
    _peer_options(p)
    p.set_defaults(func=cmd_send)
    spool.add_commands(sub)
    vault.add_commands(sub)
    console.add_commands(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    top = parser()
    if "_ARGCOMPLETE" in os.environ:  # the shell asks for completions; only then imported
        import argcomplete

        argcomplete.autocomplete(top)  # prints them and exits
    args = top.parse_args(argv)
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
