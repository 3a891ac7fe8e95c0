"""The text map (gateway/deidentify/pixels/textmap.py): its training data, training, export to
ONNX, and its figures alone.

Training data are crops of the validation set's generator (`text_validation.make_case`) with
other seeds than the set's own (18): the same shared base images, fonts and kinds of text, so
the validation set measures the map in distribution. Two checks are out of it: the shared
ground truth (real burned-in text, never trained on) and `--unseen-fonts` (text in typefaces
the training never drew: other URW, DejaVu, Liberation and FreeFont faces).

Each case gives the network's planes (`textmap.planes`, the gateway's own function) and a label
per 8 x 8 cell: text (a ground-truth box covers >= 25 % of it), no text, or ignored (partly
covered, or padding). Text images give a crop around up to three of their items and one
anywhere, text-free images two anywhere; crops are 256 x 256.

    # data (about 4 minutes with two processes for 2 x 2,250 cases)
    python benchmarks/text_map.py build --seed 101 --count 2250 --out /tmp/tm/a.npz
    python benchmarks/text_map.py build --seed 102 --count 2250 --out /tmp/tm/b.npz
    # training needs PyTorch (not a dependency of the gateway):
    #   python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch==2.13.0 onnx
    PYTHONPATH=. /tmp/tv/bin/python benchmarks/text_map.py train \
        --data /tmp/tm/a.npz,/tmp/tm/b.npz --epochs 7 --out pixels/data/textmap.onnx
    python benchmarks/text_map.py measure [--limit 300] [--unseen-fonts] [--thresholds 0.3,0.5]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import text_validation as tv  # noqa: E402

from gateway.deidentify.pixels import textmap  # noqa: E402
from gateway.deidentify.pixels.models import TEXT_MAP, locate  # noqa: E402
from gateway.deidentify.pixels.ocr import Network  # noqa: E402
from gateway.deidentify.pixels.regions import widen  # noqa: E402
from tests import pixel_truth  # noqa: E402
from tests.support import shared_dir  # noqa: E402

CROP = 256
CELL = textmap.CELL
#: The network: channels of its three strided layers, then this many dilated layers (1, 2, 4,
#: 8) at the last width; 11 ms of one core per 512 x 512 frame on onnxruntime.
WIDTHS = (16, 32, 48)
DILATIONS = (1, 2, 4, 8)
UNSEEN_FONTS = (
    (
        "urw-unseen",
        "fonts-urw-base35",
        (
            "../opentype/urw-base35/C059-Roman.otf",
            "../opentype/urw-base35/P052-Bold.otf",
            "../opentype/urw-base35/URWBookman-Light.otf",
            "../opentype/urw-base35/NimbusSansNarrow-Bold.otf",
            "../opentype/urw-base35/NimbusMonoPS-BoldItalic.otf",
        ),
    ),
    (
        "styles-unseen",
        "fonts-dejavu-core fonts-liberation fonts-freefont-ttf",
        (
            "dejavu/DejaVuSerifCondensed-Italic.ttf",
            "liberation/LiberationMono-Bold.ttf",
            "freefont/FreeSansBoldOblique.ttf",
            "dejavu/DejaVuSans-ExtraLight.ttf",
            "liberation/LiberationSansNarrow-Italic.ttf",
        ),
    ),
)


# -- data ------------------------------------------------------------------------------------


def frame_of(ds: Any) -> np.ndarray:
    """The stored values of a generated data set (native, one frame)."""
    if int(ds.SamplesPerPixel) == 3:
        return np.frombuffer(ds.PixelData, np.uint8).reshape(ds.Rows, ds.Columns, 3)
    dtype = (
        np.uint8
        if int(ds.BitsAllocated) == 8
        else np.int16
        if int(ds.PixelRepresentation)
        else np.uint16
    )
    return np.frombuffer(ds.PixelData, dtype).reshape(ds.Rows, ds.Columns)


def labels(case: tv.Case, scale: float, shape: tuple[int, ...]) -> np.ndarray:
    """Per cell of the planes: 1 text, 0 none, 255 ignored (partly covered)."""
    full: np.ndarray = np.zeros((case.rows, case.columns), np.float32)
    for item in case.items:
        x0, y0, x1, y1 = item.box
        full[y0:y1, x0:x1] = 1.0
    if scale < 1.0:
        full = cv2.resize(full, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    padded = np.zeros(shape, np.float32)
    padded[: full.shape[0], : full.shape[1]] = full
    h, w = shape
    cover = padded.reshape(h // CELL, CELL, w // CELL, CELL).mean(axis=(1, 3))
    out = np.zeros(cover.shape, np.uint8)
    out[cover > 0] = 255
    out[cover >= 0.25] = 1
    return out


def crops(
    planes: np.ndarray, cells: np.ndarray, centres: list[tuple[int, int]], anywhere: int, rng: Any
) -> list[tuple[np.ndarray, np.ndarray]]:
    """CROP x CROP crops (uint8 planes, cell labels; padding ignored) around `centres`
    (moved by up to a third of a crop) and at `anywhere` random places."""
    _, _, h, w = planes.shape
    out = []
    for centre in [*centres, *([None] * anywhere)]:
        if centre is None:
            cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
        else:
            cy = centre[0] + int(rng.integers(-CROP // 3, CROP // 3 + 1))
            cx = centre[1] + int(rng.integers(-CROP // 3, CROP // 3 + 1))
        y0 = int(np.clip(cy - CROP // 2, 0, max(h - CROP, 0))) // CELL * CELL
        x0 = int(np.clip(cx - CROP // 2, 0, max(w - CROP, 0))) // CELL * CELL
        x = np.zeros((2, CROP, CROP), np.uint8)
        y = np.full((CROP // CELL, CROP // CELL), 255, np.uint8)
        part = planes[0, :, y0 : y0 + CROP, x0 : x0 + CROP]
        x[:, : part.shape[1], : part.shape[2]] = np.round(part * 255)
        cell = cells[y0 // CELL : (y0 + CROP) // CELL, x0 // CELL : (x0 + CROP) // CELL]
        y[: cell.shape[0], : cell.shape[1]] = cell
        out.append((x, y))
    return out


def build(seed: int, count: int, out: Path) -> int:
    all_bases = tv.bases(tv.DEFAULT_CACHE / f"v{tv.VERSION}-seed{seed}")
    rng = np.random.default_rng([seed, 7])
    xs, ys = [], []
    start = time.perf_counter()
    for index in range(count):
        for text in (True, False):
            case, encoded = tv.make_case(all_bases, seed, text, index)
            ds = tv.dataset(case, encoded)
            planes, scale = textmap.planes(frame_of(ds), str(ds.PhotometricInterpretation))
            cells = labels(case, scale, planes.shape[2:])
            centres = [
                (round((i.box[1] + i.box[3]) / 2 * scale), round((i.box[0] + i.box[2]) / 2 * scale))
                for i in case.items
            ]
            rng.shuffle(centres)
            for x, y in crops(planes, cells, centres[:3], 1 if text else 2, rng):
                xs.append(x)
                ys.append(y)
        if index % 250 == 0:
            print(f"  {index}/{count} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, x=np.stack(xs), y=np.stack(ys))
    print(f"{len(xs)} crops -> {out}")
    return 0


# -- training (PyTorch) ----------------------------------------------------------------------


def network() -> Any:
    from torch import nn  # type: ignore[import-not-found]  # trains only: not a dependency

    w1, w2, w3 = WIDTHS
    layers: list[Any] = []
    for a, b in ((2, w1), (w1, w2), (w2, w3)):
        layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
    for d in DILATIONS:
        layers += [nn.Conv2d(w3, w3, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(w3, 1, 1))
    return nn.Sequential(*layers)


def train(data: list[Path], epochs: int, out: Path, threads: int) -> int:
    """AdamW with a one-cycle schedule, batches of 32 random 192 x 192 parts of the crops,
    turned by quarters, mirrored, and inverted at random; weighted BCE (text x2, ignored cells
    x0); 4 % of the crops held out, the figures per cell printed after each epoch."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    stored = [np.load(p) for p in data]
    x_all = np.concatenate([s["x"] for s in stored])
    y_all = np.concatenate([s["y"] for s in stored])
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x_all))
    held, used = order[: len(order) // 25], order[len(order) // 25 :]
    model = network()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    size, part = 32, 192
    steps = epochs * (len(used) // size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.1
    )
    weight_text = torch.tensor(2.0)

    def batch(index: np.ndarray, augment: bool) -> tuple[Any, Any, Any]:
        if augment:
            oy, ox = (int(v) * CELL for v in rng.integers(0, (CROP - part) // CELL + 1, 2))
            x = x_all[index, :, oy : oy + part, ox : ox + part]
            y = y_all[index, oy // CELL : (oy + part) // CELL, ox // CELL : (ox + part) // CELL]
        else:
            x, y = x_all[index], y_all[index]
        xt = torch.from_numpy(x.astype(np.float32) / 255.0)
        yt = torch.from_numpy(y.astype(np.int64))
        if augment:
            k = int(rng.integers(0, 4))
            xt, yt = torch.rot90(xt, k, (2, 3)), torch.rot90(yt, k, (1, 2))
            if rng.random() < 0.5:
                xt, yt = xt.flip(3), yt.flip(2)
            inverted = torch.from_numpy(rng.random(len(index)) < 0.2)
            xt[inverted] = 1.0 - xt[inverted]
        return xt.contiguous(), (yt == 1).float(), (yt != 255).float()

    def held_out() -> str:
        model.eval()
        with torch.no_grad():
            parts = [batch(held[s : s + 64], False) for s in range(0, len(held), 64)]
            p = torch.cat([torch.sigmoid(model(x)[:, 0]) for x, _, _ in parts])
        t = torch.cat([t for _, t, _ in parts])
        w = torch.cat([w for _, _, w in parts])
        model.train()
        text, none = (t == 1) & (w > 0), (t == 0) & (w > 0)
        return "; ".join(
            f"{th}: text {float(((p > th) & text).sum() / text.sum()):.3f}"
            f" none {float(((p > th) & none).sum() / none.sum()):.4f}"
            for th in (0.1, 0.3, 0.5, 0.7)
        )

    start, step = time.perf_counter(), 0
    for epoch in range(epochs):
        rng.shuffle(used)
        for s in range(0, len(used) - size + 1, size):
            x, t, w = batch(used[s : s + size], True)
            loss = nn.functional.binary_cross_entropy_with_logits(
                model(x)[:, 0], t, weight=w, pos_weight=weight_text, reduction="sum"
            ) / w.sum().clamp(min=1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            step += 1
        print(f"epoch {epoch} ({time.perf_counter() - start:.0f} s) {held_out()}", flush=True)
    model.eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, 2, CROP, CROP),),
        str(out),
        input_names=["planes"],
        output_names=["logit"],
        dynamic_axes={"planes": {2: "h", 3: "w"}, "logit": {2: "ch", 3: "cw"}},
        dynamo=False,
        opset_version=17,
    )
    print(f"-> {out}")
    return 0


# -- figures ---------------------------------------------------------------------------------


class Map:
    """The network, probabilities per cell, and rectangles at a threshold (as `TextMap`)."""

    def __init__(self, model: Path) -> None:
        self.network = Network(model.read_bytes())

    def probability(self, frame: np.ndarray, photometric: str) -> tuple[np.ndarray, float]:
        planes, scale = textmap.planes(frame, photometric)
        logit = self.network.run(planes)[0, 0]
        return 1.0 / (1.0 + np.exp(-logit)), scale

    @staticmethod
    def masked(
        probability: np.ndarray, threshold: float, scale: float, shape: tuple[int, int]
    ) -> np.ndarray:
        rows, columns = shape
        out = np.zeros(shape, bool)
        for r, _ in textmap.boxes(probability, threshold, scale, rows, columns):
            r = widen(r, MARGIN, rows, columns)
            out[r.y : r.y + r.height, r.x : r.x + r.width] = True
        return out


MARGIN = 4  # the pixel stage's default margin
BY = ("orientation", "contrast", "size", "family", "place")


def measure(model: Path, limit: int, seed: int, thresholds: list[float], unseen: bool) -> int:
    """The map alone: recall of the validation set's boxes (>= 90 % covered by its rectangles
    with the stage's margin), text-free images with more than 0.5 % masked, CPU per image, and
    the shared ground truth's boxes covered."""
    if unseen:
        tv.FONTS = UNSEEN_FONTS
    net = Map(model)
    all_bases = tv.bases(tv.DEFAULT_CACHE / f"v{tv.VERSION}-seed{seed}")
    recall: dict[float, dict[str, list[int]]] = {t: defaultdict(lambda: [0, 0]) for t in thresholds}
    alarms: dict[float, list[float]] = {t: [] for t in thresholds}
    cpu = []
    for text in (True, False):
        for index in range(limit):
            case, encoded = tv.make_case(all_bases, seed, text, index)
            ds = tv.dataset(case, encoded)
            frame = frame_of(ds)
            started = time.process_time()
            p, scale = net.probability(frame, str(ds.PhotometricInterpretation))
            cpu.append(time.process_time() - started)
            for t in thresholds:
                masked = net.masked(p, t, scale, (case.rows, case.columns))
                if not text:
                    alarms[t].append(float(masked.mean()))
                for item in case.items:
                    box = pixel_truth.TextBox(item.text, *item.box)
                    hit = pixel_truth.covered_share(box, masked) >= pixel_truth.COVERED
                    keys = ["all", *(f"{b}={getattr(item, b)}" for b in BY)]
                    for key in [*keys, f"modality={case.modality}"]:
                        recall[t][key][0] += hit
                        recall[t][key][1] += 1
    print(
        f"validation set, seed {seed}, {limit} text + {limit} text-free images"
        + (", unseen fonts" if unseen else "")
    )
    for t in thresholds:
        cells = recall[t]
        hits, total = cells["all"]
        over = sum(a > tv.FP_SHARE for a in alarms[t])
        print(
            f"  threshold {t}: recall {hits}/{total} = {hits / max(total, 1):.3f}; text-free"
            f" > 0.5 % masked {over}/{len(alarms[t])}, median {np.median(alarms[t]):.4f}"
        )
        for by in (*BY, "modality"):
            row = [(k.split("=", 1)[1], v) for k, v in sorted(cells.items()) if k.startswith(by)]
            figures = ", ".join(f"{k} {v[0] / v[1]:.2f} ({v[1]})" for k, v in row)
            print(f"    {by}: {figures}")
    print(
        f"  CPU per image: median {1000 * np.median(cpu):.1f} ms,"
        f" p90 {1000 * np.percentile(cpu, 90):.1f} ms"
    )
    ground_truth(net, thresholds)
    return 0


def ground_truth(net: Map, thresholds: list[float]) -> None:
    import pydicom

    folder = shared_dir() / "testdata" / "dicom" / "burned_in_text_gt"
    truth = pixel_truth.load(folder)
    found = {t: 0 for t in thresholds}
    total = 0
    for path, boxes in truth.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array
        frame = pixels[0] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else pixels
        rows, columns = frame.shape[:2]
        p, scale = net.probability(frame, str(ds.get("PhotometricInterpretation", "")).upper())
        inside = [b for b in boxes if pixel_truth.inside(b, rows, columns)]
        total += len(inside)
        for t in thresholds:
            masked = net.masked(p, t, scale, (rows, columns))
            found[t] += sum(
                pixel_truth.covered_share(b, masked) >= pixel_truth.COVERED for b in inside
            )
    for t in thresholds:
        print(f"  shared ground truth, threshold {t}: {found[t]}/{total} boxes covered")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="training crops from the validation generator")
    b.add_argument("--seed", type=int, required=True)
    b.add_argument("--count", type=int, default=2250)
    b.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("train", help="train and export to ONNX (needs torch and onnx)")
    t.add_argument("--data", required=True, help="comma-separated .npz files from build")
    t.add_argument("--epochs", type=int, default=7)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--out", type=Path, required=True)
    m = sub.add_parser("measure", help="the map alone on the validation set and ground truth")
    m.add_argument("--model", type=Path, default=None, help="default: the gateway's own")
    m.add_argument("--limit", type=int, default=300)
    m.add_argument("--seed", type=int, default=18)
    m.add_argument("--thresholds", default="0.3,0.5,0.7")
    m.add_argument("--unseen-fonts", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "build":
        if args.seed == 18:
            parser.error("seed 18 is the validation set's: train on others")
        return build(args.seed, args.count, args.out)
    if args.command == "train":
        return train([Path(p) for p in args.data.split(",")], args.epochs, args.out, args.threads)
    model = args.model or locate(TEXT_MAP)
    thresholds = [float(v) for v in args.thresholds.split(",")]
    return measure(model, args.limit, args.seed, thresholds, args.unseen_fonts)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
