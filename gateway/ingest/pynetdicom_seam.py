"""The one place that touches pynetdicom's internals; the rest of ingest and `scu.py` (the
echo/send commands) call only this.

pynetdicom negotiates each association; from A-ASSOCIATE-AC on, `ingest.pump` runs the data
phase itself (pynetdicom's reader thread hands every PDU to a reactor that polls every
millisecond: ~4.4 ms per 513 KiB instance, measured, see docs/ingest.md). pynetdicom has no
public API for handing an association's socket to someone else, for bounding reads before
negotiation, or for stopping a server it did not start itself, so the functions below reach
into it. Each says what it touches and why the public API does not suffice.

Checked against pynetdicom `CHECKED_WITH`. `check_pynetdicom()` (run when the ingest service
is built) verifies that every internal listed in `INTERNALS` still exists with the shape used
here and otherwise raises `IncompatiblePynetdicom` naming each one and the installed version,
so an upgrade fails at start with a clear message instead of mid-association. The SCU side
(`scu.py`) runs the same check before it dials.
"""

from __future__ import annotations

import inspect
import queue
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, cast

import pynetdicom
from pynetdicom import AE, _config, fsm
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from gateway.errors import IncompatiblePynetdicom

#: pynetdicom versions every internal below was read and tested against.
CHECKED_WITH: tuple[str, ...] = ("3.0.4",)

# PS3.8 9.2: Sta1 idle (no transport connection), Sta6 established and ready for data,
# Sta6..Sta12 data transfer and release, Sta13 waiting for the transport to close.
_IDLE = "Sta1"
_AWAITING_REQUEST = "Sta2"
_READY = "Sta6"
_ESTABLISHED_STATES = frozenset({f"Sta{n}" for n in range(6, 13)})

_S = TypeVar("_S", bound=AssociationSocket)


# -- pynetdicom's own logging ------------------------------------------------------------------


def silence_identifier_logging() -> None:
    """Stop pynetdicom logging the identifiers of C-FIND/C-MOVE style requests and responses,
    which carry patient data.

    Touches `pynetdicom._config.LOG_REQUEST_IDENTIFIERS` and `LOG_RESPONSE_IDENTIFIERS`:
    module-level switches, documented but in a private module; there is no other way.
    """
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False


def stream_stored_files() -> None:
    """Make `Association.send_c_store(path)` send a file's encoded data set as stored, in
    chunks no larger than the peer's maximum PDU, instead of decoding and re-encoding it.

    Touches `pynetdicom._config.STORE_SEND_CHUNKED_DATASET`: documented, but a module-level
    switch in a private module, and the only way to ask for it. It holds for the whole process;
    the SCU commands are the only senders in theirs.
    """
    _config.STORE_SEND_CHUNKED_DATASET = True


# -- the state of an association's upper layer -------------------------------------------------


def dul_state(assoc: Association) -> str:
    """The association's PS3.8 state ("Sta1".."Sta13"), read from
    `assoc.dul.state_machine.current_state`; `Association` only exposes coarse flags."""
    return str(assoc.dul.state_machine.current_state)


def is_established(assoc: Association) -> bool:
    """True from A-ASSOCIATE-AC until the transport closes (Sta6..Sta12).

    `assoc.is_established` is set only after EVT_ESTABLISHED handlers have returned, and the
    data phase runs inside one, so the state machine is the only place that knows in time.
    """
    return dul_state(assoc) in _ESTABLISHED_STATES


def transport_socket(assoc: Association) -> socket.socket | None:
    """The association's TCP (or TLS) socket, `assoc.dul.socket.socket`; None once closed.

    pynetdicom exposes the socket only through its upper-layer provider.
    """
    wrapper = assoc.dul.socket
    return wrapper.socket if wrapper is not None else None


def close_failed_transport(assoc: Association) -> None:
    """Close the socket of an association that was not established (as requestor).

    pynetdicom leaves the TCP socket open after a failed TLS start (the handshake raised inside
    its connect); nothing else would close it before the garbage collector, which warns. The
    socket is only reachable through the upper layer (`transport_socket`).
    """
    sock = transport_socket(assoc)
    if sock is not None:
        sock.close()


def reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connection to the peer opens - asked before requesting an association.

    pynetdicom (3.0.4) leaks the socket of a connection that was refused: its
    `_shutdown_socket` raises on a socket that never connected and skips the close, and
    `close_failed_transport` cannot reach it (the upper layer has dropped it by then). A peer
    that is down is found here instead, with a socket that is closed. A test
    (`test_pynetdicom_still_leaks_a_refused_socket`) says when this is no longer needed.
    """
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def send_promptly(assoc: Association) -> None:
    """Turn Nagle's algorithm off on the socket of an association we requested.

    A DIMSE message goes out as several writes (the command PDU, then the data set's): with
    Nagle on, each write after the first waits for the peer to acknowledge the one before,
    which a peer that delays its ACKs does ~40 ms later - per message (a C-STORE of a result
    into Orthanc: 100 ms with it, 58 ms without; benchmarks/results.py). The listener sets
    TCP_NODELAY on the sockets it accepts; pynetdicom takes no socket options for the
    connection it makes, which is reachable only through the upper layer (`transport_socket`).
    """
    sock = transport_socket(assoc)
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# -- the socket pynetdicom reads from before the association is established --------------------


class ReaderSocket(AssociationSocket):
    """An AssociationSocket whose reads go through `read`, and which pynetdicom's reader thread
    leaves alone once the association is established.

    Relies on how pynetdicom's reader (`DULServiceProvider._read_pdu_data`) uses its socket: it
    polls `ready` (a property) and, when true, calls `recv(6)` for the PDU header and then
    `recv(n)` once for the whole body of `n` bytes the header declares. So one `recv` call is
    one PDU, and its size is known before a byte of it is read.
    """

    @property
    def ready(self) -> bool:
        """False once established: from then on the data phase owns the socket, and
        pynetdicom's reader must not take bytes from under it."""
        if is_established(self.assoc):
            return False
        return bool(super().ready)

    def recv(self, nr_bytes: int) -> bytearray:
        return self.read(nr_bytes)

    def read(self, nr_bytes: int) -> bytearray:
        """Return up to `nr_bytes` (fewer only if the peer closed); subclasses implement."""
        raise NotImplementedError


def adopt_socket(assoc: Association, cls: type[_S]) -> _S:
    """Re-class the AssociationSocket pynetdicom just made for `assoc` as `cls` and return it.

    pynetdicom builds the socket inside `RequestHandler._create_association` and constructing
    a second one would queue a second transport-connect event (Evt5) into its state machine;
    there is no factory to pass a subclass in. `cls` must add no `__slots__`.
    """
    sock = assoc.dul.socket
    if sock is None:
        raise IncompatiblePynetdicom("pynetdicom created the association without a socket")
    sock.__class__ = cls
    assert isinstance(sock, cls)
    return sock


class AcceptorHandler(RequestHandler):
    """pynetdicom's connection handler with a hook, `association_created`, that runs once the
    acceptor Association and its socket exist and before the association thread starts.

    Overrides the private `RequestHandler._create_association`, the only point between the
    two; the public `handle()` creates and starts the association in one go.
    """

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        self.association_created(assoc)
        return assoc

    def association_created(self, assoc: Association) -> None:
        """Called on the connection's thread before the association starts; for subclasses."""


def stop_accepting(server: ThreadedAssociationServer) -> None:
    """Stop `serve_forever` and close the listening socket; live associations go on.

    `AssociationServer.shutdown()` also removes the server from `AE._servers`, a list only
    `AE.start_server` adds to, so for a server made with `AE.make_server` it raises ValueError.
    socketserver's own `shutdown` followed by `server_close` does what it means.
    """
    socketserver.BaseServer.shutdown(server)
    server.server_close()


# -- refusing an association at A-ASSOCIATE-RQ ------------------------------------------------


def reject(assoc: Association, result: int, source: int, diagnostic: int) -> None:
    """Send A-ASSOCIATE-RJ (unless one was sent already) from an EVT_REQUESTED handler and end
    the association; blocks until the peer closes or the ARTIM timer expires.

    pynetdicom has no "reject" return value for EVT_REQUESTED; it checks `is_rejected` after
    the handlers ran and then skips negotiation (a code comment, not documented behaviour).
    """
    if not assoc.is_rejected:
        assoc.acse.send_reject(result, source, diagnostic)
    assoc.kill()


def stop_waiting_for_request(assoc: Association) -> None:
    """Call from an EVT_CONN_CLOSE handler: when the peer closed the connection before sending
    its A-ASSOCIATE-RQ, let the association's thread end now rather than after `acse_timeout`.

    pynetdicom's acceptor thread waits for the request in `dul.receive_pdu(wait=True,
    timeout=acse_timeout)`, a `get` on `dul.to_user_queue`. The state machine's AA-5 (Sta2 +
    Evt17: the transport closed while awaiting the request) fires EVT_CONN_CLOSE and stops the
    reader, but puts nothing on that queue, so the thread, and with it one of
    `ingest.max_pending_connections`, was held for the whole timeout (measured: 200
    connect/close cycles kept up to 32 threads, and PACS locked out, for 10 s). `None` on the
    queue is what the wait returns on its timeout: the thread then ends the association and
    closes the socket exactly as it does after one.
    """
    if dul_state(assoc) == _AWAITING_REQUEST:
        _user_queue(assoc).put(None)


def _user_queue(assoc: Association) -> queue.Queue[object]:
    """`dul.to_user_queue`, typed for primitives only: None is put on it on purpose."""
    return cast("queue.Queue[object]", assoc.dul.to_user_queue)


# -- handing the data phase over and back ------------------------------------------------------


def take_over_data_phase(assoc: Association, wait: float = 5.0) -> socket.socket | None:
    """Stop pynetdicom's reader thread once our A-ASSOCIATE-AC is out, and return the socket
    the caller now owns alone; None if the association ended meanwhile (or the reader would
    not stop within `wait`), in which case pynetdicom keeps it.

    Call from an EVT_ESTABLISHED handler: pynetdicom runs those on the association's own thread,
    inside negotiation and before its reactor starts. The A-ASSOCIATE-AC is queued to the
    reader thread, which sends it and moves to Sta6; it is stopped with `DULServiceProvider.
    kill_dul()`, meant for the end of an association. There is no public way to pause it.
    """
    if transport_socket(assoc) is None:
        return None
    dul = assoc.dul
    deadline = time.monotonic() + wait
    while dul_state(assoc) != _READY:
        if dul_state(assoc) == _IDLE or time.monotonic() > deadline:
            return None
        time.sleep(0.0005)
    dul.kill_dul()
    dul.join(wait)
    if dul.is_alive():
        return None
    return transport_socket(assoc)


def hand_back_ended(assoc: Association, *, released: bool) -> None:
    """Give an association whose data phase we ran back to pynetdicom as ended (released or
    aborted), so that its thread winds down without running its own reactor.

    After EVT_ESTABLISHED handlers return, pynetdicom runs its reactor only if
    `is_established`; `Association.kill()` waits for the upper layer to reach Sta1. Neither
    knows what happened on the wire meanwhile, so the flags and the state are set by hand.
    """
    assoc.is_established = False
    assoc.is_released = released
    assoc.is_aborted = not released
    assoc.dul.state_machine.current_state = _IDLE
    assoc.kill()


# -- the check -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Internal:
    """One pynetdicom internal this module relies on, and how to tell it is still there."""

    name: str  # as it reads in pynetdicom's source
    expected: str  # the shape relied on, for the error message
    holds: Callable[[], bool]


def _sample() -> Association:
    """A fresh acceptor Association: never started, no socket, no thread running."""
    return Association(AE(), "acceptor")


def _sample_socket() -> bool:
    """An AssociationSocket keeps its wrapped socket in `.socket` and can be re-classed."""
    left, right = socket.socketpair()
    with left, right:
        wrapper = AssociationSocket(_sample(), client_socket=left)
        wrapper.__class__ = ReaderSocket
        return wrapper.socket is left


def _is_property(cls: type, name: str) -> bool:
    return isinstance(inspect.getattr_static(cls, name, None), property)


def _parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def _plain_flag(name: str) -> bool:
    """An Association status flag that is a plain bool attribute, so it can be set."""
    return not _is_property(Association, name) and isinstance(getattr(_sample(), name), bool)


def _no_slots(cls: type) -> bool:
    return all("__slots__" not in vars(base) for base in cls.__mro__[:-1])


def _none_passes_through() -> bool:
    """`receive_pdu` hands a None it finds on `to_user_queue` back as it does a timeout."""
    assoc = _sample()
    _user_queue(assoc).put(None)
    return assoc.dul.receive_pdu(wait=True, timeout=0.1) is None and _user_queue(assoc).empty()


def _fsm_states() -> bool:
    states = {state for _, state in fsm.TRANSITION_TABLE}
    return states == {f"Sta{n}" for n in range(1, 14)}


INTERNALS: tuple[Internal, ...] = (
    Internal(
        "pynetdicom._config.LOG_REQUEST_IDENTIFIERS",
        "a bool module attribute",
        lambda: isinstance(getattr(_config, "LOG_REQUEST_IDENTIFIERS", None), bool),
    ),
    Internal(
        "pynetdicom._config.LOG_RESPONSE_IDENTIFIERS",
        "a bool module attribute",
        lambda: isinstance(getattr(_config, "LOG_RESPONSE_IDENTIFIERS", None), bool),
    ),
    Internal(
        "pynetdicom._config.STORE_SEND_CHUNKED_DATASET",
        "a bool module attribute",
        lambda: isinstance(getattr(_config, "STORE_SEND_CHUNKED_DATASET", None), bool),
    ),
    Internal(
        "pynetdicom.fsm.TRANSITION_TABLE states",
        "the PS3.8 states named Sta1..Sta13",
        _fsm_states,
    ),
    Internal(
        "DULServiceProvider.state_machine.current_state",
        'a str attribute, "Sta1" on a new association, that can be set',
        lambda: (
            not _is_property(fsm.StateMachine, "current_state")
            and _sample().dul.state_machine.current_state == _IDLE
        ),
    ),
    Internal(
        "DULServiceProvider.to_user_queue",
        "a queue.Queue the acceptor's wait for A-ASSOCIATE-RQ reads through receive_pdu(), "
        "None read as its timeout; AA-5 (Sta2 + Evt17) puts nothing on it",
        lambda: (
            isinstance(_sample().dul.to_user_queue, queue.Queue)
            and fsm.TRANSITION_TABLE.get(("Evt17", _AWAITING_REQUEST)) == "AA-5"
            and _none_passes_through()
        ),
    ),
    Internal(
        "Association.dul",
        "a DULServiceProvider thread with kill_dul()",
        lambda: isinstance(_sample().dul, threading.Thread) and callable(_sample().dul.kill_dul),
    ),
    Internal(
        "DULServiceProvider.socket",
        "an AssociationSocket attribute, None before the transport connects",
        lambda: hasattr(_sample().dul, "socket") and _sample().dul.socket is None,
    ),
    Internal(
        "AssociationSocket.socket",
        "the wrapped socket.socket, as an attribute; instances can be re-classed",
        _sample_socket,
    ),
    Internal(
        "AssociationSocket.ready",
        "a property the reader polls",
        lambda: _is_property(AssociationSocket, "ready"),
    ),
    Internal(
        "AssociationSocket.recv",
        "a method recv(nr_bytes) the reader calls once per PDU header and once per body",
        lambda: _parameters(AssociationSocket.recv) == ["self", "nr_bytes"],
    ),
    Internal(
        "AssociationSocket (no __slots__)",
        "a class whose instances can have their __class__ replaced by a subclass",
        lambda: _no_slots(AssociationSocket),
    ),
    Internal(
        "RequestHandler._create_association",
        "a method taking only self and returning the acceptor Association",
        lambda: _parameters(getattr(RequestHandler, "_create_association", None)) == ["self"],
    ),
    Internal(
        "Association.is_established / is_released / is_aborted / is_rejected",
        "plain bool attributes, not read-only properties",
        lambda: all(
            _plain_flag(f) for f in ("is_established", "is_released", "is_aborted", "is_rejected")
        ),
    ),
    Internal(
        "Association.kill",
        "a method taking only self",
        lambda: _parameters(Association.kill) == ["self"],
    ),
    Internal(
        "ACSE.send_reject",
        "a method send_reject(result, source, diagnostic)",
        lambda: _parameters(ACSE.send_reject) == ["self", "result", "source", "diagnostic"],
    ),
    Internal(
        "ThreadedAssociationServer.serve_forever",
        "socketserver's own, so that socketserver's shutdown() stops it",
        lambda: (
            issubclass(ThreadedAssociationServer, socketserver.BaseServer)
            and ThreadedAssociationServer.serve_forever is socketserver.BaseServer.serve_forever
        ),
    ),
)

# What a probe may raise when the shape it looks for is gone.
_PROBE_ERRORS = (AttributeError, TypeError, ValueError, KeyError, OSError)


def _holds(internal: Internal) -> bool:
    try:
        return internal.holds()
    except _PROBE_ERRORS:
        return False


def check_pynetdicom() -> str:
    """Verify every internal in `INTERNALS`; return the installed pynetdicom version.

    Raises `IncompatiblePynetdicom` naming each internal that is missing or changed, the shape
    expected, the installed version and the versions this module was checked against.
    """
    version = str(pynetdicom.__version__)
    broken = [f"{i.name} (expected {i.expected})" for i in INTERNALS if not _holds(i)]
    if broken:
        raise IncompatiblePynetdicom(
            f"pynetdicom {version} is installed, but the gateway relies on internals "
            f"checked against pynetdicom {', '.join(CHECKED_WITH)}, and these changed: "
            + "; ".join(broken)
            + ". Adapt gateway/ingest/pynetdicom_seam.py or install a checked version."
        )
    return version
