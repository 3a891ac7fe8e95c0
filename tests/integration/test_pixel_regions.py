"""Ultrasound regions to keep, and blacking out in decoded frames (issue 5)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_color_lut

from gateway.deidentify.pixels.ctp import Region
from gateway.deidentify.pixels.frames import iter_frames
from gateway.deidentify.pixels.regions import black, mask, mask_outside, ultrasound_keep


def read(testdata: Path, name: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(testdata / "ultrasound" / name)


def test_sane_ultrasound_regions_are_kept_and_the_banner_masked(testdata: Path) -> None:
    ds = read(testdata, "deid_data__RGB_IMAGE.dcm")
    keep = ultrasound_keep(ds)
    assert keep == [Region(0, 60, 1009, 705)]  # (0,60)-(1008,764), inclusive corners
    frame = next(iter_frames(ds)).copy()
    before = frame.copy()
    changed = mask_outside(frame, keep, black(ds, frame))
    assert changed == 1024 * 768 - 1009 * 705
    assert not frame[:60].any()  # the banner at the top is black
    assert np.array_equal(frame[60:765, :1009], before[60:765, :1009])  # the image is not


def test_regions_outside_the_image_or_missing_are_not_trusted(testdata: Path) -> None:
    assert ultrasound_keep(read(testdata, "pydicom_wheel__examples_ybr_color.dcm")) is None
    assert ultrasound_keep(read(testdata, "pydicom_data__US1_UNCR.dcm")) is None


def test_black_is_the_darkest_value_for_each_photometric_interpretation() -> None:
    ds = Dataset()
    ds.BitsStored = 12
    ds.PhotometricInterpretation = "MONOCHROME2"
    assert black(ds, np.zeros((2, 2), np.uint16)) == 0
    assert black(ds, np.zeros((2, 2), np.int16)) == -2048
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert black(ds, np.zeros((2, 2), np.uint16)) == 4095
    frame = np.full((10, 10), 7, np.uint16)
    assert mask(frame, [Region(8, 8, 5, 5), Region(20, 20, 2, 2)], 0) == 4  # clipped, outside
    assert frame.sum() == 7 * 96


def test_black_in_a_palette_image_is_its_darkest_colour(testdata: Path) -> None:
    """OT-PAL-8-face maps index 0 to green: masking with 0 would paint text green, readable."""
    ds = pydicom.dcmread(
        testdata / "modalities_misc" / "pydicom_data__OT-PAL-8-face.dcm", force=True
    )
    if "TransferSyntaxUID" not in ds.file_meta:  # a bare data set in Implicit VR
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    frame = next(iter_frames(ds))
    index = black(ds, frame)
    colours = apply_color_lut(np.arange(256, dtype=np.uint8), ds).sum(axis=1)
    assert colours[index] == colours.min() == 0
    assert colours[0] > 0
