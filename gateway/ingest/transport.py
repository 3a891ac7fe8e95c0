"""Hardening of pynetdicom's server transport (each gap reproduced against pynetdicom 3.0.4).

1. PDU length: pynetdicom reads a PDU's 32-bit length and then buffers that many bytes, before
   any AE check. pynetdicom's reader only ever reads here before the association is
   established (or after a reject): from A-ASSOCIATE-AC on, `ingest.pump` owns the socket and
   applies the negotiated maximum itself. `GuardedSocket` refuses any read over 64 KiB and
   aborts; every read has a timeout, so a peer that stops mid-PDU cannot hold a thread (and its
   slot) forever.
2. TLS: pynetdicom completes the TLS handshake inside its accept loop, so one silent client
   stalls every other. `GatewayServer` wraps without handshaking; the handshake runs on the
   connection's own thread with a timeout.
3. Idle connections: `GatewayServer.verify_request` bounds connections that have not associated.
4. Reads: one `recv_into` per PDU body instead of pynetdicom's 4 KiB loop.

What this relies on inside pynetdicom (how its reader calls the socket, re-classing the socket
it made, the hook after it creates an association) lives in `ingest.pynetdicom_seam`.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import sys
from typing import Any

from pynetdicom.association import Association
from pynetdicom.transport import ThreadedAssociationServer

from gateway.ingest.admission import AdmissionControl
from gateway.ingest.pump import ABORT_INVALID_PARAMETER
from gateway.ingest.pynetdicom_seam import AcceptorHandler, ReaderSocket, adopt_socket
from gateway.logs import get_logger
from gateway.metrics import Refusal
from gateway.settings import PRE_ASSOCIATION_MAX_PDU

log = get_logger("gateway.ingest")


class PduTooLarge(OSError):
    """Raised into pynetdicom's reader, which treats it as the transport closing."""


class GuardedSocket(ReaderSocket):
    """An AssociationSocket that refuses oversized PDUs before reading their bodies.

    pynetdicom's reader asks for the 6-byte PDU header, then for as many bytes as the header's
    length field says. It reads only until the association is established (then the data
    phase owns the socket, see `ReaderSocket.ready`), so any read over 64 KiB is refused
    before a byte of it is read or a buffer for it is allocated.
    """

    admission: AdmissionControl

    def guard(self, admission: AdmissionControl) -> None:
        self.admission = admission

    def read(self, nr_bytes: int) -> bytearray:
        if nr_bytes > PRE_ASSOCIATION_MAX_PDU:
            self._abort(nr_bytes, PRE_ASSOCIATION_MAX_PDU)
        return self._recv_exactly(nr_bytes, self.admission.settings.association_request_timeout)

    def _abort(self, length: int, limit: int) -> None:
        address = str(self.assoc.requestor.address)
        self.admission.refuse(Refusal.PDU_TOO_LARGE, address, pdu_length=length, limit=limit)
        if self.socket is not None:
            with contextlib.suppress(OSError):
                self.socket.sendall(ABORT_INVALID_PARAMETER)
        raise PduTooLarge("PDU length exceeds the negotiated maximum")

    def _recv_exactly(self, nr_bytes: int, timeout: float) -> bytearray:
        """Read exactly `nr_bytes` unless the peer closes; TimeoutError if it goes silent."""
        buffer = bytearray(nr_bytes)
        got = 0
        sock = self.socket
        assert sock is not None
        sock.settimeout(timeout)
        with memoryview(buffer) as view:
            while got < nr_bytes:
                n = sock.recv_into(view[got:], nr_bytes - got)
                if n == 0:  # the peer closed: hand back what arrived
                    break
                got += n
        del buffer[got:]  # only once no view is exported (else BufferError)
        return buffer


class GatewayRequestHandler(AcceptorHandler):
    server: GatewayServer

    def handle(self) -> None:
        if isinstance(self.request, ssl.SSLSocket) and not self._handshake(self.request):
            return
        super().handle()

    def _handshake(self, sock: ssl.SSLSocket) -> bool:
        admission = self.server.admission
        admission.handshake_started()
        try:
            sock.settimeout(admission.settings.tls.handshake_timeout)
            sock.do_handshake()
            sock.settimeout(None)
            return True
        except OSError as exc:  # ssl.SSLError and TimeoutError are OSErrors
            admission.refuse(
                Refusal.TLS_HANDSHAKE_FAILED,
                str(self.client_address[0]),
                error=exc.__class__.__name__,
            )
            self.server.shutdown_request(sock)
            return False
        finally:
            admission.handshake_ended()

    def association_created(self, assoc: Association) -> None:
        """Guard pynetdicom's reads on this connection from its first PDU on."""
        adopt_socket(assoc, GuardedSocket).guard(self.server.admission)


class GatewayServer(ThreadedAssociationServer):
    daemon_threads = True

    def __init__(self, *args: Any, admission: AdmissionControl, **kwargs: Any) -> None:
        self.admission = admission
        # socketserver's listen() backlog, 5 unless set before it binds: a burst of connects
        # beyond it has its SYNs dropped and retried a second later
        self.request_queue_size = admission.settings.listen_backlog
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

    def handle_error(self, request: Any, client_address: Any) -> None:
        """socketserver prints the traceback, message and all; log the exception type only."""
        exc_type = sys.exc_info()[0]
        log.error("connection.error", exception=exc_type.__name__ if exc_type else None)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        return self.admission.may_open(str(client_address[0]), self.active_associations)
