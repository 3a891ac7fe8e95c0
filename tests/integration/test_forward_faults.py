"""A server having a bad day: 500, 503 with Retry-After, 429, a slow answer, a reset in the
middle of the upload - the item is delivered once the server recovers, exactly once, and
Retry-After is honoured; a permanent refusal is not retried (issue 6).

The faulty server is real HTTP over real mutual TLS (the certificates `dicom-gateway keys`
makes), scripted per request, in a thread of the test on 127.0.0.1.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from gateway.forward.backoff import Backoff
from gateway.forward.classify import Kind
from gateway.forward.client import Forwarder
from gateway.forward.deliver import deliver
from gateway.seal.envelope import Name, sealed
from gateway.seal.keys import read_public
from gateway.settings import Settings, load
from tests.support import cli, receiver_config, write_config

pytestmark = pytest.mark.timeout(120)
READ_TIMEOUT = 1.0


class Scripted(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, context: ssl.SSLContext, script: list[tuple[Any, ...]]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.script = script
        self.seen: list[str] = []
        self.stored: dict[str, bytes] = {}


class Handler(BaseHTTPRequestHandler):
    server: Scripted

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_PUT(self) -> None:
        step = self.server.script.pop(0) if self.server.script else ("ok",)
        self.server.seen.append(step[0] if step[0] != "status" else f"status-{step[1]}")
        length = int(self.headers["Content-Length"])
        if step[0] == "reset":
            self.rfile.read(length // 2)
            raw = self.connection
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raw.close()  # RST in the middle of the upload
            return
        body = self.rfile.read(length)
        if step[0] == "slow":
            time.sleep(READ_TIMEOUT * 2)
        if step[0] == "status":
            self._answer(step[1], step[2] if len(step) > 2 else {})
            return
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        assert self.headers["Content-Digest"] == f"sha-256=:{digest}:"
        repeat = self.path in self.server.stored
        self.server.stored.setdefault(self.path, body)
        self._answer(200 if repeat else 201, {})

    def _answer(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = tmp_path_factory.mktemp("faults")
    path = write_config(root, receiver_config(root))
    keys = cli("keys", "--config", str(path))
    assert keys.returncode == 0, keys.stderr
    loaded = load(path)
    return dataclasses.replace(
        loaded, forward=dataclasses.replace(loaded.forward, timeout=READ_TIMEOUT)
    )


@pytest.fixture
def server(settings: Settings) -> Iterator[Scripted]:
    r = settings.receiver
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(r.certificate), str(r.private_key))
    context.load_verify_locations(str(r.client_ca))
    context.verify_mode = ssl.CERT_REQUIRED
    scripted = Scripted(context, [])
    thread = threading.Thread(target=scripted.serve_forever, daemon=True)
    thread.start()
    yield scripted
    scripted.shutdown()
    scripted.server_close()
    thread.join(timeout=10)


def _forwarder(settings: Settings, server: Scripted) -> Forwarder:
    url = f"https://127.0.0.1:{server.server_address[1]}"
    return Forwarder(dataclasses.replace(settings.forward, url=url))


def _item(settings: Settings) -> Any:
    assert settings.forward.receiver_key is not None
    key = read_public(settings.forward.receiver_key)
    return sealed(b"DICM" * 50_000, Name("instance", "UT", "2.25.1", "2.25.2"), key)


def test_an_item_is_delivered_once_the_server_recovers(
    settings: Settings, server: Scripted
) -> None:
    server.script += [
        ("status", 500),
        ("status", 503, {"Retry-After": "2"}),
        ("status", 429),
        ("slow",),
        ("reset",),
    ]
    waits: list[float] = []
    forwarder = _forwarder(settings, server)
    try:
        done = deliver(
            forwarder,
            _item(settings),
            Backoff(base=0.01, ceiling=0.05, give_up_after=3600),
            sleep=waits.append,
        )
    finally:
        forwarder.close()
    assert (done.verdict.kind, done.attempts, done.gave_up) == (Kind.DONE, 6, False)
    assert server.seen == ["status-500", "status-503", "status-429", "slow", "reset", "ok"]
    assert len(server.stored) == 1  # delivered exactly once
    assert waits[1] >= 2.0  # the 503's Retry-After, though the backoff alone says 0.05
    assert max(waits[:1] + waits[2:]) <= 0.05


def test_a_permanent_refusal_is_not_retried(settings: Settings, server: Scripted) -> None:
    server.script += [("status", 403)]
    waits: list[float] = []
    forwarder = _forwarder(settings, server)
    try:
        done = deliver(forwarder, _item(settings), Backoff(base=0.01), sleep=waits.append)
    finally:
        forwarder.close()
    assert (done.verdict.kind, done.verdict.reason, done.attempts) == (
        Kind.PERMANENT,
        "http-403",
        1,
    )
    assert waits == []
    assert server.stored == {}


def test_a_server_that_never_recovers_is_given_up_on(settings: Settings, server: Scripted) -> None:
    server.script += [("status", 503)] * 50
    clock = [0.0]

    def wait(seconds: float) -> None:
        clock[0] += seconds

    forwarder = _forwarder(settings, server)
    try:
        done = deliver(
            forwarder,
            _item(settings),
            Backoff(base=1.0, ceiling=10.0, give_up_after=60.0),
            sleep=wait,
            clock=lambda: clock[0],
        )
    finally:
        forwarder.close()
    assert done.gave_up
    assert (done.verdict.kind, done.verdict.reason) == (Kind.PERMANENT, "http-503")
    assert 60.0 <= clock[0] <= 80.0
    assert 5 <= done.attempts <= 20
    assert server.stored == {}
