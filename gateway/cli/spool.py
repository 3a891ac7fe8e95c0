"""`dicom-gateway spool ...` and `audit verify`: see and act on what the spool holds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway import admin
from gateway.cli.common import EXIT_FAILED, EXIT_OK, settings_from
from gateway.logs import configure
from gateway.settings import LoggingSettings
from gateway.spool import State


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
    overview = admin.overview(settings_from(args.config))
    if args.json:
        _print(overview, True)
        return EXIT_OK
    print(f"{'state':<12}{'items':>7}  oldest")
    for state, row in overview["states"].items():
        print(f"{state:<12}{row['items']:>7}  {_age(row['oldest_age_seconds'])}")
    held = [
        (s, r, n) for s, reasons in overview["held_by_reason"].items() for r, n in reasons.items()
    ]
    print("\nheld, by reason:" if held else "\nheld, by reason: (none)")
    for state, reason, n in held:
        print(f"{state:<12}{n:>7}  {reason}")
    return EXIT_OK


def _age(seconds: float | None) -> str:
    """An age for people: seconds, minutes, hours or days ("-": nothing in that state)."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def cmd_held_list(args: argparse.Namespace) -> int:
    _print(admin.listing(settings_from(args.config), args.state), args.json)
    return EXIT_OK


def cmd_held_show(args: argparse.Namespace) -> int:
    _print(admin.show(settings_from(args.config), args.state, args.ref), True)
    return EXIT_OK


def cmd_held_act(args: argparse.Namespace) -> int:
    settings = settings_from(args.config)
    if args.op == "release":
        configure(LoggingSettings(level="error"))  # the check below logs like a worker
        admin.check_release(settings, args.ref)
    print(admin.act(settings, args.op, args.state, args.ref))
    return EXIT_OK


def cmd_results_list(args: argparse.Namespace) -> int:
    _print(admin.results(settings_from(args.config)), args.json)
    return EXIT_OK


def cmd_results_show(args: argparse.Namespace) -> int:
    _print(admin.result(settings_from(args.config), args.result), True)
    return EXIT_OK


def cmd_results_act(args: argparse.Namespace) -> int:
    print(admin.act_result(settings_from(args.config), args.op, args.result))
    return EXIT_OK


def cmd_audit_verify(args: argparse.Namespace) -> int:
    settings = settings_from(args.config, files=False)
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


def add_commands(sub: Any) -> None:
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
    _results_commands(verbs)
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


def _results_commands(verbs: Any) -> None:
    group = verbs.add_parser(
        "results", help="results on their way back to PACS: list, show, retry, purge"
    )
    actions = group.add_subparsers(dest="results_command", required=True)
    p = actions.add_parser("list", help="results waiting for PACS, then held ones with reasons")
    _config_json(p)
    p.set_defaults(func=cmd_results_list)
    p = actions.add_parser("show", help="one result: study (pseudonym), reason, times, size")
    p.add_argument("result", help="the result id")
    p.add_argument("--config", type=Path, required=True)
    p.set_defaults(func=cmd_results_show)
    for op, text in (
        ("retry", "put a held result back on its way to PACS"),
        ("purge", "erase a held result now"),
    ):
        p = actions.add_parser(op, help=text)
        p.add_argument("result", help="the result id")
        p.add_argument("--config", type=Path, required=True)
        p.set_defaults(func=cmd_results_act, op=op)


def _config_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--json", action="store_true", help="machine-readable output")
