"""The data phase over a real socket pair: PDUs in, responses out, through the real Pump."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset

from gateway.ingest.pump import Ended, Limits, Pump, StoreRequest, encode_command, p_data
from gateway.metrics import Refusal

CT = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
CONTEXTS = {1: CT, 3: VERIFICATION}


def ui(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\0" if len(raw) % 2 else raw


def us(value: int) -> bytes:
    return struct.pack("<H", value)


def store_rq(message_id: int, sop_instance: str = "1.2.3.4") -> bytes:
    return encode_command(
        {
            0x00000002: ui(CT),
            0x00000100: us(0x0001),
            0x00000110: us(message_id),
            0x00000700: us(0),
            0x00000800: us(0x0000),
            0x00001000: ui(sop_instance),
        }
    )


def echo_rq(message_id: int) -> bytes:
    return encode_command(
        {
            0x00000002: ui(VERIFICATION),
            0x00000100: us(0x0030),
            0x00000110: us(message_id),
            0x00000800: us(0x0101),
        }
    )


def pdv(context: int, control: int, fragment: bytes) -> bytes:
    return struct.pack(">IBB", len(fragment) + 2, context, control) + fragment


def pdu(*items: bytes) -> bytes:
    body = b"".join(items)
    return struct.pack(">BBI", 0x04, 0, len(body)) + body


RELEASE_RQ = bytes((0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0))


@dataclass
class Harness:
    peer: socket.socket
    stored: list[tuple[str, bytes]] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    ended: list[Ended] = field(default_factory=list)
    status: int = 0x0000

    def response(self) -> dict[str, int | str]:
        """Read one P-DATA-TF holding one command PDV and decode its command set."""
        header = self._recv(6)
        kind, _, length = struct.unpack(">BBI", header)
        assert kind == 0x04
        body = self._recv(length)
        item_length, _, control = struct.unpack(">IBB", body[:6])
        assert control == 0x03  # command, last fragment
        command_set = DicomBytesIO(body[6 : 4 + item_length])
        ds = read_dataset(command_set, True, True)  # type: ignore[arg-type]
        out: dict[str, int | str] = {"CommandField": ds.CommandField, "Status": ds.Status}
        out["MessageIDBeingRespondedTo"] = ds.MessageIDBeingRespondedTo
        if "AffectedSOPInstanceUID" in ds:
            out["AffectedSOPInstanceUID"] = str(ds.AffectedSOPInstanceUID)
        return out

    def wait_ended(self) -> list[Ended]:
        for _ in range(100):
            if self.ended:
                break
            threading.Event().wait(0.05)
        return self.ended

    def _recv(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.peer.recv(n - len(data))
            assert chunk, "pump closed the connection"
            data += chunk
        return data


@pytest.fixture(params=[5.0])
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    ours, peer = socket.socketpair()
    peer.settimeout(5)
    h = Harness(peer)

    def store(request: StoreRequest) -> int:
        if request.sop_instance_uid == "1.2.666":
            raise RuntimeError("a bug behind the store")
        h.classes.append(request.sop_class_uid)
        h.stored.append((request.sop_instance_uid, bytes(request.dataset)))
        return h.status

    pump = Pump(
        ours,
        CONTEXTS,
        Limits(max_pdu=16384, max_instance=100_000, timeout=request.param),
        store,
        refuse=lambda reason, **_: h.refused.append(reason),
    )
    thread = threading.Thread(target=lambda: h.ended.append(pump.run()))
    thread.start()
    yield h
    peer.close()
    thread.join(10)
    ours.close()
    assert not thread.is_alive()


def test_store_split_over_items_and_pdus_is_reassembled(harness: Harness) -> None:
    command = store_rq(7, "1.2.3.4.5")
    data = bytes(range(256)) * 100  # 25,600 bytes: more than one PDU
    harness.peer.sendall(pdu(pdv(1, 0x01, command[:10])))  # command in two fragments
    harness.peer.sendall(pdu(pdv(1, 0x03, command[10:]), pdv(1, 0x00, data[:5000])))
    harness.peer.sendall(pdu(pdv(1, 0x00, data[5000:15000])))
    harness.peer.sendall(pdu(pdv(1, 0x02, data[15000:])))
    assert harness.response() == {
        "CommandField": 0x8001,
        "Status": 0x0000,
        "MessageIDBeingRespondedTo": 7,
        "AffectedSOPInstanceUID": "1.2.3.4.5",
    }
    assert harness.stored == [("1.2.3.4.5", data)]
    harness.peer.sendall(RELEASE_RQ)
    assert harness.peer.recv(10) == bytes((0x06, 0, 0, 0, 0, 4, 0, 0, 0, 0))
    assert harness.wait_ended() == [Ended.RELEASED]


def test_store_status_is_what_the_spool_said(harness: Harness) -> None:
    harness.status = 0xA700
    harness.peer.sendall(pdu(pdv(1, 0x03, store_rq(1)), pdv(1, 0x02, b"\x08\x00")))
    assert harness.response()["Status"] == 0xA700


def test_echo_between_stores(harness: Harness) -> None:
    harness.peer.sendall(pdu(pdv(1, 0x03, store_rq(1)), pdv(1, 0x02, b"ab")))
    assert harness.response()["Status"] == 0
    harness.peer.sendall(pdu(pdv(3, 0x03, echo_rq(2))))
    assert harness.response() == {
        "CommandField": 0x8030,
        "Status": 0,
        "MessageIDBeingRespondedTo": 2,
    }
    harness.peer.sendall(pdu(pdv(1, 0x03, store_rq(3)), pdv(1, 0x02, b"cd")))
    assert harness.response()["MessageIDBeingRespondedTo"] == 3
    assert [data for _, data in harness.stored] == [b"ab", b"cd"]


def test_the_store_hears_which_sop_class_the_command_names(harness: Harness) -> None:
    harness.peer.sendall(pdu(pdv(3, 0x03, store_rq(4)), pdv(3, 0x02, b"xx")))
    assert harness.response()["Status"] == 0
    assert harness.classes == [CT]  # sent on the Verification context: the store decides


def test_release_in_the_middle_of_a_message_is_an_abort(harness: Harness) -> None:
    harness.peer.sendall(pdu(pdv(1, 0x03, store_rq(1)), pdv(1, 0x00, b"half")))
    harness.peer.sendall(RELEASE_RQ)
    assert harness.peer.recv(16) == bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 0x02, 0x02))
    assert harness.wait_ended() == [Ended.PROTOCOL_ERROR]


def test_a_command_without_message_id_is_an_abort(harness: Harness) -> None:
    command = encode_command({0x00000100: us(0x0030), 0x00000800: us(0x0101)})
    harness.peer.sendall(pdu(pdv(3, 0x03, command)))
    assert harness.peer.recv(16)[:1] == b"\x07"
    assert harness.wait_ended() == [Ended.PROTOCOL_ERROR]


def test_an_error_behind_the_store_aborts_and_acknowledges_nothing(harness: Harness) -> None:
    harness.peer.sendall(pdu(pdv(1, 0x03, store_rq(1, "1.2.666")), pdv(1, 0x02, b"ab")))
    assert harness.peer.recv(16) == bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0))
    assert harness.wait_ended() == [Ended.INTERNAL_ERROR]


@pytest.mark.parametrize("harness", [0.5], indirect=True)
def test_a_pdu_trickling_in_is_cut_off_at_its_deadline(harness: Harness) -> None:
    """Each byte arrives well within the timeout, the PDU as a whole does not."""
    started = time.monotonic()
    with contextlib.suppress(OSError):
        for byte in pdu(pdv(3, 0x03, echo_rq(1))):
            harness.peer.sendall(bytes((byte,)))
            time.sleep(0.1)
            if harness.ended:
                break
    assert harness.wait_ended() == [Ended.TIMED_OUT]
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    ("sent", "ended"),
    [
        (pdu(pdv(9, 0x03, echo_rq(1))), Ended.PROTOCOL_ERROR),  # context never accepted
        (pdu(pdv(1, 0x02, b"data before any command")), Ended.PROTOCOL_ERROR),
        (bytes((0x01, 0, 0, 0, 0, 4, 0, 0, 0, 0)), Ended.PROTOCOL_ERROR),  # second A-ASSOCIATE-RQ
        (bytes((0x04, 0)) + (0xFFFFFFF0).to_bytes(4, "big"), Ended.PDU_TOO_LARGE),
        (bytes((0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0)), Ended.ABORTED_BY_PEER),
    ],
)
def test_what_the_pump_does_not_expect_ends_the_association(
    harness: Harness, sent: bytes, ended: Ended
) -> None:
    harness.peer.sendall(sent)
    if ended is not Ended.ABORTED_BY_PEER:
        assert harness.peer.recv(16)[:1] == b"\x07"  # we answer with A-ABORT
    assert harness.wait_ended() == [ended]
    assert harness.stored == []


def test_an_instance_beyond_the_limit_aborts(harness: Harness) -> None:
    harness.peer.sendall(pdu(pdv(1, 0x03, store_rq(1))))
    for _ in range(7):  # 112,000 bytes of data set against a 100,000 byte limit
        harness.peer.sendall(pdu(pdv(1, 0x00, b"\0" * 16000)))
    assert harness.peer.recv(16)[:1] == b"\x07"
    assert harness.wait_ended() == [Ended.INSTANCE_TOO_LARGE]
    assert harness.refused == [Refusal.INSTANCE_TOO_LARGE]
    assert harness.stored == []


def test_p_data_wraps_one_command_pdv() -> None:
    wrapped = p_data(5, b"abcd")
    assert wrapped == bytes((0x04, 0, 0, 0, 0, 10, 0, 0, 0, 6, 5, 0x03)) + b"abcd"
