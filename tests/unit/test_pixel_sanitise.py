"""Native pixel data hides nothing (issue 17, item 1): no bits outside Bits Stored, no bytes
after the last pixel, the pixels a decoder shows unchanged. Through the real worker (engine,
pixel stage with the real detector, release check) unless a test says otherwise."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.pixels.utils import iter_pixels
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian

from gateway.deidentify.pixels.sanitise import sanitise
from gateway.errors import Unprocessable
from gateway.settings import PixelSettings
from gateway.vault.sqlite import SqliteVault
from gateway.worker import Outcome
from tests.dicom_builders import part10, pixel_stage, synthetic, worker

NAME = b"QXZORBLATT^JAN"
MR = "1.2.840.10008.5.1.4.1.1.4"


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqliteVault]:
    store = SqliteVault(tmp_path_factory.mktemp("v") / "vault.sqlite3", os.urandom(32))
    yield store
    store.close()


def image(
    words: np.ndarray, bits_stored: int, high_bit: int, signed: bool, **values: Any
) -> Dataset:
    """A 16-bit MR of `words` (rows x columns), as stored."""
    rows, columns = words.shape
    return synthetic(
        SOPClassUID=MR,
        Modality="MR",
        Rows=rows,
        Columns=columns,
        SamplesPerPixel=1,
        PhotometricInterpretation="MONOCHROME2",
        BitsAllocated=16,
        BitsStored=bits_stored,
        HighBit=high_bit,
        PixelRepresentation=int(signed),
        PixelData=words.astype("<u2").tobytes(),
        **values,
    )


def anatomy(rows: int = 128, columns: int = 128, top: int = 4000) -> np.ndarray:
    """A smooth 12-bit picture: no text for the detector to find."""
    y, x = np.mgrid[0:rows, 0:columns]
    picture = top * np.exp(-(((x - columns / 2) ** 2 + (y - rows / 2) ** 2) / (rows * columns / 6)))
    return np.asarray(picture, dtype=np.uint16)


def written_name(rows: int = 128, columns: int = 128) -> np.ndarray:
    """The name as an overlay bitmap (1 where a stroke is)."""
    plane = np.zeros((rows, columns), np.uint8)
    cv2.putText(plane, NAME.decode(), (2, 60), cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1, 1)
    return plane.astype(bool)


def run(vault: SqliteVault, ds: Dataset, **pixels: Any) -> tuple[Outcome, Dataset]:
    stage = pixel_stage(PixelSettings(**pixels)) if pixels else None
    outcome = worker(vault, pixels=stage).process(part10(ds))
    assert outcome.status == "written", (outcome.status, outcome.reason)
    assert outcome.result is not None
    return outcome, dcmread(io.BytesIO(outcome.result.data))


def decoded(ds: Dataset) -> np.ndarray:
    return next(iter_pixels(ds))


def stored(ds: Dataset) -> np.ndarray:
    return np.frombuffer(ds.PixelData, "<u2")


def test_an_overlay_in_the_high_bits_is_cleared_and_the_image_kept(vault: SqliteVault) -> None:
    """The name written into bit 15 of a 12-bit MR (the overlay group itself is removed): a
    reader of the raw words sees it; no decoder that follows Bits Stored does."""
    words = anatomy() | (written_name().astype(np.uint16) << 15)
    ds = image(words, 12, 11, signed=False)
    outcome, out = run(vault, ds)
    assert not (stored(out) & 0xF000).any()
    assert np.array_equal(decoded(out), decoded(ds))
    assert outcome.counts["pixel_words_cleared"] == int(written_name().sum())
    assert out.BurnedInAnnotation == "NO"


def test_signed_words_keep_their_sign_in_the_unused_bits(vault: SqliteVault) -> None:
    """Signed 12-bit values: the bits above High Bit repeat the sign bit (two's complement in
    16 bits), so a reader of the raw words sees the value too; a mark in bit 14 goes."""
    values = anatomy().astype(np.int32) - 2048  # -2048 .. 1952
    words = (values & 0x0FFF).astype(np.uint16) | (written_name().astype(np.uint16) << 14)
    ds = image(words, 12, 11, signed=True)
    _, out = run(vault, ds)
    assert np.array_equal(stored(out).view("<i2"), values.ravel().astype(np.int16))
    assert np.array_equal(decoded(out), decoded(ds))


def test_a_high_bit_off_the_stored_bits_is_quarantined(vault: SqliteVault) -> None:
    """High Bit 15 with 12 bits stored (PS3.3 C.7.6.3.1.1 requires Bits Stored - 1): decoders
    read bits 0-11 whatever High Bit says, so bits 12-15 were never looked at."""
    words = (anatomy() << 4) | written_name().astype(np.uint16)
    outcome = worker(vault).process(part10(image(words, 12, 15, signed=False)))
    assert (outcome.status, outcome.reason) == ("quarantined", "pixel-bits-layout")


def test_bytes_after_the_last_pixel_are_cut(vault: SqliteVault) -> None:
    ds = image(anatomy(), 16, 15, signed=False)
    ds.PixelData = ds.PixelData + NAME * 10
    outcome, out = run(vault, ds)
    assert outcome.result is not None
    assert NAME not in outcome.result.data
    assert len(out.PixelData) == 128 * 128 * 2
    assert outcome.counts["pixel_bytes_cut"] == len(NAME) * 10
    assert np.array_equal(decoded(out), anatomy())


def test_a_skipped_image_is_sanitised_all_the_same(vault: SqliteVault) -> None:
    """The site chose not to check MR for text: its container is still made clean."""
    words = anatomy() | (written_name().astype(np.uint16) << 15)
    ds = image(words, 12, 11, signed=False)
    ds.PixelData = ds.PixelData + NAME
    outcome, out = run(vault, ds, skip=("cross-sectional",))
    assert outcome.counts["pixels_unchecked"] == 1
    assert not (stored(out) & 0xF000).any()
    assert len(out.PixelData) == 128 * 128 * 2


def test_a_clean_image_is_written_as_received(vault: SqliteVault) -> None:
    ds = image(anatomy(), 12, 11, signed=False)
    outcome, out = run(vault, ds)
    assert out.PixelData == ds.PixelData
    assert "pixel_words_cleared" not in outcome.counts
    assert "pixel_bytes_cut" not in outcome.counts


# -- the sanitiser alone, for layouts the detector has no part in ------------------------------


def bare(**values: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in {"Rows": 3, "Columns": 3, "SamplesPerPixel": 1, **values}.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    ("pad", "cut"),
    [(b"\0", False), (b"Q", True), (b"\0\0", True), (b"", False)],
)
def test_an_odd_length_keeps_one_zero_pad_byte(pad: bytes, cut: bool) -> None:
    ds = bare(BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0)
    ds.PixelData = bytes(range(9)) + pad
    result = sanitise(ds, ExplicitVRLittleEndian)
    if not cut:
        assert result.elements == {}
        return
    assert result.elements[0x7FE00010].value == bytes(range(9)) + b"\0"
    assert result.counts == {"pixel_bytes_cut": len(pad)}


def test_the_bits_after_the_last_pixel_of_1_bit_data_are_cleared() -> None:
    """Nine 1-bit pixels take two bytes; the second byte's top seven bits are no pixel."""
    ds = bare(BitsAllocated=1, BitsStored=1, HighBit=0, PixelRepresentation=0)
    ds.PixelData = bytes([0b10110101, 0b11111111])
    result = sanitise(ds, ExplicitVRLittleEndian)
    assert result.elements[0x7FE00010].value == bytes([0b10110101, 0b00000001])


def test_big_endian_words_are_read_in_their_order() -> None:
    ds = bare(BitsAllocated=16, BitsStored=12, HighBit=11, PixelRepresentation=0)
    words = np.array([0x8123, 0x0FFF, 0x0800, 0x4001, 1, 2, 3, 4, 5], ">u2")
    ds.PixelData = words.tobytes()
    result = sanitise(ds, ExplicitVRBigEndian)
    cleaned = np.frombuffer(result.elements[0x7FE00010].value or b"", ">u2")
    assert cleaned.tolist() == [0x0123, 0x0FFF, 0x0800, 0x0001, 1, 2, 3, 4, 5]
    assert result.counts == {"pixel_words_cleared": 2}


def test_float_pixel_data_is_cut_to_its_length() -> None:
    ds = bare(BitsAllocated=32)
    ds.FloatPixelData = np.arange(9, dtype="<f4").tobytes() + NAME
    result = sanitise(ds, ExplicitVRLittleEndian)
    assert result.elements[0x7FE00008].value == np.arange(9, dtype="<f4").tobytes()


@pytest.mark.parametrize(("stored", "high_bit"), [(12, 12), (12, 16), (17, 16), (0, 0)])
def test_a_bit_layout_the_header_does_not_allow_is_refused(stored: int, high_bit: int) -> None:
    ds = bare(BitsAllocated=16, BitsStored=stored, HighBit=high_bit, PixelRepresentation=0)
    ds.PixelData = bytes(18)
    with pytest.raises(Unprocessable) as raised:
        sanitise(ds, ExplicitVRLittleEndian)
    assert raised.value.reason == "pixel-bits-layout"


def test_a_big_endian_ow_value_of_8_bit_pixels_is_cleaned_in_pixel_order() -> None:
    """PS3.5 7.3: an OW value in Explicit VR Big Endian has its bytes swapped in pairs, so the
    pad byte of nine 8-bit pixels is the second-last byte of the file: it is the one zeroed."""
    ds = bare(BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0)
    logical = bytes(range(1, 10)) + b"Q"  # nine pixels, then a pad that is not zero
    ds.add_new(0x7FE00010, "OW", np.frombuffer(logical, "<u2").byteswap().tobytes())
    result = sanitise(ds, ExplicitVRBigEndian)
    stored = result.elements[0x7FE00010].value or b""
    assert np.frombuffer(stored, ">u2").astype("<u2").tobytes() == bytes(range(1, 10)) + b"\0"
