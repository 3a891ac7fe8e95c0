"""`dicom-gateway console run` (the privacy officer's console, docs/console.md) and `console
officer add|remove|list` (the accounts it signs in)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import TYPE_CHECKING, Any

from gateway.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    command,
    commands,
    config_option,
    settings_from,
)
from gateway.errors import GatewayError
from gateway.logs import configure

if TYPE_CHECKING:  # imported when a command runs (the console's server is not light)
    from gateway.console.officers import Officers


def cmd_console_run(args: argparse.Namespace) -> int:
    from gateway.console import server

    settings = settings_from(args.config)
    configure(settings.logging)
    try:
        server.serve(settings)
    except (GatewayError, OSError) as exc:
        print(f"dicom-gateway console: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _officers(args: argparse.Namespace) -> Officers:
    from gateway.console import server
    from gateway.console.officers import Officers

    settings = settings_from(args.config, files=False)
    _, _, path = server.required(settings)
    return Officers(path)


def cmd_officer_add(args: argparse.Namespace) -> int:
    """Add an officer, or set a new password: read from stdin with --password-stdin (one
    line), otherwise asked twice on the terminal."""
    from gateway.console.officers import OfficerError

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
    p = command(
        sub,
        "console",
        "the privacy officer's console (web, HTTPS) and its accounts",
        "The privacy officer's console: a web page (HTTPS) to see what the gateway holds and "
        "why, compare images before and after, and release or purge under the officer's name.",
    )
    verbs = commands(p, "verb")
    run = command(
        verbs,
        "run",
        "serve the console (until SIGTERM or Ctrl-C)",
        "Serve the console on [console] host and port (HTTPS), beside the gateway.",
        "dicom-gateway console run --config gateway.toml",
    )
    config_option(run)
    run.set_defaults(func=cmd_console_run)
    officer = command(
        verbs,
        "officer",
        "the officers' accounts: add, remove, list",
        "The officers' accounts (a name and a password, stored hashed in [console] officers).",
    )
    what = commands(officer, "what")
    add = command(
        what,
        "add",
        "add an officer, or set a new password",
        "Add an officer, or set a new password for one: asked twice on the terminal, or read "
        "as one line from standard input with --password-stdin. At least 12 characters.",
        "dicom-gateway console officer add a.jansen --config gateway.toml",
    )
    add.add_argument("name", metavar="NAME", help="the officer's sign-in name")
    config_option(add)
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from standard input (one line), for scripts",
    )
    add.set_defaults(func=cmd_officer_add)
    remove = command(
        what,
        "remove",
        "remove an officer",
        "Remove an officer's account; a signed-in session ends when the console restarts.",
    )
    remove.add_argument("name", metavar="NAME", help="the officer's sign-in name")
    config_option(remove)
    remove.set_defaults(func=cmd_officer_remove)
    listed = command(what, "list", "the officers' names")
    config_option(listed)
    listed.add_argument(
        "--json", action="store_true", help="print one JSON document with the same fields"
    )
    listed.set_defaults(func=cmd_officer_list)
