"""Every command's --help is written for its user: a description, and help on every option
(a new command without them fails here)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from gateway.cli import main, parser


def _commands(
    command: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, command
    for action in command._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


COMMANDS = dict(_commands(parser()))


def test_every_command_is_found() -> None:
    assert {("run",), ("deidentify",), ("spool", "quarantine", "release")} <= COMMANDS.keys()
    assert ("console", "officer", "list") in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(("dicom-gateway", *p)))
def test_help_describes_the_command_and_every_option(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    command = COMMANDS[path]
    assert command.description, "no description"
    assert command.description.strip().splitlines()[0] in shown
    for action in command._actions:
        name = "/".join(action.option_strings) or action.dest
        assert action.help, f"{name}: no help"
        assert action.help == argparse.SUPPRESS or action.help.strip() != ""
    # written for users: no module paths or docstring markup
    for text in (command.description, *(a.help or "" for a in command._actions)):
        assert not any(jargon in text for jargon in ("gateway/", ".py", "`")), text
