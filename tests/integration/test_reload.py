"""SIGHUP reloads the configuration of a running gateway (docs/operations.md, "Reloading").

One gateway (no forwarding) serves the admission tests of this module; each test first applies
the configuration it starts from, so the order of the tests does not matter. The policy test
runs the whole pipeline (`site`: reference receiver and one worker).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from cryptography import x509
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from gateway import devpki, scu
from tests.conftest import GatewayFactory
from tests.dicom_builders import greyscale, part10
from tests.integration.test_hardening import client_context, echo_ok, tls_on
from tests.pipeline_site import Site, wait_for
from tests.support import (
    REPO,
    GatewayProcess,
    base_config,
    cli,
    read_spool,
    toml,
    write_config,
)

UNIT = REPO / "deploy" / "systemd" / "dicom-gateway.service"
CT = "transfer_syntaxes/pydicom_wheel__CT_small.dcm"
NEWCOMER = {"name": "new-modality", "ae_title": "NEWCOMER"}


@dataclass
class Reloading:
    root: Path
    gw: GatewayProcess

    def config(self, *peers: dict[str, Any]) -> dict[str, Any]:
        """The module's base configuration, with `peers` after the two usual ones."""
        config = base_config(self.root)
        config["ingest"]["peers"] += list(peers)
        return config

    def hang_up(self, text: str, send: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Write the file, send SIGHUP (or `send(pid)`), and return the event that answers."""
        answers = ("config.reloaded", "config.reload_partial", "config.reload_refused")
        before = sum(len(self.gw.events(name)) for name in answers)
        self.gw.config.write_text(text, encoding="utf-8")
        if send is None:
            os.kill(self.gw.pid, signal.SIGHUP)
        else:
            send(self.gw.pid)
        wait_for(
            lambda: sum(len(self.gw.events(name)) for name in answers) > before,
            10.0,
            "an answer to SIGHUP",
        )
        return [e for e in self.gw.events() if e["event"] in answers][-1]

    def apply(self, config: dict[str, Any]) -> dict[str, Any]:
        event = self.hang_up(toml(config))
        assert event["event"] == "config.reloaded", event
        return event

    def reloads(self, result: str) -> float:
        return self.gw.metric("dicom_gateway_config_reloads_total", result=result)

    def stale(self) -> bool:
        """What DicomGatewayConfigReloadRefused fires on: a refusal after the configuration
        in force was loaded."""
        refused = self.gw.metric("dicom_gateway_config_reload_refused_timestamp_seconds")
        return refused > self.gw.metric("dicom_gateway_config_loaded_timestamp_seconds")

    def audited(self, event: str) -> list[dict[str, Any]]:
        lines = (self.root / "spool" / "audit.log").read_text(encoding="utf-8").splitlines()
        return [r for r in map(json.loads, lines) if r["event"] == event]


@pytest.fixture(scope="module")
def reloading(
    tmp_path_factory: pytest.TempPathFactory, phi_values: frozenset[str]
) -> Iterator[Reloading]:
    root = tmp_path_factory.mktemp("reload")
    path = write_config(root, base_config(root))
    keys = cli("keys", "--config", str(path))
    assert keys.returncode == 0, keys.stderr
    gw = GatewayProcess(path, root / "gateway.log").start()
    yield Reloading(root, gw)
    assert gw.stop() == 0
    logged = "\n".join(gw.lines)
    leaked = sorted(value for value in phi_values if value in logged)
    assert not leaked, f"patient names or IDs in gateway logs: {leaked}"


def send_as(gw: GatewayProcess, path: Path, aet: str) -> scu.SendResult:
    [result] = scu.send(scu.Node("127.0.0.1", gw.port, aet, "GATEWAY_UT", timeout=10), [path])
    return result


def test_a_new_peer_is_admitted_a_removed_one_refused_and_an_open_association_completes(
    reloading: Reloading, testdata: Path
) -> None:
    gw = reloading.gw
    reloading.apply(reloading.config())
    ae = AE(ae_title="PACS")
    ae.add_requested_context(CTImageStorage)
    held = ae.associate("127.0.0.1", gw.port, ae_title="GATEWAY_UT")  # opened before
    try:
        assert held.is_established
        edited = reloading.config(NEWCOMER)
        edited["ingest"]["peers"] = [
            p for p in edited["ingest"]["peers"] if p["ae_title"] != "PACS"
        ]
        applied = reloading.apply(edited)
        status = held.send_c_store(pydicom.dcmread(testdata / CT))  # C-STORE after
        assert status.Status == 0x0000
    finally:
        held.release()
    assert send_as(gw, testdata / CT, "NEWCOMER").ok
    refused_before = gw.metric(
        "dicom_gateway_associations_refused_total", reason="calling_ae_unknown"
    )
    assert send_as(gw, testdata / CT, "PACS").status is None
    gw.wait_for_event("association.refused", reason="calling_ae_unknown")
    after = gw.metric("dicom_gateway_associations_refused_total", reason="calling_ae_unknown")
    assert after == refused_before + 1
    peers = [s.header.peer for s in read_spool(gw.config)]
    assert "test-pacs" in peers
    assert "new-modality" in peers
    assert gw.metric("dicom_gateway_config_generation") == applied["generation"]
    assert reloading.audited("config.reloaded")[-1]["version"] == applied["generation"]


def test_the_log_level_changes_with_a_reload(reloading: Reloading, testdata: Path) -> None:
    gw = reloading.gw
    quiet = reloading.config(NEWCOMER)
    quiet["logging"] = {"level": "warning"}
    generation = reloading.apply(quiet)["generation"]  # written at the level it replaces
    admitted = len(gw.events("association.admitted"))
    assert send_as(gw, testdata / CT, "NEWCOMER").ok
    gw.config.write_text(toml(reloading.config(NEWCOMER)), encoding="utf-8")  # debug again
    os.kill(gw.pid, signal.SIGHUP)  # its answer is written at warning: not seen, counted
    wait_for(lambda: gw.metric("dicom_gateway_config_generation") == generation + 1, 10, "reload")
    assert len(gw.events("association.admitted")) == admitted  # an info line, not written
    assert send_as(gw, testdata / CT, "NEWCOMER").ok
    gw.wait_for_event("association.admitted", peer="new-modality")
    assert len(gw.events("association.admitted")) == admitted + 1


def syntax_error(config: dict[str, Any]) -> str:
    return toml(config).replace("[ingest]", "[ingest", 1)


def invalid_value(config: dict[str, Any]) -> str:
    config["ingest"]["max_associations"] = 0
    return toml(config)


def missing_pixel_rules(config: dict[str, Any]) -> str:
    """Valid TOML and values, but a worker could not be built: refused before any worker is
    asked (the same check as check-config), so no worker is left without rules."""
    config["pixels"] = {"ctp_scripts": ["no-such-script.txt"]}
    return toml(config)


@pytest.mark.parametrize(
    ("broken", "named"),
    [
        (syntax_error, "not valid TOML"),
        (invalid_value, "ingest.max_associations: must be"),
        (missing_pixel_rules, "pixels.ctp_scripts[0]: cannot read"),
    ],
    ids=["syntax", "value", "pixel-rules"],
)
def test_an_invalid_file_is_refused_and_the_running_configuration_stays(
    reloading: Reloading,
    testdata: Path,
    broken: Callable[[dict[str, Any]], str],
    named: str,
) -> None:
    gw = reloading.gw
    reloading.apply(reloading.config(NEWCOMER))
    refused = reloading.reloads("refused")
    audited = len(reloading.audited("config.reload-refused"))
    event = reloading.hang_up(broken(reloading.config()))  # NEWCOMER removed, if it applied
    assert event["event"] == "config.reload_refused"
    [problem] = event["problems"]
    assert problem.startswith(f"{gw.config}: ")
    assert named in problem
    if broken is syntax_error:
        assert "(at line " in problem  # tomllib's line and column
    assert reloading.reloads("refused") == refused + 1
    assert len(reloading.audited("config.reload-refused")) == audited + 1
    assert reloading.stale()  # the alert fires ...
    assert gw.proc is not None
    assert gw.proc.poll() is None
    assert send_as(gw, testdata / CT, "NEWCOMER").ok  # the peer of the running configuration
    reloading.apply(reloading.config())
    assert not reloading.stale()  # ... until a reload is applied


def test_keys_that_need_a_restart_are_named_and_the_rest_is_applied(
    reloading: Reloading, testdata: Path
) -> None:
    gw = reloading.gw
    reloading.apply(reloading.config())
    partial = reloading.reloads("partial")
    edited = reloading.config(NEWCOMER)
    edited["ingest"]["network_timeout"] = 45.0
    edited["spool"]["min_free_mib"] = 7
    event = reloading.hang_up(toml(edited))
    assert event["event"] == "config.reload_partial"
    assert sorted(event["restart"]) == ["ingest.network_timeout", "spool.min_free_mib"]
    assert set(event) == {"event", "level", "timestamp", "generation", "restart"}  # no values
    assert reloading.reloads("partial") == partial + 1
    assert send_as(gw, testdata / CT, "NEWCOMER").ok  # the peer, same listener
    assert gw.metric("dicom_gateway_spool_reserve_bytes") == 1024 * 1024  # as started


def test_systemctl_reload_runs_the_units_exec_reload_which_reloads(
    reloading: Reloading, testdata: Path
) -> None:
    """deploy/systemd/dicom-gateway.service's ExecReload, run as systemd would ($MAINPID)."""
    [line] = re.findall(r"^ExecReload=(.+)$", UNIT.read_text(encoding="utf-8"), re.MULTILINE)

    def exec_reload(pid: int) -> None:
        done = subprocess.run(
            shlex.split(line.replace("$MAINPID", str(pid))), timeout=10, check=False
        )
        assert done.returncode == 0

    reloading.apply(reloading.config())
    event = reloading.hang_up(toml(reloading.config(NEWCOMER)), send=exec_reload)
    assert event["event"] == "config.reloaded"
    assert send_as(reloading.gw, testdata / CT, "NEWCOMER").ok


def presented_serial(gw: GatewayProcess) -> int:
    """The serial number of the certificate the listener presents now."""
    raw = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
    with client_context(gw).wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def test_a_renewed_listener_certificate_is_served_after_a_reload(
    gateway_factory: GatewayFactory,
) -> None:
    """The same paths, new contents (a certificate renewed in place): read again on SIGHUP,
    presented from the next connection, its expiry exported."""
    gw = gateway_factory(tls_on)
    pki = gw.config.parent / "pki"
    old = presented_serial(gw)
    ca = devpki.load(pki / "ca.crt", pki / "ca.key")
    earlier = datetime.now(UTC) - timedelta(days=1)  # valid now, its expiry a day apart
    renewed = devpki.issue(ca, "dicom-gateway", server=True, hosts=("127.0.0.1",), now=earlier)
    (pki / "server.crt").write_bytes(devpki.certificate_pem(renewed))
    (pki / "server.key").write_bytes(devpki.key_pem(renewed))
    os.kill(gw.pid, signal.SIGHUP)
    gw.wait_for_event("config.reloaded", generation=1)
    assert presented_serial(gw) == renewed.certificate.serial_number != old
    assert echo_ok(gw, client_context(gw))
    expiry = gw.metric(
        "dicom_gateway_certificate_expiry_timestamp_seconds", certificate="ingest_server"
    )
    assert expiry == renewed.certificate.not_valid_after_utc.timestamp()


def test_a_policy_rule_added_by_reload_applies_to_the_next_instance(
    site: Site, tmp_path: Path
) -> None:
    receiver = site.receiver()
    os.kill(receiver.pid, signal.SIGHUP)  # a closed terminal: the receiver goes on
    receiver.wait_for_event("receiver.hangup_ignored")
    gw = site.gateway()
    gw.wait_for_event("workers.started", timeout=60)
    pixels = bytes(range(64)) * 64
    files = []
    for i in range(2):
        path = tmp_path / "send" / f"{i}.dcm"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(
            part10(greyscale(64, 64, pixels, PatientName="Doe^Jane", InstanceNumber=i))
        )
        files.append(path)

    def processed(result: str) -> float:
        return gw.metric("dicom_gateway_instances_processed_total", result=result)

    assert send_as(gw, files[0], "PACS").ok
    wait_for(lambda: len(site.stored()) == 1, 60, "the first instance at the receiver")
    site.edit(
        lambda c: c.update(
            policy={"rules": [{"action": "drop", "reason": "no-ot", "modalities": ["OT"]}]}
        )
    )
    os.kill(gw.pid, signal.SIGHUP)
    gw.wait_for_event("config.reloaded", generation=1)
    gw.wait_for_event("workers.reconfigured", generation=1, timeout=30)
    assert send_as(gw, files[1], "PACS").ok
    wait_for(lambda: processed("dropped") == 1, 60, "the second instance dropped")
    assert gw.metric("dicom_gateway_instances_dropped_total", reason="no-ot") == 1
    assert processed("sealed") == 1
