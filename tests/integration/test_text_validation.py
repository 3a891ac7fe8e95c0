"""Synthetic burned-in text on real images is masked, and text-free images are left alone.

The fixed `--sample` part of benchmarks/text_validation.py (60 images with text, 60 without;
vertical and faint text among them) goes through a real worker - header engine, pixel stage
with the gateway's detector, re-encoding, release check - exactly as the benchmark runs the
full set; the figures come from its `--json`. A ground-truth box counts as found when >= 90 %
of it is masked (tests/pixel_truth.py). The bars hold for every orientation and contrast, not
only on average; today they are floors (below), not yet the targets of issue 18.
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
# FLOORS, not targets: what the pixel stage measures on this sample, rounded down, so that
# nothing falls back. 2026-12-06 (issue 17: vertical lines masked unread, the faint-text view):
# recall 0.531; 0: 0.743, 90: 0.408, 180: 0.824, 270: 0.286; contrast 0.278 (faint-16) to
# 0.750 (white); 6 of 60 text-free images over 0.5 % masked; outside the text median 0.042.
# Then the detector's input normalised as its models were trained (PaddleOCR's ImageNet mean
# and std per channel, not 0.5/0.5): recall 0.589; 0: 0.800, 90: 0.510, 180: 0.765, 270:
# 0.339; faint-16 0.333 to black 0.778; but 8 of 60 text-free images over 0.5 % and 0.060
# outside the text - the price of finding more, accepted (a box threshold of 0.6 brings the
# false alarms back to 1 of 60 but, like 0.55, loses a box of the shared ground truth). Issue 18's
# Then boxes read turned a quarter either way as well as upright before one may stay: recall
# 0.620 (90: 0.571, 270: 0.393), false alarms unchanged (8 of 60), outside the text 0.080 (more
# boxes of text images masked: where, not measured). Then PP-OCRv6 tiny for PP-OCRv5 mobile
# (box threshold 0.4, lines grown by up to 4 heights; 3.2x less CPU per image): recall 0.745;
# 0: 0.871, 90: 0.694, 180: 0.882, 270: 0.589; faint-16 0.389 to white 0.925; 3 of 60
# text-free images over 0.5 %; outside the text 0.107 (0.096 with 3 heights, which leaves a
# shared ground-truth box 0.89 covered). Then the faint view read turned a quarter as well:
# recall 0.766 (90: 0.735, 270: 0.625; faint-16 0.444), false alarms unchanged (3 of 60),
# outside the text 0.114. Then the text map (pixels/textmap.py: regions the detector missed,
# masked when the recogniser reads two or more characters there): recall 0.818; 0: 0.871, 90:
# 0.796, 180: 0.882, 270: 0.750; faint-16 0.556 to white 0.925; false alarms unchanged (3 of
# 60); outside the text 0.117. Then a map region read as text grown along its line (its
# strokes, while ink goes on): recall 0.839; 0: 0.871, 90: 0.837, 180: 0.882, 270: 0.786;
# faint-16 0.667 to white 0.925; false alarms unchanged (3 of 60); outside the text 0.117.
# Then a map region read as one letter or digit with confidence 0.97 masked as well (not a
# site's marker): recall 0.849 (0: 0.886, 180: 0.941), false alarms unchanged, outside 0.117.
# Then a map region of a line's thickness the map is all but sure of (0.995) masked unread,
# itself only: recall 0.854, false alarms 4 of 60, outside the text 0.120 (--limit 200: 0.820
# -> 0.832, 23 -> 24 of 200 text-free images, outside 0.127 -> 0.126): the bars on false
# alarms and area keep one image's and 0.005's room. Then a short detector box (up to two
# heights wide) in which nothing is legible stays, not only one under 1.5 heights, and a box
# under 5 pixels both ways stays however it reads: recall the same (0.854), false alarms 2 of
# 60, outside the text 0.117 (--limit 400: recall 0.823 -> 0.822, 46 -> 29 of 400 text-free
# images over 0.5 %).
# Issue 18's targets are recall >= 0.995 in every cell and no text-free image over 0.5 %.
#: Share of ground-truth boxes masked: overall, and in every orientation and contrast.
MIN_RECALL_OVERALL = 0.84
MIN_RECALL = 0.6  # faint-16: 12 of 18 boxes; one may flip on another CPU
#: Text-free images with more than 0.5 % of their area masked, at most this share of them.
MAX_FALSE_ALARMS = 0.05  # 3 of 60
#: Masked share of the area outside the ground-truth boxes of a text image (median).
MAX_OUTSIDE_MEDIAN = 0.122


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
    assert recall["all"]["all"] >= MIN_RECALL_OVERALL, recall["all"]


def test_text_free_images_are_left_alone(figures: Figures) -> None:
    whole = figures["whole"]
    alarms = whole["clean_images_over"] / figures["images"]["clean"]
    assert alarms <= MAX_FALSE_ALARMS, (whole["clean_images_over"], whole["clean_masked_p95"])


def test_masks_stay_near_the_text(figures: Figures) -> None:
    outside = figures["whole"]["text_outside_median"]
    assert outside <= MAX_OUTSIDE_MEDIAN, outside
