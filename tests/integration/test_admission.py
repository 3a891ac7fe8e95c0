"""Only known senders get in, before any dataset byte is read (DESIGN promise 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from gateway import scu
from gateway.errors import NetworkError
from tests.conftest import GatewayFactory
from tests.support import GatewayProcess, ingest, read_spool, spool_files, storescu

CT = "transfer_syntaxes/pydicom_wheel__CT_small.dcm"


def send_as(gw: GatewayProcess, path: Path, aet: str, aec: str = "GATEWAY_UT") -> scu.SendResult:
    [result] = scu.send(scu.Node("127.0.0.1", gw.port, aet, aec, timeout=10), [path])
    return result


@pytest.mark.parametrize(
    ("aet", "aec", "reason"),
    [
        ("STRANGER", "GATEWAY_UT", "calling_ae_unknown"),
        ("PACS", "SOMEONE_ELSE", "called_ae_wrong"),
    ],
)
def test_unknown_calling_or_wrong_called_ae_is_rejected(
    gateway: GatewayProcess, testdata: Path, aet: str, aec: str, reason: str
) -> None:
    result = send_as(gateway, testdata / CT, aet, aec)
    assert result.status is None
    assert "rejected" in result.reason
    refused = gateway.wait_for_event("association.refused", reason=reason)
    assert refused["peer_address"] == "127.0.0.1"
    assert gateway.metric("dicom_gateway_associations_refused_total", reason=reason) == 1
    assert gateway.metric("dicom_gateway_associations_accepted_total") == 0
    assert spool_files(gateway.config) == []
    logged = "\n".join(gateway.lines)
    for wire_value in {aet, aec} - {"GATEWAY_UT", "PACS"}:  # configured titles may be logged
        assert wire_value not in logged, "an AE title from the wire was logged"


@pytest.mark.usefixtures("dcmtk")
def test_dcmtk_sender_with_unknown_ae_is_rejected(gateway: GatewayProcess, testdata: Path) -> None:
    result = storescu(gateway.port, [testdata / CT], aet="INTRUDER")
    assert result.returncode != 0
    assert "Calling AE Title Not Recognized" in result.stdout + result.stderr
    assert spool_files(gateway.config) == []


def test_allowed_ae_from_a_disallowed_address_is_rejected(
    gateway_factory: GatewayFactory, testdata: Path
) -> None:
    def pin_pacs_elsewhere(config: dict[str, Any]) -> None:
        config["ingest"]["peers"][0]["addresses"] = ["10.20.30.0/24"]

    gw = gateway_factory(pin_pacs_elsewhere)
    assert send_as(gw, testdata / CT, "PACS").status is None
    refused = gw.wait_for_event("association.refused", reason="peer_address_not_allowed")
    assert refused["peer"] == "test-pacs"  # the configured name, not the wire's AE title
    assert gw.metric("dicom_gateway_associations_refused_total", reason=refused["reason"]) == 1
    assert spool_files(gw.config) == []
    # The same AE title is fine for a peer whose addresses are not pinned.
    assert send_as(gw, testdata / CT, "STORESCU").ok


def test_associations_beyond_the_limit_are_rejected_transiently(
    gateway_factory: GatewayFactory,
) -> None:
    gw = gateway_factory(ingest(max_associations=2))
    ae = AE(ae_title="PACS")
    ae.add_requested_context(Verification)
    held = [ae.associate("127.0.0.1", gw.port, ae_title="GATEWAY_UT") for _ in range(2)]
    try:
        assert all(a.is_established for a in held)
        third = ae.associate("127.0.0.1", gw.port, ae_title="GATEWAY_UT")
        assert third.is_rejected
        assert third.acceptor.primitive is not None
        assert third.acceptor.primitive.result == 0x02  # rejected-transient: try again later
        gw.wait_for_event("association.refused", reason="too_many_associations")
    finally:
        for assoc in held:
            assoc.release()
    assert scu.echo(scu.Node("127.0.0.1", gw.port, "PACS", "GATEWAY_UT")) == 0


def test_deflated_transfer_syntax_is_never_accepted(gateway: GatewayProcess) -> None:
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1.99"])
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title="GATEWAY_UT")
    try:
        assert assoc.is_established
        assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == [Verification]
        [rejected] = assoc.rejected_contexts
        assert rejected.result == 0x04  # transfer syntaxes not supported
    finally:
        assoc.release()


def test_deflated_file_is_not_sent_and_nothing_is_spooled(
    gateway: GatewayProcess, testdata: Path
) -> None:
    path = testdata / "transfer_syntaxes" / "pydicom_wheel__image_dfl.dcm"
    result = send_as(gateway, path, "PACS")
    assert result.status is None
    assert "refused" in result.reason
    assert read_spool(gateway.config) == []


def test_refused_echo_raises_a_clear_error(gateway: GatewayProcess) -> None:
    with pytest.raises(NetworkError, match="rejected"):
        scu.echo(scu.Node("127.0.0.1", gateway.port, "NOBODY", "GATEWAY_UT", timeout=10))
