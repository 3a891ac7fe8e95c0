"""`dicom-gateway spool ...` and `audit verify`: see and act on what the spool holds."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import EXIT_FAILED, EXIT_OK, command, commands, config_option, settings_from
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
    from gateway import admin

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
    from gateway import admin

    _print(admin.listing(settings_from(args.config), args.state), args.json)
    return EXIT_OK


def cmd_held_show(args: argparse.Namespace) -> int:
    from gateway import admin

    _print(admin.show(settings_from(args.config), args.state, args.ref), True)
    return EXIT_OK


def cmd_held_act(args: argparse.Namespace) -> int:
    from gateway import admin

    settings = settings_from(args.config)
    if args.op == "release":
        configure(LoggingSettings(level="error"))  # the check below logs like a worker
        admin.check_release(settings, args.ref)
    print(admin.act(settings, args.op, args.state, args.ref))
    return EXIT_OK


def cmd_results_list(args: argparse.Namespace) -> int:
    from gateway import admin

    _print(admin.results(settings_from(args.config)), args.json)
    return EXIT_OK


def cmd_results_show(args: argparse.Namespace) -> int:
    from gateway import admin

    _print(admin.result(settings_from(args.config), args.result), True)
    return EXIT_OK


def cmd_results_act(args: argparse.Namespace) -> int:
    from gateway import admin

    print(admin.act_result(settings_from(args.config), args.op, args.result))
    return EXIT_OK


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from gateway import admin

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


_REF = "the item: STUDY/NAME as list shows it, or a NAME that is unique"
_HELD = {
    State.QUARANTINE: (
        "quarantined instances: not proven clean, held for a person to judge",
        "Quarantined instances: what de-identification or the release check could not make "
        "safe, held with a reason until someone releases or purges them (or retention erases "
        "them).",
    ),
    State.DEAD: (
        "dead letters: instances that could not be delivered",
        "Dead letters: sealed instances that could not be delivered (refused for good, or "
        "retried too long), kept with a reason until someone retries or purges them.",
    ),
}
_OP_HELP = {
    "release": (
        "send a quarantined instance on, if it now passes",
        "Run a quarantined instance through de-identification and the release check again "
        "(after a rule or option was changed) and send it on if it is now clean; refused, and "
        "left where it is, if not. Works beside a running gateway.",
    ),
    "purge": (
        "erase a held item now",
        "Erase a held item now, instead of when retention would (the audit trail records it). "
        "Works beside a running gateway.",
    ),
    "retry": (
        "put a dead letter back in the outbox, to be sent again",
        "Put a dead letter back in the outbox to be sent again (after the analysis server was "
        "fixed). Works beside a running gateway.",
    ),
}


def add_commands(sub: Any) -> None:
    spool = command(
        sub,
        "spool",
        "see and act on what the spool holds",
        "See what the spool holds (waiting, sent, held) and act on held items: release, retry, "
        "purge. Every command works beside a running gateway.",
        "dicom-gateway spool list --config gateway.toml",
    )
    verbs = commands(spool, "spool_command")
    p = command(
        verbs,
        "list",
        "items and oldest age per state, then held items by reason",
        "A table of how many items each spool state holds and how old the oldest is, then the "
        "held ones (quarantine, dead) counted by reason. No patient data is shown.",
        "dicom-gateway spool list --config gateway.toml --json",
    )
    _config_json(p)
    p.set_defaults(func=cmd_spool_list)
    for state, (summary, about) in _HELD.items():
        group = command(verbs, state, summary, about)
        actions = commands(group, "held_command")
        p = command(
            actions,
            "list",
            f"every one of the {state} items, with its reason",
            f"Every {state} item: its reference (for show and the actions), reason, tag paths "
            "(never values), sender and times.",
        )
        _config_json(p)
        p.set_defaults(func=cmd_held_list, state=state)
        p = command(actions, "show", "one item: reason, tag paths, sender, times (as JSON)")
        _ref_and_config(p)
        p.set_defaults(func=cmd_held_show, state=state)
        ops = ("release", "purge") if state == State.QUARANTINE else ("retry", "purge")
        for op in ops:
            p = command(actions, op, *_OP_HELP[op])
            _ref_and_config(p)
            p.set_defaults(func=cmd_held_act, state=state, op=op)
    p = command(verbs, "retry", *_OP_HELP["retry"])
    _ref_and_config(p)
    p.set_defaults(func=cmd_held_act, state=State.DEAD, op="retry")
    _results_commands(verbs)
    audit = command(
        sub,
        "audit",
        "check the audit trail",
        "The audit trail: a hash-chained record of what the gateway received, sent, held and "
        "erased, and who acted on it.",
    )
    verbs = commands(audit, "audit_command")
    p = command(
        verbs,
        "verify",
        "check that no audit record was changed, removed or inserted",
        "Check the audit trail's hash chain: exits 0 if every record is as written, 1 naming "
        "the first line that is not.",
        "dicom-gateway audit verify --config gateway.toml",
    )
    config_option(p)
    p.add_argument(
        "--file",
        type=Path,
        metavar="FILE",
        help="check this audit file instead (a copy, a rotated one; default: the spool's)",
    )
    p.set_defaults(func=cmd_audit_verify)


def _results_commands(verbs: Any) -> None:
    group = command(
        verbs,
        "results",
        "results on their way back to PACS: list, show, retry, purge",
        "Results from the analysis server on their way back to PACS: the ones waiting, and "
        "the ones held because PACS refused them or they failed a check.",
    )
    actions = commands(group, "results_command")
    p = command(actions, "list", "results waiting for PACS, then held ones with reasons")
    _config_json(p)
    p.set_defaults(func=cmd_results_list)
    p = command(actions, "show", "one result: study (pseudonym), reason, times, size (as JSON)")
    p.add_argument("result", help="the result id, as list shows it")
    config_option(p)
    p.set_defaults(func=cmd_results_show)
    for op, text in (
        ("retry", "put a held result back on its way to PACS"),
        ("purge", "erase a held result now"),
    ):
        p = command(
            actions, op, text, f"{text[:1].upper()}{text[1:]}; works beside a running gateway."
        )
        p.add_argument("result", help="the result id, as list shows it")
        config_option(p)
        p.set_defaults(func=cmd_results_act, op=op)


def _ref_and_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="REF", help=_REF)
    config_option(p)


def _config_json(p: argparse.ArgumentParser) -> None:
    config_option(p)
    p.add_argument(
        "--json",
        action="store_true",
        help="print one JSON document with the same fields, for scripts",
    )
