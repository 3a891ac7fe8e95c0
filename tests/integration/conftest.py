"""Fixtures for the integration tests: `site` (keys, reference receiver, gateway: see
tests/pipeline_site.py), `orthanc` (tests/orthanc.py), and `channel` and `way` for the way
back (tests/results_way.py), and `deidentified_corpus`: one `dicom-gateway deidentify` run
over the shared material for the session (tests/deidentified_corpus.py)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.deidentified_corpus import deidentified_corpus
from tests.orthanc import Orthanc, orthanc_binary
from tests.pipeline_site import site
from tests.results_way import channel, way

__all__ = ["channel", "deidentified_corpus", "orthanc", "site", "way"]


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """An Orthanc to start once the gateway's port is known; stopped by PID at teardown.

    Its folder is below the test's, out of `Site.check_logs`'s reach (top-level *.log only):
    the PACS is allowed to log the patients it holds.
    """
    if orthanc_binary() is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc, in .ci/debian-packages)")
    pacs = Orthanc(tmp_path / "orthanc")
    yield pacs
    pacs.stop()
