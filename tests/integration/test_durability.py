"""Acknowledged means durable; a full or failing disk answers 0xA700 and leaves nothing."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, MRImageStorage  # type: ignore[attr-defined]

from tests.conftest import GatewayFactory
from tests.support import GatewayProcess, dataset_bytes, ingest, read_spool, spool_files

MIB = 1024 * 1024
OUT_OF_RESOURCES = 0xA700


def ct_small(testdata: Path) -> Path:
    return testdata / "transfer_syntaxes" / "pydicom_wheel__CT_small.dcm"


def open_association(gw: GatewayProcess) -> Any:
    _config.STORE_SEND_CHUNKED_DATASET = True  # send files as they are on disk
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage, "1.2.840.10008.1.2.1")
    ae.add_requested_context(MRImageStorage, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="GATEWAY_UT")
    assert assoc.is_established
    return assoc


def test_below_the_reserve_answers_out_of_resources_until_space_returns(
    gateway_factory: GatewayFactory, tmp_path: Path, testdata: Path
) -> None:
    free_mib = shutil.disk_usage(tmp_path).free // MIB

    def reserve_near_free_space(config: dict[str, Any]) -> None:
        config["spool"]["min_free_mib"] = free_mib - 256

    gw = gateway_factory(reserve_near_free_space)
    assoc = open_association(gw)
    try:
        assert assoc.send_c_store(ct_small(testdata)).Status == 0x0000
        ballast = tmp_path / "ballast"
        with ballast.open("wb") as f:
            os.posix_fallocate(f.fileno(), 0, 512 * MIB)
        assert assoc.send_c_store(ct_small(testdata)).Status == OUT_OF_RESOURCES
        assert len(read_spool(gw.config)) == 1
        assert len(spool_files(gw.config)) == 1, "a partial file was left behind"
        ballast.unlink()
        # The same association stores again once there is room.
        assert assoc.send_c_store(ct_small(testdata)).Status == 0x0000
    finally:
        assoc.release()
    assert len(read_spool(gw.config)) == 2
    gw.wait_for_event("instance.refused", reason="spool_full")
    assert gw.metric("dicom_gateway_store_requests_total", result="out_of_resources") == 1


def test_a_failing_write_answers_out_of_resources_and_leaves_no_partial_file(
    gateway_factory: GatewayFactory, testdata: Path
) -> None:
    """RLIMIT_FSIZE makes the kernel fail writes past 200 KiB (EFBIG): a real I/O error."""

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200 * 1024, 200 * 1024))

    gw = gateway_factory(preexec_fn=limit_file_size)
    assoc = open_association(gw)
    big = testdata / "private_tags" / "orthanc_tests__2019-06-17-VedranZdesic.dcm"  # 516 KiB CT
    try:
        assert assoc.send_c_store(big).Status == OUT_OF_RESOURCES
        assert spool_files(gw.config) == []
        assert assoc.send_c_store(ct_small(testdata)).Status == 0x0000
    finally:
        assoc.release()
    [spooled] = read_spool(gw.config)
    assert dataset_bytes(spooled.part10) == dataset_bytes(ct_small(testdata).read_bytes())


def test_kill_9_right_after_the_acknowledgement_loses_nothing(
    gateway_factory: GatewayFactory, testdata: Path
) -> None:
    files = [
        ct_small(testdata),
        testdata / "transfer_syntaxes" / "pydicom_wheel__MR_small.dcm",
    ]
    gw = gateway_factory()
    assoc = open_association(gw)
    for path in files:
        assert assoc.send_c_store(path).Status == 0x0000
    os.kill(gw.pid, signal.SIGKILL)  # no release, no drain: straight after the last Success
    assoc.abort()
    assert gw.stop() == -signal.SIGKILL
    restarted = gateway_factory()
    assert restarted.config == gw.config
    spooled = {dataset_bytes(s.part10) for s in read_spool(restarted.config)}
    assert spooled == {dataset_bytes(p.read_bytes()) for p in files}


def test_sigterm_drains_and_exits_cleanly(gateway: GatewayProcess) -> None:
    assert gateway.stop(signal.SIGTERM) == 0
    gateway.wait_for_event("gateway.stopped")
    audit = gateway.config.parent / "spool" / "audit.log"
    events = [json.loads(line)["event"] for line in audit.read_text().splitlines()]
    assert events == ["gateway.started", "gateway.stopped"]


def test_a_second_gateway_on_the_same_spool_refuses_to_start(
    gateway: GatewayProcess, gateway_factory: GatewayFactory
) -> None:
    with pytest.raises(RuntimeError, match="another gateway process owns this spool"):
        gateway_factory()


def test_sigterm_lets_a_running_association_finish(gateway: GatewayProcess, testdata: Path) -> None:
    assoc = open_association(gateway)
    assert assoc.send_c_store(ct_small(testdata)).Status == 0x0000
    os.kill(gateway.pid, signal.SIGTERM)
    gateway.wait_for_event("gateway.stopping")
    mr = testdata / "transfer_syntaxes" / "pydicom_wheel__MR_small.dcm"
    assert assoc.send_c_store(mr).Status == 0x0000  # still served while draining
    assoc.release()
    assert gateway.wait(timeout=15) == 0  # exits by itself once the association is done
    event = gateway.wait_for_event("gateway.stopped")
    assert event["aborted_associations"] == 0
    assert len(read_spool(gateway.config)) == 2


def test_sigterm_aborts_what_does_not_finish_within_the_drain_time(
    gateway_factory: GatewayFactory,
) -> None:
    gw = gateway_factory(ingest(drain_seconds=1.0))
    assoc = open_association(gw)  # and then stay silent
    os.kill(gw.pid, signal.SIGTERM)
    assert gw.wait(timeout=15) == 0
    assert gw.wait_for_event("gateway.stopped")["aborted_associations"] == 1
    deadline = time.monotonic() + 5
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted
