"""`./dev`: `run` installs the gateway's runtime dependencies only, `check` the dev extras too,
and the `.venv/.installed` marker records which set is in, so a later `check` adds what `run`
left out. Its `ensure_venv` runs in bash in a scratch folder whose `.venv/bin/python` only
writes down what it is asked (pip is the one boundary faked: a real install takes minutes)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tests.support import REPO

DEV = (REPO / "dev").read_text(encoding="utf-8")


def ensure_venv(root: Path, want: str) -> list[str]:
    """Run `ensure_venv want` as ./dev defines it; the pip commands it ran."""
    function = re.search(r"^ensure_venv\(\) \{\n.*?^\}\n", DEV, re.S | re.M)
    assert function, "ensure_venv not found in ./dev"
    log = root / "pip.log"
    log.unlink(missing_ok=True)
    script = f"set -euo pipefail\nVENV=.venv\n{function.group(0)}ensure_venv {want}\n"
    subprocess.run(["bash", "-c", script], cwd=root, check=True, timeout=30)
    return log.read_text().splitlines() if log.exists() else []


def scratch(tmp_path: Path) -> Path:
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\necho "$*" >>{tmp_path / "pip.log"}\n')
    python.chmod(0o755)
    (tmp_path / "pyproject.toml").write_text("")
    os.utime(tmp_path / "pyproject.toml", (1_000_000_000, 1_000_000_000))
    return tmp_path


def test_run_installs_the_runtime_and_check_adds_the_dev_extras(tmp_path: Path) -> None:
    root = scratch(tmp_path)
    marker = root / ".venv" / ".installed"
    pip = "-m pip install -q"

    # 1. a fresh checkout: run installs the gateway alone, and says so in the marker
    assert ensure_venv(root, "runtime") == [f"{pip} --upgrade pip", f"{pip} -e ."]
    assert marker.read_text() == "runtime\n"
    assert ensure_venv(root, "runtime") == []

    # 2. check after run: the dev extras; then run needs nothing more
    assert ensure_venv(root, "dev") == [f"{pip} --upgrade pip", f"{pip} -e .[dev]"]
    assert marker.read_text() == "dev\n"
    assert ensure_venv(root, "runtime") == []
    assert ensure_venv(root, "dev") == []

    # 3. pyproject.toml changed: installed again
    os.utime(root / "pyproject.toml")
    assert ensure_venv(root, "dev")[-1] == f"{pip} -e .[dev]"

    # 4. a marker from before it named the set (CI's, or an older ./dev): dev was installed
    marker.write_text("")
    assert ensure_venv(root, "dev") == []


def test_each_command_asks_for_its_set() -> None:
    arms = dict(re.findall(r"^    (\w+)\)\n(.*?);;", DEV, re.S | re.M))
    assert re.findall(r"ensure_venv (\w+)", arms["run"]) == ["runtime"]
    assert re.findall(r"ensure_venv (\w+)", arms["check"]) == ["dev"]
    assert re.findall(r"ensure_venv (\w+)", arms["bench"]) == ["dev"]
    assert "echo dev >.venv/.installed" in (REPO / ".ci" / "run").read_text()
