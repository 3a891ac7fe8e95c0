"""The reference receiver as a real HTTPS process with real certificates (issue 6).

`dicom-gateway keys` makes the development CA, the receiver's server certificate, the
gateway's client certificate and the receiver's HPKE key pair; `dicom-gateway receiver` runs
on 127.0.0.1 (port 0); the client is httpx with the gateway's certificate, as the forwarder
will be.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydicom.uid import generate_uid

from gateway import devpki
from gateway.keyfiles import write_key_file
from gateway.seal.envelope import Name, seal
from gateway.seal.keys import PublicKey, read_public
from tests.dicom_builders import part10, synthetic
from tests.support import GatewayProcess, cli, receiver_config, write_config

pytestmark = pytest.mark.timeout(120)
SITE = "UT"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, GatewayProcess]]:
    root = tmp_path_factory.mktemp("receiver")
    config = write_config(root, receiver_config(root))
    keys = cli("keys", "--config", str(config))
    assert keys.returncode == 0, keys.stderr
    receiver = GatewayProcess(
        config, root / "receiver.log", command="receiver", ready="receiver.listening"
    ).start()
    yield root, receiver
    assert receiver.stop() == 0


def client(root: Path, certificate: bool = True) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(root / "pki" / "ca.crt"))
    if certificate:
        context.load_cert_chain(root / "pki" / "gateway.crt", root / "pki" / "gateway.key")
    return httpx.Client(verify=context, timeout=10)


def put(
    http: httpx.Client,
    receiver: GatewayProcess,
    path: str,
    body: bytes,
    key: PublicKey,
    **headers: str,
) -> httpx.Response:
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    sent = {
        "content-type": "application/vnd.dicom-gateway.sealed",
        "content-digest": f"sha-256=:{digest}:",
        "dicom-gateway-site": SITE,
        "dicom-gateway-key-id": key.key_id,
        **{k.replace("_", "-"): v for k, v in headers.items()},
    }
    return http.put(f"https://127.0.0.1:{receiver.port}{path}", content=body, headers=sent)


def instance() -> tuple[str, str, bytes]:
    study, uid = generate_uid(prefix="2.25."), generate_uid(prefix="2.25.")
    data = part10(synthetic(StudyInstanceUID=study, SOPInstanceUID=uid, PatientName="UT-X"))
    return study, uid, data


def sealed_instance(root: Path) -> tuple[PublicKey, str, str, bytes, bytes, str]:
    """The receiver's key, a fresh instance (study, uid, data), its sealed body and its path."""
    key = read_public(root / "keys" / "receiver.pub")
    study, uid, data = instance()
    body = seal(data, Name("instance", SITE, study, uid), key)
    return key, study, uid, data, body, f"/v1/studies/{study}/instances/{uid}"


def test_an_instance_is_stored_once_and_a_repeat_is_recognised(
    site: tuple[Path, GatewayProcess],
) -> None:
    root, receiver = site
    key, study, uid, data, body, path = sealed_instance(root)
    with client(root) as http:
        first = put(http, receiver, path, body, key)
        assert (first.status_code, first.json()) == (201, {"reason": "stored"})
        again = put(http, receiver, path, seal(data, Name("instance", SITE, study, uid), key), key)
        assert again.status_code == 200
        other = part10(synthetic(StudyInstanceUID=study, SOPInstanceUID=uid, PatientName="UT-Y"))
        changed = put(
            http, receiver, path, seal(other, Name("instance", SITE, study, uid), key), key
        )
        assert changed.status_code == 409
    stored = root / "received" / SITE / study / f"{uid}.dcm"
    assert stored.read_bytes() == data
    assert sorted(p.name for p in stored.parent.iterdir()) == [f"{uid}.dcm"]


def test_a_body_replayed_under_another_name_is_refused(site: tuple[Path, GatewayProcess]) -> None:
    root, receiver = site
    key = read_public(root / "keys" / "receiver.pub")
    study, uid, data = instance()
    body = seal(data, Name("instance", SITE, study, uid), key)
    other_study, other_uid, _ = instance()
    with client(root) as http:
        for path, headers in (
            (f"/v1/studies/{study}/instances/{other_uid}", {}),
            (f"/v1/studies/{other_study}/instances/{uid}", {}),
            (f"/v1/studies/{study}/instances/{uid}", {"dicom_gateway_site": "OTHER"}),
        ):
            refused = put(http, receiver, path, body, key, **headers)
            assert (refused.status_code, refused.json()["reason"]) == (400, "seal-does-not-open")
        # sealed under the right name, but the DICOM inside names another instance
        wrong = seal(data, Name("instance", SITE, study, other_uid), key)
        inside = put(http, receiver, f"/v1/studies/{study}/instances/{other_uid}", wrong, key)
        assert (inside.status_code, inside.json()["reason"]) == (422, "uids-do-not-match-the-path")
    assert not (root / "received" / SITE / other_study).exists()


def test_requests_with_bad_names_digests_or_keys_are_refused(
    site: tuple[Path, GatewayProcess],
) -> None:
    root, receiver = site
    key, _, _, _, body, path = sealed_instance(root)
    with client(root) as http:
        cases = [
            (put(http, receiver, path, body, key, content_digest="sha-256=:AAAA:"), 400),
            (put(http, receiver, path, body, key, dicom_gateway_key_id="0" * 16), 400),
            (put(http, receiver, path, body, key, content_type="application/dicom"), 415),
            (put(http, receiver, "/v1/studies/..%2F..%2Fetc/instances/1.2", body, key), 404),
            (put(http, receiver, path, body, key, dicom_gateway_site="lower"), 400),
        ]
        assert [(r.status_code, expected) for r, expected in cases] == [
            (expected, expected) for _, expected in cases
        ]
        assert put(http, receiver, path, body, key).status_code == 201


def test_a_manifest_is_stored_by_version(site: tuple[Path, GatewayProcess]) -> None:
    root, receiver = site
    key = read_public(root / "keys" / "receiver.pub")
    study, uid, data = instance()
    document = {
        "version": 1,
        "study": study,
        "instances": [{"instance": uid, "sha256": hashlib.sha256(data).hexdigest()}],
    }
    plain = json.dumps(document).encode()
    path = f"/v1/studies/{study}/manifest"
    with client(root) as http:
        body = seal(plain, Name("manifest", SITE, study, "1"), key)
        stored = put(http, receiver, path, body, key, dicom_gateway_manifest_version="1")
        assert stored.status_code == 201
        as_v2 = put(http, receiver, path, body, key, dicom_gateway_manifest_version="2")
        assert (as_v2.status_code, as_v2.json()["reason"]) == (400, "seal-does-not-open")
        lying = seal(plain, Name("manifest", SITE, study, "2"), key)  # says version 1 inside
        wrong = put(http, receiver, path, lying, key, dicom_gateway_manifest_version="2")
        assert wrong.status_code == 422
    saved = root / "received" / SITE / study / "manifest-1.json"
    assert json.loads(saved.read_bytes()) == document


def test_clients_without_a_certificate_of_the_ca_are_refused(
    site: tuple[Path, GatewayProcess], tmp_path: Path
) -> None:
    root, receiver = site
    url = f"https://127.0.0.1:{receiver.port}/v1/studies/1.2/manifest"
    with client(root, certificate=False) as http, pytest.raises(httpx.TransportError):
        http.put(url, content=b"x")
    stranger_ca = devpki.make_ca("another CA")
    stranger = devpki.issue(stranger_ca, "intruder", server=False)
    devpki.write_pair(stranger, tmp_path / "i.crt", tmp_path / "i.key", write_key_file)
    context = ssl.create_default_context(cafile=str(root / "pki" / "ca.crt"))
    context.load_cert_chain(tmp_path / "i.crt", tmp_path / "i.key")
    with httpx.Client(verify=context, timeout=10) as http, pytest.raises(httpx.TransportError):
        http.put(url, content=b"x")
    assert not any((root / "received").glob("*/1.2"))
