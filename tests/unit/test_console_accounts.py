"""The console's accounts and sessions: scrypt hashes, what a damaged officers file says,
the lockout after wrong passwords, and when a session ends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.console import sessions as sessions_module
from gateway.console.officers import OfficerError, Officers, check_password, hash_password
from gateway.console.sessions import MAX_FAILURES, Sessions

GOOD = "a long enough password"


def test_a_hash_checks_only_its_own_password_and_is_salted() -> None:
    first, second = hash_password(GOOD), hash_password(GOOD)
    assert first != second  # salted
    assert first.startswith("scrypt$32768$8$1$")
    assert check_password(GOOD, first)
    assert check_password(GOOD, second)
    assert not check_password(GOOD + "!", first)
    assert not check_password(GOOD, "bcrypt$whatever")
    assert not check_password(GOOD, "scrypt$x$8$1$AA==$AA==")
    assert not check_password(GOOD, "")


def test_officers_are_added_checked_and_removed_in_a_private_file(tmp_path: Path) -> None:
    officers = Officers(tmp_path / "keys" / "officers.json")
    assert officers.read() == {}
    assert officers.set("a.jansen", GOOD)
    assert not officers.set("a.jansen", GOOD + " again")  # a new password, same officer
    assert (officers.path.stat().st_mode & 0o777) == 0o600
    assert officers.authenticate("a.jansen", GOOD + " again")
    assert not officers.authenticate("a.jansen", GOOD)
    assert not officers.authenticate("nobody", GOOD)
    assert not officers.authenticate("../etc", GOOD)
    assert GOOD not in officers.path.read_text()
    assert officers.remove("a.jansen")
    assert not officers.remove("a.jansen")
    assert officers.read() == {}


@pytest.mark.parametrize(
    ("name", "password", "problem"),
    [("bad name", GOOD, "name"), ("ok", "short", "at least 12"), ("", GOOD, "name")],
)
def test_unusable_names_and_passwords_are_refused(
    tmp_path: Path, name: str, password: str, problem: str
) -> None:
    with pytest.raises(OfficerError, match=problem) as refused:
        Officers(tmp_path / "officers.json").set(name, password)
    assert password not in str(refused.value)  # a message never quotes the password


@pytest.mark.parametrize(
    "text", ["not json", "[]", json.dumps({"format": 2, "officers": {}}), '{"format": 1}']
)
def test_a_damaged_officers_file_is_named(tmp_path: Path, text: str) -> None:
    path = tmp_path / "officers.json"
    path.write_text(text)
    with pytest.raises(OfficerError, match=str(path)):
        Officers(path).read()


def test_five_failures_lock_a_name_until_the_lockout_passes() -> None:
    now = [1000.0]
    s = Sessions(idle_seconds=60, max_seconds=3600, clock=lambda: now[0])
    for _ in range(MAX_FAILURES - 1):
        s.failed("a.jansen")
    assert not s.locked("a.jansen")
    s.failed("a.jansen")
    assert s.locked("a.jansen")
    assert not s.locked("someone.else")
    now[0] += sessions_module.LOCKOUT_SECONDS + 1
    assert not s.locked("a.jansen")
    s.failed("a.jansen")
    assert not s.locked("a.jansen")  # counting starts again


def test_a_session_ends_when_idle_at_its_age_limit_or_signed_out() -> None:
    now = [1000.0]
    s = Sessions(idle_seconds=60, max_seconds=300, clock=lambda: now[0])
    idle = s.start("a")
    now[0] += 61
    assert s.get(idle) is None
    busy = s.start("b")
    for _ in range(7):  # in use every 50 s: never idle, but 300 s at most
        now[0] += 50
        session = s.get(busy)
    assert session is None
    ended = s.start("c")
    assert s.get(ended) is not None
    assert s.end(ended) is not None
    assert s.get(ended) is None
    assert s.get(None) is None
    assert s.get("made-up") is None


def test_sessions_are_bounded_the_oldest_goes() -> None:
    s = Sessions(idle_seconds=3600, max_seconds=3600)
    tokens = [s.start(f"o{i}") for i in range(sessions_module.MAX_SESSIONS + 1)]
    assert s.get(tokens[0]) is None
    assert s.get(tokens[-1]) is not None
    kept = [found for t in tokens[1:] if (found := s.get(t)) is not None]
    assert len({k.csrf for k in kept}) == sessions_module.MAX_SESSIONS
