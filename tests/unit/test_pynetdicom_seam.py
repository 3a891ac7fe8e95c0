"""The pynetdicom seam: each internal it relies on is there on the installed pynetdicom, a
missing or changed one is named at start, and the hand-off works on a real association.

The "changed" cases break pynetdicom itself for one test (monkeypatch, undone afterwards): that
is what an upgrade would do, and the check must name exactly what went.
"""

from __future__ import annotations

import ast
import gc
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pynetdicom
import pytest
from pynetdicom import AE, _config, evt, fsm
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.events import Event
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import (
    AssociationServer,
    AssociationSocket,
    RequestHandler,
    ThreadedAssociationServer,
)

from gateway import scu
from gateway.errors import IncompatiblePynetdicom
from gateway.ingest import pynetdicom_seam as seam

Breaker = Callable[[pytest.MonkeyPatch], None]


def _wrap_init(cls: type, after: Callable[[Any], None]) -> Breaker:
    """Break an instance attribute: run the real __init__, then `after` on the instance."""

    def breaker(monkeypatch: pytest.MonkeyPatch) -> None:
        original = cls.__init__  # type: ignore[misc]

        def init(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            after(self)

        monkeypatch.setattr(cls, "__init__", init)

    return breaker


def _rename(name: str) -> Callable[[Any], None]:
    def after(obj: Any) -> None:
        setattr(obj, f"_{name}", getattr(obj, name))
        delattr(obj, name)

    return after


def _recv_with_timeout(self: Any, nr_bytes: int, timeout: float) -> bytearray:
    return bytearray()


def _send_reject_v2(self: Any, reason: int) -> None:
    return None


# One way an upgrade could break each internal; keyed like `seam.INTERNALS`.
BREAKERS: dict[str, Breaker] = {
    "pynetdicom._config.LOG_REQUEST_IDENTIFIERS": lambda mp: mp.delattr(
        _config, "LOG_REQUEST_IDENTIFIERS"
    ),
    "pynetdicom._config.LOG_RESPONSE_IDENTIFIERS": lambda mp: mp.delattr(
        _config, "LOG_RESPONSE_IDENTIFIERS"
    ),
    "pynetdicom._config.STORE_SEND_CHUNKED_DATASET": lambda mp: mp.delattr(
        _config, "STORE_SEND_CHUNKED_DATASET"
    ),
    "pynetdicom.fsm.TRANSITION_TABLE states": lambda mp: mp.setattr(
        fsm, "TRANSITION_TABLE", {("Evt1", "Idle"): "AE-1"}
    ),
    "DULServiceProvider.state_machine.current_state": _wrap_init(
        fsm.StateMachine, _rename("current_state")
    ),
    "DULServiceProvider.to_user_queue": lambda mp: mp.setattr(
        DULServiceProvider, "receive_pdu", lambda self, wait=False, timeout=None: None
    ),
    "Association.dul": lambda mp: mp.delattr(DULServiceProvider, "kill_dul"),
    "DULServiceProvider.socket": _wrap_init(DULServiceProvider, _rename("socket")),
    "AssociationSocket.socket": _wrap_init(AssociationSocket, _rename("socket")),
    "AssociationSocket.ready": lambda mp: mp.setattr(AssociationSocket, "ready", lambda _: False),
    "AssociationSocket.recv": lambda mp: mp.setattr(AssociationSocket, "recv", _recv_with_timeout),
    "AssociationSocket (no __slots__)": lambda mp: mp.setattr(
        AssociationSocket, "__slots__", ("socket",), raising=False
    ),
    "RequestHandler._create_association": lambda mp: mp.delattr(
        RequestHandler, "_create_association"
    ),
    "Association.is_established / is_released / is_aborted / is_rejected": lambda mp: mp.setattr(
        Association, "is_released", property(lambda _: False), raising=False
    ),
    "Association.kill": lambda mp: mp.setattr(Association, "kill", lambda _, block: None),
    "ACSE.send_reject": lambda mp: mp.setattr(ACSE, "send_reject", _send_reject_v2),
    "ThreadedAssociationServer.serve_forever": lambda mp: mp.setattr(
        AssociationServer, "serve_forever", lambda _, poll_interval=0.5: None
    ),
}

NAMES = [internal.name for internal in seam.INTERNALS]


def test_every_internal_has_a_breaking_case() -> None:
    assert sorted(BREAKERS) == sorted(NAMES)


def test_the_installed_pynetdicom_is_one_the_seam_was_checked_against() -> None:
    """Upgrading pynetdicom fails here first: read the seam against the new version, run
    these tests, then add it to CHECKED_WITH."""
    version = seam.check_pynetdicom()
    assert version == pynetdicom.__version__
    assert version in seam.CHECKED_WITH, (
        f"pynetdicom {version} is not among the versions gateway/ingest/pynetdicom_seam.py "
        f"was checked against ({', '.join(seam.CHECKED_WITH)})"
    )


@pytest.mark.parametrize("internal", seam.INTERNALS, ids=NAMES)
def test_internal_holds_on_the_installed_pynetdicom(internal: seam.Internal) -> None:
    assert internal.holds()


@pytest.mark.parametrize("name", NAMES)
def test_a_changed_internal_is_named_at_start(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    BREAKERS[name](monkeypatch)
    with pytest.raises(IncompatiblePynetdicom) as raised:
        seam.check_pynetdicom()
    message = str(raised.value)
    assert name in message
    assert f"pynetdicom {pynetdicom.__version__} is installed" in message
    assert "3.0.4" in message


# -- nothing else in the gateway touches them -------------------------------------------------

INGEST = Path(seam.__file__).parent
GATEWAY = INGEST.parent


def _imports_pynetdicom(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return (node.module or "").split(".")[0] == "pynetdicom"
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "pynetdicom" for alias in node.names)
    return False


# Every module of ingest (handed pynetdicom's objects whether or not it imports pynetdicom)
# and every other module of the gateway that imports pynetdicom; not the seam.
USERS = sorted(
    path
    for path in GATEWAY.rglob("*.py")
    if path.name != "pynetdicom_seam.py"
    and (
        path.parent == INGEST
        or any(_imports_pynetdicom(node) for node in ast.walk(ast.parse(path.read_text())))
    )
)

# Attributes of pynetdicom objects that only the seam may read or call.
_INTERNAL_ATTRIBUTES = {"dul", "state_machine", "current_state", "kill_dul", "acse", "kill"}
_INTERNAL_ATTRIBUTES |= {"_create_association", "_config"}
_FORGED = {"__class__", "is_established", "is_released", "is_aborted", "is_rejected"}


def _touches(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in _INTERNAL_ATTRIBUTES:
            yield f"line {node.lineno}: .{node.attr}"
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            if node.attr in _FORGED:
                yield f"line {node.lineno}: .{node.attr} = ..."
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pynetdicom"):
            names = {alias.name for alias in node.names}
            if names & {"_config", "fsm", "dul", "acse"} or "._" in f".{node.module}":
                yield f"line {node.lineno}: from {node.module} import {sorted(names)}"
        elif isinstance(node, ast.FunctionDef) and node.name == "_create_association":
            yield f"line {node.lineno}: def _create_association"
        elif isinstance(node, ast.Name) and node.id == "socketserver":
            yield f"line {node.lineno}: socketserver"


def test_the_guard_reads_ingest_and_the_scu_commands() -> None:
    assert {INGEST / "scp.py", INGEST / "transport.py", GATEWAY / "scu.py"} <= set(USERS)


@pytest.mark.parametrize("path", USERS, ids=str)
def test_only_the_seam_touches_pynetdicom_internals(path: Path) -> None:
    assert list(_touches(ast.parse(path.read_text()))) == []


# -- the hand-off on a real association (loopback, in-process) ---------------------------------


class _CountingSocket(seam.ReaderSocket):
    """Records how pynetdicom's reader asks for bytes."""

    sizes: list[int]

    def read(self, nr_bytes: int) -> bytearray:
        self.sizes.append(nr_bytes)
        return AssociationSocket.recv(self, nr_bytes)


class _Handler(seam.AcceptorHandler):
    server: _Server

    def association_created(self, assoc: Association) -> None:
        sock = seam.adopt_socket(assoc, _CountingSocket)
        sock.sizes = []
        self.server.sockets.append(sock)


class _Server(ThreadedAssociationServer):
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sockets: list[_CountingSocket] = []
        kwargs["request_handler"] = _Handler
        super().__init__(*args, **kwargs)


_RELEASE_RQ = bytes((0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0))
_RELEASE_RP = bytes((0x06, 0, 0, 0, 0, 4, 0, 0, 0, 0))


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n and (chunk := sock.recv(n - len(data))):
        data += chunk
    return data


def _serve_release_only(event: Event, seen: dict[str, Any]) -> None:
    """EVT_ESTABLISHED: take the data phase, answer the peer's A-RELEASE-RQ, hand back."""
    assoc = event.assoc
    sock = seam.take_over_data_phase(assoc)
    seen["socket"] = sock is not None
    seen["reader_alive"] = assoc.dul.is_alive()
    seen["thread"] = threading.current_thread() is assoc
    if sock is None:
        return
    sock.settimeout(5)
    seen["pdu"] = _read_exactly(sock, len(_RELEASE_RQ))
    sock.sendall(_RELEASE_RP)
    seam.hand_back_ended(assoc, released=True)


def test_hand_off_on_a_real_association() -> None:
    seen: dict[str, Any] = {}
    scp = AE()
    server = scp.make_server(
        ("127.0.0.1", 0),
        contexts=[build_context(Verification)],
        evt_handlers=[(evt.EVT_ESTABLISHED, _serve_release_only, [seen])],
        server_class=_Server,
    )
    assert isinstance(server, _Server)
    accept = threading.Thread(target=server.serve_forever, daemon=True)
    accept.start()
    try:
        scu = AE()
        scu.add_requested_context(Verification)
        assoc = scu.associate("127.0.0.1", server.server_address[1])
        assert assoc.is_established
        assoc.release()
        assert assoc.is_released
        deadline = time.monotonic() + 5
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.active_associations == []
    finally:
        seam.stop_accepting(server)
        accept.join(5)
    assert not accept.is_alive()
    assert seen == {"socket": True, "reader_alive": False, "thread": True, "pdu": _RELEASE_RQ}
    [sock] = server.sockets
    assert len(sock.sizes) == 2  # before the data phase: the A-ASSOCIATE-RQ only
    assert sock.sizes[0] == 6  # its header first, then its body in one call


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_reachable_tells_a_listening_peer_from_one_that_is_down() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        assert seam.reachable("127.0.0.1", server.getsockname()[1], 5.0)
    assert not seam.reachable("127.0.0.1", _closed_port(), 5.0)


def test_pynetdicom_still_leaks_a_refused_socket() -> None:
    """Why `scu.store` asks `reachable` first: an association requested of a port nobody
    listens on leaves an unclosed socket behind. When this fails, pynetdicom closes it now
    and the probe can go."""
    ae = AE()
    ae.add_requested_context(Verification)
    ae.network_timeout = ae.acse_timeout = 5
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        assoc = ae.associate("127.0.0.1", _closed_port())
        assert not assoc.is_established
        del assoc
        gc.collect()
    leaked = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert any("unclosed <socket" in str(w.message) for w in leaked), leaked


def test_the_scu_sends_without_waiting_for_acknowledgements() -> None:
    """An association the gateway requests (results into PACS, `dicom-gateway send`, echo) has
    Nagle off: with it on, a PACS that delays its ACKs holds every C-STORE ~40 ms
    (benchmarks/results.py)."""
    scp = AE()
    scp.add_supported_context(Verification)
    server = scp.start_server(("127.0.0.1", 0), block=False)
    assert server is not None
    try:
        node = scu.Node("127.0.0.1", server.server_address[1], "GATEWAY", "ANY-SCP", timeout=5.0)
        ae = scu._ae(node)
        ae.add_requested_context(Verification)
        assoc = scu._associate(ae, node)
        sock = seam.transport_socket(assoc)
        assert sock is not None
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assoc.release()
    finally:
        server.shutdown()
