"""Synthetic burned-in text on real images is masked, and text-free images are left alone.

The fixed `--sample` part of benchmarks/text_validation.py (60 images with text, 60 without;
vertical and faint text among them) goes through a real worker - header engine, pixel stage
with the gateway's detector, re-encoding, release check - exactly as the benchmark runs the
full set; the figures come from its `--json`. The bars are the project's (a ground-truth box
counts as found when >= 90 % of it is masked: tests/pixel_truth.py) and hold for every
orientation and contrast, not only on average: a detector that misses vertical or faint text
fails here. Measured on the detector of 2026-12 (seed 18): see docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(900)
Figures = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "text_validation.py"
SEED = 18
#: Share of ground-truth boxes masked, overall and per orientation and per contrast.
MIN_RECALL = 0.98
#: Text-free images with more than 0.5 % of their area masked, at most this share of them.
MAX_FALSE_ALARMS = 0.05
#: Masked share of the area outside the ground-truth boxes of a text image (median).
MAX_OUTSIDE_MEDIAN = 0.02


@pytest.fixture(scope="module")
def figures(testdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Figures:
    folder = tmp_path_factory.mktemp("text-validation")
    out = folder / "figures.json"
    command = [sys.executable, str(SCRIPT), "measure", "--sample", "--seed", str(SEED)]
    command += ["--cache", str(folder / "cache"), "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=850, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    figures: Figures = json.loads(out.read_text(encoding="utf-8"))
    return figures


def test_the_sample_is_what_it_claims(figures: Figures) -> None:
    """60 + 60 images, every orientation and contrast present, every image processed."""
    assert figures["images"] == {"text": 60, "clean": 60}
    assert figures["status"] == {"written": 120}
    boxes = figures["whole"]["boxes"]
    assert set(boxes["orientation"]) == {"0", "90", "180", "270"}
    assert set(boxes["contrast"]) == {
        "white",
        "black",
        "mid-grey",
        "faint-12",
        "faint-16",
        "faint-24",
    }


def test_text_is_masked_in_every_orientation_and_contrast(figures: Figures) -> None:
    recall = figures["whole"]["recall"]
    cells = {
        f"{by}={key}": value
        for by in ("all", "orientation", "contrast")
        for key, value in recall[by].items()
    }
    short = {cell: round(value, 3) for cell, value in cells.items() if value < MIN_RECALL}
    assert short == {}, f"box recall below {MIN_RECALL}: {short}"


def test_text_free_images_are_left_alone(figures: Figures) -> None:
    whole = figures["whole"]
    alarms = whole["clean_images_over"] / figures["images"]["clean"]
    assert alarms <= MAX_FALSE_ALARMS, (whole["clean_images_over"], whole["clean_masked_p95"])


def test_masks_stay_near_the_text(figures: Figures) -> None:
    outside = figures["whole"]["text_outside_median"]
    assert outside <= MAX_OUTSIDE_MEDIAN, outside
