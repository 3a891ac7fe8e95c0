"""`dicom-gateway`: entry point. Errors become clear messages and exit codes, not tracebacks.

Exit codes: 0 success; 1 the operation failed (a peer refused, a send failed, the gateway could
not start); 2 the configuration or the command line is wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gateway import __version__, scu
from gateway.app import Gateway
from gateway.cli import console, spool, vault
from gateway.cli.common import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, settings_from, trust_warnings
from gateway.cli.keys import cmd_keys
from gateway.cli.offline import cmd_deidentify, cmd_describe_profile
from gateway.deidentify.pixels.stage import PixelStage
from gateway.errors import ConfigError, GatewayError
from gateway.logs import configure, get_logger
from gateway.receiver import server as receiver_server
from gateway.settings import LoggingSettings

log = get_logger("gateway.cli")


def cmd_run(args: argparse.Namespace) -> int:
    settings = settings_from(args.config)
    configure(settings.logging)
    for reason, _ in trust_warnings(settings):
        log.warning("config.ca_shared", reason=reason)
    try:
        return Gateway(settings).serve()
    except GatewayError as exc:
        print(f"dicom-gateway: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILED


def cmd_receiver(args: argparse.Namespace) -> int:
    """The reference receiver (the analysis server's end of protocol v1)."""
    settings = settings_from(args.config, files=False)
    configure(settings.logging)
    try:
        receiver_server.serve(settings, demo_analysis=args.demo_analysis)
    except (GatewayError, OSError) as exc:
        print(f"dicom-gateway receiver: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = settings_from(args.file)
    PixelStage.for_settings(settings)  # pixel rules readable, detector models present
    for _, warning in trust_warnings(settings):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{args.file.resolve()}: ok")
    return EXIT_OK


def _node(args: argparse.Namespace, default_calling: str) -> scu.Node:
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
    p.add_argument(
        "--demo-analysis",
        action="store_true",
        help="offer a SEG and an SR of every complete study as results (receiver.demo_analysis)",
    )
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
    p.add_argument(
        "--conformance",
        action="store_true",
        help="write the de-identification section of a DICOM Conformance Statement "
        "(PS3.2 Annex N), as Markdown, for the privacy officer to sign",
    )
    p.add_argument("--output", type=Path, help="with --conformance: write it to this file")
    p.set_defaults(func=cmd_describe_profile)
    p = sub.add_parser(
        "deidentify", help="de-identify files and folders offline, as the gateway would"
    )
    p.add_argument("inputs", type=Path, nargs="+", metavar="INPUT", help="files or folders")
    p.add_argument("--config", type=Path, help="site options, policy and vault (default: none)")
    p.add_argument("--out", type=Path, required=True, help="folder for the outputs")
    p.add_argument("--report", type=Path, required=True, help="JSON report to write")
    p.add_argument(
        "--preview",
        action="store_true",
        help="also write OUT/preview.html for sign-off: every masked image before and after, "
        "with its header diff (holds PHI)",
    )
    p.set_defaults(func=cmd_deidentify)
    p = sub.add_parser("echo", help="C-ECHO a DICOM node")
    _peer_options(p)
    p.set_defaults(func=cmd_echo)
    p = sub.add_parser("send", help="C-STORE files or folders to a DICOM node")
    p.add_argument("paths", type=Path, nargs="+")
    _peer_options(p)
    p.set_defaults(func=cmd_send)
    spool.add_commands(sub)
    vault.add_commands(sub)
    console.add_commands(sub)
    return top


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
