"""The release check reads pixel containers itself (release/containers.py): the worker's real
outputs pass; the same outputs with a leak planted where the pixel stage would have cleaned it
are held, by tag, with release-pixel-container."""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterator

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_fragments
from pydicom.uid import UID, JPEG2000Lossless, JPEGBaseline8Bit

from gateway.release import PixelEvidence, ReleaseCheck
from gateway.settings import DeidentifySettings
from gateway.vault.sqlite import SqliteVault
from tests.dicom_builders import encapsulated, j2k_lossless, part10, segment, synthetic, worker

NAME = b"Qxzorblatt^Jan"
CONTAINER = "release-pixel-container (7FE0,0010)"
CHECKED = PixelEvidence(has_pixels=True, checked=True, masked=0, skipped_by_site=False)
Edit = Callable[[Dataset], None]


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteVault]:
    store = SqliteVault(tmp_path_factory.mktemp("v") / "vault.sqlite3", os.urandom(32))
    yield store
    store.close()


def smooth(rows: int = 64, columns: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:rows, 0:columns]
    return np.asarray((x * 2 + y) % 200, dtype=np.uint8)


def image(**values: object) -> Dataset:
    return synthetic(
        Modality="OT",
        Rows=64,
        Columns=96,
        SamplesPerPixel=1,
        PhotometricInterpretation="MONOCHROME2",
        PixelRepresentation=0,
        **values,
    )


def compressed(frame: bytes, syntax: UID) -> bytes:
    return encapsulated(image(BitsAllocated=8, BitsStored=8, HighBit=7), [frame], syntax)


def jpeg() -> bytes:
    ok, encoded = cv2.imencode(".jpg", smooth())
    assert ok
    return compressed(encoded.tobytes(), JPEGBaseline8Bit)


def j2k() -> bytes:
    return compressed(j2k_lossless(smooth()), JPEG2000Lossless)


def native() -> bytes:
    words = smooth().astype("<u2") * 16
    return part10(image(BitsAllocated=16, BitsStored=12, HighBit=11, PixelData=words.tobytes()))


def findings(vault: SqliteVault, original: bytes, edit: Edit | None = None) -> set[str]:
    outcome = worker(vault).process(original)
    assert outcome.status == "written", outcome.reason
    assert outcome.result is not None
    output = outcome.result.data
    if edit is not None:
        ds = pydicom.dcmread(io.BytesIO(output))
        edit(ds)
        buffer = io.BytesIO()
        ds.save_as(buffer)
        output = buffer.getvalue()
    check = ReleaseCheck(DeidentifySettings(site_code="UT"))
    return {f"{f.reason} {f.where}" for f in check.check(original, output, CHECKED)}


def with_frame(change: Callable[[bytes], bytes]) -> Edit:
    """Re-encapsulate the output's one frame as `change` makes it."""

    def edit(ds: Dataset) -> None:
        frame = list(generate_fragments(ds.PixelData))[1]
        ds.PixelData = encapsulate([change(frame)])

    return edit


@pytest.mark.parametrize("original", [jpeg, j2k, native], ids=["jpeg", "j2k", "native"])
def test_the_workers_outputs_pass(vault: SqliteVault, original: Callable[[], bytes]) -> None:
    assert findings(vault, original()) == set()


def test_a_jpeg_comment_is_held(vault: SqliteVault) -> None:
    planted = with_frame(lambda f: f[:2] + segment(0xFE, NAME) + f[2:])
    assert findings(vault, jpeg(), planted) == {CONTAINER}


@pytest.mark.parametrize("marker", [0xE0, 0xE1, 0xED, 0xEE, 0xEF])
def test_a_jpeg_app_segment_is_held(vault: SqliteVault, marker: int) -> None:
    planted = with_frame(lambda f: f[:2] + segment(marker, b"Exif\0\0" + NAME) + f[2:])
    assert findings(vault, jpeg(), planted) == {CONTAINER}


def test_a_jpeg_whose_quantisers_hold_the_bytes_of_a_marker_passes(vault: SqliteVault) -> None:
    """Quality 3: quantisers of 255 and 225 are the bytes FF E1 inside a DQT, not an APP1
    (the check walks the segments; a search of the bytes held such JPEGs)."""
    ok, encoded = cv2.imencode(".jpg", smooth(), [cv2.IMWRITE_JPEG_QUALITY, 3])
    assert ok
    frame = encoded.tobytes()
    dqt = frame.index(b"\xff\xdb")
    assert re.search(rb"\xff[\xe0-\xef\xfe]", frame[dqt + 2 : frame.index(b"\xff\xc0")])
    assert findings(vault, compressed(frame, JPEGBaseline8Bit)) == set()


def test_a_comment_after_the_scan_is_held(vault: SqliteVault) -> None:
    planted = with_frame(lambda f: f[:-2] + segment(0xFE, NAME) + f[-2:])
    assert findings(vault, jpeg(), planted) == {CONTAINER}


def test_bytes_after_a_jpeg_end_are_held(vault: SqliteVault) -> None:
    assert findings(vault, jpeg(), with_frame(lambda f: f + NAME)) == {CONTAINER}


def test_a_jpeg_2000_comment_is_held(vault: SqliteVault) -> None:
    def planted(frame: bytes) -> bytes:
        siz_end = 4 + int.from_bytes(frame[4:6], "big")
        return frame[:siz_end] + segment(0x64, b"\0\1" + NAME) + frame[siz_end:]

    assert findings(vault, j2k(), with_frame(planted)) == {CONTAINER}


def test_bits_above_high_bit_are_held(vault: SqliteVault) -> None:
    def overlay(ds: Dataset) -> None:
        words = np.frombuffer(ds.PixelData, "<u2").copy()
        words[:40] |= 0x8000
        ds.PixelData = words.tobytes()

    assert findings(vault, native(), overlay) == {CONTAINER}


def test_bytes_after_native_pixels_are_held(vault: SqliteVault) -> None:
    def appended(ds: Dataset) -> None:
        ds.PixelData = ds.PixelData + NAME

    assert findings(vault, native(), appended) == {CONTAINER}
