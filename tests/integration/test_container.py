"""The image as it ships: built from the Dockerfile, started as its own non-root user with a
read-only root filesystem, /tmp on tmpfs and the spool on a volume; healthy by its own
HEALTHCHECK; serving /metrics and /readyz; exit status 0 after `docker stop` (SIGTERM).

Needs a Docker engine (`docker info`); skipped without one.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import REPO

CONFIG = """
[ingest]
host = "0.0.0.0"
port = 11112

[[ingest.peers]]
name = "test"
ae_title = "STORESCU"

[spool]
directory = "/var/lib/dicom-gateway/spool"
master_key = { file = "/var/lib/dicom-gateway/keys/spool-master.key" }
min_free_mib = 0

[vault]
path = "/var/lib/dicom-gateway/vault/vault.sqlite3"
key = { file = "/var/lib/dicom-gateway/keys/vault.key" }

[metrics]
host = "0.0.0.0"
port = 9108
"""


def docker(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    if shutil.which("docker") is None:
        pytest.skip("docker is not installed")
    info = docker("info", timeout=30)
    if info.returncode != 0:
        lines = info.stderr.strip().splitlines() or ["docker info failed"]
        pytest.skip(f"no Docker engine: {lines[-1]}")
    tag = f"dicom-gateway:test-{secrets.token_hex(4)}"
    built = docker("build", "--tag", tag, str(REPO), timeout=1500)
    assert built.returncode == 0, built.stderr[-5000:]
    yield tag
    docker("image", "rm", "--force", tag)


@pytest.fixture
def volume(image: str) -> Iterator[str]:
    name = f"dicom-gateway-test-{secrets.token_hex(4)}"
    assert docker("volume", "create", name).returncode == 0
    yield name
    docker("volume", "rm", "--force", name)


def _state(container: str, field: str) -> str:
    return docker("inspect", "--format", "{{" + field + "}}", container).stdout.strip()


def _wait_healthy(container: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = _state(container, ".State.Health.Status")
        if status in ("healthy", "unhealthy"):
            break
        time.sleep(1.0)
    return status


@pytest.mark.timeout(1800)
def test_image_runs_non_root_on_a_read_only_root_filesystem(
    image: str, volume: str, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG)
    config.chmod(0o644)
    mounts = [
        "--read-only", "--tmpfs", "/tmp",
        "--volume", f"{volume}:/var/lib/dicom-gateway",
        "--volume", f"{config}:/etc/dicom-gateway/gateway.toml:ro",
    ]  # fmt: skip

    # 1. the image's user is not root, and `keys` works as that user on the volume
    assert _state(image, ".Config.User") == "dicom-gateway"
    keys = docker(
        "run", "--rm", *mounts, image, "keys", "--config", "/etc/dicom-gateway/gateway.toml"
    )
    assert keys.returncode == 0, keys.stderr

    # 2. the default command starts and the HEALTHCHECK (sped up, same command) turns healthy
    name = f"dicom-gateway-test-{secrets.token_hex(4)}"
    started = docker(
        "run", "--detach", "--name", name, *mounts,
        "--health-interval", "2s", "--health-start-period", "60s",
        "--publish", "127.0.0.1::9108", image,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        assert _wait_healthy(name, timeout=120.0) == "healthy", docker("logs", name).stderr
        assert docker("exec", name, "id", "-u").stdout.strip() == "10001"
        assert _state(name, ".HostConfig.ReadonlyRootfs") == "true"
        assert docker("exec", name, "touch", "/tmp/x").returncode == 0

        # 3. metrics and readiness from the host, through the published port
        port = docker("port", name, "9108").stdout.split()[0].rsplit(":", 1)[1]
        base = f"http://127.0.0.1:{port}"
        assert "dicom_gateway_build_info" in httpx.get(f"{base}/metrics", timeout=5).text
        ready = httpx.get(f"{base}/readyz", timeout=5)  # CONFIG receives only: not ready
        assert ready.status_code == 503
        assert ready.json()["checks"]["forwarding"] == {"ok": False, "reason": "disabled"}

        # 4. SIGTERM: drains and exits 0 well within the stop timeout
        stopped = docker("stop", "--time", "60", name, timeout=90)
        assert stopped.returncode == 0, stopped.stderr
        assert _state(name, ".State.ExitCode") == "0", docker("logs", name).stderr
    finally:
        docker("rm", "--force", name)
