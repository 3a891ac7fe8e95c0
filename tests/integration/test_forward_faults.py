"""A server having a bad day: 500, 503 with Retry-After, 429, a slow answer, a reset in the
middle of the upload - the daemon's outbox delivers the item once the server recovers, exactly
once, and honours Retry-After; a permanent refusal is not retried; an item still failing
`forward.retry_hours` after it was sealed is dead-lettered (`retries-exhausted`).

The faulty server is real HTTP over real mutual TLS (the certificates `dicom-gateway keys`
makes), scripted per request, in a thread of the test on 127.0.0.1; the outbox is the daemon's
own (`pipeline.delivery.Outbox`) over a real spool, its wall clock injected where a test needs
hours to pass.
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
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from gateway.forward.backoff import Backoff
from gateway.forward.classify import Kind
from gateway.forward.client import Forwarder
from gateway.metrics import Metrics
from gateway.pipeline.delivery import Answered, Outbox
from gateway.seal.envelope import Name, seal
from gateway.seal.keys import read_public
from gateway.settings import Settings, load
from gateway.spool import OutgoingHeader, Spool, State
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


@dataclasses.dataclass
class Sending:
    """An outbox over a real spool, sending one sealed item to the scripted server."""

    outbox: Outbox
    spool: Spool
    path: Path
    answered: list[Answered]
    done: threading.Event

    def wait(self, seconds: float) -> Answered:
        assert self.done.wait(seconds), "the outbox did not finish with the item"
        [answer] = self.answered
        return answer


@pytest.fixture
def sending(
    settings: Settings, server: Scripted, tmp_path: Path
) -> Iterator[Callable[..., Sending]]:
    made: list[Sending] = []

    def make(
        backoff: Backoff, *, sealed_ago: float = 0.0, wall: Callable[[], float] = time.time
    ) -> Sending:
        spool = Spool.open(dataclasses.replace(settings.spool, directory=tmp_path / "spool"))
        url = f"https://127.0.0.1:{server.server_address[1]}"
        forwarder = Forwarder(dataclasses.replace(settings.forward, url=url))
        metrics = Metrics(CollectorRegistry())
        outbox = Outbox(spool, forwarder, backoff, metrics, connections=1, wall_clock=wall)
        answered: list[Answered] = []
        done = threading.Event()

        def answer(answered_now: Answered) -> None:
            answered.append(answered_now)
            done.set()

        outbox.on_answered = answer
        path = spool.write_sealed(*_item(settings, sealed_ago))
        made.append(Sending(outbox, spool, path, answered, done))
        outbox.put(path)
        outbox.start()
        return made[-1]

    yield make
    for one in made:
        one.outbox.stop(5.0)
        one.spool.close()


def _item(settings: Settings, sealed_ago: float) -> tuple[OutgoingHeader, bytes]:
    assert settings.forward.receiver_key is not None
    key = read_public(settings.forward.receiver_key)
    body = seal(b"DICM" * 50_000, Name("instance", "UT", "2.25.1", "2.25.2"), key)
    sealed_at = (datetime.now(UTC) - timedelta(seconds=sealed_ago)).isoformat()
    header = OutgoingHeader(
        name="ab" * 16,
        study_id="cd" * 16,
        kind="instance",
        site="UT",
        study="2.25.1",
        item="2.25.2",
        key_id=key.key_id,
        sha256="",
        size=200_000,
        received_at=sealed_at,
        sealed_at=sealed_at,
    )
    return header, body


def test_an_item_is_delivered_once_the_server_recovers(
    server: Scripted, sending: Callable[..., Sending]
) -> None:
    server.script += [
        ("status", 500),
        ("status", 503, {"Retry-After": "2"}),
        ("status", 429),
        ("slow",),
        ("reset",),
    ]
    started = time.monotonic()
    one = sending(Backoff(base=0.01, ceiling=0.05, give_up_after=3600))
    answer = one.wait(60)
    elapsed = time.monotonic() - started
    assert answer.verdict.kind is Kind.DONE
    assert one.spool.item(answer.path).state is State.SENT
    assert server.seen == ["status-500", "status-503", "status-429", "slow", "reset", "ok"]
    assert len(server.stored) == 1  # delivered exactly once
    # the 503's Retry-After (2 s), though the backoff alone says at most 0.05 s per step;
    # the slow answer costs its read timeout on top
    assert elapsed >= 2.0 + READ_TIMEOUT


def test_a_permanent_refusal_is_not_retried(
    server: Scripted, sending: Callable[..., Sending]
) -> None:
    server.script += [("status", 403)]
    one = sending(Backoff(base=0.01))
    answer = one.wait(30)
    assert (answer.verdict.kind, answer.verdict.reason) == (Kind.PERMANENT, "http-403")
    assert one.spool.item(answer.path).state is State.DEAD
    assert one.spool.reason(answer.path)["reason"] == "http-403"
    assert server.seen == ["status-403"]
    assert server.stored == {}


def test_a_server_that_never_recovers_is_given_up_on(
    server: Scripted, sending: Callable[..., Sending]
) -> None:
    """The first failure starts the backoff; an item sealed more than `give_up_after` ago
    (the injected wall clock says two hours passed) is then dead-lettered unsent."""
    server.script += [("status", 503)] * 50
    hours = [0.0]
    one = sending(
        Backoff(base=0.01, ceiling=0.05, give_up_after=3600),
        wall=lambda: time.time() + hours[0],
    )
    deadline = time.monotonic() + 30
    while not server.seen and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.seen  # it was tried (and failed) while young
    hours[0] = 2 * 3600.0
    answer = one.wait(30)
    assert (answer.verdict.kind, answer.verdict.reason) == (Kind.PERMANENT, "retries-exhausted")
    assert one.spool.item(answer.path).state is State.DEAD
    assert one.spool.reason(answer.path)["reason"] == "retries-exhausted"
    assert server.stored == {}
    assert set(server.seen) == {"status-503"}
