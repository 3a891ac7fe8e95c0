"""The uvicorn seam: each thing the reference receiver relies on holds on the installed uvicorn
and Python, and a change is named at start.

The "changed" cases break uvicorn or asyncio for one test (monkeypatch, undone afterwards), the
way an upgrade could. That the receiver exits 0 after SIGTERM is also tested on the real
process (tests/integration/test_receiver.py).
"""

from __future__ import annotations

import ast
import contextlib
import signal
import socket
from asyncio import base_events
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from uvicorn.server import Server

from gateway.errors import IncompatibleUvicorn
from gateway.receiver import uvicorn_seam as seam

Breaker = Callable[[pytest.MonkeyPatch], None]


def _duplicating(original: Any) -> Any:
    """A uvicorn that serves duplicates of the sockets given (their protocol not kept)."""

    async def startup(self: Server, sockets: list[socket.socket] | None = None) -> None:
        copies = [socket.fromfd(s.fileno(), s.family, s.type) for s in sockets or []]
        await original(self, sockets=copies)

    return startup


@contextlib.contextmanager
def _capture_without_re_raise(self: Server) -> Iterator[None]:
    """A uvicorn that restores the previous handlers but keeps the signals it caught."""
    original = {n: signal.signal(n, self.handle_exit) for n in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for number, handler in original.items():
            signal.signal(number, handler)


# One way an upgrade could break each reliance; keyed like `seam.INTERNALS`.
BREAKERS: dict[str, Breaker] = {
    "asyncio accepted-connection TCP_NODELAY": lambda mp: mp.setattr(
        base_events, "_set_nodelay", lambda sock: None
    ),
    "uvicorn.Server.serve(sockets=...)": lambda mp: mp.setattr(
        Server, "startup", _duplicating(Server.startup)
    ),
    "uvicorn.Server.capture_signals": lambda mp: mp.setattr(
        Server, "capture_signals", _capture_without_re_raise
    ),
}

NAMES = [reliance.name for reliance in seam.INTERNALS]


def test_every_reliance_has_a_breaking_case() -> None:
    assert sorted(BREAKERS) == sorted(NAMES)


def test_the_installed_uvicorn_is_one_the_seam_was_checked_against() -> None:
    """Upgrading uvicorn (or Python) fails here first: read the seam against the new version,
    run these tests and tests/integration/test_receiver.py, then add it to CHECKED_WITH."""
    installed = seam.check_uvicorn()
    assert installed["uvicorn"] == uvicorn.__version__
    for name, version in installed.items():
        assert version in seam.CHECKED_WITH[name], (
            f"{name} {version} is not among the versions gateway/receiver/uvicorn_seam.py was "
            f"checked against ({', '.join(seam.CHECKED_WITH[name])})"
        )


@pytest.mark.parametrize("reliance", seam.INTERNALS, ids=NAMES)
def test_reliance_holds_on_the_installed_uvicorn(reliance: seam.Reliance) -> None:
    assert reliance.holds()


@pytest.mark.parametrize("name", NAMES)
def test_a_changed_reliance_is_named_at_start(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    handlers = {n: signal.getsignal(n) for n in (signal.SIGTERM, signal.SIGINT)}
    BREAKERS[name](monkeypatch)
    with pytest.raises(IncompatibleUvicorn) as raised:
        seam.check_uvicorn()
    message = str(raised.value)
    assert name in message
    assert f"uvicorn {uvicorn.__version__}, python 3.11 installed" in message
    assert "uvicorn 0.55.0, python 3.11" in message
    assert {n: signal.getsignal(n) for n in handlers} == handlers  # the check leaves them


def test_the_listening_socket_says_tcp() -> None:
    with seam.listening_socket("127.0.0.1", 0) as sock:
        assert (sock.type, sock.proto) == (socket.SOCK_STREAM, socket.IPPROTO_TCP)
        assert sock.getsockname()[1] != 0


# -- nothing else in the receiver leans on them --------------------------------------------------

RECEIVER = Path(seam.__file__).parent
_LEANING = {"signal", "IPPROTO_TCP", "capture_signals", "handle_exit", "servers"}


def _leans(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in _LEANING:
            yield f"line {node.lineno}: {node.id}"
        elif isinstance(node, ast.Attribute) and node.attr in _LEANING:
            yield f"line {node.lineno}: .{node.attr}"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("uvicorn."):
            yield f"line {node.lineno}: from {node.module} import ..."


@pytest.mark.parametrize(
    "path", sorted(p for p in RECEIVER.glob("*.py") if p.name != "uvicorn_seam.py"), ids=str
)
def test_only_the_seam_leans_on_uvicorn_and_asyncio(path: Path) -> None:
    assert list(_leans(ast.parse(path.read_text()))) == []
