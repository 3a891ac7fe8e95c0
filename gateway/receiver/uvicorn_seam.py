"""The one place that relies on what uvicorn and asyncio do but do not document; the reference
receiver's server calls only this.

- `listening_socket`: the receiver binds its socket itself (port 0 works, the port used is
  logged) and hands it to uvicorn, which serves that socket object as it is
  (`loop.create_server(sock=...)`). asyncio sets TCP_NODELAY on an accepted connection only
  when the listening socket says `IPPROTO_TCP` as its protocol; without it every answer waited
  for the client's delayed ACK (~40 ms a request, measured: docs/benchmarks.md).
- `exit_quietly_after_signals`: uvicorn stops gracefully on SIGTERM/SIGINT, then restores the
  handlers it found and re-raises each signal it caught to them (`Server.capture_signals`).
  With Python's default handlers the command would then die by SIGINT or SIGTERM after a clean
  stop; no-op handlers make it exit 0.

`check_uvicorn()` (run before the receiver binds; from the main thread, the only one that may
set signal handlers) probes each of these on the installed uvicorn and Python and raises
`IncompatibleUvicorn` naming what changed. Checked against `CHECKED_WITH`.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn

from gateway.errors import IncompatibleUvicorn, ListenError

#: uvicorn and Python versions every reliance below was read and tested against.
CHECKED_WITH: dict[str, tuple[str, ...]] = {"uvicorn": ("0.55.0",), "python": ("3.11",)}

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_BACKLOG = 128


def listening_socket(host: str, port: int, key: str = "port") -> socket.socket:
    """A TCP socket bound to (host, port) and listening, made so that asyncio sets TCP_NODELAY
    on every connection it accepts: its protocol is given as `IPPROTO_TCP`, not left 0.
    ListenError naming the address and the setting `key` when it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenError.binding(exc, key, host, port) from None
    return sock


def _noted(number: int, frame: FrameType | None) -> None:
    """Nothing to do: uvicorn has already stopped gracefully when it re-raises the signal."""


def exit_quietly_after_signals() -> None:
    """Let SIGTERM/SIGINT that uvicorn re-raises after its graceful stop end in exit 0."""
    for number in _SIGNALS:
        signal.signal(number, _noted)


# -- the check -------------------------------------------------------------------------------


async def _app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app for the probes; never called."""


def _server() -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(_app, log_config=None, lifespan="off"))


def _nodelay_on_accept() -> bool:
    """asyncio: a connection accepted on an IPPROTO_TCP listener has TCP_NODELAY set."""

    async def probe() -> bool:
        seen: list[int] = []
        accepted = asyncio.Event()

        def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()
            accepted.set()

        listener = listening_socket("127.0.0.1", 0)
        server = await asyncio.start_server(on_connect, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection(*listener.getsockname()[:2])
            await asyncio.wait_for(accepted.wait(), 5)
            writer.close()
            await writer.wait_closed()
        return seen == [1]

    return asyncio.run(probe())


def _serves_the_socket_given() -> bool:
    """uvicorn: `serve(sockets=[sock])` listens on `sock` itself, its protocol kept."""

    async def probe() -> bool:
        server = _server()
        with listening_socket("127.0.0.1", 0) as listener:
            serving = asyncio.create_task(server.serve(sockets=[listener]))
            try:
                async with asyncio.timeout(5):
                    while not server.started and not serving.done():
                        await asyncio.sleep(0.005)
                served = [s for asyncio_server in server.servers for s in asyncio_server.sockets]
                return [(s.fileno(), s.proto) for s in served] == [
                    (listener.fileno(), socket.IPPROTO_TCP)
                ]
            finally:
                server.should_exit = True
                await serving

    return asyncio.run(probe())


def _signal_re_raised_to_previous_handler() -> bool:
    """uvicorn: a signal caught while serving goes, after the stop, to the handler that was
    there before, which is in place again."""
    caught: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda number, _: caught.append(number))
    try:
        before = signal.getsignal(signal.SIGTERM)
        server = _server()
        with server.capture_signals():
            server.handle_exit(signal.SIGTERM, None)  # what the signal would have called
        return caught == [signal.SIGTERM] and signal.getsignal(signal.SIGTERM) is before
    finally:
        signal.signal(signal.SIGTERM, previous)


@dataclass(frozen=True)
class Reliance:
    """One thing about uvicorn or asyncio the receiver relies on, and how to tell it holds."""

    name: str
    expected: str
    holds: Callable[[], bool]


INTERNALS: tuple[Reliance, ...] = (
    Reliance(
        "asyncio accepted-connection TCP_NODELAY",
        "set on connections accepted on a listener whose protocol is IPPROTO_TCP",
        _nodelay_on_accept,
    ),
    Reliance(
        "uvicorn.Server.serve(sockets=...)",
        "serves the socket objects given, as they are (their protocol kept)",
        _serves_the_socket_given,
    ),
    Reliance(
        "uvicorn.Server.capture_signals",
        "restores the previous SIGTERM/SIGINT handlers and re-raises each caught signal to them",
        _signal_re_raised_to_previous_handler,
    ),
)

# What a probe may raise when the shape it looks for is gone.
_PROBE_ERRORS = (AttributeError, TypeError, ValueError, OSError, TimeoutError, RuntimeError)


def _holds(reliance: Reliance) -> bool:
    try:
        return reliance.holds()
    except _PROBE_ERRORS:
        return False


def versions() -> dict[str, str]:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    return {"uvicorn": str(uvicorn.__version__), "python": python}


def check_uvicorn() -> dict[str, str]:
    """Verify every reliance in `INTERNALS`; return the installed uvicorn and Python versions.

    Raises `IncompatibleUvicorn` naming each reliance that no longer holds, the installed
    versions and the versions this module was checked against.
    """
    broken = [f"{r.name} (expected: {r.expected})" for r in INTERNALS if not _holds(r)]
    installed = versions()
    if broken:
        raise IncompatibleUvicorn(
            f"{_named(installed)} installed, but the reference receiver relies on how they "
            f"serve, checked against {_named(CHECKED_WITH)}, and this changed: "
            + "; ".join(broken)
            + ". Adapt gateway/receiver/uvicorn_seam.py or install a checked version."
        )
    return installed


def _named(versions: dict[str, str] | dict[str, tuple[str, ...]]) -> str:
    return ", ".join(
        f"{name} {v if isinstance(v, str) else ' or '.join(v)}" for name, v in versions.items()
    )
