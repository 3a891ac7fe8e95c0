"""The forwarder against the real reference receiver, real TLS, real certificates (issue 6).

Server certificates that are expired, from another CA or for another host, and a public key
that misses the pin, are rejected in the handshake: nothing reaches the receiver's store.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydicom.uid import generate_uid

from gateway import devpki
from gateway.forward.classify import Kind
from gateway.forward.client import Forwarder, spki_sha256
from gateway.keyfiles import write_key_file
from gateway.seal.envelope import Name, sealed
from gateway.seal.keys import read_public
from gateway.settings import Settings, load
from tests.dicom_builders import part10, synthetic
from tests.support import GatewayProcess, cli, receiver_config, write_config

pytestmark = pytest.mark.timeout(120)
SITE = "UT"


def start_receiver(
    root: Path, config: dict[str, Any], name: str
) -> tuple[Settings, GatewayProcess]:
    path = write_config(root / name, config)
    receiver = GatewayProcess(
        path, root / f"{name}.log", command="receiver", ready="receiver.listening"
    ).start()
    settings = load(path)
    url = f"https://127.0.0.1:{receiver.port}"
    return dataclasses.replace(
        settings, forward=dataclasses.replace(settings.forward, url=url)
    ), receiver


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("forward")
    keys = cli("keys", "--config", str(write_config(root, receiver_config(root))))
    assert keys.returncode == 0, keys.stderr
    return root


@pytest.fixture(scope="module")
def good(root: Path) -> Iterator[tuple[Settings, GatewayProcess]]:
    settings, receiver = start_receiver(root, receiver_config(root), "good")
    yield settings, receiver
    assert receiver.stop() == 0


def instance(settings: Settings) -> tuple[str, str, bytes, Any]:
    study, uid = generate_uid(prefix="2.25."), generate_uid(prefix="2.25.")
    data = part10(synthetic(StudyInstanceUID=study, SOPInstanceUID=uid, PatientName="UT-X"))
    assert settings.forward.receiver_key is not None
    return study, uid, data, read_public(settings.forward.receiver_key)


def test_instances_and_manifests_are_delivered_once(
    good: tuple[Settings, GatewayProcess], root: Path
) -> None:
    settings, _ = good
    study, uid, data, key = instance(settings)
    forwarder = Forwarder.for_settings(settings)
    try:
        name = Name("instance", SITE, study, uid)
        first = forwarder.send(sealed(data, name, key))
        assert (first.kind, first.reason) == (Kind.DONE, "stored")
        again = forwarder.send(sealed(data, name, key))  # a retry after a lost answer
        assert (again.kind, again.reason) == (Kind.DONE, "already-stored")
        other = part10(synthetic(StudyInstanceUID=study, SOPInstanceUID=uid, PatientName="UT-Z"))
        assert forwarder.send(sealed(other, name, key)).kind is Kind.CONFLICT
        replay = sealed(data, name, key)
        moved = dataclasses.replace(replay, name=Name("instance", SITE, study, "2.25.1"))
        refused = forwarder.send(moved)
        assert (refused.kind, refused.reason) == (Kind.PERMANENT, "http-400")
        manifest = b'{"version": 1, "study": "%s", "instances": []}' % study.encode()
        done = forwarder.send(sealed(manifest, Name("manifest", SITE, study, "1"), key))
        assert done.kind is Kind.DONE
    finally:
        forwarder.close()
    stored = root / "received" / SITE / study
    assert sorted(p.name for p in stored.iterdir()) == [f"{uid}.dcm", "manifest-1.json"]


def _server_certificate(root: Path, name: str, **issue: Any) -> tuple[Path, Path]:
    ca = devpki.load(root / "pki" / "ca.crt", root / "pki" / "ca.key")
    issued = devpki.issue(ca, "bad receiver", server=True, **issue)
    cert, key = root / name / "server.crt", root / name / "server.key"
    devpki.write_pair(issued, cert, key, write_key_file)
    return cert, key


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("another-ca", "server-certificate-untrusted"),
        ("expired", "server-certificate-expired"),
        ("another-host", "server-certificate-wrong-host"),
    ],
)
def test_a_bad_server_certificate_is_rejected_before_anything_is_sent(
    root: Path, case: str, reason: str
) -> None:
    config = receiver_config(root)
    storage = root / case / "received"
    if case == "another-ca":
        stranger = devpki.issue(
            devpki.make_ca("another CA"), "x", server=True, hosts=("127.0.0.1",)
        )
        cert, key = root / case / "server.crt", root / case / "server.key"
        devpki.write_pair(stranger, cert, key, write_key_file)
    elif case == "expired":
        two_years_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=730)
        cert, key = _server_certificate(root, case, hosts=("127.0.0.1",), now=two_years_ago)
    else:
        cert, key = _server_certificate(root, case, hosts=("pacs.example.org",))
    config["receiver"].update(certificate=str(cert), private_key=str(key), storage=str(storage))
    settings, receiver = start_receiver(root, config, case)
    try:
        study, uid, data, public = instance(settings)
        forwarder = Forwarder.for_settings(settings)
        verdict = forwarder.send(sealed(data, Name("instance", SITE, study, uid), public))
        probe = forwarder.probe()  # readiness: the same verdict without a request
        forwarder.close()
    finally:
        assert receiver.stop() == 0
    assert (verdict.kind, verdict.reason) == (Kind.REJECTED, reason)
    assert (probe.reachable, probe.reason, probe.not_after) == (False, reason, None)
    assert not storage.exists() or not any(storage.rglob("*.dcm"))


def test_the_spki_pin_admits_only_the_pinned_server(good: tuple[Settings, GatewayProcess]) -> None:
    settings, _ = good
    assert settings.receiver.certificate is not None
    pem = settings.receiver.certificate.read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(Encoding.DER)
    right = base64.b64encode(spki_sha256(der)).decode()
    wrong = base64.b64encode(bytes(32)).decode()
    results, probes = {}, {}
    for label, pin in (("right", right), ("wrong", wrong)):
        pinned = dataclasses.replace(
            settings, forward=dataclasses.replace(settings.forward, spki_pin=pin)
        )
        study, uid, data, key = instance(pinned)
        forwarder = Forwarder.for_settings(pinned)
        results[label] = forwarder.send(sealed(data, Name("instance", SITE, study, uid), key))
        probes[label] = forwarder.probe()
        forwarder.close()
    not_after = x509.load_pem_x509_certificate(pem).not_valid_after_utc.timestamp()
    assert (probes["right"].reachable, probes["right"].not_after) == (True, not_after)
    assert (probes["wrong"].reachable, probes["wrong"].reason) == (False, "server-key-not-pinned")
    assert results["right"].kind is Kind.DONE
    assert (results["wrong"].kind, results["wrong"].reason) == (
        Kind.REJECTED,
        "server-key-not-pinned",
    )


def test_the_probe_says_when_nothing_listens(good: tuple[Settings, GatewayProcess]) -> None:
    settings, _ = good
    with socket.socket() as unused:  # a port nothing listens on: bound, never listening
        unused.bind(("127.0.0.1", 0))
        url = f"https://127.0.0.1:{unused.getsockname()[1]}"
        closed = dataclasses.replace(
            settings, forward=dataclasses.replace(settings.forward, url=url)
        )
        forwarder = Forwarder.for_settings(closed)
        probe = forwarder.probe(timeout=5)
        forwarder.close()
    assert (probe.reachable, probe.reason) == (False, "connection-refused")
