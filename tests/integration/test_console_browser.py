"""The officer's console in a real browser (issue 22): Debian's chromium, headless, driven by
Selenium through Debian's chromium-driver. An officer signs in, opens the overview and a
quarantined ultrasound, sees the original and the de-identified image (checked: both decode,
and they differ inside the masked regions and not far outside them), releases one item and
purges another; the audit trail names the officer for both. Screenshots of every page are
saved under the test's folder (or `$DICOM_GATEWAY_SCREENSHOTS`).

Chromium trusts the console's development certificate by its SPKI hash only
(`--ignore-certificate-errors-spki-list`), not every certificate.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.console_site import OFFICER, PASSWORD, ConsoleSite, console_site
from tests.pipeline_site import Site, wait_for
from tests.support import shared_dir

selenium = pytest.importorskip("selenium", reason="selenium is a dev dependency")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.timeout(600)
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ULTRASOUND = ("pydicom_data__US1_UNCR.dcm", "deid_data__RGB_IMAGE.dcm")


@pytest.fixture
def held(site: Site) -> Iterator[ConsoleSite]:
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("chromium and chromium-driver (Debian packages, .ci/debian-packages)")
    folder = shared_dir() / "testdata" / "dicom" / "ultrasound"
    files = [folder / name for name in ULTRASOUND]
    if not all(f.is_file() for f in files):
        pytest.skip(f"the shared ultrasound files are absent ({folder})")
    send = site.root / "send"
    send.mkdir()
    yield from console_site(site, [Path(shutil.copy(f, send)) for f in files])


@pytest.fixture
def browser(held: ConsoleSite, tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--no-first-run", "--disable-background-networking", "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path / 'chromium'}",
                 f"--ignore-certificate-errors-spki-list={_spki(held)}"):  # fmt: skip
        options.add_argument(flag)
    # beside the browser's profile, out of `Site.check_logs`'s reach: it may hold what pages show
    log = tmp_path / "chromium" / "chromedriver.log"
    log.parent.mkdir()
    service = Service(executable_path=str(DRIVER), log_output=str(log))
    driver = webdriver.Chrome(service=service, options=options)  # chromedriver: its own PID
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()  # ends chromium, then stops chromedriver by its process handle


def _spki(held: ConsoleSite) -> str:
    pem = (held.site.root / "pki" / "console.crt").read_bytes()
    key = x509.load_pem_x509_certificate(pem).public_key()
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return base64.b64encode(digest.finalize()).decode("ascii")


def test_an_officer_looks_releases_and_purges_in_a_browser(
    held: ConsoleSite, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("DICOM_GATEWAY_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    browser.get(held.url + "/")
    assert browser.current_url.endswith("/login")
    browser.find_element(By.ID, "name").send_keys(OFFICER)
    browser.find_element(By.ID, "password").send_keys(PASSWORD)
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.ID, "officer"))
    assert browser.find_element(By.ID, "officer").text == OFFICER
    assert browser.find_element(By.ID, "queues").is_displayed()
    browser.save_screenshot(str(shots / "1-overview.png"))

    browser.get(held.url + "/quarantine")
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.held-item")
    assert len(rows) == len(ULTRASOUND)
    browser.save_screenshot(str(shots / "2-quarantine.png"))
    first, second = sorted(r.get_attribute("data-ref") or "" for r in rows)

    browser.get(f"{held.url}/quarantine/{first}")
    wait_for(lambda: _loaded(browser, "original") and _loaded(browser, "output"), 60, "images")
    browser.save_screenshot(str(shots / "3-item.png"))
    original, output = (_image(held, browser, which) for which in ("original", "output"))
    assert original.shape == output.shape
    inside = _masked(browser, original.shape)
    assert inside.any(), "the ultrasound has burned-in text: something is masked"
    diff = np.abs(original.astype(int) - output.astype(int)).max(axis=2)
    changed = diff > 40
    assert changed[inside].sum() > 100  # the text is gone where masked ...
    near = cv2.dilate(inside.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert changed[~near].sum() == 0  # ... and nothing changed away from the masks

    browser.find_element(By.CSS_SELECTOR, "#release input[name=confirm]").click()
    browser.find_element(By.CSS_SELECTOR, "#release button").click()
    assert _done(browser).startswith("Released")
    browser.get(f"{held.url}/quarantine/{second}")
    browser.find_element(By.CSS_SELECTOR, "#purge input[name=confirm]").click()
    browser.find_element(By.CSS_SELECTOR, "#purge button").click()
    assert _done(browser).startswith("Purged")
    browser.save_screenshot(str(shots / "4-after.png"))
    assert held.held() == []

    acted = {(e["event"], e["instance_id"]) for e in held.audit() if e.get("officer") == OFFICER
             and e["event"] in ("instance.released", "instance.purged")}  # fmt: skip
    assert acted == {("instance.released", first.split("/")[1]),
                     ("instance.purged", second.split("/")[1])}  # fmt: skip
    wait_for(lambda: len(held.site.stored()) == 1, 120, "the released one delivered")
    for shot in shots.iterdir():
        assert cv2.imread(str(shot)) is not None


def _done(browser: webdriver.Chrome) -> str:
    """The quarantine page's note once the action's redirect has landed there (the click
    returns before the browser has the next page)."""
    WebDriverWait(browser, 120).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#done, #problem"))
    found = browser.find_elements(By.ID, "done")
    assert found, browser.find_element(By.TAG_NAME, "main").text
    return str(found[0].text)


def _loaded(browser: webdriver.Chrome, element: str) -> bool:
    width = browser.execute_script(
        f"const i = document.getElementById('{element}'); return i && i.complete && i.naturalWidth"
    )
    return bool(width)


def _image(held: ConsoleSite, browser: webdriver.Chrome, element: str) -> np.ndarray:
    """The image the page shows, fetched again with the browser's session cookie."""
    src = browser.find_element(By.ID, element).get_attribute("src") or ""
    cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
    with held.client(cookies=cookies) as client:
        answer = client.get(src.removeprefix(held.url))
    assert answer.status_code == 200
    image = cv2.imdecode(np.frombuffer(answer.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, f"{element} does not decode"
    return image


def _masked(browser: webdriver.Chrome, shape: tuple[int, ...]) -> np.ndarray:
    """Where the page says the gateway masked, in the thumbnail's pixels: each rectangle it
    lists, and everything outside the ultrasound regions it kept (`outside-ultrasound-
    regions`: those rectangles are what stayed)."""
    table = browser.find_element(By.ID, "masked")
    width = int(table.get_attribute("data-columns") or 0)
    scale = shape[1] / width if width else 1.0
    masked = np.zeros(shape[:2], bool)
    kept = np.zeros(shape[:2], bool)
    for row in browser.find_elements(By.CSS_SELECTOR, "#masked tr.region"):
        x, y, w, h = (int(row.get_attribute(f"data-{k}") or 0) for k in "xywh")
        box = (
            slice(int(y * scale), int((y + h) * scale)),
            slice(int(x * scale), int((x + w) * scale)),
        )
        if row.get_attribute("data-source") == "outside-ultrasound-regions":
            kept[box] = True
        else:
            masked[box] = True
    if kept.any():
        masked |= ~kept
    return masked
