"""Ground truth for burned-in text: the shared `burned_in_text_gt` boxes, and how well masks
cover them. Used by the acceptance tests and by benchmarks/pixels.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gateway.deidentify.pixels.stage import Masked

#: presidio's ground truth is in its own image, padded by 25 pixels on every side
PRESIDIO_PADDING = 25
PRESIDIO_FILE = "presidio__2_ORIGINAL.dcm"
COVERED = 0.9  # share of a box's area under masks for it to count as covered
_STROKE = 64  # grey levels (of 255) from a box's outline that make a pixel a stroke


@dataclass(frozen=True)
class TextBox:
    text: str
    x0: int
    y0: int
    x1: int
    y1: int


def load(folder: Path) -> dict[Path, list[TextBox]]:
    """Every annotated file with its text boxes (keys and values), in pixel coordinates."""
    truth: dict[Path, list[TextBox]] = {}
    for path in sorted(folder.glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        if path.name == "presidio_ground_truth.json":
            pad = PRESIDIO_PADDING
            for items in document.values():
                truth[folder / PRESIDIO_FILE] = [
                    TextBox(
                        i["label"],
                        i["left"] - pad,
                        i["top"] - pad,
                        i["left"] + i["width"] - pad,
                        i["top"] + i["height"] - pad,
                    )
                    for i in items
                ]
            continue
        boxes = []
        for annotation in document["annotation"]:
            for role in ("key", "value"):
                entry = annotation.get(role) or {}
                bbox, text = entry.get("bbox"), (entry.get("text") or "").strip()
                if text and bbox and len(bbox) == 4:
                    boxes.append(TextBox(text, *(int(v) for v in bbox)))
        truth[path.with_suffix(".dcm")] = boxes
    return truth


def inside(box: TextBox, rows: int, columns: int) -> bool:
    return 0 <= box.x0 < box.x1 <= columns and 0 <= box.y0 < box.y1 <= rows


def trimmed(box: TextBox, views: list[np.ndarray]) -> TextBox:
    """The box cut to its strokes: some annotations run past the end of their text (a CT of
    the set has a one-line box 93 pixels wide over a 46-pixel word), and masking the blank
    part proves nothing. Strokes are the pixels of the box that differ from the median of its
    outline by a quarter of the range or more, in any view (`Renderer.views`, 8-bit); a box
    without any keeps its extent."""
    ink = np.zeros((box.y1 - box.y0, box.x1 - box.x0), bool)
    for view in views:
        grey = view[box.y0 : box.y1, box.x0 : box.x1].max(axis=2).astype(np.int16)
        if grey.size == 0:
            return box
        outline = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
        ink |= np.abs(grey - int(np.median(outline))) >= _STROKE
    rows, columns = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if rows.size == 0:
        return box
    return TextBox(
        box.text,
        box.x0 + int(columns[0]),
        box.y0 + int(rows[0]),
        box.x0 + int(columns[-1]) + 1,
        box.y0 + int(rows[-1]) + 1,
    )


def covered_share(box: TextBox, masked: np.ndarray) -> float:
    area = masked[box.y0 : box.y1, box.x0 : box.x1]
    return float(area.mean()) if area.size else 0.0


def words(text: str) -> list[str]:
    """The words of a ground-truth text worth looking for after masking (3+ letters/digits)."""
    return [w for w in re.findall(r"[A-Za-z0-9]+", text.upper()) if len(w) >= 3]


def letters(text: str) -> str:
    return "".join(re.findall(r"[A-Za-z0-9]+", text.upper()))


def mask_image(masked: Iterable[Masked], rows: int, columns: int, frame: int) -> np.ndarray:
    """Where the gateway says it masked frame `frame`, as a boolean picture."""
    out = np.zeros((rows, columns), dtype=bool)
    keep = np.zeros((rows, columns), dtype=bool)
    outside_regions = False
    for m in masked:
        if not m.first_frame <= frame <= m.last_frame:
            continue
        area = (slice(m.y, m.y + m.height), slice(m.x, m.x + m.width))
        if m.source == "outside-ultrasound-regions":
            keep[area] = True
            outside_regions = True
        else:
            out[area] = True
    if outside_regions:
        out |= ~keep
    return out
