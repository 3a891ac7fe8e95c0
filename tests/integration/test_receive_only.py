"""A receive-only gateway (`forward.enabled = false`, as `base_config`), shared by the module:
it is not ready and says why, and its incoming queue is exported from the first scrape (so
the backlog alert can fire)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support import GatewayProcess, base_config, cli, write_config

pytestmark = pytest.mark.timeout(120)

AE_TITLE = "DICOM_GATEWAY"  # the READMEs' called AE title


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("receive-only")
    config = base_config(root)
    config["ingest"]["ae_title"] = AE_TITLE
    path = write_config(root, config)
    keys = cli("keys", "--config", str(path))
    assert keys.returncode == 0, keys.stderr
    process = GatewayProcess(path, root / "gateway.log").start()
    yield process
    assert process.stop() == 0


def scrape(gateway: GatewayProcess) -> str:
    return httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics", timeout=10).text


def incoming(gateway: GatewayProcess) -> float:
    return gateway.metric("dicom_gateway_queue_depth", state="incoming")


def test_not_ready_naming_forwarding_and_incoming_exported_from_the_first_scrape(
    gateway: GatewayProcess,
) -> None:
    # 1. the first scrape (before any /readyz or health pass) has the incoming series
    first = scrape(gateway)
    assert 'dicom_gateway_queue_depth{state="incoming"}' in first
    assert 'dicom_gateway_queue_oldest_age_seconds{state="incoming"}' in first

    # 2. /readyz: 503, naming forwarding as the failing check
    answer = httpx.get(f"http://127.0.0.1:{gateway.metrics_port}/readyz", timeout=10)
    assert answer.status_code == 503
    body = answer.json()
    assert body["ready"] is False
    assert body["checks"]["forwarding"] == {"ok": False, "reason": "disabled"}
    failing = {name for name, check in body["checks"].items() if not check["ok"]}
    assert failing == {"forwarding"}
    assert gateway.metric("dicom_gateway_readiness_check", check="forwarding") == 0
    assert gateway.metric("dicom_gateway_ready") == 0
