"""A small HTTP server for the metrics port, bounded in threads, connections and time whatever
its clients do.

wsgiref's threading server, used before, gave every connection a thread of its own and read
without a timeout: 500 idle connections to the metrics port held 500 threads (9 -> 509) until
the client let go. Here one selector thread holds every connection and does all socket I/O
without blocking; `WORKERS` threads only build answers.

- Threads: the loop and `WORKERS`, however many connections are open.
- Connections: at most `max_connections`. One more closes the connection that has waited
  longest for its request (an idle or slow client); only when every open connection is being
  answered is the new one closed instead. An idle flood cannot lock the scraper out.
- Time: the request line and headers must arrive within `request_timeout` of the connect
  (a slowloris trickling a byte at a time gets no longer), and the answer must be taken within
  `request_timeout` of it being ready; otherwise the connection is closed.
- One request per connection (`Connection: close`), GET and HEAD, no body, a head of at most
  8 KiB: what Prometheus, a liveness probe and the console send.

Paths are served by one WSGI app (prometheus_client's exposition app reads the path, the query
and the Accept headers). `inline` paths are answered on the loop itself: liveness never waits
behind a readiness check that is probing the destination.

Why not uvicorn (already a dependency, for the reference receiver): a second event loop in the
daemon, with its own signal handling to keep out of `app.py`'s, for three GET routes; the
standard library's selectors do it in one thread.
"""

from __future__ import annotations

import contextlib
import io
import json
import queue
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from gateway.logs import get_logger
from gateway.metrics import HttpClosed

log = get_logger("gateway.http")

WORKERS = 2  # answers built at once: a /readyz refresh and a /metrics scrape side by side
_MAX_HEAD = 8 * 1024
_BACKLOG = 128
_END_OF_HEAD = b"\r\n\r\n"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass(eq=False)
class _Connection:
    sock: socket.socket
    deadline: float
    head: bytearray = field(default_factory=bytearray)
    answer: memoryview | None = None  # being written
    busy: bool = False  # a worker is building its answer


class HttpServer:
    """Listens at construction (so a taken port fails early); `start()` serves, `stop()` ends."""

    def __init__(
        self,
        host: str,
        port: int,
        app: WsgiApp,
        *,
        max_connections: int,
        request_timeout: float,
        inline: frozenset[str] = frozenset(),
        on_closed: Callable[[HttpClosed], None] = lambda reason: None,
    ) -> None:
        self.app = app
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.inline = inline
        self.on_closed = on_closed  # counts connections closed unanswered, by reason
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=_BACKLOG)
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._waker, self._wake = socket.socketpair()
        self._wake.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._selector.register(self._waker, selectors.EVENT_READ)
        self._open: dict[socket.socket, _Connection] = {}
        self._jobs: queue.SimpleQueue[tuple[_Connection, dict[str, Any]] | None] = (
            queue.SimpleQueue()
        )
        self._answers: queue.SimpleQueue[tuple[_Connection, bytes]] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._loop, name="http", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work, name=f"http-worker-{n}", daemon=True)
            for n in range(WORKERS)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        for _ in range(WORKERS):
            self._jobs.put(None)
        if self._threads[0].ident is None:  # never started: the loop will not close anything
            self._release()
            return
        self._poke()
        for thread in self._threads:
            thread.join(timeout=5.0)

    # -- the loop: every socket call, none of them blocking ------------------------------------

    def _loop(self) -> None:
        try:
            while not self._stopping.is_set():
                self._turn()
        finally:
            self._release()

    def _release(self) -> None:
        for conn in list(self._open.values()):
            self._close(conn)
        self._selector.close()
        self._listener.close()
        self._waker.close()
        self._wake.close()

    def _turn(self) -> None:
        """One pass: wait for a socket or the next deadline, then act on what is ready."""
        try:
            for key, events in self._selector.select(self._wait()):
                if key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj is self._waker:
                    self._waker.recv(4096)
                elif events & selectors.EVENT_READ:
                    self._read(key.data)
                else:
                    self._write(key.data)
            self._take_answers()
            self._expire(time.monotonic())
        except Exception as exc:  # noqa: BLE001 - top of the loop: the endpoint must go on
            log.error("http.error", exception=exc.__class__.__name__)

    def _wait(self) -> float | None:
        deadlines = [c.deadline for c in self._open.values() if not c.busy]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _accept(self) -> None:
        for _ in range(_BACKLOG):
            try:
                sock, _address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors: let closes make room, not spin
                log.warning("http.accept_failed", error=exc.__class__.__name__, errno=exc.errno)
                time.sleep(0.1)
                return
            sock.setblocking(False)
            if len(self._open) >= self.max_connections and not self._evict():
                sock.close()
                self.on_closed(HttpClosed.OVER_LIMIT)
                continue
            conn = _Connection(sock, time.monotonic() + self.request_timeout)
            self._open[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _evict(self) -> bool:
        """Close the connection that has waited longest for its request; False if none is."""
        waiting = [c for c in self._open.values() if not c.busy and c.answer is None]
        if not waiting:
            return False
        self._close(min(waiting, key=lambda c: c.deadline), HttpClosed.OVER_LIMIT)
        return True

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        conn.head += data
        end = conn.head.find(_END_OF_HEAD)
        if (end < 0 and len(conn.head) > _MAX_HEAD) or end > _MAX_HEAD:
            self._refuse(conn, "431 Request Header Fields Too Large")
        elif end >= 0:
            self._selector.unregister(conn.sock)
            self._dispatch(conn, bytes(conn.head[:end]))

    def _dispatch(self, conn: _Connection, head: bytes) -> None:
        environ = parse_request(head, self.port)
        if environ is None:
            self._refuse(conn, "400 Bad Request")
        elif environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            self._refuse(conn, "405 Method Not Allowed")
        elif environ["PATH_INFO"] in self.inline:
            self._answer(conn, self._respond(environ))
        else:
            conn.busy = True
            self._jobs.put((conn, environ))

    def _refuse(self, conn: _Connection, status: str) -> None:
        if conn.sock in self._selector.get_map():
            self._selector.unregister(conn.sock)
        self.on_closed(HttpClosed.BAD_REQUEST)
        self._answer(conn, _error(status))

    def _answer(self, conn: _Connection, data: bytes) -> None:
        conn.busy = False
        conn.answer = memoryview(data)
        conn.deadline = time.monotonic() + self.request_timeout
        self._selector.register(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _write(self, conn: _Connection) -> None:
        assert conn.answer is not None
        try:
            sent = conn.sock.send(conn.answer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.answer = conn.answer[sent:]
        if not conn.answer:
            self._close(conn)

    def _take_answers(self) -> None:
        while True:
            try:
                conn, data = self._answers.get_nowait()
            except queue.Empty:
                return
            if conn.sock in self._open:
                self._answer(conn, data)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._open.values() if not c.busy and c.deadline <= now]:
            self._close(conn, HttpClosed.TIMEOUT)

    def _close(self, conn: _Connection, reason: HttpClosed | None = None) -> None:
        if self._open.pop(conn.sock, None) is None:
            return
        if conn.sock in self._selector.get_map():
            self._selector.unregister(conn.sock)
        conn.sock.close()
        if reason is not None:
            self.on_closed(reason)

    def _poke(self) -> None:
        """Wake the loop from another thread. OSError: the wake-up buffer is full (the loop
        will wake anyway) or the loop has ended."""
        with contextlib.suppress(OSError):
            self._wake.send(b"\0")

    # -- the workers: build answers, never touch a socket --------------------------------------

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            conn, environ = job
            self._answers.put((conn, self._respond(environ)))
            self._poke()

    def _respond(self, environ: dict[str, Any]) -> bytes:
        """The whole HTTP answer the app gives to `environ`; 500 if it raises."""
        try:
            return _call(self.app, environ)
        except Exception as exc:  # noqa: BLE001 - top of a request: answer, log, go on
            log.error("http.app_error", exception=exc.__class__.__name__)
            return _error("500 Internal Server Error")


def parse_request(head: bytes, port: int) -> dict[str, Any] | None:
    """A WSGI environ (PEP 3333) for a request head without its final CRLFCRLF; None if the
    head is not HTTP/1.x."""
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    method, target, protocol = parts
    path, _, query = target.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": unquote(path, "latin-1"),
        "QUERY_STRING": query,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": str(port),
        "SERVER_PROTOCOL": protocol,
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for line in header_lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            return None
        environ["HTTP_" + name.upper().replace("-", "_")] = value.strip()
    return environ


def _call(app: WsgiApp, environ: dict[str, Any]) -> bytes:
    started: list[Any] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started[:] = [status, headers]

    body = b"".join(app(environ, start_response))
    status, headers = started
    names = {name.lower() for name, _ in headers}
    if "content-length" not in names:
        headers = [*headers, ("Content-Length", str(len(body)))]
    lines = [f"HTTP/1.1 {status}", *(f"{n}: {v}" for n, v in headers), "Connection: close"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if environ["REQUEST_METHOD"] == "HEAD" else head + body


def _error(status: str) -> bytes:
    body = json.dumps({"error": status.split(" ", 1)[1].lower().replace(" ", "-")}).encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body
