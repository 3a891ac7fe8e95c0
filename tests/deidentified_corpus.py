"""One `dicom-gateway deidentify` run over the whole shared test material, for the session.

tests/integration/test_deidentify.py (issue 4) and tests/integration/test_valid_dicom.py
(issue 16) both check the outputs of the same command over the same folder with the same site
config: the run (about a minute) is made once, by the first test that asks for it, and read
by both. Nothing writes to its outputs or report; a test that runs the command again (with the
same vault or a fresh one) writes below its own tmp_path.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.support import base_config, cli, make_keys, write_config

AE_TITLE = "GATEWAY_UT"


@dataclass(frozen=True)
class Run:
    config: Path
    report: dict[str, Any]

    def written(self) -> Iterator[tuple[Path, Path]]:
        for f in self.report["files"]:
            if f["status"] == "written":
                yield Path(f["input"]), Path(f["output"])

    def unique(self) -> Iterator[tuple[Path, Path]]:
        """Written pairs whose output no other input wrote too (inputs that share a SOP
        Instance UID are one instance: the first one read is written, later ones not)."""
        pairs = list(self.written())
        outputs = Counter(o for _, o in pairs)
        return ((i, o) for i, o in pairs if outputs[o] == 1)

    def output_of(self, name: str) -> Dataset:
        found = [o for i, o in self.written() if i.name == name]
        assert len(found) == 1, f"{name} was not written exactly once"
        return read(found[0])


def read(path: Path) -> Dataset:
    """Read and decode every value (the shared material has files with odd values: their
    warnings are not what these tests are about)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        for elem in ds.iterall():
            _ = elem.value
    return ds


def site(root: Path) -> Path:
    config = base_config(root)
    config["ingest"]["ae_title"] = AE_TITLE
    config["deidentify"] = {"site_code": "UT"}
    path = write_config(root, config)
    make_keys(path)
    return path


def deidentify(config: Path, inputs: Path, out: Path) -> dict[str, Any]:
    report = out / "report.json"
    done = cli(
        "deidentify",
        str(inputs),
        "--config",
        str(config),
        "--out",
        str(out / "files"),
        "--report",
        str(report),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    loaded: dict[str, Any] = json.loads(report.read_text())
    return loaded


@pytest.fixture(scope="session")
def deidentified_corpus(testdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The real command over every file of the shared material, once per session."""
    root = tmp_path_factory.mktemp("deidentified-corpus")
    config = site(root)
    return Run(config, deidentify(config, testdata, root / "out"))
