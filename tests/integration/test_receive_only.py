"""A receive-only gateway (`forward.enabled = false`, as `base_config`), shared by the module:
it is not ready and says why, its incoming queue is exported from the first scrape (so the
backlog alert can fire), and the dcmtk command lines the READMEs give store compressed files
(parsed out of README.md and deploy/README.md, so the docs and this test cannot drift)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import GatewayProcess, base_config, cli, write_config
from tests.support import dcmtk as dcmtk_tool

pytestmark = pytest.mark.timeout(120)

AE_TITLE = "DICOM_GATEWAY"  # the READMEs' called AE title
README_PORT = "11112"
#: one command per line in a ```sh block: optional VAR=value words, then a dcmtk sender
SENDER = re.compile(r"^((?:[A-Z_]+=\S+ )*)(dcmsend|storescu) (.+?)(?:\s+#.*)?$")
#: compressed transfer syntaxes a PACS sends as stored (docs/ingest.md accepts them all)
COMPRESSED = (
    "pydicom_wheel__SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline
    "pydicom_data__693_J2KR.dcm",  # JPEG 2000 lossless
    "pydicom_wheel__SC_rgb_gdcm_KY.dcm",  # JPEG 2000
    "pydicom_wheel__MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
    "pydicom_wheel__MR_small_RLE.dcm",  # RLE
)


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


def readme_senders() -> list[pytest.ParameterSet]:
    """Every dcmtk sender command line in the READMEs' shell blocks: (where, words)."""
    found = []
    for readme in (Path("README.md"), Path("deploy/README.md")):
        text = (Path(__file__).parents[2] / readme).read_text(encoding="utf-8")
        for block in re.findall(r"```sh\n(.*?)```", text, re.S):
            for line in block.splitlines():
                if SENDER.match(line.strip()):
                    where = f"{readme}: {line.strip()}"
                    found.append(pytest.param(where, shlex.split(line.split("#")[0]), id=where))
    return found


@pytest.mark.parametrize(("where", "words"), readme_senders())
def test_readme_send_commands_store_compressed_files(
    gateway: GatewayProcess,
    testdata: Path,
    dcmtk: None,
    tmp_path: Path,
    where: str,
    words: list[str],
) -> None:
    """The command as the README gives it, the port and the file or folder replaced by the
    test's: every compressed file is acknowledged with Success and waits in incoming/."""
    folder = tmp_path / "study"
    (folder / "series").mkdir(parents=True)
    files = [testdata / "transfer_syntaxes" / name for name in COMPRESSED]
    for i, source in enumerate(files):
        shutil.copy(source, (folder / "series" if i % 2 else folder) / source.name)
    env = dict(os.environ)
    while "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    inputs = [w for w in words if w.endswith(".dcm") or w.endswith("/")]
    assert inputs == words[-1:], f"{where}: one file or folder, last, expected"
    # a file: the test's files, all on one command line; a folder: the test's folder
    single = inputs[0].endswith(".dcm")
    arguments = [str(f) for f in files] if single else [str(folder)]
    assert README_PORT in words, f"{where}: the README's port"
    command = [dcmtk_tool(words[0]), *words[1:-1]]
    command[command.index(README_PORT)] = str(gateway.port)
    before = incoming(gateway)
    sent = subprocess.run(
        [*command, *arguments], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert sent.returncode == 0, f"{where}:\n{sent.stderr}"
    assert incoming(gateway) == before + len(files), f"{where}:\n{sent.stderr}"
