"""A text detector and recogniser on onnxruntime: PaddleOCR's DB detection and CTC recognition.

Detection (DB, "Real-time Scene Text Detection with Differentiable Binarization"): the picture,
scaled so both sides are multiples of 32, goes through the detection network, which returns a
text probability per pixel; connected areas above `thresh` whose mean probability reaches
`box_thresh` are text, each grown by DB's unclip distance (area x ratio / perimeter) because the
network is trained on shrunk boxes. Boxes come back axis-aligned, in the picture's pixels.

Recognition (CRNN + CTC): a box is cut out, scaled to the model's height, and read as the most
likely character per column, repeats and blanks collapsed. Used only to keep a site's markers.

Both run single-threaded (one worker process per core does the parallelism) with every graph
optimisation, in one memory arena with the text map (`Network`); the sessions are built once
per worker.
"""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from gateway.deidentify.pixels.ctp import Region
from gateway.deidentify.pixels.textmap import TextMap
from gateway.errors import ModelError

_MAX_CANDIDATES = 1000
_REC_HEIGHT = 48  # the recognition model's input height
_REC_MAX_WIDTH = 1600
_REC_BATCH = 8


@dataclass(frozen=True)
class DetectorOptions:
    #: per channel of the BGR picture, after x/255, in PaddleOCR's order: its detection
    #: models are trained with these (NormalizeImage in their inference configs); 0.5/0.5,
    #: used here until 2026-12-06, finds 0.03 less of the validation set's text
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    max_side: int = 1280  # longer pictures are scaled down to this ...
    min_side: int = 480  # ... and shorter ones up so their short side has this,
    max_upscale: float = 4.0  # but never more than this (a 64-pixel MR blob is no text)
    thresh: float = 0.2
    #: a region's mean probability must reach this: PP-OCRv6 tiny's own inference.yml value;
    #: 0.5 (used with PP-OCRv5) misses a line of 7-pixel text in the shared ground truth
    box_thresh: float = 0.4
    unclip_ratio: float = 2.0


def check_model(path: Path, sha256: str) -> bytes:
    """The model's bytes, after checking they are the ones the gateway was tested with."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model ({exc.__class__.__name__})") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ModelError(f"{path}: not the model this version was tested with (SHA-256 differs)")
    return data


#: After an image whose network calls took inputs of more values than this, the memory they
#: took is given back (`OnnxText.settle`): a 2k radiograph's detector input (3 x 1280 x 1216)
#: takes about 200 MiB more than a CT slice's, which the arena would otherwise keep for the
#: worker's life (a worker that had read one radiograph stayed at 760 MiB instead of 280;
#: docs/benchmarks.md). A CT slice's or an ultrasound frame's memory stays for the next: it
#: is needed again at once, and handing memory back costs a page fault per page (giving it
#: back after every large call cost a radiograph 1 s in 3.5; once per image, about 0.2 s).
_LARGE = 3 * 1024 * 1024


@functools.cache  # once per process
def _arena() -> Any:  # the onnxruntime module (untyped)
    """onnxruntime, with one memory arena for all the process's networks registered: each
    session otherwise keeps an arena of its own at the size of its largest call (detector,
    recogniser and text map run one after the other, never at once)."""
    import onnxruntime as ort  # heavy: loaded by the workers that need it

    where = ort.OrtMemoryInfo(
        "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
    )
    ort.create_and_register_allocator(where, ort.OrtArenaCfg({}))
    return ort


class Network:
    """One ONNX network on onnxruntime: single-threaded (one worker process per core does the
    parallelism), every graph optimisation, its working memory in the process's one arena
    (`_arena`)."""

    def __init__(self, model: bytes) -> None:
        ort = _arena()
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.add_session_config_entry("session.use_env_allocators", "1")
        self._session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._give_back = ort.RunOptions()
        self._give_back.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self.largest = 0  # values of the largest input since the arena last gave memory back

    def run(self, x: np.ndarray, *, give_back: bool = False) -> np.ndarray:
        """The network's first output for input `x`; `give_back`: onnxruntime shrinks the
        arena after the call, handing its free memory back to the system (the memory of
        every network of the process: they share the arena)."""
        self.largest = max(self.largest, x.size)
        options = self._give_back if give_back else None
        return self._session.run(None, {self._input: x}, options)[0]  # type: ignore[no-any-return]


class OnnxText:
    """`TextFinder` over a PaddleOCR detection model and (optionally) a recognition model with
    its character list (one per line; the CTC blank and the space are added around it)."""

    def __init__(
        self,
        detector: bytes,
        recogniser: tuple[bytes, str] | None,
        options: DetectorOptions,
        textmap: TextMap | None = None,
    ) -> None:
        cv2.setNumThreads(1)
        self.options = options
        self.textmap = textmap
        self._det = Network(detector)
        self._mean = tuple(255.0 * m for m in options.mean)  # of the 8-bit picture
        self._scale = [1.0 / (255.0 * s) for s in options.std]  # per channel
        self._rec = None
        self._characters: list[str] = []
        if recogniser is not None:
            model, characters = recogniser
            self._rec = Network(model)
            self._characters = ["", *characters.splitlines(), " "]  # CTC blank first, space last
        self._networks = [self._det]  # all that share the arena (`settle`)
        self._networks += [] if self._rec is None else [self._rec]
        self._networks += [] if textmap is None else [textmap.network]

    def settle(self) -> None:
        """Called after each image: when it made the networks take inputs larger than
        `_LARGE`, the memory they took goes back to the system (one call on a 32 x 32
        picture, after which the shared arena shrinks)."""
        if max(n.largest for n in self._networks) > _LARGE:
            self._det.run(np.zeros((1, 3, 32, 32), np.float32), give_back=True)
            for network in self._networks:
                network.largest = 0

    # -- detection ---------------------------------------------------------------------------

    def candidates(self, frame: np.ndarray, photometric: str) -> list[tuple[Region, float]]:
        """Where the text map (`textmap.TextMap`) takes `frame` (decoded values) for text, and
        how sure it is (its most certain cell's probability); [] without a map."""
        return [] if self.textmap is None else self.textmap.find(frame, photometric)

    def find(self, image: np.ndarray, whole: tuple[int, int] | None = None) -> list[Region]:
        """Text boxes in `image`; `whole` is the (rows, columns) of the frame it was cut from,
        when it is a part: the part is read at the scale the whole frame would be."""
        height, width = image.shape[:2]
        if height < 8 or width < 8:
            return []
        ratio = self._ratio(*(whole or (height, width)))
        th = max(32, round(height * ratio / 32) * 32)
        tw = max(32, round(width * ratio / 32) * 32)
        scaled = cv2.resize(image, (tw, th)) if (th, tw) != (height, width) else image
        x = cv2.dnn.blobFromImage(scaled, 1.0, mean=self._mean)  # 1 x 3 x H x W, mean off
        for channel, scale in enumerate(self._scale):
            x[0, channel] *= scale
        probability = self._det.run(x)[0, 0]
        return self._boxes(probability, height, width)

    def _ratio(self, height: int, width: int) -> float:
        """Scale for a frame: long side down to `max_side`, short side up to `min_side`."""
        o = self.options
        ratio = min(1.0, o.max_side / max(height, width))
        if min(height, width) * ratio < o.min_side:
            ratio = min(o.min_side / min(height, width), o.max_upscale)
        return ratio

    def _boxes(self, probability: np.ndarray, height: int, width: int) -> list[Region]:
        o = self.options
        above = (probability > o.thresh).astype(np.uint8)
        text = cv2.dilate(above, np.ones((2, 2), np.uint8))
        contours, _ = cv2.findContours(text, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        sy, sx = height / probability.shape[0], width / probability.shape[1]
        out = []
        for contour in contours[:_MAX_CANDIDATES]:
            (cx, cy), (rw, rh), angle = cv2.minAreaRect(contour)
            if min(rw, rh) < 2:
                continue
            x, y, bw, bh = cv2.boundingRect(contour)
            inside = np.zeros((bh, bw), np.uint8)
            corners = cv2.boxPoints(((cx, cy), (rw, rh), angle)).astype(np.int32)
            cv2.fillPoly(inside, [corners - [x, y]], 1)
            if cv2.mean(probability[y : y + bh, x : x + bw], inside)[0] < o.box_thresh:
                continue
            grow = rw * rh * o.unclip_ratio / (2 * (rw + rh))
            grown = cv2.boxPoints(((cx, cy), (rw + 2 * grow, rh + 2 * grow), angle))
            x0, y0 = grown.min(axis=0)
            x1, y1 = grown.max(axis=0)
            left, top = max(0, math.floor(x0 * sx)), max(0, math.floor(y0 * sy))
            right, bottom = min(width, math.ceil(x1 * sx)), min(height, math.ceil(y1 * sy))
            if right > left and bottom > top:
                out.append(Region(left, top, right - left, bottom - top))
        return out

    # -- recognition -------------------------------------------------------------------------

    def read(self, image: np.ndarray, box: Region) -> str:
        """The text in `box`, "" without a recogniser (then nothing is a marker)."""
        return self.read_many(image, [box])[0][0]

    def read_many(self, image: np.ndarray, boxes: list[Region]) -> list[tuple[str, float]]:
        """The text in each box and the recogniser's mean confidence in its characters; the
        boxes are read in batches of similar width (one network call per batch)."""
        out: list[tuple[str, float]] = [("", 0.0)] * len(boxes)
        if self._rec is None:
            return out
        inputs = []
        for index, box in enumerate(boxes):
            crop = image[box.y : box.y + box.height, box.x : box.x + box.width]
            if crop.size:
                width = math.ceil(_REC_HEIGHT * crop.shape[1] / crop.shape[0])
                width = max(_REC_HEIGHT // 3, min(_REC_MAX_WIDTH, width))
                scaled = cv2.resize(crop, (width, _REC_HEIGHT)).astype(np.float32)
                inputs.append((width, index, (scaled / 127.5 - 1.0).transpose(2, 0, 1)))
        inputs.sort(key=lambda item: item[0])
        for start in range(0, len(inputs), _REC_BATCH):
            batch = inputs[start : start + _REC_BATCH]
            widest = batch[-1][0]
            x = np.zeros((len(batch), 3, _REC_HEIGHT, widest), np.float32)  # padded with 0
            for row, (width, _, tensor) in enumerate(batch):
                x[row, :, :, :width] = tensor
            scores = self._rec.run(x)
            for row, (_, index, _) in enumerate(batch):
                out[index] = self._decode(scores[row])
        return out

    def _decode(self, scores: np.ndarray) -> tuple[str, float]:
        """CTC: the best character per column, repeats and blanks collapsed."""
        best = scores.argmax(axis=1)
        chars, confidence, last = [], [], 0
        for column, index in enumerate(best):
            if index != last and index != 0 and index < len(self._characters):
                chars.append(self._characters[index])
                confidence.append(float(scores[column, index]))
            last = index
        return "".join(chars), (sum(confidence) / len(confidence) if confidence else 0.0)
