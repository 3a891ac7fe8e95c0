"""The officer's console over real HTTPS (issue 22): who gets in and who does not, CSRF, what
a page escapes, what the audit trail records - against the console process, the running
gateway and its spool, with quarantined originals made by the gateway itself."""

from __future__ import annotations

import hashlib
import io
import os
import signal
from collections.abc import Iterator

import httpx
import numpy as np
import pydicom
import pytest

from gateway import devpki
from gateway.settings import load
from gateway.spool import Spool
from tests.console_site import OFFICER, PASSWORD, ConsoleSite, console_site, hidden
from tests.dicom_builders import greyscale, part10
from tests.pipeline_site import Site

pytestmark = pytest.mark.timeout(300)
EVIL = "<script>alert(1)</script>^Mallory"


@pytest.fixture
def held(site: Site) -> Iterator[ConsoleSite]:
    """Two synthetic originals quarantined, one named with markup."""
    folder = site.root / "send"
    folder.mkdir()
    for i, name in enumerate((EVIL, "Doe^Jane")):
        noise = np.random.default_rng(i).integers(0, 255, (2, 256, 256), np.uint8)  # 2 frames
        ds = greyscale(256, 256, noise.tobytes(), NumberOfFrames=2, PatientName=name,
                       PatientID=f"PID-{i}")  # fmt: skip
        (folder / f"{i}.dcm").write_bytes(part10(ds))
    yield from console_site(site, sorted(folder.iterdir()))


PAGES = ("/", "/quarantine", "/profile", "/conformance")


@pytest.fixture
def empty(site: Site) -> Iterator[ConsoleSite]:
    """The console beside a gateway that holds nothing (who gets in does not depend on it)."""
    yield from console_site(site, [])


def test_nothing_is_shown_before_sign_in_and_a_wrong_password_is_refused(
    empty: ConsoleSite,
) -> None:
    held = empty
    ref = "0123456789abcdef0123456789abcdef/fedcba9876543210fedcba9876543210"  # any: not asked
    with held.client() as client:
        for path in (*PAGES, f"/quarantine/{ref}", f"/quarantine/{ref}/image/original.png"):
            answer = client.get(path)
            assert (answer.status_code, answer.headers.get("location")) == (303, "/login"), path
        form = client.get("/login")
        assert form.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in form.headers["content-security-policy"]
        csrf = hidden(form.text, "csrf")
        wrong = client.post("/login", data={"csrf": csrf, "name": OFFICER, "password": "nope"})
        assert wrong.status_code == 401
        assert client.get("/").status_code == 303
        unknown = client.post("/login", data={"csrf": hidden(client.get("/login").text, "csrf"),
                                               "name": "nobody", "password": PASSWORD})  # fmt: skip
        assert unknown.status_code == 401
        no_csrf = client.post("/login", data={"name": OFFICER, "password": PASSWORD})
        assert no_csrf.status_code == 403
    refused = [e for e in held.audit() if e["event"] == "console.sign-in-refused"]
    assert [(e.get("officer"), e["reason"]) for e in refused] == [
        (OFFICER, "wrong-credential"),
        ("nobody", "wrong-credential"),
    ]


def test_five_wrong_passwords_lock_the_name_and_a_hang_up_keeps_the_lock(
    empty: ConsoleSite,
) -> None:
    held = empty
    with held.client() as client:
        for _ in range(5):
            csrf = hidden(client.get("/login").text, "csrf")
            client.post("/login", data={"csrf": csrf, "name": OFFICER, "password": "wrong"})
        os.kill(held.console.pid, signal.SIGHUP)  # a closed terminal: the console goes on
        held.console.wait_for_event("console.hangup_ignored")
        csrf = hidden(client.get("/login").text, "csrf")
        right = client.post("/login", data={"csrf": csrf, "name": OFFICER, "password": PASSWORD})
        assert right.status_code == 401  # locked, although right
    reasons = [e["reason"] for e in held.audit() if e["event"] == "console.sign-in-refused"]
    assert reasons == ["wrong-credential"] * 5 + ["locked"]


def test_a_signed_in_officer_sees_the_pages_escaped_and_acts_only_with_the_csrf_token(
    held: ConsoleSite,
) -> None:
    evil, plain = _by_name(held)
    with held.signed_in() as client:
        for path in PAGES:
            page = client.get(path)
            assert page.status_code == 200, path
            assert OFFICER in page.text
        statement = client.get("/conformance.md")
        assert statement.headers["content-type"].startswith("text/markdown")
        digest = hashlib.sha256(held.site.path.read_bytes()).hexdigest()
        assert digest in statement.text  # the statement of the very file the console runs with
        listed = client.get("/quarantine").text
        assert evil in listed
        assert plain in listed
        page = client.get(f"/quarantine/{evil}")
        assert page.status_code == 200
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text  # the name, as text
        assert "<script>" not in page.text
        view = page.text.split("original.png?view=")[1].split('"')[0]
        image = client.get(f"/quarantine/{evil}/image/original.png", params={"view": view})
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        stolen = client.get(f"/quarantine/{plain}/image/original.png", params={"view": view})
        assert stolen.status_code == 403  # a view is for the item that was viewed
        forged = client.post(f"/quarantine/{plain}/purge", data={"confirm": "yes"})
        assert forged.status_code == 403
        for token in ("x" * 43, "é" * 43):  # wrong, and not even ASCII
            wrong = client.post(
                f"/quarantine/{plain}/purge", data={"confirm": "yes", "csrf": token}
            )
            assert wrong.status_code == 403
        assert sorted(held.held()) == sorted([evil, plain])  # nothing purged
        csrf = hidden(page.text, "csrf")
        purged = client.post(f"/quarantine/{plain}/purge", data={"confirm": "yes", "csrf": csrf})
        assert (purged.status_code, purged.headers["location"]) == (303, "/quarantine?done=purged")
        assert held.held() == [evil]
        assert client.post("/logout").status_code == 403  # not without the token
        out = client.post("/logout", data={"csrf": csrf})
        assert out.status_code == 303
        assert client.get("/").status_code == 303  # the session is gone
    events = [(e["event"], e.get("officer")) for e in held.audit() if "officer" in e]
    assert events == [
        ("console.signed-in", OFFICER),
        ("console.viewed", OFFICER),
        ("instance.purged", OFFICER),
        ("console.signed-out", OFFICER),
    ]
    held.site.check_logs()
    log = (held.site.root / "console.log").read_text()
    assert "Mallory" not in log
    assert "PID-0" not in log


def _by_name(held: ConsoleSite) -> tuple[str, str]:
    """(the ref of the markup-named original, the other's), read from the spool."""
    spool = Spool.open_readonly(load(held.site.path).spool)
    named = {}
    for ref in held.held():
        study, instance = ref.split("/")
        path = held.site.root / "spool" / "quarantine" / study / f"{instance}.dgs"
        _, data = spool.read(path)
        named[str(pydicom.dcmread(io.BytesIO(data)).PatientName)] = ref
    return named[EVIL], named["Doe^Jane"]


def test_with_a_client_ca_only_its_certificates_get_a_handshake(site: Site) -> None:
    shown = next(console_site(site, [], client_ca=True))
    pki = site.root / "pki"
    officer = (pki / "officer-ca-officer.crt", pki / "officer-ca-officer.key")
    with shown.client(cert=officer) as client:
        assert client.get("/login").status_code == 200
    stranger_ca = devpki.make_ca("not the officers' CA")
    stranger = devpki.issue(stranger_ca, "someone", server=False)
    (pki / "stranger.crt").write_bytes(devpki.certificate_pem(stranger))
    (pki / "stranger.key").write_bytes(devpki.key_pem(stranger))
    for cert in ((pki / "stranger.crt", pki / "stranger.key"), None):
        options = {"cert": cert} if cert else {}
        with shown.client(**options) as client, pytest.raises(httpx.TransportError):
            client.get("/login")  # TLS 1.3: refused after the client's half of the handshake
