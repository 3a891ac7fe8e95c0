"""Issue 17's acceptance classes through the real worker (engine, pixel stage with the real
detector, release check): lines written at 90 and 270 degrees and faint text are masked;
names in JPEG and JPEG 2000 marker segments do not leave, and the pixels decode the same.
Images are synthetic: smooth "anatomy", noise, and an invented name drawn with OpenCV."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import cv2
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.utils import iter_pixels
from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit

from gateway.vault.sqlite import SqliteVault
from gateway.worker import Outcome
from tests.dicom_builders import (
    encapsulated,
    j2k_lossless,
    part10,
    rgb,
    segment,
    synthetic,
    worker,
)
from tests.dicom_builders import (
    greyscale as capture,
)
from tests.pixel_truth import mask_image

pytestmark = pytest.mark.timeout(300)
LINE = "QXZORBLATT JAN MRN 4471902"
NAME = b"Qxzorblatt^Jan"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
SC = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteVault]:
    store = SqliteVault(tmp_path_factory.mktemp("v") / "vault.sqlite3", os.urandom(32))
    yield store
    store.close()


def anatomy(size: int, seed: int) -> np.ndarray:
    """A smooth 12-bit body with noise, on a dark field."""
    y, x = np.mgrid[0:size, 0:size]
    body = np.exp(
        -((x - size / 2) ** 2 / (2 * (size / 4) ** 2) + (y - size / 2) ** 2 / (2 * (size / 3) ** 2))
    )
    noise = np.random.default_rng(seed).normal(0, 20, (size, size))
    return np.asarray(1500 + 1200 * body + noise, dtype=np.float32)


def drawn(text: str, scale: float, thickness: int, rotation: int) -> np.ndarray:
    """`text` as a bitmap, turned by `rotation` degrees (0, 90 clockwise, 270)."""
    (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    plane = np.zeros((height + base + 8, width + 8), np.uint8)
    cv2.putText(plane, text, (4, height + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness)
    turns = {0: None, 90: cv2.ROTATE_90_CLOCKWISE, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
    turn = turns[rotation]
    return plane if turn is None else cv2.rotate(plane, turn)


def greyscale(pixels: np.ndarray, sop_class: str, modality: str) -> Dataset:
    rows, columns = pixels.shape
    return capture(
        rows,
        columns,
        np.clip(pixels, 0, 4095).astype("<u2").tobytes(),
        SOPClassUID=sop_class,
        Modality=modality,
        BitsAllocated=16,
        BitsStored=12,
        HighBit=11,
    )


def covered(vault: SqliteVault, ds: Dataset, ink: np.ndarray) -> float:
    """The share of the text's strokes the delivered image has masked."""
    outcome = worker(vault).process(part10(ds))
    assert outcome.status == "written", outcome.reason
    assert outcome.pixels is not None
    rows, columns = ink.shape
    masked = mask_image(outcome.pixels.masked, rows, columns, frame=0)
    return float((masked & ink).sum() / ink.sum())


@pytest.mark.parametrize("rotation", [90, 270])
@pytest.mark.parametrize(("size", "scale", "thickness"), [(2000, 0.8, 2), (512, 0.35, 1)])
def test_a_line_written_at_a_right_angle_is_masked(
    vault: SqliteVault, rotation: int, size: int, scale: float, thickness: int
) -> None:
    """A name + MRN line, downwards and upwards, on a 2k DX and a 512 CT."""
    pixels = anatomy(size, seed=rotation)
    text = drawn(LINE, scale, thickness, rotation) > 0
    ink = np.zeros((size, size), bool)
    top, left = size // 10, size // 20
    ink[top : top + text.shape[0], left : left + text.shape[1]] = text
    pixels[ink] = 4095
    sop_class, modality = (DX, "DX") if size > 1000 else (CT, "CT")
    assert covered(vault, greyscale(pixels, sop_class, modality), ink) >= 0.99


@pytest.mark.parametrize("delta", [12, -12])
def test_grey_text_a_dozen_levels_from_its_background_is_masked(
    vault: SqliteVault, delta: int
) -> None:
    size = 1024
    pixels = anatomy(size, seed=3)
    ink = np.zeros((size, size), np.uint8)
    cv2.putText(ink, LINE, (30, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 2)  # dark field
    cv2.putText(ink, "DOB 1961-03-12", (300, 600), cv2.FONT_HERSHEY_SIMPLEX, 1.0, 255, 2)  # body
    strokes = ink > 0
    pixels[strokes] += delta * float(pixels.max() - pixels.min()) / 255  # 12 display levels
    assert covered(vault, greyscale(pixels, DX, "DX"), strokes) >= 0.99


@pytest.mark.parametrize("delta", [12, -12, 6])
def test_grey_on_grey_text_in_a_screen_capture_is_masked(vault: SqliteVault, delta: int) -> None:
    """An RGB capture: a grey panel around an image pane; text a few levels off the panel."""
    rows, columns = 600, 800
    picture = np.full((rows, columns, 3), 96.0, np.float32)
    y, x = np.mgrid[0:400, 0:500]
    pane = 60 + 120 * np.exp(-((x - 250) ** 2 + (y - 200) ** 2) / (2 * 90**2))
    picture[100:500, 150:650] = pane[..., None]
    ink = np.zeros((rows, columns), np.uint8)
    cv2.putText(ink, LINE, (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1)
    cv2.putText(ink, "DOB 1961-03-12", (20, 570), cv2.FONT_HERSHEY_SIMPLEX, 0.6, 255, 1)
    strokes = ink > 0
    picture[strokes] += delta
    pixels = np.clip(picture, 0, 255).astype(np.uint8).tobytes()
    ds = rgb(rows, columns, pixels, SOPClassUID=SC, Modality="OT")
    assert covered(vault, ds, strokes) >= 0.99


# -- names in compressed containers --------------------------------------------------------------


def delivered(vault: SqliteVault, data: bytes) -> tuple[Outcome, bytes]:
    outcome = worker(vault).process(data)
    assert outcome.status == "written", outcome.reason
    assert outcome.result is not None
    return outcome, outcome.result.data


GREY_8 = {
    "SOPClassUID": SC,
    "Modality": "OT",
    "Rows": 64,
    "Columns": 96,
    "SamplesPerPixel": 1,
    "PhotometricInterpretation": "MONOCHROME2",
    "BitsAllocated": 8,
    "BitsStored": 8,
    "HighBit": 7,
    "PixelRepresentation": 0,
}


def gradient() -> np.ndarray:
    y, x = np.mgrid[0:64, 0:96]
    return np.asarray((x * 2 + y) % 256, dtype=np.uint8)


def test_names_in_jpeg_comment_and_exif_segments_do_not_leave(vault: SqliteVault) -> None:
    ok, jpeg = cv2.imencode(".jpg", gradient(), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    stream = jpeg.tobytes()
    exif = b"Exif\0\0" + b"Artist " + NAME + b" DOB 19610312 ID QX-4471902"
    planted = stream[:2] + segment(0xFE, NAME) + segment(0xE1, exif) + stream[2:]
    data = encapsulated(synthetic(**GREY_8), [planted], JPEGBaseline8Bit)
    outcome, out = delivered(vault, data)
    for planted_value in (NAME, b"4471902", b"19610312"):
        assert planted_value not in out
    assert outcome.counts["container_parts_removed"] >= 2
    received, sent = dcmread(io.BytesIO(data)), dcmread(io.BytesIO(out))
    assert np.array_equal(next(iter_pixels(received)), next(iter_pixels(sent)))


def test_a_name_in_a_jpeg_2000_comment_does_not_leave(vault: SqliteVault) -> None:
    picture = gradient()
    codestream = j2k_lossless(picture)
    siz_end = 4 + int.from_bytes(codestream[4:6], "big")  # SOC, then SIZ: marker, length
    comment = segment(0x64, b"\0\1" + NAME)  # COM, Rcom 1: Latin text
    planted = codestream[:siz_end] + comment + codestream[siz_end:]
    data = encapsulated(synthetic(**GREY_8), [planted], JPEG2000Lossless)
    _, out = delivered(vault, data)
    assert NAME not in out
    assert np.array_equal(next(iter_pixels(dcmread(io.BytesIO(out)))), picture)
