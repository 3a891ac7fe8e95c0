"""Resource bounds under floods (issue 23): the DICOM port's listen backlog, threads after a
flood of connects, and the metrics port under idle connections. One real gateway process for
the module; threads are read from /proc/<pid>/status, every socket is closed by the test."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from gateway import scu
from tests.support import GatewayProcess, base_config, cli, write_config

pytestmark = pytest.mark.timeout(120)

#: far above what any test here waits: a thread still held on it shows as a failure
ASSOCIATION_REQUEST_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("bounds")
    config = base_config(root)
    config["ingest"].update(
        association_request_timeout=ASSOCIATION_REQUEST_TIMEOUT, max_pending_connections=64
    )
    path = write_config(root, config)
    keys = cli("keys", "--config", str(path))
    assert keys.returncode == 0, keys.stderr
    gateway = GatewayProcess(path, root / "gateway.log").start()
    yield gateway
    gateway.stop()


def threads(gw: GatewayProcess) -> int:
    status = Path(f"/proc/{gw.pid}/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith("Threads:")).split()[1])


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def echo_ok(gw: GatewayProcess) -> bool:
    return scu.echo(scu.Node("127.0.0.1", gw.port, "PACS", "GATEWAY_UT", timeout=10)) == 0


def test_50_simultaneous_connects_are_all_accepted_without_a_syn_retry(
    gw: GatewayProcess,
) -> None:
    """A listen backlog of 5 (socketserver's default) dropped the SYNs of a burst: the kernel
    retries them a second later."""
    barrier = threading.Barrier(50)
    took: list[float] = []
    with ExitStack() as stack:

        def connect() -> None:
            barrier.wait()
            started = time.monotonic()
            sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
            took.append(time.monotonic() - started)
            stack.callback(sock.close)

        clients = [threading.Thread(target=connect) for _ in range(50)]
        for client in clients:
            client.start()
        for client in clients:
            client.join()
    assert len(took) == 50
    assert max(took) < 1.0, sorted(took)[-5:]


def test_threads_drain_at_once_after_200_connect_close_cycles(gw: GatewayProcess) -> None:
    """A connection closed before its A-ASSOCIATE-RQ held its association thread (and a
    pending-connection slot) for `association_request_timeout`; now it is freed at once."""
    assert echo_ok(gw)
    before = threads(gw)
    for _ in range(200):
        socket.create_connection(("127.0.0.1", gw.port), timeout=10).close()
    for _ in range(3):
        assert echo_ok(gw)
    assert wait_until(lambda: threads(gw) <= before + 2, timeout=5.0), (before, threads(gw))
