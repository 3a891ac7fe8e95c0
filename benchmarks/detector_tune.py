"""The text detector fine-tuned on text drawn over medical images: training crops, training,
and the candidate measured beside the gateway's own. A measurement, not a model the gateway
ships (docs/benchmarks.md, 2026-12-07, fourth session: the tuned detector finds more of the
validation set but loses real burned-in text of the shared ground truth).

The gateway's detector (PP-OCRv6 tiny, `models.DETECTOR`) is converted to PyTorch
(onnx2torch, after its three SAME_UPPER paddings are written out as explicit ones: outputs
within 2e-7 of onnxruntime's) and trained further on the stage's own views (`Renderer.views`)
of the validation generator's cases (seeds other than 18), each view scaled as
`OnnxText.find` scales it. Labels per view pixel, as DB trains (shrink ratio 0.4): 1 inside
an item's box shrunk by A(1 - 0.4^2)/L, 0 elsewhere, 255 (ignored) in the rest of the box and
over an item whose strokes differ by fewer than `VISIBLE` levels in that view from the same
view without the text (faint text does not show in the binary views). Three text cases to
one text-free.

    # crops (about 2 minutes for 1,200 cases per process)
    python benchmarks/detector_tune.py build --seed 201 --count 1200 --out /tmp/dt/a.npz
    python benchmarks/detector_tune.py build --seed 202 --count 1200 --out /tmp/dt/b.npz
    # training needs PyTorch, onnx and onnx2torch (not dependencies of the gateway):
    #   python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.13.0 onnx
    #   /tmp/tv/bin/pip install --no-deps onnx2torch==1.5.15   (its torchvision import is
    #   only for operators this network has not: `train` stubs it)
    PYTHONPATH=. /tmp/tv/bin/python benchmarks/detector_tune.py train \
        --data /tmp/dt/a.npz,/tmp/dt/b.npz --steps 2000 --out /tmp/dt/tuned.onnx
    # the candidate beside the gateway's detector: the shared ground truth through a worker,
    # then the validation set's first --limit text and text-free cases
    python benchmarks/detector_tune.py measure --model /tmp/dt/tuned.onnx --limit 200
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import math
import os
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import text_validation as tv  # noqa: E402

from gateway.deidentify.pixels.frames import iter_frames  # noqa: E402
from gateway.deidentify.pixels.models import (  # noqa: E402
    CHARACTERS,
    DETECTOR,
    OPTIONS,
    RECOGNISER,
    TEXT_MAP,
    TEXT_MAP_THRESHOLD,
    locate,
)
from gateway.deidentify.pixels.ocr import Network, OnnxText, check_model  # noqa: E402
from gateway.deidentify.pixels.render import Renderer  # noqa: E402
from gateway.deidentify.pixels.stage import PixelStage  # noqa: E402
from gateway.deidentify.pixels.textmap import TextMap  # noqa: E402
from gateway.settings import PixelSettings  # noqa: E402
from gateway.vault.sqlite import SqliteVault  # noqa: E402
from tests.dicom_builders import part10, worker  # noqa: E402
from tests.pixel_truth import COVERED, covered_share, inside, load, mask_image, trimmed  # noqa: E402
from tests.support import shared_dir  # noqa: E402

CROP = 320
SHRINK = 0.4  # DB's shrink ratio
VISIBLE = 20.0  # display levels between an item's strokes with and without it, in a view
IGNORED = 255


# -- data ------------------------------------------------------------------------------------


def _views(case: tv.Case, encoded: tv.Encoded) -> list[np.ndarray]:
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(part10(tv.dataset(case, encoded))))
    return Renderer(ds).views(next(iter_frames(ds)))


def _label(
    case: tv.Case,
    view: np.ndarray,
    bare: np.ndarray | None,
    strokes: np.ndarray | None,
    size: tuple[int, int],
) -> np.ndarray:
    """DB labels at the detector's input size (rows, columns) for one view; `bare`: the same
    view without the text (None: the view exists only with it, e.g. the fifth view its
    outliers made); `strokes`: frame pixels the text changed."""
    th, tw = size
    sy, sx = th / case.rows, tw / case.columns
    out = np.zeros((th, tw), np.uint8)
    for item in case.items:
        x0, y0, x1, y1 = item.box
        assert strokes is not None
        glyph = strokes[y0:y1, x0:x1]
        if not glyph.any():
            continue
        shown = view[y0:y1, x0:x1].astype(np.int16)
        if bare is not None:
            difference = np.abs(shown - bare[y0:y1, x0:x1].astype(np.int16)).max(axis=2)
            visible = float(difference[glyph].mean()) >= VISIBLE
        else:  # strokes against the rest of their box
            grey = shown.max(axis=2)
            visible = (
                bool((~glyph).any())
                and abs(float(np.median(grey[glyph])) - float(np.median(grey[~glyph]))) >= VISIBLE
            )
        top, left = int(y0 * sy), int(x0 * sx)
        bottom, right = math.ceil(y1 * sy), math.ceil(x1 * sx)
        out[top:bottom, left:right] = IGNORED
        if not visible:
            continue
        w, h = (x1 - x0) * sx, (y1 - y0) * sy
        d = w * h * (1 - SHRINK**2) / (2 * (w + h))
        if w - 2 * d >= 1 and h - 2 * d >= 1:
            out[
                round(y0 * sy + d) : round(y1 * sy - d), round(x0 * sx + d) : round(x1 * sx - d)
            ] = 1
    return out


def build(seed: int, count: int, out: Path) -> int:
    """One CROP x CROP crop per view of each case: around one of its items (moved by up to a
    third of a crop), or anywhere on a text-free case; the detector's input scale."""
    all_bases = tv.bases(tv.DEFAULT_CACHE / f"v{tv.VERSION}")
    finder = types.SimpleNamespace(options=OPTIONS)
    rng = np.random.default_rng([seed, 7919])
    images, labels = [], []
    for index in range(count):
        text = index % 4 != 3
        case, encoded, case_rng = tv.bare_case(all_bases, seed, text, index)
        before = copy.deepcopy(encoded)
        strokes = None
        if text:
            case.items = tv._draw_items(encoded, case_rng)  # as make_case draws them
            changed = np.abs(encoded.pixels - before.pixels) > 1e-6
            strokes = changed.any(axis=2) if changed.ndim == 3 else changed
        views = _views(case, encoded)
        bare = _views(case, before) if text else []
        ratio = OnnxText._ratio(finder, case.rows, case.columns)  # type: ignore[arg-type]
        th = max(32, round(case.rows * ratio / 32) * 32)
        tw = max(32, round(case.columns * ratio / 32) * 32)
        for number, view in enumerate(views):
            other = bare[number] if number < len(bare) else None
            label = _label(case, view, other, strokes, (th, tw))
            scaled = cv2.resize(view, (tw, th)) if (th, tw) != view.shape[:2] else view
            if case.items:
                item = case.items[int(rng.integers(len(case.items)))]
                cy = (item.box[1] + item.box[3]) / 2 * th / case.rows
                cx = (item.box[0] + item.box[2]) / 2 * tw / case.columns
                cy += int(rng.integers(-CROP // 3, CROP // 3 + 1))
                cx += int(rng.integers(-CROP // 3, CROP // 3 + 1))
            else:
                cy, cx = rng.uniform(0, th), rng.uniform(0, tw)
            top = int(np.clip(cy - CROP / 2, 0, max(th - CROP, 0)))
            left = int(np.clip(cx - CROP / 2, 0, max(tw - CROP, 0)))
            image = np.zeros((CROP, CROP, 3), np.uint8)
            target = np.full((CROP, CROP), IGNORED, np.uint8)  # padding ignored
            part = scaled[top : top + CROP, left : left + CROP]
            image[: part.shape[0], : part.shape[1]] = part
            target[: part.shape[0], : part.shape[1]] = label[top : top + CROP, left : left + CROP]
            images.append(image)
            labels.append(target)
        if index % 200 == 0:
            print(f"  {index}/{count} cases, {len(images)} crops", file=sys.stderr, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, images=np.stack(images), labels=np.stack(labels))
    print(f"{len(images)} crops -> {out}")
    return 0


# -- training --------------------------------------------------------------------------------


def _torch_detector() -> Any:
    """The gateway's detector as a PyTorch module: onnx2torch knows no SAME_UPPER padding, so
    it is written out (inputs are multiples of 32: every strided layer sees an even size)."""
    ops = types.ModuleType("torchvision.ops")  # onnx2torch imports it for NMS, RoIAlign only

    def absent(*_: Any, **__: Any) -> None:
        raise NotImplementedError

    setattr(ops, "nms", absent)  # noqa: B010 (a module made here: mypy knows no such names)
    setattr(ops, "roi_align", absent)  # noqa: B010
    stub = types.ModuleType("torchvision")
    setattr(stub, "ops", ops)  # noqa: B010
    sys.modules.setdefault("torchvision", stub)
    sys.modules.setdefault("torchvision.ops", ops)
    import onnx  # type: ignore[import-not-found]  # trains only: not a dependency
    from onnx import helper
    from onnx2torch import convert  # type: ignore[import-not-found]

    model = onnx.load_from_string(check_model(locate(DETECTOR), DETECTOR.sha256))
    weights = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        attributes = {a.name: a for a in node.attribute}
        pad = attributes.get("auto_pad")
        if pad is None or pad.s not in (b"SAME_UPPER", b"SAME_LOWER"):
            continue
        if "kernel_shape" in attributes:
            kernel = list(attributes["kernel_shape"].ints)
        else:
            kernel = list(weights[node.input[1]].dims[2:])
        strides = list(attributes["strides"].ints) if "strides" in attributes else [1] * len(kernel)
        dilations = (
            list(attributes["dilations"].ints) if "dilations" in attributes else [1] * len(kernel)
        )
        begins, ends = [], []
        for k, s, d in zip(kernel, strides, dilations, strict=True):
            total = max(d * (k - 1) + 1 - s, 0)
            begin = total // 2 if pad.s == b"SAME_UPPER" else total - total // 2
            begins.append(begin)
            ends.append(total - begin)
        node.attribute.remove(pad)
        node.attribute.append(helper.make_attribute("pads", begins + ends))
    return convert(model)


def train(data: list[Path], steps: int, rate: float, out: Path, threads: int) -> int:
    """Adam, cosine-decayed from `rate`, batches of 8 crops; DB's loss on the probability map
    (balanced BCE with the hardest negatives, three per text pixel, x5, plus Dice); 300 crops
    (a tenth of fewer) held out, their losses printed every 500 steps."""
    import torch  # type: ignore[import-not-found]  # trains only: not a dependency

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    stored = [np.load(p) for p in data]
    images = np.concatenate([s["images"] for s in stored])
    labels = np.concatenate([s["labels"] for s in stored])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    held, used = order[: min(300, len(order) // 10)], order[min(300, len(order) // 10) :]
    mean = np.array(OPTIONS.mean, np.float32) * 255.0
    scale = 1.0 / (255.0 * np.array(OPTIONS.std, np.float32))  # as OnnxText.find
    net = _torch_detector()
    net.train()
    optimiser = torch.optim.Adam(net.parameters(), lr=rate)

    def batch(index: np.ndarray) -> tuple[Any, Any]:
        x = (images[index].astype(np.float32) - mean) * scale
        return torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(labels[index])

    def loss(x: Any, label: Any) -> tuple[Any, float, float]:
        p = net(x)
        p = (p[0] if isinstance(p, list | tuple) else p)[:, 0].clamp(1e-6, 1 - 1e-6)
        valid = label != IGNORED
        text, none = (label == 1) & valid, (label == 0) & valid
        bce = -(torch.log(p) * text + torch.log(1 - p) * none)
        positives = int(text.sum())
        negatives = min(int(none.sum()), max(3 * positives, 1000))
        hardest = bce[none].topk(negatives).values
        balanced = (bce[text].sum() + hardest.sum()) / (positives + negatives + 1e-6)
        dice = 1 - 2 * (p * text).sum() / ((p * valid).sum() + text.sum() + 1e-6)
        return 5 * balanced + dice, float(balanced.detach()), float(dice.detach())

    def held_out() -> str:
        net.eval()
        with torch.no_grad():
            parts = [loss(*batch(held[s : s + 16])) for s in range(0, len(held), 16)]
        net.train()
        bce, dice = np.mean([p[1] for p in parts]), np.mean([p[2] for p in parts])
        return f"held out: BCE {bce:.3f}, Dice {dice:.3f}"

    print(f"{len(images)} crops; before training, {held_out()}", flush=True)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        for group in optimiser.param_groups:
            group["lr"] = rate * 0.5 * (1 + math.cos(math.pi * step / steps))
        total, _, _ = loss(*batch(rng.choice(used, 8, replace=False)))
        optimiser.zero_grad()
        total.backward()
        optimiser.step()
        if step % 500 == 0 or step == steps:
            print(f"step {step}, {time.perf_counter() - start:.0f} s; {held_out()}", flush=True)
    net.eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        net,
        torch.zeros(1, 3, CROP, CROP),
        str(out),
        input_names=["x"],
        output_names=["probability"],
        dynamic_axes={"x": {2: "rows", 3: "columns"}, "probability": {2: "rows", 3: "columns"}},
        opset_version=17,
        dynamo=False,
    )
    print(f"-> {out} (SHA-256 {hashlib.sha256(out.read_bytes()).hexdigest()})")
    return 0


# -- measurement -----------------------------------------------------------------------------


def finder(detector: bytes) -> OnnxText:
    """The gateway's finder (recogniser, text map, options) with another detector."""
    recogniser = check_model(locate(RECOGNISER), RECOGNISER.sha256)
    characters = check_model(locate(CHARACTERS), CHARACTERS.sha256).decode("utf-8")
    textmap = TextMap(Network(check_model(locate(TEXT_MAP), TEXT_MAP.sha256)), TEXT_MAP_THRESHOLD)
    return OnnxText(detector, (recogniser, characters), OPTIONS, textmap)


def ground_truth(candidate: OnnxText) -> str:
    """The shared ground truth through a worker: boxes >= 90 % masked, as annotated and
    trimmed to their strokes, pixels masked outside every box, and the boxes missed."""
    truth = load(shared_dir() / "testdata" / "dicom" / "burned_in_text_gt")
    annotated = strokes = total = outside = 0
    missed = []
    with tempfile.TemporaryDirectory() as folder:
        vault = SqliteVault(Path(folder) / "vault.sqlite3", os.urandom(32), durable=False)
        w = worker(vault, pixels=PixelStage(PixelSettings(), (), candidate))
        from pydicom import dcmread

        for path, boxes in sorted(truth.items()):
            data = path.read_bytes()
            outcome = w.process(data)
            ds = dcmread(io.BytesIO(data))
            views = Renderer(ds).views(next(iter_frames(ds)))
            rows, columns = int(ds.Rows), int(ds.Columns)
            assert outcome.pixels is not None
            masked = mask_image(outcome.pixels.masked, rows, columns, 0)
            text = np.zeros((rows, columns), bool)
            for box in (b for b in boxes if inside(b, rows, columns)):
                total += 1
                text[box.y0 : box.y1, box.x0 : box.x1] = True
                annotated += covered_share(box, masked) >= COVERED
                share = covered_share(trimmed(box, views), masked)
                strokes += share >= COVERED
                if share < COVERED:
                    missed.append(f"{box.y1 - box.y0}-px line {share:.2f} covered")
            outside += int((masked & ~text).sum())
        vault.close()
    return (
        f"shared ground truth: {annotated}/{total} covered as annotated, {strokes}/{total} by "
        f"strokes, {outside:,} px masked outside its boxes; missed: {', '.join(missed) or 'none'}"
    )


def measure(model: Path | None, limit: int, seed: int) -> int:
    detector = (
        check_model(locate(DETECTOR), DETECTOR.sha256) if model is None else model.read_bytes()
    )
    name = "the gateway's detector" if model is None else f"{model.name}"
    print(f"{name} (SHA-256 {hashlib.sha256(detector).hexdigest()[:16]}...)")
    candidate = finder(detector)
    print(ground_truth(candidate), flush=True)
    started = time.perf_counter()
    results = tv.run(tv.DEFAULT_CACHE / f"v{tv.VERSION}", seed, limit, limit, finder=candidate)
    print(f"text validation set: seed {seed}, the first {limit} + {limit} images, one process")
    tv.report(tv.summary(results))
    print(f"\nrun time {time.perf_counter() - started:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="training crops from the validation generator")
    b.add_argument("--seed", type=int, required=True)
    b.add_argument("--count", type=int, default=1200)
    b.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train", help="fine-tune and export to ONNX (needs torch, onnx2torch)")
    t.add_argument("--data", required=True, help="comma-separated .npz files from build")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--rate", type=float, default=1e-4)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--out", type=Path, required=True)
    m = sub.add_parser("measure", help="a detector on the shared ground truth and validation set")
    m.add_argument("--model", type=Path, default=None, help="default: the gateway's own")
    m.add_argument("--limit", type=int, default=200)
    m.add_argument("--seed", type=int, default=18)
    args = parser.parse_args(argv)
    if args.command == "build":
        if args.seed == 18:
            parser.error("seed 18 is the validation set's: train on others")
        return build(args.seed, args.count, args.out)
    if args.command == "train":
        data = [Path(p) for p in args.data.split(",")]
        return train(data, args.steps, args.rate, args.out, args.threads)
    return measure(args.model, args.limit, args.seed)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
