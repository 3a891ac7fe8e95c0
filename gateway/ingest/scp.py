"""The C-ECHO / C-STORE SCP: pynetdicom negotiates, `ingest.pump` runs the data phase, and the
store step here makes the bytes durable and does nothing else.

It never decodes pixels and never de-identifies; it reads only as far as Study Instance UID
(0020,000D), which selects the study's encryption key, then hands the bytes exactly as received
to the spool; the pump answers Success only after the spool has fsynced them (DESIGN promise 1).
"""

from __future__ import annotations

import contextlib
import io
import socket
import ssl
import struct
import threading
import time
from typing import Any, BinaryIO, cast

from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom.events import Event

from gateway.errors import SpoolError, SpoolFull, TlsSetupError, UnreadableDataset
from gateway.ingest.admission import AdmissionControl, AuditHook, Session
from gateway.ingest.contexts import supported_contexts, verification_sop_class
from gateway.ingest.pump import Ended, Limits, Pump, StoreRequest
from gateway.ingest.pynetdicom_seam import (
    check_pynetdicom,
    hand_back_ended,
    silence_identifier_logging,
    stop_accepting,
    stop_waiting_for_request,
    take_over_data_phase,
    transport_socket,
)
from gateway.ingest.status import StoreStatus
from gateway.ingest.transport import GatewayServer
from gateway.logs import get_logger
from gateway.metrics import Metrics, StoreResult
from gateway.part10 import part10_head
from gateway.settings import IngestSettings, TlsSettings
from gateway.spool import Received, Spool

log = get_logger("gateway.ingest")

STUDY_INSTANCE_UID = BaseTag(0x0020000D)
# Errors pydicom raises on a data set it cannot walk (OSError: "No tag to read" on a truncated
# sequence; the stream is in memory, so no real I/O error can hide here). Anything else is a
# bug: the data phase then aborts the association, acknowledging nothing.
_PARSE_ERRORS = (
    struct.error,
    ValueError,
    EOFError,
    OSError,
    OverflowError,
    NotImplementedError,
    KeyError,
    IndexError,
)

# PS3.15 B.12/B.13 (BCP 195): forward-secret AEAD suites for TLS 1.2; TLS 1.3 suites are all fine.
_TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    )
)


class ViewReader(io.RawIOBase):
    """A read-only file over a memoryview: pydicom reads the first elements without the whole
    data set being copied into a BytesIO first."""

    def __init__(self, view: memoryview) -> None:
        self._view = view
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._view[self._pos : self._pos + len(buffer)]
        n = len(chunk)
        buffer[:n] = chunk
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


def read_study_uid(stream: BinaryIO, transfer_syntax: UID) -> str | None:
    """Study Instance UID from an encoded data set, reading no further than (0020,000D)."""

    def past_study_uid(tag: BaseTag, vr: str | None, length: int) -> bool:
        return bool(tag > STUDY_INSTANCE_UID)

    try:
        stream.seek(0)
        ds = read_dataset(
            stream,
            transfer_syntax.is_implicit_VR,
            transfer_syntax.is_little_endian,
            stop_when=past_study_uid,
        )
        element = ds.get_item(STUDY_INSTANCE_UID)
    except _PARSE_ERRORS as exc:
        raise UnreadableDataset(exc.__class__.__name__) from None
    if element is None or not isinstance(element.value, bytes):
        return None
    value = element.value.decode("ascii", "replace").strip("\x00 ")
    return value or None


def tls_context(tls: TlsSettings) -> ssl.SSLContext:
    """Server context: TLS >= 1.2, client certificates required and checked against our CA."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(_TLS12_CIPHERS)
    if tls.certificate is None or tls.private_key is None or tls.client_ca is None:
        raise TlsSetupError("ingest.tls: certificate, private_key and client_ca are required")
    try:
        ctx.load_cert_chain(tls.certificate, tls.private_key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(
            f"ingest.tls.certificate / ingest.tls.private_key: cannot load {tls.certificate} "
            f"with {tls.private_key} ({exc.__class__.__name__}: not a matching PEM pair?)"
        ) from None
    try:
        ctx.load_verify_locations(cafile=tls.client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(
            f"ingest.tls.client_ca: cannot load {tls.client_ca} ({exc.__class__.__name__})"
        ) from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _pynetdicom_limit(settings: IngestSettings) -> int:
    """AdmissionControl counts admitted associations and pending connections apart;
    pynetdicom's own limit, which counts both together, must never be the one that bites."""
    return settings.max_associations + settings.max_pending_connections + 1


_REJECTION_STATUS = {
    StoreResult.UNPARSEABLE: StoreStatus.CANNOT_UNDERSTAND,
    StoreResult.NO_STUDY_UID: StoreStatus.DATASET_DOES_NOT_MATCH_SOP_CLASS,
    StoreResult.SOP_CLASS_NOT_SUPPORTED: StoreStatus.SOP_CLASS_NOT_SUPPORTED,
}


def _stop_waiting(event: Event) -> None:
    """EVT_CONN_CLOSE: a connection closed before it asked for an association frees its thread
    (and its pending-connection slot) now, not after `association_request_timeout`."""
    stop_waiting_for_request(event.assoc)


class IngestService:
    """Builds the pynetdicom AE once; `start()` listens, `stop()` drains."""

    def __init__(
        self,
        settings: IngestSettings,
        spool: Spool,
        metrics: Metrics,
        audit: AuditHook | None = None,
    ) -> None:
        check_pynetdicom()  # an incompatible upgrade fails here, naming what changed
        silence_identifier_logging()
        self.settings = settings
        self.spool = spool
        self.metrics = metrics
        self.admission = AdmissionControl(settings, metrics, audit)
        self.ae = self._build_ae()
        self._tls = tls_context(settings.tls) if settings.tls.enabled else None
        self.server: GatewayServer | None = None
        self._thread: threading.Thread | None = None

    def _build_ae(self) -> AE:
        s = self.settings
        ae = AE(ae_title=s.ae_title)
        ae.maximum_pdu_size = s.max_pdu_size
        ae.maximum_associations = _pynetdicom_limit(s)
        ae.acse_timeout = s.association_request_timeout
        ae.network_timeout = s.network_timeout
        ae.require_called_aet = False  # checked by AdmissionControl, with logging and metrics
        return ae

    def reconfigure(self, settings: IngestSettings) -> None:
        """Take new peers, limits and TLS files (a reload): associations from the next
        A-ASSOCIATE-RQ on are judged by them, connections from the next accept get the
        certificate read now; those admitted already go on. The caller keeps the keys that need
        a new listener (host, port, TLS on or off, AE title, PDU size, timeouts) as they were.
        TlsSetupError, with nothing changed, when the TLS files cannot be used."""
        tls = tls_context(settings.tls) if settings.tls.enabled else None
        self.settings = settings
        self.admission.settings = settings
        self.ae.maximum_associations = _pynetdicom_limit(settings)
        self._tls = tls
        if self.server is not None:
            self.server.ssl_context = tls  # read once per accepted connection

    def start(self) -> tuple[str, int]:
        """Listen; returns the bound (host, port), so port 0 picks a free one."""
        s = self.settings
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self.admission.on_requested),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_ABORTED, self.admission.on_ended),
            (evt.EVT_CONN_CLOSE, self.admission.on_ended),
            (evt.EVT_CONN_CLOSE, _stop_waiting),
        ]
        server = self.ae.make_server(
            (s.host, s.port),
            contexts=supported_contexts(),
            ssl_context=self._tls,
            evt_handlers=handlers,
            server_class=GatewayServer,
            admission=self.admission,
        )
        assert isinstance(server, GatewayServer)
        self.server = server
        self._thread = threading.Thread(target=server.serve_forever, name="ingest-accept")
        self._thread.daemon = True
        self._thread.start()
        host, port = server.server_address[:2]
        log.info("ingest.listening", host=host, port=port, ae_title=s.ae_title, tls=s.tls.enabled)
        return str(host), int(port)

    def stop(self) -> int:
        """Stop accepting, give associations `drain_seconds` to finish, cut the rest off.

        Shutting a socket down ends a data phase blocked in a read (only the association's own
        thread ever writes to it); an instance being written still completes, its sender just
        never hears Success and keeps it.
        """
        if self.server is None:
            return 0
        stop_accepting(self.server)
        deadline = time.monotonic() + self.settings.drain_seconds
        while self.server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        remaining = self.server.active_associations
        for assoc in remaining:
            sock = transport_socket(assoc)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        return len(remaining)

    # -- the data phase ---------------------------------------------------------------------

    def _on_established(self, event: Event) -> None:
        """EVT_ESTABLISHED: run the association's data phase here, on its own thread."""
        assoc = event.assoc
        session = self.admission.session(assoc)
        sock = take_over_data_phase(assoc) if session is not None else None
        if session is None or sock is None:
            return  # not ours to serve: pynetdicom's reactor answers nothing and ends it
        contexts = {int(cx.context_id or 0): cx for cx in assoc.accepted_contexts}
        limits = Limits(
            max_pdu=assoc.acceptor.maximum_length or self.settings.max_pdu_size,
            max_instance=self.settings.max_instance_mib * 1024 * 1024,
            timeout=self.settings.network_timeout,
        )

        def store(request: StoreRequest) -> int:
            cx = contexts[request.context_id]
            return self._on_store(request, str(cx.abstract_syntax), cx.transfer_syntax[0], session)

        pump = Pump(
            sock,
            {cid: str(cx.abstract_syntax) for cid, cx in contexts.items()},
            limits,
            store,
            refuse=lambda reason, **fields: self.admission.refuse(
                reason, session.address, **fields
            ),
        )
        how = Ended.INTERNAL_ERROR
        try:
            how = pump.run()
        finally:
            hand_back_ended(assoc, released=how is Ended.RELEASED)
            self.admission.finish(assoc, str(how))

    def _on_store(
        self, request: StoreRequest, sop_class: str, transfer_syntax: str, session: Session
    ) -> int:
        started = time.perf_counter()
        status, result = self._store(request, UID(sop_class), UID(transfer_syntax), session)
        self.metrics.store_requests.labels(result=result).inc()
        self.metrics.store_seconds.observe(time.perf_counter() - started)
        return status

    def _store(
        self, request: StoreRequest, sop_class: UID, transfer_syntax: UID, session: Session
    ) -> tuple[StoreStatus, StoreResult]:
        if sop_class == verification_sop_class() or request.sop_class_uid != sop_class:
            # PS3.7 9.1.1: the Affected SOP Class must be the presentation context's
            return self._reject(StoreResult.SOP_CLASS_NOT_SUPPORTED, session)
        dataset = request.dataset
        try:
            study_uid = read_study_uid(cast(BinaryIO, ViewReader(dataset)), transfer_syntax)
        except UnreadableDataset as exc:
            return self._reject(StoreResult.UNPARSEABLE, session, error=str(exc))
        if study_uid is None:
            return self._reject(StoreResult.NO_STUDY_UID, session)
        head = part10_head(sop_class, request.sop_instance_uid, transfer_syntax)
        size = len(head) + len(dataset)
        item = Received(
            head=head,
            dataset=dataset,
            study_instance_uid=study_uid,
            peer=session.peer.name,
            sop_class_uid=str(sop_class),
            transfer_syntax_uid=str(transfer_syntax),
        )
        try:
            header = self.spool.store(item)
        except SpoolError as exc:
            return self._refuse_out_of_resources(exc, session)
        self.metrics.received_bytes.inc(size)
        session.instances += 1
        session.bytes += size
        log.debug("instance.stored", peer=session.peer.name, study=header.study_id, bytes=size)
        return StoreStatus.SUCCESS, StoreResult.STORED

    def _refuse_out_of_resources(
        self, exc: SpoolError, session: Session
    ) -> tuple[StoreStatus, StoreResult]:
        full = isinstance(exc, SpoolFull)
        log.warning(
            "instance.refused",
            reason="spool_full" if full else "spool_write_failed",
            detail=str(exc),
            peer=session.peer.name,
        )
        return StoreStatus.OUT_OF_RESOURCES, StoreResult.OUT_OF_RESOURCES

    def _reject(
        self, result: StoreResult, session: Session, **fields: str
    ) -> tuple[StoreStatus, StoreResult]:
        status = _REJECTION_STATUS[result]
        log.warning("instance.refused", reason=str(result), peer=session.peer.name, **fields)
        return status, result
