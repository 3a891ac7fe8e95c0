"""Hardening of pynetdicom's server transport (each gap reproduced against pynetdicom 3.0.4).

1. PDU length: pynetdicom reads a PDU's 32-bit length and then buffers that many bytes, before
   any AE check. `GuardedSocket` checks the length field against the maximum we advertised
   (64 KiB before the association is established) and aborts instead.
2. TLS: pynetdicom completes the TLS handshake inside its accept loop, so one silent client
   stalls every other. `GatewayServer` wraps without handshaking; the handshake runs on the
   connection's own thread with a timeout.
3. Idle connections: `GatewayServer.verify_request` bounds connections that have not associated.
4. Reads: one `recv_into` per PDU body instead of pynetdicom's 4 KiB loop (the SCP is CPU-bound).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import typing
from typing import Any

from pynetdicom.association import Association
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from gateway.ingest.admission import Gate
from gateway.metrics import Refusal
from gateway.settings import PRE_ASSOCIATION_MAX_PDU

# A-ABORT PDU (PS3.8 9.3.8): source 2 = service provider, reason 6 = invalid PDU parameter value.
_ABORT_INVALID_PDU_PARAMETER = bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x06))
_PRE_ASSOCIATION_STATES = frozenset({"Sta1", "Sta2", "Sta3"})


class PduTooLarge(OSError):
    """Raised into pynetdicom's reader, which treats it as the transport closing."""


class GuardedSocket(AssociationSocket):
    """An AssociationSocket that refuses oversized PDUs before reading their bodies.

    pynetdicom's reader asks for exactly 6 bytes (PDU header), then for the body length it
    found there; the socket alternates between the two.
    """

    gate: Gate
    _expect_header: bool

    def guard(self, gate: Gate) -> None:
        self.gate = gate
        self._expect_header = True

    def _limit(self) -> int:
        assoc = self.assoc
        if assoc.dul.state_machine.current_state in _PRE_ASSOCIATION_STATES:
            return PRE_ASSOCIATION_MAX_PDU
        return assoc.acceptor.maximum_length or self.gate.settings.max_pdu_size

    def recv(self, nr_bytes: int) -> bytearray:
        data = self._recv_exactly(nr_bytes)
        if not self._expect_header:
            self._expect_header = True
            return data
        self._expect_header = False
        if len(data) == 6:
            length = int.from_bytes(data[2:6], "big")
            limit = self._limit()
            if length > limit:
                self._abort(length, limit)
        return data

    def _abort(self, length: int, limit: int) -> None:
        address = str(self.assoc.requestor.address)
        self.gate.refuse(Refusal.PDU_TOO_LARGE, address, pdu_length=length, limit=limit)
        if self.socket is not None:
            with contextlib.suppress(OSError):
                self.socket.sendall(_ABORT_INVALID_PDU_PARAMETER)
        raise PduTooLarge("PDU length exceeds the negotiated maximum")

    def _recv_exactly(self, nr_bytes: int) -> bytearray:
        buffer = bytearray(nr_bytes)
        got = 0
        sock = self.socket
        assert sock is not None
        with memoryview(buffer) as view:
            while got < nr_bytes:
                n = sock.recv_into(view[got:], nr_bytes - got)
                if n == 0:  # the peer closed: hand back what arrived
                    break
                got += n
        del buffer[got:]  # only once no view is exported (else BufferError)
        return buffer


class GatewayRequestHandler(RequestHandler):
    server: GatewayServer

    def handle(self) -> None:
        if isinstance(self.request, ssl.SSLSocket) and not self._handshake(self.request):
            return
        super().handle()

    def _handshake(self, sock: ssl.SSLSocket) -> bool:
        gate = self.server.gate
        gate.handshake_started()
        try:
            sock.settimeout(gate.settings.tls.handshake_timeout)
            sock.do_handshake()
            sock.settimeout(None)
            return True
        except OSError as exc:  # ssl.SSLError and TimeoutError are OSErrors
            gate.refuse(
                Refusal.TLS_HANDSHAKE_FAILED,
                str(self.client_address[0]),
                error=exc.__class__.__name__,
            )
            self.server.shutdown_request(sock)
            return False
        finally:
            gate.handshake_ended()

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        # Re-class the socket pynetdicom just made: constructing a second one would queue a
        # second transport-connect event into its state machine.
        sock = assoc.dul.socket
        assert sock is not None
        sock.__class__ = GuardedSocket
        typing.cast(GuardedSocket, sock).guard(self.server.gate)
        return assoc


class GatewayServer(ThreadedAssociationServer):
    daemon_threads = True

    def __init__(self, *args: Any, gate: Gate, **kwargs: Any) -> None:
        self.gate = gate
        kwargs["request_handler"] = GatewayRequestHandler
        super().__init__(*args, **kwargs)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        assert self.socket is not None
        client, address = self.socket.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
        return client, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self.gate.may_open(str(client_address[0]), self.active_associations)
