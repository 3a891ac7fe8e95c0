"""The text detector alone on the validation set: what each view finds, and what crops could.

Figures, not a test: the evidence for issue 18's choices about the detector (which views may
go, whether a first look that sends only crops to the detector can reach its bar, which model).
Cases are those of `benchmarks/text_validation.py` (same seed, same indices, same cache). For
every greyscale case the renderer's four views (full range, brightest, darkest, faint) each go
to `finder.find` whole, as the stage reads a frame; a ground-truth box counts as found by a view
when >= 90 % of it lies under that view's boxes, each widened by the stage's margin (8 px), no
line growth, no recogniser. Printed: recall per view, of the union, the boxes only one view
finds, text-free images with more than 0.5 % covered, median ms per call (process CPU).

`--crops`: the ceiling of reading crops: each ground-truth box cut out with one text height of
context, stretched to its 1st-99th percentile, scaled to a 32-pixel text height, vertical boxes
turned both ways; found as above. A first look that sends only crops to this detector cannot
find more than this, even when it places every crop perfectly.

`--model FILE` reads another PaddleOCR DB detection model (unpinned: an experiment, never the
gateway's); `--half` normalises with 0.5/0.5 as the gateway did before 2026-12-06.

    .venv/bin/python benchmarks/text_detector.py [--text 300] [--clean 300] [--crops]
        [--model det.onnx] [--half] [--seed 18] [--cache DIR]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import pydicom

REPO = Path(__file__).resolve().parents[1]
for _path in (REPO, REPO / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import cv2  # noqa: E402
import text_validation as tv  # noqa: E402

from gateway.deidentify.pixels.ctp import Region  # noqa: E402
from gateway.deidentify.pixels.frames import iter_frames  # noqa: E402
from gateway.deidentify.pixels.models import DETECTOR, locate  # noqa: E402
from gateway.deidentify.pixels.ocr import DetectorOptions, OnnxText, check_model  # noqa: E402
from gateway.deidentify.pixels.regions import widen  # noqa: E402
from gateway.deidentify.pixels.render import Renderer  # noqa: E402
from tests.dicom_builders import part10  # noqa: E402
from tests.pixel_truth import COVERED  # noqa: E402

VIEWS = ("full", "bright", "dark", "faint")
MARGIN = 8
CROP_HEIGHT = 32


def finder(model: Path | None, half: bool) -> OnnxText:
    """The detector alone (no recogniser): the pinned model, or `model` (unpinned)."""
    options = DetectorOptions(mean=(0.5,) * 3, std=(0.5,) * 3) if half else DetectorOptions()
    if model is None:
        return OnnxText(check_model(locate(DETECTOR), DETECTOR.sha256), None, options)
    return OnnxText(model.read_bytes(), None, options)


def covered(boxes: list[Region], rows: int, columns: int) -> np.ndarray:
    mask = np.zeros((rows, columns), bool)
    for box in boxes:
        w = widen(box, MARGIN, rows, columns)
        mask[w.y : w.y + w.height, w.x : w.x + w.width] = True
    return mask


def frame_of(case: tv.Case, encoded: tv.Encoded) -> tuple[pydicom.Dataset, np.ndarray]:
    ds = pydicom.dcmread(io.BytesIO(part10(tv.dataset(case, encoded))))
    return ds, np.array(next(iter(iter_frames(ds))))


def views_run(text: OnnxText, cases: list[tuple[tv.Case, tv.Encoded]]) -> None:
    found: list[list[bool]] = []
    alarms: list[list[bool]] = []
    seconds: list[float] = []
    for case, encoded in cases:
        ds, frame = frame_of(case, encoded)
        views = Renderer(ds).views(frame)
        if len(views) != len(VIEWS):
            continue  # colour: one view
        rows, columns = frame.shape[:2]
        masks = []
        for view in views:
            start = time.process_time()
            masks.append(covered(text.find(view, (rows, columns)), rows, columns))
            seconds.append(time.process_time() - start)
        for item in case.items:
            x0, y0, x1, y1 = item.box
            found.append([bool(m[y0:y1, x0:x1].mean() >= COVERED) for m in masks])
        if not case.items:
            alarms.append([bool(m.mean() > tv.FP_SHARE) for m in masks])
    hit, alarm = np.array(found), np.array(alarms)
    print(f"greyscale: {len(hit)} boxes, {len(alarm)} text-free images")
    for i, name in enumerate(VIEWS):
        only = int((hit[:, i] & ~np.delete(hit, i, axis=1).any(axis=1)).sum())
        print(
            f"  {name:7} recall {hit[:, i].mean():.3f}  found by it alone {only:4d}"
            f"  text-free > 0.5 % covered {alarm[:, i].mean():.3f}"
        )
    print(
        f"  union   recall {hit.any(axis=1).mean():.3f}  text-free {alarm.any(axis=1).mean():.3f}"
    )
    print(f"  ms per call, median {1000 * float(np.median(seconds)):.1f}")


def stretch(crop: np.ndarray) -> np.ndarray:
    low, high = np.percentile(crop, [1, 99])
    if high - low < 4:
        low, high = float(crop.min()), float(crop.max())
    scaled = (crop.astype(np.float32) - low) * (255.0 / max(float(high - low), 1.0))
    return np.asarray(np.clip(scaled, 0, 255), dtype=np.uint8)


def crops_run(text: OnnxText, cases: list[tuple[tv.Case, tv.Encoded]]) -> None:
    found: dict[str, list[bool]] = {"all": []}
    for case, encoded in cases:
        if not case.items:
            continue
        ds, frame = frame_of(case, encoded)
        picture = Renderer(ds).views(frame)[0]  # the full view (colour: its one view)
        rows, columns = picture.shape[:2]
        for item in case.items:
            x0, y0, x1, y1 = item.box
            short = min(x1 - x0, y1 - y0)
            pad = max(short, 8)
            top, left = max(0, y0 - pad), max(0, x0 - pad)
            crop = stretch(picture[top : min(rows, y1 + pad), left : min(columns, x1 + pad)])
            scale = CROP_HEIGHT / short
            size = (max(8, round(crop.shape[1] * scale)), max(8, round(crop.shape[0] * scale)))
            crop = cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC)
            inner = np.zeros(crop.shape[:2], bool)
            inner[
                round((y0 - top) * scale) : round((y1 - top) * scale),
                round((x0 - left) * scale) : round((x1 - left) * scale),
            ] = True
            turns = [0] if x1 - x0 >= y1 - y0 else [1, 3]
            hit = False
            for k in turns:
                turned, truth = np.ascontiguousarray(np.rot90(crop, k)), np.rot90(inner, k)
                mask = covered(text.find(turned), *turned.shape[:2])
                hit |= bool(mask[truth].mean() >= COVERED)
            for key in ("all", f"{item.orientation} deg", item.contrast):
                found.setdefault(key, []).append(hit)
    print("crops of the ground-truth boxes (stretched, 32 px high, vertical turned both ways):")
    for key, hits in found.items():
        print(f"  {key:10} {np.mean(hits):.3f} of {len(hits)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text", type=int, default=300)
    parser.add_argument("--clean", type=int, default=300)
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--cache", type=Path, default=tv.DEFAULT_CACHE)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--half", action="store_true")
    parser.add_argument("--crops", action="store_true")
    args = parser.parse_args()
    cache = args.cache / f"v{tv.VERSION}"
    bases = tv.bases(cache)
    cases = [tv.make_case(bases, args.seed, True, i) for i in range(args.text)]
    cases += [tv.make_case(bases, args.seed, False, i) for i in range(args.clean)]
    text = finder(args.model, args.half)
    print(
        f"text detector alone, seed {args.seed}, {args.text} + {args.clean} cases; {time.ctime()}"
    )
    views_run(text, cases)
    if args.crops:
        crops_run(text, cases)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
