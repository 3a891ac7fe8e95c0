"""`dicom-gateway console run` (the privacy officer's console, docs/console.md) and `console
officer add|remove|list` (the accounts it signs in)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, settings_from
from gateway.console import server
from gateway.console.officers import OfficerError, Officers
from gateway.errors import GatewayError
from gateway.logs import configure


def cmd_console_run(args: argparse.Namespace) -> int:
    settings = settings_from(args.config)
    configure(settings.logging)
    try:
        server.serve(settings)
    except (GatewayError, OSError) as exc:
        print(f"dicom-gateway console: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _officers(args: argparse.Namespace) -> Officers:
    settings = settings_from(args.config, files=False)
    _, _, path = server.required(settings)
    return Officers(path)


def cmd_officer_add(args: argparse.Namespace) -> int:
    """Add an officer, or set a new password: read from stdin with --password-stdin (one
    line), otherwise asked twice on the terminal."""
    officers = _officers(args)
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")
        if getpass.getpass("again: ") != password:
            print("dicom-gateway console: the two passwords differ", file=sys.stderr)
            return EXIT_CONFIG
    try:
        new = officers.set(args.name, password)
    except OfficerError as exc:
        print(f"dicom-gateway console: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{'added' if new else 'new password for'} officer {args.name}: {officers.path}")
    return EXIT_OK


def cmd_officer_remove(args: argparse.Namespace) -> int:
    officers = _officers(args)
    if not officers.remove(args.name):
        print(f"dicom-gateway console: no officer {args.name}", file=sys.stderr)
        return EXIT_FAILED
    print(f"removed officer {args.name} (signed-in sessions end at the console's restart)")
    return EXIT_OK


def cmd_officer_list(args: argparse.Namespace) -> int:
    names = sorted(_officers(args).read())
    if args.json:
        print(json.dumps([{"name": name} for name in names], indent=1))
        return EXIT_OK
    for name in names:
        print(name)
    if not names:
        print("(none)")
    return EXIT_OK


def add_commands(sub: Any) -> None:
    p = sub.add_parser("console", help="the privacy officer's console (web, HTTPS)")
    verbs = p.add_subparsers(dest="verb", required=True)
    run = verbs.add_parser("run", help="serve the console")
    run.add_argument("--config", type=Path, required=True)
    run.set_defaults(func=cmd_console_run)
    officer = verbs.add_parser("officer", help="officers' accounts")
    what = officer.add_subparsers(dest="what", required=True)
    add = what.add_parser("add", help="add an officer or set a new password")
    add.add_argument("name")
    add.add_argument("--config", type=Path, required=True)
    add.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add.set_defaults(func=cmd_officer_add)
    remove = what.add_parser("remove", help="remove an officer")
    remove.add_argument("name")
    remove.add_argument("--config", type=Path, required=True)
    remove.set_defaults(func=cmd_officer_remove)
    listed = what.add_parser("list", help="the officers' names")
    listed.add_argument("--config", type=Path, required=True)
    listed.add_argument("--json", action="store_true", help="machine-readable output")
    listed.set_defaults(func=cmd_officer_list)
