"""Burned-in text benchmark: detection speed on one core, recall and precision, peak memory.

Figures, not a test (the acceptance tests assert behaviour). One process pinned to CPU 0, the
detector single-threaded, as in a worker. Printed side by side with the baseline of the same
run: the same detector reading every frame whole (no reuse of unchanged areas).

- ultrasound 640x480: one RGB frame (US1) read `--repeat` times: frames/s;
- the 120-frame YBR cine (640x480, JPEG): frames/s with the gateway's reuse of unchanged
  areas, and the baseline reading every frame whole;
- a 2128x2000 DX and a 512x512 CT: seconds per image (every view of greyscale: render.py);
- `burned_in_text_gt`: recall of the masks (>= 90 % of a ground-truth box masked), and of the
  detector's own boxes recall and precision at IoU 0.5 and the share of them touching
  ground-truth text (the detector returns grown lines, the ground truth splits "Name:" from
  its value, so IoU undercounts both ways; text the ground truth does not annotate - markers,
  scanner labels - counts against precision); the same with every image scaled up 2.5x (a stand-in
  for 2k DX/CR with text, which the shared material lacks);
- peak RSS of this process (VmHWM).

    .venv/bin/python benchmarks/pixels.py [--repeat 20] [--cine]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gateway.deidentify.engine import Engine  # noqa: E402
from gateway.deidentify.pixels.ctp import Region  # noqa: E402
from gateway.deidentify.pixels.frames import iter_frames  # noqa: E402
from gateway.deidentify.pixels.models import load_finder  # noqa: E402
from gateway.deidentify.pixels.render import Renderer  # noqa: E402
from gateway.deidentify.pixels.stage import PixelStage  # noqa: E402
from gateway.settings import DeidentifySettings, PixelSettings  # noqa: E402
from gateway.vault.sqlite import SqliteVault  # noqa: E402
from tests.pixel_truth import (  # noqa: E402
    COVERED,
    TextBox,
    covered_share,
    inside,
    load,
    mask_image,
    trimmed,
)

DICOM = REPO.parent / "shared" / "testdata" / "dicom"
US_FRAME = DICOM / "ultrasound" / "pydicom_data__US1_UNCR.dcm"
CINE = DICOM / "ultrasound" / "pydicom_data__color3d_jpeg_baseline.dcm"
DX = DICOM / "modalities_misc" / "pylibjpeg_data__966_fixed.dcm"
CT = DICOM / "private_tags" / "orthanc_tests__2019-06-17-VedranZdesic.dcm"
SCALE = 2.5


def loaded(path: Path, engine: Engine) -> tuple[Dataset, str]:
    data = path.read_bytes()
    ds = engine.read(data)
    return ds, engine.load_pixels(ds, data)


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def detect_all(stage: PixelStage, ds: Dataset, reuse: bool) -> int:
    """The detection pass over every frame; the number of frames read. Each call is a new
    image: what the stage remembers of the series from the call before is forgotten (the same
    image again would be read only where it differs from itself: nowhere)."""
    stage._series.clear()
    frames = 0
    if reuse:
        frames = sum(1 for _ in stage._detect(ds, None, float("inf")))
    else:
        renderer = Renderer(ds)
        for frame in iter_frames(ds):
            rows, columns = frame.shape[:2]
            stage.reader.boxes(renderer, frame, Region(0, 0, columns, rows), None)
            frames += 1
    stage.finder.settle()  # as `PixelStage.clean` does after each image
    return frames


def scaled(path: Path, boxes: list[TextBox]) -> tuple[bytes, list[TextBox]]:
    """The image scaled up 2.5x (cubic), as a new single-frame file, with its boxes."""
    ds = pydicom.dcmread(path)
    frame = next(iter_frames(ds))
    big = cv2.resize(frame, None, fx=SCALE, fy=SCALE, interpolation=cv2.INTER_CUBIC)
    ds.Rows, ds.Columns = big.shape[:2]
    ds.PixelData = np.ascontiguousarray(big.astype(frame.dtype)).tobytes()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    grown = [TextBox(b.text, *(round(v * SCALE) for v in (b.x0, b.y0, b.x1, b.y1))) for b in boxes]
    return out.getvalue(), grown


def score(
    stage: PixelStage, engine: Engine, items: list[tuple[bytes, list[TextBox]]]
) -> tuple[str, float]:
    """Recall of the masks (a box counts when >= 90 % of it is masked), and recall and
    precision of the detector's own boxes (before margins) at IoU 0.5 and by overlap."""
    covered = total = matched_gt = matched_det = inked = detections = strokes = outside = 0
    seconds = 0.0
    for data, boxes in items:
        ds = engine.read(data)
        syntax = engine.load_pixels(ds, data)
        start = time.perf_counter()
        outcome = stage.clean(ds, syntax)
        seconds += time.perf_counter() - start
        rows, columns = int(ds.Rows), int(ds.Columns)
        masked = mask_image(outcome.masked, rows, columns, 0)
        boxes = [b for b in boxes if inside(b, rows, columns)]
        total += len(boxes)
        covered += sum(covered_share(b, masked) >= COVERED for b in boxes)
        frame = next(iter_frames(ds))
        views = Renderer(ds).views(frame)
        strokes += sum(covered_share(trimmed(b, views), masked) >= COVERED for b in boxes)
        raw = [
            box
            for view in Renderer(ds).views(frame)
            for box in stage.reader.finder.find(view, (rows, columns))
        ]
        truth = np.zeros((rows, columns), dtype=bool)
        for b in boxes:
            truth[b.y0 : b.y1, b.x0 : b.x1] = True
        outside += int((masked & ~truth).sum())
        detections += len(raw)
        matched_gt += sum(any(_iou(b, r) >= 0.5 for r in raw) for b in boxes)
        matched_det += sum(any(_iou(b, r) >= 0.5 for b in boxes) for r in raw)
        inked += sum(bool(truth[r.y : r.y + r.height, r.x : r.x + r.width].any()) for r in raw)
    line = (
        f"mask recall {covered}/{total} = {covered / total:.3f} (boxes trimmed to their strokes:"
        f" {strokes}/{total}); masked outside ground-truth boxes {outside} px; "
        f"detector boxes at IoU>=0.5: "
        f"recall {matched_gt}/{total} = {matched_gt / total:.3f}, precision "
        f"{matched_det}/{detections} = {matched_det / max(detections, 1):.3f}; boxes touching "
        f"ground-truth text {inked}/{detections} = {inked / max(detections, 1):.3f}; "
        f"{seconds / len(items):.2f} s/image"
    )
    return line, covered / total


def _iou(b: TextBox, r: Region) -> float:
    x0, y0, x1, y1 = r.x, r.y, r.x + r.width, r.y + r.height
    ix = max(0, min(b.x1, x1) - max(b.x0, x0))
    iy = max(0, min(b.y1, y1) - max(b.y0, y0))
    inter = ix * iy
    union = (b.x1 - b.x0) * (b.y1 - b.y0) + (x1 - x0) * (y1 - y0) - inter
    return inter / union if union else 0.0


def peak_rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    found = re.search(r"VmHWM:\s+(\d+)", status)
    return int(found.group(1)) / 1024 if found else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--cine", action="store_true", help="the cine's figures only")
    args = parser.parse_args()
    if not DICOM.is_dir():
        sys.exit(f"shared test material not found at {DICOM}")
    os.sched_setaffinity(0, {0})
    with tempfile.TemporaryDirectory() as tmp:
        vault = SqliteVault(Path(tmp) / "vault.sqlite3", os.urandom(32), durable=False)
        engine = Engine(DeidentifySettings(), vault, ae_title="BENCH")
        finder = load_finder()
        stage = PixelStage(PixelSettings(), (), finder)
        print(f"pixels benchmark: one core (CPU 0), onnxruntime single-threaded; {time.ctime()}")

        ds, _ = loaded(US_FRAME, engine)
        seconds = timed(partial(detect_all, stage, ds, True), args.repeat)
        print(
            f"US 640x480 RGB, one frame:      {1 / seconds:6.1f} frames/s ({seconds * 1000:.0f} ms)"
        )

        ds, _ = loaded(CINE, engine)
        for label, reuse in (("gateway (reuse)", True), ("baseline (whole)", False)):
            start = time.perf_counter()
            count = detect_all(stage, ds, reuse)
            seconds = time.perf_counter() - start
            print(f"US cine 120x640x480, {label:17} {count / seconds:6.1f} frames/s")
        if args.cine:
            vault.close()
            return

        for name, path in (("DX 2128x2000", DX), ("CT 512x512", CT)):
            image, _ = loaded(path, engine)
            seconds = timed(partial(detect_all, stage, image, True), max(args.repeat // 4, 3))
            print(
                f"{name}, all views:           {seconds:6.2f} s/image ({1 / seconds:.2f} frames/s)"
            )

        truth = load(DICOM / "burned_in_text_gt")
        items = [(path.read_bytes(), boxes) for path, boxes in truth.items()]
        line, _ = score(stage, engine, items)
        print(f"ground truth ({len(items)} images):  {line}")
        line, _ = score(stage, engine, [scaled(path, boxes) for path, boxes in truth.items()])
        print(f"ground truth x{SCALE}:           {line}")
        print(f"peak RSS: {peak_rss_mib():.0f} MiB")
        vault.close()


if __name__ == "__main__":
    main()
