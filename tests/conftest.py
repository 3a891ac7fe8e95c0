"""Fixtures: the shared test material, and the gateway as a real process on loopback.

Every gateway started through `gateway_factory` has its whole log checked at teardown for the
patient names and IDs of every file in the shared test material: no PHI in any log line.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling

from gateway.vault.sqlite import SqliteVault
from tests.postgres import PostgresServer, binaries
from tests.support import (
    GatewayProcess,
    base_config,
    iter_phi_values,
    make_keys,
    shared_dir,
    write_config,
)
from tests.support import dcmtk as dcmtk_tool

DICOM = shared_dir() / "testdata" / "dicom"

# `./dev check` runs the whole suite as two pytest-xdist workers (`-n 2`), one group each.
# "in-process": tests that run the gateway's code inside the test process or as one short
# command - unit tests, and the pixel, text and offline de-identification tests, CPU-bound on
# one core (onnxruntime runs one thread). "daemons": everything else - gateways, receivers,
# Orthanc, PostgreSQL, a browser, kills and timeouts - in file order on the other worker, as
# when the suite ran alone, so no two of those run at once. A new integration file goes with
# the daemons unless it is listed here.
IN_PROCESS = (
    "tests/unit/",
    "tests/integration/test_conformance.py",
    "tests/integration/test_deidentify.py",
    "tests/integration/test_deidentify_objects.py",
    "tests/integration/test_pixel_frames.py",
    "tests/integration/test_pixel_orientation.py",
    "tests/integration/test_pixel_regions.py",
    "tests/integration/test_pixel_stage.py",
    "tests/integration/test_pixel_text.py",
    "tests/integration/test_reidentify.py",
    "tests/integration/test_review_preview.py",
    "tests/integration/test_text_validation.py",
    "tests/integration/test_valid_dicom.py",
)


class TwoGroups(LoadScopeScheduling):
    """Each worker gets one of the two groups whole (pytest-xdist gives every worker one unit
    of work first; there are two units). Its `xdist_group` mark would do the same, but
    xdist 3.8 cannot rename test ids under pytest 9.2, which `--dist loadgroup` relies on."""

    def _split_scope(self, nodeid: str) -> str:
        return "in-process" if nodeid.startswith(IN_PROCESS) else "daemons"


@pytest.hookimpl(optionalhook=True)  # a run with -p no:xdist has no such hook
def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> TwoGroups:
    return TwoGroups(config, log)


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not DICOM.is_dir():
        pytest.skip(f"shared DICOM test material not found at {DICOM}")
    return DICOM


@pytest.fixture(scope="session")
def phi_values() -> frozenset[str]:
    if not DICOM.is_dir():
        return frozenset()
    return frozenset(iter_phi_values(sorted(DICOM.rglob("*.dcm"))))


@pytest.fixture(scope="session")
def dcmtk() -> None:
    try:
        dcmtk_tool("storescu")
    except FileNotFoundError:
        pytest.fail(
            "dcmtk is not installed (.ci/debian-packages lists it; ./dev check installs it)"
        )


GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture
def gateway_factory(tmp_path: Path, phi_values: frozenset[str]) -> Iterator[GatewayFactory]:
    """Start gateways with `base_config` changed by `edit(config)`; stopped by PID at the end."""
    started: list[GatewayProcess] = []

    def start(edit: Callable[[dict[str, Any]], None] | None = None, **popen: Any) -> GatewayProcess:
        config = base_config(tmp_path)
        if edit is not None:
            edit(config)
        path = write_config(tmp_path, config)
        make_keys(path)
        gw = GatewayProcess(path, tmp_path / f"gateway-{len(started)}.log")
        started.append(gw)
        return gw.start(**popen)

    yield start
    for gw in started:
        gw.stop()
    logged = "\n".join(line for gw in started for line in gw.lines)
    leaked = sorted(value for value in phi_values if value in logged)
    assert not leaked, f"patient names or IDs in gateway logs: {leaked}"


@pytest.fixture
def gateway(gateway_factory: GatewayFactory) -> GatewayProcess:
    return gateway_factory()


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[SqliteVault]:
    """A real vault (SQLite, WAL) in the test's folder."""
    v = SqliteVault(tmp_path / "vault.sqlite3", b"v" * 32)
    yield v
    v.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (loopback); each test takes a database."""
    bindir = binaries()
    if bindir is None:
        pytest.fail("PostgreSQL is not installed (.ci/debian-packages lists it)")
    server = PostgresServer(bindir)
    server.start()
    yield server
    server.remove()


@pytest.fixture
def postgres_db(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's server, owned by the gateway's role."""
    name = f"vault_{secrets.token_hex(6)}"
    postgres_server.create_database(name)
    return name
