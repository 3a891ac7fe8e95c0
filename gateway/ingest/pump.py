"""The data phase of an admitted association: P-DATA in, C-STORE/C-ECHO out, no polling.

pynetdicom negotiates the association (presentation contexts, roles, our admission hooks);
from A-ASSOCIATE-AC on, this loop owns the socket. pynetdicom's own data phase hands every PDU
from a reader thread to a reactor thread that polls every millisecond; measured here, that made
a null C-STORE handler cost ~4.4 ms per 513 KiB instance, more than dcmtk's storescp needs in
all. The pump reads each fragment straight into one reusable buffer with blocking reads on the
association's own thread, and answers as soon as the spool has the instance on disk.

Protocol (PS3.8 9.3, PS3.7 6.3.1 and Annex E): a P-DATA-TF PDU carries PDV items
`length(4) | presentation context id(1) | message control header(1) | fragment`; bit 0 of the
header marks a command fragment, bit 1 the last fragment. Command sets are Implicit VR Little
Endian group 0000. Everything this loop does not expect ends the association with A-ABORT.
"""

from __future__ import annotations

import contextlib
import enum
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.logs import get_logger
from gateway.metrics import Refusal

log = get_logger("gateway.ingest")

_PDU_HEADER = struct.Struct(">BBI")
_PDV_HEADER = struct.Struct(">IBB")
_ELEMENT = struct.Struct("<HHI")
_RELEASE_RP = bytes((0x06, 0, 0, 0, 0, 4, 0, 0, 0, 0))
_BIG_BUFFER = 64 * 1024 * 1024  # larger data set buffers are not kept between instances


def _abort(source: int, reason: int) -> bytes:
    """A-ABORT PDU (PS3.8 9.3.8); source 0 = service user, 2 = service provider."""
    return bytes((0x07, 0, 0, 0, 0, 4, 0, 0, source, reason))


ABORT_BY_USER = _abort(0x00, 0x00)
_ABORT_UNRECOGNIZED_PDU = _abort(0x02, 0x01)
_ABORT_UNEXPECTED_PDU = _abort(0x02, 0x02)
ABORT_INVALID_PARAMETER = _abort(0x02, 0x06)

COMMAND_FIELD = 0x00000100
MESSAGE_ID = 0x00000110
AFFECTED_SOP_CLASS_UID = 0x00000002
AFFECTED_SOP_INSTANCE_UID = 0x00001000
COMMAND_DATA_SET_TYPE = 0x00000800
NO_DATA_SET = 0x0101


class Command(enum.IntEnum):
    """PS3.7 Table E.1-1 command field values used here."""

    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    C_CANCEL_RQ = 0x0FFF


class Ended(enum.StrEnum):
    RELEASED = "released"
    ABORTED_BY_PEER = "aborted"
    CLOSED = "closed"
    TIMED_OUT = "timed_out"
    PROTOCOL_ERROR = "protocol_error"
    PDU_TOO_LARGE = "pdu_too_large"
    INSTANCE_TOO_LARGE = "instance_too_large"
    INTERNAL_ERROR = "internal_error"


class _End(Exception):
    def __init__(self, how: Ended, abort: bytes | None = None) -> None:
        super().__init__(how)
        self.how = how
        self.abort = abort


@dataclass(frozen=True)
class StoreRequest:
    context_id: int
    sop_class_uid: str  # as the command says; the store checks it against the context
    sop_instance_uid: str
    dataset: memoryview


@dataclass(frozen=True)
class Limits:
    max_pdu: int  # the maximum length we advertised in A-ASSOCIATE-AC
    max_instance: int
    timeout: float  # for a whole PDU to arrive, however slowly it trickles in


def parse_command(raw: bytes) -> dict[int, bytes]:
    """Implicit VR Little Endian elements of a command set, by tag, values raw."""
    elements: dict[int, bytes] = {}
    pos = 0
    while pos < len(raw):
        if pos + _ELEMENT.size > len(raw):
            raise _End(Ended.PROTOCOL_ERROR, ABORT_INVALID_PARAMETER)
        group, element, length = _ELEMENT.unpack_from(raw, pos)
        pos += _ELEMENT.size
        elements[(group << 16) | element] = raw[pos : pos + length]
        pos += length
    if pos != len(raw):
        raise _End(Ended.PROTOCOL_ERROR, ABORT_INVALID_PARAMETER)
    return elements


def _us(value: bytes | None) -> int | None:
    return int.from_bytes(value, "little") if value is not None and len(value) == 2 else None


def _ui(value: bytes | None) -> str:
    return (value or b"").rstrip(b"\0 ").decode("ascii", "replace")


def encode_command(elements: dict[int, bytes]) -> bytes:
    """Implicit VR Little Endian command set with its (0000,0000) group length."""
    body = b"".join(
        _ELEMENT.pack(tag >> 16, tag & 0xFFFF, len(value)) + value
        for tag, value in sorted(elements.items())
    )
    return _ELEMENT.pack(0, 0, 4) + struct.pack("<I", len(body)) + body


def _uid_value(uid: bytes) -> bytes:
    return uid + b"\0" if len(uid) % 2 else uid


def response(request: dict[int, bytes], command: Command, status: int) -> bytes:
    elements = {
        AFFECTED_SOP_CLASS_UID: _uid_value(request.get(AFFECTED_SOP_CLASS_UID, b"").rstrip(b"\0")),
        COMMAND_FIELD: struct.pack("<H", command),
        0x00000120: request.get(MESSAGE_ID, b"\0\0"),  # Message ID Being Responded To
        COMMAND_DATA_SET_TYPE: struct.pack("<H", NO_DATA_SET),
        0x00000900: struct.pack("<H", status),
    }
    if command is Command.C_STORE_RSP:
        uid = request.get(AFFECTED_SOP_INSTANCE_UID, b"").rstrip(b"\0")
        elements[AFFECTED_SOP_INSTANCE_UID] = _uid_value(uid)
    return encode_command(elements)


def p_data(context_id: int, command_set: bytes) -> bytes:
    """One P-DATA-TF holding one PDV: the whole command set, flagged command + last."""
    item = _PDV_HEADER.pack(len(command_set) + 2, context_id, 0x03) + command_set
    return _PDU_HEADER.pack(0x04, 0, len(item)) + item


class Pump:
    """Runs one association's data phase to its end; `run()` says how it ended."""

    def __init__(
        self,
        sock: socket.socket,
        contexts: dict[int, str],
        limits: Limits,
        store: Callable[[StoreRequest], int],
        refuse: Callable[..., None],
    ) -> None:
        self.sock = sock
        self.contexts = contexts  # accepted presentation context id -> abstract syntax
        self.limits = limits
        self.store = store  # returns the C-STORE status; only 0x0000 once durably stored
        self.refuse = refuse  # (Refusal, **fields): logs and counts why the association ends
        self.buffer = bytearray(1 << 20)
        self.filled = 0
        self.command = bytearray()
        self.pending: tuple[int, dict[int, bytes]] | None = None  # waiting for its data set
        self.deadline = 0.0

    def run(self) -> Ended:
        """Serve until release, abort, close or error. Never raises."""
        try:
            while True:
                self._one_pdu()
        except _End as end:
            if end.abort is not None:
                self._send_quietly(end.abort)
            return end.how
        except TimeoutError:
            self._send_quietly(ABORT_BY_USER)
            return Ended.TIMED_OUT
        except OSError:  # only socket calls raise it here: the spool answers with statuses
            return Ended.CLOSED
        except Exception as exc:  # noqa: BLE001 - never leave an association hanging
            log.error("association.error", exception=exc.__class__.__name__)
            self._send_quietly(ABORT_BY_USER)
            return Ended.INTERNAL_ERROR

    def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def _read_into(self, view: memoryview) -> None:
        """Fill `view`; the whole PDU must arrive before its deadline, not just each chunk."""
        got = 0
        while got < len(view):
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            n = self.sock.recv_into(view[got:])
            if n == 0:
                raise _End(Ended.CLOSED)
            got += n

    def _read(self, n: int) -> bytes:
        buf = bytearray(n)
        with memoryview(buf) as view:
            self._read_into(view)
        return bytes(buf)

    def _one_pdu(self) -> None:
        self.deadline = time.monotonic() + self.limits.timeout
        pdu_type, _, length = _PDU_HEADER.unpack(self._read(6))
        if length > self.limits.max_pdu:
            self.refuse(Refusal.PDU_TOO_LARGE, pdu_length=length, limit=self.limits.max_pdu)
            raise _End(Ended.PDU_TOO_LARGE, ABORT_INVALID_PARAMETER)
        mid_message = self.pending is not None or bool(self.command)
        if pdu_type == 0x04:
            self._p_data(length)
        elif pdu_type == 0x05 and length == 4 and not mid_message:
            self._read(4)
            self.sock.sendall(_RELEASE_RP)
            raise _End(Ended.RELEASED)
        elif pdu_type == 0x07 and length == 4:
            self._read(4)
            raise _End(Ended.ABORTED_BY_PEER)
        elif pdu_type in (0x01, 0x02, 0x03, 0x05, 0x06):
            raise _End(Ended.PROTOCOL_ERROR, _ABORT_UNEXPECTED_PDU)
        else:
            raise _End(Ended.PROTOCOL_ERROR, _ABORT_UNRECOGNIZED_PDU)

    def _p_data(self, length: int) -> None:
        while length > 0:
            if length < _PDV_HEADER.size:
                raise _End(Ended.PROTOCOL_ERROR, ABORT_INVALID_PARAMETER)
            item_length, context_id, control = _PDV_HEADER.unpack(self._read(6))
            fragment = item_length - 2
            if fragment < 0 or item_length + 4 > length or context_id not in self.contexts:
                raise _End(Ended.PROTOCOL_ERROR, ABORT_INVALID_PARAMETER)
            length -= item_length + 4
            if control & 0x01:
                self._command_fragment(context_id, fragment, last=bool(control & 0x02))
            else:
                self._data_fragment(context_id, fragment, last=bool(control & 0x02))

    def _command_fragment(self, context_id: int, size: int, *, last: bool) -> None:
        if self.pending is not None or len(self.command) + size > 64 * 1024:
            raise _End(Ended.PROTOCOL_ERROR, ABORT_INVALID_PARAMETER)
        self.command += self._read(size)
        if not last:
            return
        command = parse_command(bytes(self.command))
        self.command.clear()
        if _us(command.get(MESSAGE_ID)) is None:  # PS3.7 E.1: required in every request
            raise _End(Ended.PROTOCOL_ERROR, ABORT_INVALID_PARAMETER)
        if _us(command.get(COMMAND_DATA_SET_TYPE)) == NO_DATA_SET:
            self._dispatch(context_id, command, None)
        else:
            self.pending = (context_id, command)
            self.filled = 0

    def _data_fragment(self, context_id: int, size: int, *, last: bool) -> None:
        if self.pending is None or self.pending[0] != context_id:
            raise _End(Ended.PROTOCOL_ERROR, ABORT_INVALID_PARAMETER)
        end = self.filled + size
        if end > self.limits.max_instance:
            self.refuse(Refusal.INSTANCE_TOO_LARGE, limit=self.limits.max_instance)
            raise _End(Ended.INSTANCE_TOO_LARGE, ABORT_BY_USER)
        if end > len(self.buffer):
            grown = bytearray(min(max(end, 2 * len(self.buffer)), self.limits.max_instance))
            grown[: self.filled] = self.buffer[: self.filled]
            self.buffer = grown
        with memoryview(self.buffer) as view:
            self._read_into(view[self.filled : end])
        self.filled = end
        if last:
            _, command = self.pending
            self.pending = None
            with memoryview(self.buffer) as view, view[: self.filled] as dataset:
                self._dispatch(context_id, command, dataset)
            if len(self.buffer) > _BIG_BUFFER:
                self.buffer = bytearray(1 << 20)

    def _dispatch(
        self, context_id: int, command: dict[int, bytes], dataset: memoryview | None
    ) -> None:
        field = _us(command.get(COMMAND_FIELD))
        if field == Command.C_STORE_RQ and dataset is not None:
            uid = _ui(command.get(AFFECTED_SOP_INSTANCE_UID))
            if not uid:
                raise _End(Ended.PROTOCOL_ERROR, ABORT_INVALID_PARAMETER)
            sop_class = _ui(command.get(AFFECTED_SOP_CLASS_UID))
            status = self.store(StoreRequest(context_id, sop_class, uid, dataset))
            self.sock.sendall(p_data(context_id, response(command, Command.C_STORE_RSP, status)))
        elif field == Command.C_ECHO_RQ and dataset is None:
            self.sock.sendall(p_data(context_id, response(command, Command.C_ECHO_RSP, 0)))
        elif field == Command.C_CANCEL_RQ:
            return  # nothing of ours runs long enough to cancel
        else:
            raise _End(Ended.PROTOCOL_ERROR, ABORT_INVALID_PARAMETER)
