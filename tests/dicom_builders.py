"""Synthetic DICOM for de-identification tests: data sets, their Part 10 bytes, a worker."""

from __future__ import annotations

import dataclasses
import functools
import io
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

from gateway.deidentify.pixels.models import load_finder
from gateway.deidentify.pixels.ocr import OnnxText
from gateway.deidentify.pixels.stage import PixelStage
from gateway.settings import DeidentifySettings, PixelSettings, PolicySettings
from gateway.vault import Vault
from gateway.worker import Worker

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def item(**values: Any) -> Dataset:
    """A data set (or sequence item) with the given keyword values."""
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def synthetic(**values: Any) -> Dataset:
    """A secondary capture with fresh UIDs, a patient, and `values` on top."""
    defaults: dict[str, Any] = {
        "SOPClassUID": SECONDARY_CAPTURE,
        "SOPInstanceUID": generate_uid(),
        "StudyInstanceUID": generate_uid(),
        "SeriesInstanceUID": generate_uid(),
        "PatientID": "P-778812",
        "PatientName": "Test^Patient",
        "Modality": "OT",
    }
    return item(**{**defaults, **values})


def greyscale(rows: int, columns: int, pixels: bytes, **values: Any) -> Dataset:
    """A `synthetic` secondary capture holding 8-bit MONOCHROME2 `pixels` (frames one after
    the other: set NumberOfFrames for more than one; `values` may set other bits)."""
    return _image(rows, columns, pixels, 1, "MONOCHROME2", values)


def rgb(rows: int, columns: int, pixels: bytes, **values: Any) -> Dataset:
    """A `synthetic` secondary capture holding 8-bit RGB `pixels`, colour by pixel (frames
    one after the other: set NumberOfFrames for more than one)."""
    return _image(rows, columns, pixels, 3, "RGB", {"PlanarConfiguration": 0, **values})


def _image(
    rows: int, columns: int, pixels: bytes, samples: int, photometric: str, values: dict[str, Any]
) -> Dataset:
    layout: dict[str, Any] = {
        "Rows": rows,
        "Columns": columns,
        "SamplesPerPixel": samples,
        "PhotometricInterpretation": photometric,
        "BitsAllocated": 8,
        "BitsStored": 8,
        "HighBit": 7,
        "PixelRepresentation": 0,
        "PixelData": pixels,
    }
    return synthetic(**{**layout, **values})


def part10(ds: Dataset) -> bytes:
    """`ds` as a Part 10 file in Explicit VR Little Endian."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if "SOPClassUID" in ds:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def implicit_in_explicit(ds: Dataset) -> bytes:
    """`ds` as a Part 10 file whose meta says Explicit VR Little Endian but whose data set is
    encoded Implicit VR (a writer's bug seen in the wild: pydicom warns, then reads it)."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    head, body = DicomBytesIO(), DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta)
    body.is_little_endian, body.is_implicit_VR = True, True
    write_dataset(body, ds)
    return head.getvalue() + body.getvalue()


def encapsulated(ds: Dataset, frames: list[bytes], syntax: str) -> bytes:
    """`ds` with `frames` as encapsulated Pixel Data, as a Part 10 file in `syntax`."""
    ds.PixelData = encapsulate(frames, has_bot=len(frames) > 1)
    ds["PixelData"].VR = "OB"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def j2k_lossless(picture: np.ndarray) -> bytes:
    """An 8-bit greyscale picture as one JPEG 2000 Lossless codestream (pylibjpeg-openjpeg)."""
    rows, columns = picture.shape
    return get_encoder(JPEG2000Lossless).encode(
        picture,
        rows=rows,
        columns=columns,
        samples_per_pixel=1,
        bits_allocated=8,
        bits_stored=8,
        pixel_representation=0,
        photometric_interpretation="MONOCHROME2",
        number_of_frames=1,
    )


def segment(marker: int, payload: bytes) -> bytes:
    """A JPEG (or JPEG 2000) marker segment: 0xFF, marker, length, payload."""
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


@functools.cache
def text_finder() -> OnnxText:
    """The gateway's text detector, loaded once per test process."""
    return load_finder()


def pixel_stage(pixels: PixelSettings | None = None, rules: tuple[Any, ...] = ()) -> PixelStage:
    return PixelStage(pixels or PixelSettings(), rules, text_finder())


def worker(
    vault: Vault,
    policy: PolicySettings | None = None,
    pixels: PixelStage | None = None,
    **options: Any,
) -> Worker:
    """A worker for site "UT" with default options changed by `options`."""
    settings = dataclasses.replace(DeidentifySettings(site_code="UT"), **options)
    return Worker(
        settings,
        policy or PolicySettings(),
        vault,
        ae_title="GATEWAY_UT",
        pixels=pixels or pixel_stage(),
    )


#: One value per VR that holds no known word, date or identifier of a synthetic patient: what
#: an attribute of that VR carries when a test asks what the engine does to it.
NEUTRAL: dict[str, Any] = {
    "AE": "QXSTATION",
    "AS": "095Y",
    "CS": "QXCODE",
    "DA": "20200102",
    "DS": "1.5",
    "DT": "20200102030405",
    "IS": "7",
    "LO": "QX LONG",
    "LT": "QX long text",
    "OB": b"QXOB",
    "PN": "Qxfamily^Qxgiven",
    "SH": "QXSHORT",
    "ST": "QX short text",
    "TM": "101010",
    "UC": "QX unlimited",
    "UI": "1.2.826.0.1.3680043.2.1125.77",
    "UN": b"QXUN",
    "UR": "http://example.org/qx",
    "US": 5,
    "UT": "QX text",
}
