"""Issue 17: compressed frames carry no more than their pixels.

Real frames are made here from synthetic pictures (a gradient and some shapes): JPEG baseline by
OpenCV, JPEG extended, lossless and JPEG-LS by dcmtk, JPEG 2000 by pylibjpeg-openjpeg, RLE by
pydicom. Then comments, Exif, JFIF thumbnails, Photoshop IPTC, JP2 boxes and trailing bytes are
put in with an invented patient's name, ID and birth date. After cleaning, none of those bytes
may be left, and the frame must decode to exactly the pixels it had.
"""

from __future__ import annotations

import functools
import struct
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openjpeg.utils import encode_array
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import (
    JPEG2000,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from gateway.deidentify.pixels.containers import (
    Cleaned,
    Geometry,
    clean_frame,
    supported_syntaxes,
)
from gateway.errors import Unprocessable
from tests.support import dcmtk

NAME, PATIENT_ID, BIRTH_DATE = b"Qxzorblatt^Jan", b"QX-40917263", b"19670412"
SECRETS = (NAME, b"Qxzorblatt", PATIENT_ID, BIRTH_DATE)
BASELINE, EXTENDED = "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"
LOSSLESS, LOSSLESS_SV1 = "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"
JLS_LOSSLESS, JLS_NEAR = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"


# --- pictures, frames and decoding ------------------------------------------------------------


def picture(rows: int, columns: int, bits: int, samples: int = 1) -> np.ndarray:
    """A gradient with a disc, a bar and a ring on it: smooth and sharp areas both."""
    top = (1 << bits) - 1
    ramp = (
        np.add.outer(np.arange(rows) * 3, np.arange(columns) * 2) * top // (3 * rows + 2 * columns)
    )
    planes = []
    for s in range(samples):
        plane = np.ascontiguousarray(np.roll(ramp, 17 * s, axis=1), dtype=np.float64)
        cv2.circle(plane, (columns // 3, rows // 3), rows // 6, top * 0.9, -1)
        cv2.rectangle(plane, (columns // 2, rows // 2), (columns - 5, rows // 2 + 7), top * 0.1, -1)
        cv2.circle(plane, (columns // 4, 3 * rows // 4), rows // 8, top * (0.3 + 0.2 * s), 3)
        planes.append(plane)
    dtype = np.uint8 if bits <= 8 else np.uint16
    stacked = np.dstack(planes) if samples > 1 else planes[0]
    return np.clip(stacked, 0, top).astype(dtype)


@dataclass(frozen=True)
class Sample:
    """One encoded frame with the header that describes it."""

    syntax: str
    frame: bytes
    header: Dataset
    source: np.ndarray  # the picture before encoding


def header(arr: np.ndarray, bits: int, photometric: str, syntax: str) -> Dataset:
    ds = Dataset()
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 1 if arr.ndim == 2 else arr.shape[2]
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
    ds.PhotometricInterpretation = photometric
    if ds.SamplesPerPixel > 1:
        ds.PlanarConfiguration = 0
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    return ds


def decode(sample: Sample, frame: bytes) -> np.ndarray:
    """The frame's pixels as pydicom decodes them (pylibjpeg's libjpeg, openjpeg, rle)."""
    ds = Dataset()
    ds.update(sample.header)
    ds.file_meta = sample.header.file_meta
    if UID(sample.syntax).is_encapsulated:
        ds.PixelData = encapsulate([frame])
    else:
        ds.PixelData = frame
    ds["PixelData"].VR = "OB"
    return ds.pixel_array


def ijg(frame: bytes) -> np.ndarray:
    """The frame as OpenCV's libjpeg-turbo decodes it: colour taken from JFIF, Adobe and the
    component identifiers (as dcmtk's and most viewers' IJG decoders do)."""
    decoded = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded is not None
    return decoded


def opencv_jpeg(samples: int) -> Sample:
    arr = picture(256, 256, 8, samples)
    ok, encoded = cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    photometric = "YBR_FULL_422" if samples == 3 else "MONOCHROME2"
    # OpenCV takes the planes as BGR: no matter, tests compare decoded frames with each other
    return Sample(BASELINE, encoded.tobytes(), header(arr, 8, photometric, BASELINE), arr)


def dcmtk_frame(tool: str, options: tuple[str, ...], arr: np.ndarray, bits: int) -> Sample:
    """`arr` written as native DICOM and compressed by dcmtk's `tool` with `options`."""
    photometric = "RGB" if arr.ndim == 3 else "MONOCHROME2"
    ds = header(arr, bits, photometric, ExplicitVRLittleEndian)
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.7", pydicom.uid.generate_uid()
    ds.PatientName, ds.PatientID = "Qxzorblatt^Jan", "QX-40917263"
    ds.PixelData = arr.tobytes()
    with tempfile.TemporaryDirectory() as folder:
        native, compressed = Path(folder) / "in.dcm", Path(folder) / "out.dcm"
        ds.save_as(native, enforce_file_format=True)
        subprocess.run([dcmtk(tool), *options, str(native), str(compressed)], check=True)
        out = pydicom.dcmread(compressed)
    syntax = str(out.file_meta.TransferSyntaxUID)
    frame = next(generate_frames(out.PixelData, number_of_frames=1))
    like = header(arr, bits, str(out.PhotometricInterpretation), syntax)
    return Sample(syntax, frame, like, arr)


def j2k(arr: np.ndarray, bits: int, syntax: str = JPEG2000Lossless, **options: object) -> Sample:
    """A JPEG 2000 frame by pylibjpeg-openjpeg (one tile, a COM saying who made it)."""
    photometric = "MONOCHROME2" if arr.ndim == 2 else "YBR_RCT"
    if syntax == JPEG2000:
        options.setdefault("compression_ratios", [20.0])
        photometric = "MONOCHROME2" if arr.ndim == 2 else "YBR_ICT"
    encoded = encode_array(
        arr,
        bits_stored=bits,
        photometric_interpretation=0 if arr.ndim == 2 else 1,
        **options,  # type: ignore[arg-type]
    )
    return Sample(syntax, encoded, header(arr, bits, photometric, syntax), arr)


def rle(arr: np.ndarray, bits: int) -> Sample:
    photometric = "MONOCHROME2" if arr.ndim == 2 else "RGB"
    ds = header(arr, bits, photometric, RLELossless)
    encoded = get_encoder(RLELossless).encode(
        arr,
        rows=ds.Rows,
        columns=ds.Columns,
        samples_per_pixel=ds.SamplesPerPixel,
        bits_allocated=ds.BitsAllocated,
        bits_stored=bits,
        pixel_representation=0,
        photometric_interpretation=photometric,
        number_of_frames=1,
        planar_configuration=0,
    )
    return Sample(RLELossless, encoded, ds, arr)


def geometry(sample: Sample) -> Geometry:
    ds = sample.header
    return Geometry(ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.BitsAllocated)


JPEG_MAKERS: dict[str, Callable[[], Sample]] = {
    "baseline-grey-8": lambda: opencv_jpeg(1),
    "baseline-colour-8": lambda: opencv_jpeg(3),
    "baseline-rgb-dcmtk": lambda: dcmtk_frame("dcmcjpeg", ("+eb", "+cr"), picture(96, 80, 8, 3), 8),
    "extended-grey-12": lambda: dcmtk_frame("dcmcjpeg", ("+ee",), picture(96, 80, 12), 12),
    "lossless-grey-16": lambda: dcmtk_frame("dcmcjpeg", ("+el",), picture(96, 80, 16), 16),
    "lossless-sv1-grey-12": lambda: dcmtk_frame("dcmcjpeg", ("+e1",), picture(96, 80, 12), 12),
    "lossless-sv1-colour-8": lambda: dcmtk_frame("dcmcjpeg", ("+e1",), picture(96, 80, 8, 3), 8),
    "jpeg-ls-grey-16": lambda: dcmtk_frame("dcmcjpls", ("+el",), picture(96, 80, 16), 16),
    "jpeg-ls-colour-8": lambda: dcmtk_frame("dcmcjpls", ("+el",), picture(96, 80, 8, 3), 8),
    "jpeg-ls-near-grey-12": lambda: dcmtk_frame("dcmcjpls", ("+en",), picture(96, 80, 12), 12),
}
J2K_MAKERS: dict[str, Callable[[], Sample]] = {
    "lossless-grey-12": lambda: j2k(picture(96, 80, 12), 12),
    "lossless-grey-16": lambda: j2k(picture(64, 72, 16), 16),
    "lossless-colour-8": lambda: j2k(picture(96, 80, 8, 3), 8),
    "lossy-grey-8": lambda: j2k(picture(96, 80, 8), 8, JPEG2000),
    "lossy-colour-8": lambda: j2k(picture(96, 80, 8, 3), 8, JPEG2000),
    "lossless-tlm-plt": lambda: j2k(picture(96, 80, 8), 8, add_tlm=True, add_plt=True),
}


@functools.cache
def sample(kind: str) -> Sample:
    return {**JPEG_MAKERS, **{f"j2k-{k}": v for k, v in J2K_MAKERS.items()}}[kind]()


def clean(frame: bytes, syntax: str) -> Cleaned:
    return clean_frame(frame, syntax)


def assert_nothing_secret(data: bytes) -> None:
    for secret in SECRETS:
        assert secret not in data


# --- what is put into frames -----------------------------------------------------------------


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def exif() -> bytes:
    """APP1 Exif: a little-endian TIFF IFD with Artist, ImageDescription and DateTime."""
    values = [(0x013B, NAME + b"\0"), (0x010E, b"ID " + PATIENT_ID + b"\0"), (0x0132, BIRTH_DATE)]
    data_at = 8 + 2 + 12 * len(values) + 4
    entries, blobs = b"", b""
    for tag, text in values:
        entries += struct.pack("<HHII", tag, 2, len(text), data_at + len(blobs))
        blobs += text
    tiff = b"II*\0" + struct.pack("<I", 8) + struct.pack("<H", len(values)) + entries
    return jpeg_segment(0xE1, b"Exif\0\0" + tiff + b"\0\0\0\0" + blobs)


def jfif_with_thumbnail() -> bytes:
    """APP0 JFIF with a 4 x 2 RGB thumbnail whose pixels spell the patient's name."""
    thumbnail = (NAME + b"+" * 24)[:24]
    return jpeg_segment(0xE0, b"JFIF\0\x01\x02\x00\x00\x01\x00\x01\x04\x02" + thumbnail)


def photoshop_iptc() -> bytes:
    """APP13 Photoshop 3.0 with an IPTC record 2:80 (By-line)."""
    iptc = b"\x1c\x02\x50" + struct.pack(">H", len(NAME)) + NAME
    resource = b"8BIM\x04\x04\0\0" + struct.pack(">I", len(iptc)) + iptc
    return jpeg_segment(0xED, b"Photoshop 3.0\0" + resource)


def comment() -> bytes:
    return jpeg_segment(0xFE, b"Patient " + NAME + b" " + PATIENT_ID + b" born " + BIRTH_DATE)


def junk_app(marker: int) -> bytes:
    return jpeg_segment(marker, b"VENDOR\0" + PATIENT_ID + b"\0" + BIRTH_DATE)


ALL_JPEG_JUNK = (jfif_with_thumbnail(), exif(), photoshop_iptc(), comment(), junk_app(0xE2))


def jpeg_boundaries(frame: bytes) -> list[int]:
    """Offsets between SOI and the first SOS where a marker segment may stand (B.2.1)."""
    positions, pos = [2], 2
    while True:
        while frame[pos + 1] == 0xFF:  # fill bytes
            pos += 1
        if frame[pos + 1] == 0xDA:
            return positions
        pos += 2 + int.from_bytes(frame[pos + 2 : pos + 4], "big")
        positions.append(pos)


def insert(frame: bytes, at: int, extra: bytes) -> bytes:
    return frame[:at] + extra + frame[at:]


def dirty_jpeg(frame: bytes) -> bytes:
    """Junk after SOI, just before the first scan, and after EOI."""
    before_scan = jpeg_boundaries(frame)[-1]
    dirty = insert(frame, before_scan, comment() + junk_app(0xEF))
    return insert(dirty, 2, b"".join(ALL_JPEG_JUNK)) + b"trailing " + NAME


def j2k_segment(marker: int, payload: bytes) -> bytes:
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def j2k_comment() -> bytes:
    return j2k_segment(0xFF64, b"\x00\x01" + NAME + b" " + PATIENT_ID + b" " + BIRTH_DATE)


def main_header_end(stream: bytes) -> int:
    """The offset of the first SOT (after the main header's marker segments)."""
    pos = 2
    while stream[pos : pos + 2] != b"\xff\x90":
        assert pos < len(stream)
        pos += 2 + int.from_bytes(stream[pos + 2 : pos + 4], "big")
    return pos


def main_boundaries(stream: bytes) -> list[int]:
    """Offsets after SIZ where a main header marker segment may stand (A.4.1)."""
    pos = 2 + 2 + int.from_bytes(stream[4:6], "big")
    positions = [pos]
    while stream[pos : pos + 2] != b"\xff\x90":
        assert pos < len(stream)
        pos += 2 + int.from_bytes(stream[pos + 2 : pos + 4], "big")
        positions.append(pos)
    return positions


def tile_parts(stream: bytes) -> list[tuple[int, int]]:
    """(offset, Psot) of each tile-part, following Psot from the first SOT to EOC."""
    parts, pos = [], main_header_end(stream)
    while stream[pos : pos + 2] == b"\xff\x90":
        psot = int.from_bytes(stream[pos + 6 : pos + 10], "big")
        parts.append((pos, psot))
        pos = pos + psot if psot else len(stream) - 2  # 0: the last, up to EOC
    assert stream[pos:] == b"\xff\xd9"
    return parts


def into_tile_part(stream: bytes, sot: int, extra: bytes) -> bytes:
    """`extra` right after the SOT segment at `sot`, with that tile-part's Psot grown to match."""
    psot = int.from_bytes(stream[sot + 6 : sot + 10], "big")
    grown = stream[: sot + 6] + struct.pack(">I", psot + len(extra)) + stream[sot + 10 : sot + 12]
    return grown + extra + stream[sot + 12 :]


def packet_lengths(plt: bytes) -> list[int]:
    """Iplt values of a PLT segment (A.7.3): 7 bits a byte, high bit set on all but the last."""
    lengths, value = [], 0
    for byte in plt[5:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            lengths.append(value)
            value = 0
    return lengths


def two_tile_parts(stream: bytes, extra: bytes) -> bytes:
    """The single tile-part of an openjpeg stream made with PLT, split after its first packet
    into two tile-parts (A.4.2: a tile-part holds whole packets), `extra` in the second's
    header."""
    sot = main_header_end(stream)
    assert stream[sot + 12 : sot + 14] == b"\xff\x58"  # the PLT right after SOT
    plt_end = sot + 14 + int.from_bytes(stream[sot + 14 : sot + 16], "big")
    first = packet_lengths(stream[sot + 12 : plt_end])[0]
    sod = plt_end
    assert stream[sod : sod + 2] == b"\xff\x93"
    data = stream[sod + 2 : -2]
    isot = stream[sot + 4 : sot + 6]
    part_a = b"\xff\x90\x00\x0a" + isot + struct.pack(">IBB", 14 + first, 0, 2)
    part_b = (
        b"\xff\x90\x00\x0a" + isot + struct.pack(">IBB", 14 + len(extra) + len(data) - first, 1, 2)
    )
    return (
        stream[:sot]
        + part_a
        + b"\xff\x93"
        + data[:first]
        + part_b
        + extra
        + b"\xff\x93"
        + data[first:]
        + b"\xff\xd9"
    )


def box(kind: bytes, content: bytes) -> bytes:
    return struct.pack(">I", 8 + len(content)) + kind + content


# --- JPEG family -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(JPEG_MAKERS))
def test_jpeg_frames_lose_comments_and_app_segments_but_no_pixels(kind: str) -> None:
    """COM and APPn anywhere before the scan and bytes after EOI go (10918-1 B.2.4.5, B.2.4.6);
    the rest is copied, so every decoder sees the same pixels."""
    s = sample(kind)
    dirty = dirty_jpeg(s.frame)
    for secret in SECRETS:
        assert secret in dirty
    cleaned = clean(dirty, s.syntax)
    assert_nothing_secret(cleaned.data)
    assert np.array_equal(decode(s, s.frame), decode(s, cleaned.data))
    assert cleaned.removed >= len(ALL_JPEG_JUNK) + 3
    if b"Adobe" not in s.frame:  # else the JFIF put in changes colour for libjpeg: see below
        assert clean(s.frame, s.syntax).data == cleaned.data


@pytest.mark.parametrize(
    "kind", ["lossless-grey-16", "lossless-sv1-grey-12", "lossless-sv1-colour-8", "jpeg-ls-grey-16"]
)
def test_lossless_jpeg_frames_still_give_the_original_picture(kind: str) -> None:
    s = sample(kind)
    assert np.array_equal(s.source, decode(s, clean(dirty_jpeg(s.frame), s.syntax).data))


def test_only_segments_a_decoder_needs_are_left() -> None:
    """What a clean baseline frame holds: SOI, DQT, SOF0, DHT, SOS + scan, EOI (B.2)."""
    s = sample("baseline-colour-8")
    cleaned = clean(dirty_jpeg(s.frame), s.syntax).data
    markers = [cleaned[p + 1] for p in jpeg_boundaries(cleaned)]
    assert cleaned[:2] == b"\xff\xd8"
    assert cleaned[-2:] == b"\xff\xd9"
    assert set(markers) <= {0xDB, 0xC0, 0xC4, 0xDA}
    assert markers[-1] == 0xDA


def test_a_jfif_frame_decodes_the_same_in_ijg_decoders_without_its_jfif() -> None:
    """OpenCV's frame has JFIF and component identifiers 1 2 3: libjpeg takes YCbCr either
    way, so no APP segment is needed."""
    s = sample("baseline-colour-8")
    assert s.frame[6:11] == b"JFIF\0"
    cleaned = clean(s.frame, s.syntax).data
    assert b"JFIF" not in cleaned
    assert b"Adobe" not in cleaned
    assert np.array_equal(ijg(s.frame), ijg(cleaned))


def without_jfif(frame: bytes) -> bytes:
    assert frame[6:11] == b"JFIF\0"
    return frame[:2] + frame[4 + int.from_bytes(frame[4:6], "big") :]


def test_an_adobe_segment_that_colour_depends_on_is_kept_in_canonical_form() -> None:
    """An Adobe transform 0 says 'no colour transform' (RGB) where libjpeg would otherwise
    take YCbCr: it stays, rewritten with version 100 and no flags, so its other bytes (here a
    name hidden in the flags and after them) do not."""
    frame = without_jfif(sample("baseline-colour-8").frame)
    adobe = jpeg_segment(0xEE, b"Adobe\0\x65Qx\0\0\0" + NAME)
    dirty = insert(frame, 2, adobe)
    cleaned = clean(dirty, BASELINE).data
    assert cleaned[2:18] == b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
    assert_nothing_secret(cleaned)
    assert b"Qx" not in cleaned
    assert np.array_equal(ijg(dirty), ijg(cleaned))
    assert not np.array_equal(ijg(frame), ijg(cleaned))  # the transform byte matters


def test_an_adobe_segment_that_changes_nothing_goes() -> None:
    """Adobe transform 1 (YCbCr) on components 1 2 3 is what libjpeg assumes anyway."""
    frame = without_jfif(sample("baseline-colour-8").frame)
    dirty = insert(frame, 2, jpeg_segment(0xEE, b"Adobe\0\x64\0\0\0\0\x01"))
    cleaned = clean(dirty, BASELINE)
    assert b"Adobe" not in cleaned.data
    assert cleaned.removed == 1
    assert np.array_equal(ijg(dirty), ijg(cleaned.data))


def test_greyscale_needs_no_colour_segment() -> None:
    frame = sample("baseline-grey-8").frame
    dirty = insert(frame, 2, jpeg_segment(0xEE, b"Adobe\0\x64\0\0\0\0\x00"))
    assert clean(dirty, BASELINE).data == clean(frame, BASELINE).data


def rgb_identifiers(frame: bytes) -> bytes:
    """The frame with component identifiers 'R' 'G' 'B' in SOF0 and SOS instead of 1 2 3."""
    out = bytearray(frame)
    for pos in jpeg_boundaries(frame):
        marker = frame[pos + 1]
        if marker == 0xC0:
            for i, ident in enumerate(b"RGB"):
                out[pos + 10 + 3 * i] = ident
        if marker == 0xDA:
            for i, ident in enumerate(b"RGB"):
                out[pos + 5 + 2 * i] = ident
    return bytes(out)


def test_jfif_on_rgb_identifiers_becomes_an_adobe_transform() -> None:
    """JFIF makes libjpeg take YCbCr even where the identifiers say 'R' 'G' 'B' (jdapimin.c):
    without the JFIF segment that meaning needs an Adobe transform 1."""
    frame = rgb_identifiers(sample("baseline-colour-8").frame)
    cleaned = clean(frame, BASELINE).data
    assert cleaned[2:18] == b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x01"
    assert np.array_equal(ijg(frame), ijg(cleaned))


def test_dcmtk_rgb_jpeg_keeps_its_colours() -> None:
    """dcmtk's RGB JPEG (+cr) has an Adobe transform 0 and identifiers 'R' 'G' 'B', which say
    the same: the segment goes."""
    s = sample("baseline-rgb-dcmtk")
    assert b"Adobe" in s.frame
    cleaned = clean(s.frame, s.syntax).data
    assert b"Adobe" not in cleaned
    assert np.array_equal(ijg(s.frame), ijg(cleaned))


def test_jpeg_ls_colour_transform_is_kept_in_canonical_form() -> None:
    """HP's colour transforms for JPEG-LS live in APP8 "mrfx" (CharLS): 1-3 are kept alone,
    0 (none) goes, anything else is not known."""
    frame = sample("jpeg-ls-colour-8").frame
    mrfx = jpeg_segment(0xE8, b"mrfx\x01" + NAME)
    cleaned = clean(insert(frame, 2, mrfx), JLS_LOSSLESS).data
    assert cleaned[2:11] == b"\xff\xe8\x00\x07mrfx\x01"
    assert_nothing_secret(cleaned)
    none = clean(insert(frame, 2, jpeg_segment(0xE8, b"mrfx\x00")), JLS_LOSSLESS).data
    assert none == clean(frame, JLS_LOSSLESS).data
    with pytest.raises(Unprocessable) as unknown:
        clean(insert(frame, 2, jpeg_segment(0xE8, b"mrfx\x07")), JLS_LOSSLESS)
    assert unknown.value.reason == "jpeg-ls-colour-transform-unknown"


def test_fill_bytes_and_reserved_markers_go() -> None:
    """Fill bytes before a marker (B.1.1.2), TEM and reserved JPGn/RES marker segments carry
    nothing a decoder needs."""
    frame = sample("baseline-grey-8").frame
    before_scan = jpeg_boundaries(frame)[-1]
    dirty = insert(frame, before_scan, b"\xff\xff\xff")
    dirty = insert(dirty, 2, b"\xff\x01" + junk_app(0xF0) + junk_app(0xC8) + junk_app(0x02))
    cleaned = clean(dirty, BASELINE)
    assert cleaned.data == clean(frame, BASELINE).data
    assert cleaned.removed == clean(frame, BASELINE).removed + 5
    assert_nothing_secret(cleaned.data)


def test_the_scan_is_copied_bit_exact_with_restart_markers_and_stuffing() -> None:
    """Restart intervals put RSTn markers in the scan; 0xFF data bytes are followed by 0x00
    (B.1.1.5): the scan ends at the first other marker, not before."""
    arr = picture(128, 128, 8)
    ok, encoded = cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_RST_INTERVAL, 2])
    assert ok
    frame = encoded.tobytes()
    scan_start = jpeg_boundaries(frame)[-1]
    scan = frame[scan_start:-2]
    assert b"\xff\xd0" in scan
    assert b"\xff\x00" in scan
    cleaned = clean(insert(frame, 2, comment()), BASELINE).data
    assert cleaned.endswith(scan + b"\xff\xd9")
    assert np.array_equal(ijg(frame), ijg(cleaned))


@settings(max_examples=150, deadline=None)
@given(
    placed=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=20),
            st.sampled_from([*range(0xE0, 0xF0), 0xFE]),
            st.binary(max_size=80),
            st.integers(min_value=0, max_value=3),
        ),
        max_size=6,
    ),
    trailing=st.binary(max_size=20),
)
def test_any_app_or_comment_anywhere_in_the_header_goes(
    placed: list[tuple[int, int, bytes, int]], trailing: bytes
) -> None:
    """Random APPn and COM segments, with fill bytes before them, at random places between
    SOI and the scan, and random bytes after EOI: the clean frame is the same to the byte."""
    frame = sample("jpeg-ls-grey-16").frame
    expected = clean(frame, JLS_LOSSLESS).data
    dirty = frame
    for where, marker, payload, fill in placed:
        positions = jpeg_boundaries(dirty)
        segment = b"\xff" * fill + jpeg_segment(marker, NAME + payload)
        dirty = insert(dirty, positions[where % len(positions)], segment)
    dirty += trailing
    cleaned = clean(dirty, JLS_LOSSLESS)
    assert expected == cleaned.data
    assert_nothing_secret(cleaned.data)


def test_a_truncated_jpeg_frame_is_unprocessable_wherever_it_is_cut() -> None:
    """A frame that never reaches EOI cannot be shown to hold nothing else."""
    frame = sample("lossless-sv1-colour-8").frame
    for length in range(len(frame) - 1):
        with pytest.raises(Unprocessable):
            clean(frame[:length], LOSSLESS_SV1)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda f: f[2:], "jpeg-no-soi"),
        (lambda f: insert(f, 2, b"PATIENT"), "jpeg-stray-bytes"),
        (lambda f: insert(f, 2, b"\xff\xd8"), "jpeg-marker-out-of-place"),
        (lambda f: insert(f, 2, b"\xff\xd3"), "jpeg-marker-out-of-place"),
        (
            lambda f: insert(f, 2, jpeg_segment(0xDB, b"\x00" + bytes(64) + NAME)),
            "jpeg-segment-malformed",
        ),
        (
            lambda f: insert(f, 2, jpeg_segment(0xC4, b"\x00" + bytes(16) + NAME)),
            "jpeg-segment-malformed",
        ),
        (lambda f: insert(f, 2, jpeg_segment(0xDD, b"\x00\x04" + NAME)), "jpeg-segment-malformed"),
        (lambda f: f[: jpeg_boundaries(f)[-1]] + b"\xff\xd9", "jpeg-no-scan"),
        (
            lambda f: insert(f, 2, jpeg_segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")),
            "jpeg-scan-before-frame",
        ),
    ],
)
def test_a_jpeg_frame_that_does_not_parse_is_unprocessable(
    damage: Callable[[bytes], bytes], reason: str
) -> None:
    """Stray bytes, markers out of place and tables with room to spare (a DQT, DHT or DRI
    longer than its content) are not passed on: the reason says what, never the data."""
    with pytest.raises(Unprocessable) as failed:
        clean(damage(sample("baseline-grey-8").frame), BASELINE)
    assert failed.value.reason == reason


def spelled_quantiser(destination: int, wide: bool = False) -> bytes:
    """A DQT table (B.2.4.1) whose 64 values spell the patient's name, ID and birth date."""
    text = (NAME + b" " + PATIENT_ID + b" " + BIRTH_DATE + b" " * 64)[:64]
    if wide:
        return bytes([0x10 | destination]) + b"".join(b"\x00" + bytes([c]) for c in text)
    return bytes([destination]) + text


def spelled_huffman(destination: int) -> bytes:
    """An AC DHT table (B.2.4.2) of 8-bit codes whose symbols spell what they can of the
    name: distinct letters that are valid run/size pairs (a DC table's symbols are sizes up
    to 16: no letters)."""
    letters = bytes(c for c in dict.fromkeys(NAME.upper()) if c & 0x0F != 0x0F)
    counts = bytes(7) + bytes([len(letters)]) + bytes(8)
    return bytes([0x10 | destination]) + counts + letters


def progressive_jpeg() -> bytes:
    """libjpeg-turbo's progressive JPEG (SOF2): a DHT before each of its ten scans."""
    ok, encoded = cv2.imencode(".jpg", picture(128, 96, 8, 3), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    return encoded.tobytes()


@pytest.mark.parametrize(
    ("kind", "table"),
    [
        ("baseline-grey-8", lambda: jpeg_segment(0xDB, spelled_quantiser(3))),
        ("baseline-colour-8", lambda: jpeg_segment(0xC4, spelled_huffman(3))),
        ("extended-grey-12", lambda: jpeg_segment(0xDB, spelled_quantiser(2, wide=True))),
        ("lossless-sv1-grey-12", lambda: jpeg_segment(0xDB, spelled_quantiser(0))),
        ("lossless-grey-16", lambda: jpeg_segment(0xC4, spelled_huffman(0))),
        ("jpeg-ls-grey-16", lambda: jpeg_segment(0xC4, spelled_huffman(0))),
    ],
)
def test_a_table_no_scan_reads_goes(kind: str, table: Callable[[], bytes]) -> None:
    """A DQT or DHT table whose destination no scan reads (or that its frame's process never
    reads: quantisers in lossless JPEG, Huffman tables in JPEG-LS) is bytes a decoder skips:
    it goes, whether alone in its segment or beside tables that are read."""
    s = sample(kind)
    first = jpeg_boundaries(s.frame)[1]
    alone = insert(s.frame, first, table())
    cleaned = clean(alone, s.syntax)
    assert table()[4:] not in cleaned.data
    assert cleaned.data == clean(s.frame, s.syntax).data
    assert cleaned.removed == clean(s.frame, s.syntax).removed + 1
    assert np.array_equal(decode(s, s.frame), decode(s, cleaned.data))


def test_a_table_replaced_before_any_scan_reads_it_goes() -> None:
    """The name as a Huffman table in the destination the scan reads, replaced by the real
    table before the scan (B.2.4.2: the last one installed is used): only the real one is
    left, in the same place."""
    s = sample("baseline-colour-8")
    first = jpeg_boundaries(s.frame)[1]
    dirty = insert(s.frame, first, jpeg_segment(0xC4, spelled_huffman(0)))
    cleaned = clean(dirty, s.syntax)
    assert spelled_huffman(0) not in cleaned.data
    assert cleaned.data == clean(s.frame, s.syntax).data
    assert np.array_equal(decode(s, s.frame), decode(s, cleaned.data))


def test_tables_after_the_last_scan_go_and_a_progressive_frame_keeps_the_ones_it_reads() -> None:
    """A progressive frame reads Huffman tables installed between its scans: every one of
    them stays and it decodes the same; tables after its last scan and a quantiser redefined
    after the scans that read it go."""
    frame = progressive_jpeg()
    scans = frame.count(b"\xff\xda")
    assert scans > 2
    assert frame.count(b"\xff\xc4") >= scans - 1
    last_scan = frame.rindex(b"\xff\xda")
    after_first_scan = frame.index(b"\xff\xc4", frame.index(b"\xff\xda"))
    dirty = insert(frame, len(frame) - 2, jpeg_segment(0xC4, spelled_huffman(1)))
    dirty = insert(dirty, after_first_scan, jpeg_segment(0xDB, spelled_quantiser(0)))
    assert last_scan < len(frame) - 2
    cleaned = clean(dirty, BASELINE)
    assert_nothing_secret(cleaned.data)
    assert frame[2:4] == b"\xff\xe0"  # JFIF, which goes: all else stays
    without_jfif = frame[:2] + frame[4 + int.from_bytes(frame[4:6], "big") :]
    assert cleaned.data == clean(frame, BASELINE).data == without_jfif
    assert np.array_equal(ijg(frame), ijg(cleaned.data))


def scan_header(frame: bytes) -> tuple[int, int]:
    """Where the first SOS segment starts and ends."""
    start = frame.index(b"\xff\xda")
    return start, start + 2 + int.from_bytes(frame[start + 2 : start + 4], "big")


def test_only_the_restart_interval_in_force_at_a_scan_stays_and_dnl_goes() -> None:
    """DRI values replaced before the scan (only the last counts, B.2.4.4) and DNL segments
    (a height after the first scan, read only when the frame header's is 0) are two bytes
    each, as many as one likes: they go; the interval the scan reads stays."""
    arr = picture(128, 128, 8)
    ok, encoded = cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_RST_INTERVAL, 2])
    assert ok
    frame = encoded.tobytes()
    hidden = b"".join(jpeg_segment(0xDD, NAME[i : i + 2]) for i in range(0, 14, 2))
    dri = frame.index(b"\xff\xdd")
    dirty = insert(frame, dri, hidden)
    scan_end = dirty.rindex(b"\xff\xd9")
    dnl = b"".join(jpeg_segment(0xDC, NAME[i : i + 2]) for i in range(0, 14, 2))
    dirty = insert(dirty, scan_end, dnl)
    cleaned = clean(dirty, BASELINE)
    assert_nothing_secret(cleaned.data)
    assert cleaned.data == clean(frame, BASELINE).data
    assert np.array_equal(ijg(frame), ijg(cleaned.data))


def test_a_restart_interval_no_scan_restarts_at_goes() -> None:
    """A DRI whose interval is longer than the image (no RSTn in the scan) is read by no
    decoder: two bytes of anything; it goes, the frame decodes the same."""
    s = sample("baseline-grey-8")
    scan = s.frame.index(b"\xff\xda")
    dirty = insert(s.frame, scan, jpeg_segment(0xDD, b"QX"))
    assert b"\xff\xd0" not in s.frame[scan:]
    cleaned = clean(dirty, BASELINE)
    assert cleaned.data == clean(s.frame, BASELINE).data
    assert np.array_equal(decode(s, s.frame), decode(s, cleaned.data))


def test_a_jpeg_ls_preset_replaced_before_the_scan_goes() -> None:
    s = sample("jpeg-ls-grey-16")
    first = jpeg_boundaries(s.frame)[1]
    dirty = insert(s.frame, first, jpeg_segment(0xF8, b"\x01" + NAME[:10]))
    dirty = insert(dirty, first + 15, jpeg_segment(0xF8, b"\x01" + bytes([0xFF, 0xFF]) + bytes(8)))
    cleaned = clean(dirty, s.syntax)
    assert NAME[:10] not in cleaned.data
    assert np.array_equal(decode(s, s.frame), decode(s, cleaned.data))


def with_scan_fields(frame: bytes, fields: bytes) -> bytes:
    """`frame` with the last three bytes of its first scan header (Ss, Se, Ah/Al) replaced."""
    _, end = scan_header(frame)
    return frame[: end - 3] + fields + frame[end:]


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        ("baseline-grey-8", b"\x00\x3f\x51"),  # Ah/Al: 5 and 1 in a sequential scan
        ("baseline-grey-8", b"\x51\x3f\x00"),  # Ss: 0x51
        ("lossless-sv1-grey-12", b"\x01\x5a\x00"),  # Se: 0x5a in a lossless scan
        ("jpeg-ls-grey-16", b"\x00\x51\x00"),  # ILV 0x51
    ],
)
def test_scan_header_fields_a_decoder_ignores_are_unprocessable(kind: str, fields: bytes) -> None:
    """Ss, Se and Ah/Al hold what the frame's process defines, not two free bytes a scan."""
    s = sample(kind)
    with pytest.raises(Unprocessable) as failed:
        clean(with_scan_fields(s.frame, fields), s.syntax)
    assert failed.value.reason == "jpeg-segment-malformed"


@pytest.mark.parametrize("marker", [0xC5, 0xC9, 0xCB, 0xDE, 0xDF, 0xCC])
def test_hierarchical_and_arithmetic_coding_are_not_read(marker: int) -> None:
    """No DICOM JPEG syntax is hierarchical (DHP, EXP, SOF5-7) or arithmetic-coded (SOF9-15,
    DAC): such a frame is unprocessable, whatever its segments hold."""
    frame = sample("baseline-grey-8").frame
    with pytest.raises(Unprocessable) as failed:
        clean(insert(frame, 2, jpeg_segment(marker, b"\x00" * 8)), BASELINE)
    assert failed.value.reason == "jpeg-process-unsupported"


@pytest.mark.parametrize(
    "table",
    [
        b"\x04" + bytes(range(1, 65)),  # DQT destination 4
        b"\x00" + bytes(63) + b"\x01",  # a zero quantiser
        b"\x30" + bytes(range(1, 65)),  # precision 3
    ],
)
def test_a_quantisation_table_no_decoder_takes_is_unprocessable(table: bytes) -> None:
    with pytest.raises(Unprocessable) as failed:
        clean(insert(sample("baseline-grey-8").frame, 2, jpeg_segment(0xDB, table)), BASELINE)
    assert failed.value.reason == "jpeg-segment-malformed"


@pytest.mark.parametrize(
    "table",
    [
        b"\x04" + bytes([0, 1]) + bytes(14) + b"\x01",  # DHT destination 4
        b"\x20" + bytes([0, 1]) + bytes(14) + b"\x01",  # class 2
        b"\x00" + bytes([0, 2]) + bytes(14) + b"\x05\x05",  # a symbol twice
        b"\x00" + bytes([0, 1]) + bytes(14) + b"\x11",  # a DC size of 17
        b"\x10" + bytes([0, 1]) + bytes(14) + b"\x2f",  # an AC size of 15
    ],
)
def test_a_huffman_table_no_decoder_takes_is_unprocessable(table: bytes) -> None:
    """Symbols that no scan could decode to are room for other bytes."""
    with pytest.raises(Unprocessable) as failed:
        clean(insert(sample("baseline-grey-8").frame, 2, jpeg_segment(0xC4, table)), BASELINE)
    assert failed.value.reason == "jpeg-segment-malformed"


# --- JPEG 2000 and HTJ2K ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(J2K_MAKERS))
def test_j2k_frames_lose_comments_and_pointer_segments_but_no_pixels(kind: str) -> None:
    """COM in the main and the tile-part header, TLM/PLT where the encoder wrote them, bytes
    after EOC: all go (15444-1 A.4, A.7, A.9.2); packets are copied bit-exact."""
    s = sample(f"j2k-{kind}")
    sot = main_header_end(s.frame)
    dirty = into_tile_part(s.frame, sot, j2k_comment())
    dirty = insert(dirty, sot, j2k_comment())
    dirty += b"trailing " + NAME
    cleaned = clean(dirty, s.syntax)
    assert_nothing_secret(cleaned.data)
    assert b"\xff\x64" not in cleaned.data[:sot]
    assert np.array_equal(decode(s, s.frame), decode(s, cleaned.data))
    for pos, psot in tile_parts(cleaned.data):
        assert cleaned.data[pos + 12 : pos + 14] == b"\xff\x93"  # nothing left before SOD
        assert psot > 14
    if UID(s.syntax) == JPEG2000Lossless:
        assert np.array_equal(s.source, decode(s, cleaned.data))


def test_tlm_and_plt_go_and_psot_follows() -> None:
    s = sample("j2k-lossless-tlm-plt")
    assert b"\xff\x55" in s.frame[: main_header_end(s.frame)]
    cleaned = clean(s.frame, s.syntax)
    assert cleaned.removed == 3  # openjpeg's COM, TLM, PLT
    ((sot, psot),) = tile_parts(cleaned.data)
    assert cleaned.data[sot + 12 : sot + 14] == b"\xff\x93"
    assert psot == len(cleaned.data) - sot - 2


def test_a_comment_in_a_later_tile_part_goes_and_every_psot_is_right() -> None:
    """Two tile-parts of one tile (A.4.2), a COM in the second one's header."""
    s = sample("j2k-lossless-tlm-plt")
    split = two_tile_parts(s.frame, j2k_comment())
    assert np.array_equal(s.source, decode(s, split))
    cleaned = clean(split, s.syntax).data
    assert_nothing_secret(cleaned)
    assert [cleaned[p + 10] for p, _ in tile_parts(cleaned)] == [0, 1]  # TPsot
    assert np.array_equal(s.source, decode(s, cleaned))


@settings(max_examples=100, deadline=None)
@given(
    main=st.lists(st.tuples(st.integers(0, 10), st.binary(max_size=60)), max_size=4),
    tile=st.lists(st.binary(max_size=60), max_size=3),
    trailing=st.binary(max_size=20),
)
def test_any_comment_anywhere_in_a_codestream_header_goes(
    main: list[tuple[int, bytes]], tile: list[bytes], trailing: bytes
) -> None:
    s = sample("j2k-lossless-grey-12")
    expected = clean(s.frame, s.syntax).data
    dirty = s.frame
    for text in tile:
        com = j2k_segment(0xFF64, b"\x00\x00" + NAME + text)
        dirty = into_tile_part(dirty, main_header_end(dirty), com)
    for where, text in main:
        positions = main_boundaries(dirty)
        com = j2k_segment(0xFF64, b"\x00\x01" + text + PATIENT_ID)
        dirty = insert(dirty, positions[where % len(positions)], com)
    assert expected == clean(dirty + trailing, s.syntax).data


def test_a_jp2_file_gives_up_only_its_codestream() -> None:
    """JP2 boxes (15444-1 Annex I) may carry XML or UUID metadata: of a JP2 file only the
    contents of `jp2c` are kept."""
    s = sample("j2k-lossless-colour-8")
    jp2 = encode_array(s.source, bits_stored=8, photometric_interpretation=1, codec_format=1)
    assert jp2[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n"
    metadata = box(b"xml ", b"<patient>" + NAME + b"</patient>") + box(
        b"uuid", bytes(16) + PATIENT_ID
    )
    at = jp2.index(b"jp2c") - 4
    dirty = jp2[:at] + metadata + jp2[at:] + box(b"xml ", BIRTH_DATE)
    cleaned = clean(dirty, s.syntax)
    assert cleaned.data[:2] == b"\xff\x4f"
    assert_nothing_secret(cleaned.data)
    assert cleaned.removed >= 5  # signature, ftyp, jp2h, xml, uuid, ... and the box after
    assert np.array_equal(s.source, decode(s, cleaned.data))


def test_psot_zero_runs_to_eoc_and_what_follows_eoc_goes() -> None:
    """Psot 0: the last tile-part runs up to EOC (A.4.2)."""
    s = sample("j2k-lossless-grey-16")
    ((sot, _),) = tile_parts(s.frame)
    zero = s.frame[: sot + 6] + b"\0\0\0\0" + s.frame[sot + 10 :]
    cleaned = clean(zero + b"\xff\xd9" + NAME, s.syntax).data
    assert tile_parts(cleaned) == [(main_header_end(cleaned), 0)]
    assert cleaned.endswith(b"\xff\xd9")
    assert NAME not in cleaned
    assert np.array_equal(s.source, decode(s, cleaned))


def test_htj2k_keeps_its_capabilities_segment() -> None:
    """HTJ2K (15444-15) codestreams have the same syntax plus CAP (and CPF) in the main
    header. No HTJ2K encoder is installed: this stream's CAP is put in by hand, so only the
    container is checked, not decoding."""
    stream = sample("j2k-lossless-grey-12").frame
    after_siz = main_boundaries(stream)[0]
    cap = j2k_segment(0xFF50, b"\x00\x02\x00\x00\x00\x20")
    dirty = insert(insert(stream, after_siz, cap), after_siz, j2k_comment())
    cleaned = clean(dirty, HTJ2K_LOSSLESS).data
    assert cleaned[after_siz : after_siz + len(cap)] == cap
    assert_nothing_secret(cleaned)


@pytest.mark.parametrize("marker", [0xFF56, 0xFF59, 0xFF63])  # PRF, CPF, CRG
def test_segments_that_only_describe_the_codestream_go(marker: int) -> None:
    """Profiles (PRF, CPF) and component registration (CRG) are for conformance and display;
    a decoder needs none of them, and their values may be any bytes: they go."""
    s = sample("j2k-lossless-grey-12")
    after_siz = main_boundaries(s.frame)[0]
    dirty = insert(s.frame, after_siz, j2k_segment(marker, NAME + PATIENT_ID))
    cleaned = clean(dirty, s.syntax)
    assert cleaned.data == clean(s.frame, s.syntax).data
    assert_nothing_secret(cleaned.data)


def coding_segment(stream: bytes, marker: int) -> tuple[int, int]:
    """Where the main header's segment `marker` starts and ends."""
    for start in [2, *main_boundaries(stream)]:
        if int.from_bytes(stream[start : start + 2], "big") == marker:
            return start, start + 2 + int.from_bytes(stream[start + 2 : start + 4], "big")
    raise AssertionError(f"no {marker:04X}")


def with_slack(stream: bytes, marker: int) -> bytes:
    """The main header's COD or QCD with the name after its values, its length to match."""
    start, end = coding_segment(stream, marker)
    payload = stream[start + 4 : end] + NAME
    return stream[:start] + j2k_segment(marker, payload) + stream[end:]


def in_main(marker: int, payload: bytes) -> Callable[[bytes], bytes]:
    return lambda f: insert(f, main_header_end(f), j2k_segment(marker, payload))


def again(marker: int, tile: bool) -> Callable[[bytes], bytes]:
    """The main header's `marker` segment once more: in the main header, or in the tile-part
    header (where it overrides the main header's, which no decoder then reads)."""

    def damage(f: bytes) -> bytes:
        start, end = coding_segment(f, marker)
        if tile:
            return into_tile_part(f, main_header_end(f), f[start:end])
        return insert(f, main_header_end(f), f[start:end])

    return damage


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda f: with_slack(f, 0xFF52), "j2k-segment-malformed"),  # COD
        (lambda f: with_slack(f, 0xFF5C), "j2k-segment-malformed"),  # QCD
        (again(0xFF52, tile=False), "j2k-segment-twice"),  # COD
        (again(0xFF5C, tile=False), "j2k-segment-twice"),  # QCD
        (again(0xFF52, tile=True), "j2k-segment-unread"),  # COD
        (again(0xFF5C, tile=True), "j2k-segment-unread"),  # QCD
        (in_main(0xFF5E, b"\x00\x00" + NAME), "j2k-segment-malformed"),  # RGN
        (in_main(0xFF50, b"\xff\xff\xff\xff" + NAME), "j2k-segment-malformed"),  # CAP
        (in_main(0xFF50, b"\x00\x02\x00\x00" + NAME), "j2k-segment-malformed"),  # CAP
        (in_main(0xFF74, b"\x00\x00" + NAME), "j2k-part2-marker"),  # MCT
        (in_main(0xFF60, b"\x00" + NAME), "j2k-packed-packet-headers"),  # PPM
        (in_main(0xFF5F, b"\x00\x00\x00\x01\x05\x01" + NAME[:7]), "j2k-progression-changes"),
        (
            lambda f: into_tile_part(f, main_header_end(f), j2k_segment(0xFF61, b"\x00" + NAME)),
            "j2k-packed-packet-headers",  # PPT
        ),
    ],
)
def test_a_segment_with_room_for_other_bytes_is_unprocessable(
    damage: Callable[[bytes], bytes], reason: str
) -> None:
    """Kept segments hold exactly their values: a COD, QCD or RGN longer than its values, a
    second one for the same components, a CAP naming parts other than 15 or with values
    beyond them; a main header's coding style that every tile-part overrides (then nobody
    reads it, whatever it holds), Part 2 extensions in a Part 1 codestream and packed packet
    headers (PPM, PPT) cannot be shown to hold nothing else."""
    with pytest.raises(Unprocessable) as failed:
        clean(damage(sample("j2k-lossless-grey-12").frame), JPEG2000Lossless)
    assert failed.value.reason == reason


def test_coding_style_in_a_later_tile_part_of_a_tile_is_unprocessable() -> None:
    """COD, COC, QCD, QCC and RGN belong in a tile's first tile-part (A.4.2): one in a later
    tile-part would override values no decoder then reads."""
    s = sample("j2k-lossless-tlm-plt")
    start, end = coding_segment(s.frame, 0xFF5C)
    split = two_tile_parts(s.frame, s.frame[start:end])
    with pytest.raises(Unprocessable) as failed:
        clean(split, s.syntax)
    assert failed.value.reason == "j2k-segment-out-of-place"


def test_a_tile_part_may_set_the_coding_of_some_components() -> None:
    """GDCM's OpenJPEG writes a COC and QCC for components 1 and 2 in the tile-part header,
    the main header's COD and QCD still read for component 0: kept, decoded the same."""
    s = sample("j2k-lossless-colour-8")
    start, end = coding_segment(s.frame, 0xFF52)
    cod = s.frame[start + 4 : end]
    start, end = coding_segment(s.frame, 0xFF5C)
    qcd = s.frame[start + 4 : end]
    own = b"".join(
        j2k_segment(0xFF53, bytes([c, cod[0] & 1]) + cod[5:])
        + j2k_segment(0xFF5D, bytes([c]) + qcd)
        for c in (1, 2)
    )
    dirty = into_tile_part(s.frame, main_header_end(s.frame), own)
    cleaned = clean(dirty, s.syntax)
    assert own in cleaned.data
    assert np.array_equal(s.source, decode(s, cleaned.data))


def test_a_truncated_codestream_is_unprocessable_wherever_it_is_cut() -> None:
    s = j2k(picture(40, 40, 8), 8)
    for length in range(len(s.frame) - 1):
        with pytest.raises(Unprocessable):
            clean(s.frame[:length], s.syntax)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda f: f[2:], "j2k-no-soc"),
        (lambda f: insert(f, 2, j2k_comment()), "j2k-siz-not-first"),
        (lambda f: insert(f, main_header_end(f), j2k_segment(0xFF6F, NAME)), "j2k-marker-unknown"),
        (lambda f: insert(f, main_header_end(f), b"PATIENT"), "j2k-stray-bytes"),
        (lambda f: f[:-2] + NAME, "j2k-stray-bytes"),
        (lambda f: f[:-2] + b"\xff\x64", "j2k-no-eoc"),
        (lambda f: f[:2] + j2k_segment(0xFF51, bytes(36) + NAME) + f[2:], "j2k-segment-malformed"),
        (lambda f: b"\x00\x00\x00\x0cjP  \r\n\x87\n" + box(b"xml ", NAME), "jp2-no-codestream"),
    ],
)
def test_a_codestream_that_does_not_parse_is_unprocessable(
    damage: Callable[[bytes], bytes], reason: str
) -> None:
    with pytest.raises(Unprocessable) as failed:
        clean(damage(sample("j2k-lossless-grey-12").frame), JPEG2000Lossless)
    assert failed.value.reason == reason


# --- RLE Lossless ----------------------------------------------------------------------------

RLE_CASES = {
    "grey-8": lambda: rle(picture(64, 48, 8), 8),
    "grey-16": lambda: rle(picture(64, 48, 16), 16),
    "rgb-8": lambda: rle(picture(64, 48, 8, 3), 8),
}


def hidden_run() -> bytes:
    """The patient's name, ID and birth date as one literal run (G.3.1): a decoder that has
    all the bytes of a segment already reads it and drops it."""
    text = NAME + PATIENT_ID + BIRTH_DATE
    return bytes([len(text) - 1]) + text


@pytest.mark.parametrize("kind", sorted(RLE_CASES))
def test_rle_frames_are_rebuilt_without_trailing_bytes(kind: str) -> None:
    """PS3.5 G.5: the last segment runs to the end of the frame, so bytes may hide after its
    runs; decoding and encoding again leaves only the pixels."""
    s = RLE_CASES[kind]()
    dirty = s.frame + hidden_run()
    assert np.array_equal(s.source, decode(s, dirty))  # the decoder does not show them
    cleaned = clean_frame(dirty, RLELossless, geometry(s))
    assert_nothing_secret(cleaned.data)
    assert cleaned.removed == 1
    assert np.array_equal(s.source, decode(s, cleaned.data))
    assert clean_frame(s.frame, RLELossless, geometry(s)) == Cleaned(s.frame, 0)


def test_rle_bytes_between_segments_are_unprocessable() -> None:
    """A segment runs from its offset to the next one: bytes between the end of its runs and
    the next offset make the decoders (pylibjpeg-rle, pydicom) refuse the frame, so it does not
    pass either."""
    s = RLE_CASES["rgb-8"]()
    count, *offsets = struct.unpack("<16I", s.frame[:64])
    hidden, cut = hidden_run(), offsets[1]
    moved = [offsets[0]] + [o + len(hidden) for o in offsets[1:count]] + offsets[count:]
    dirty = struct.pack("<16I", count, *moved) + s.frame[64:cut] + hidden + s.frame[cut:]
    with pytest.raises(Unprocessable) as failed:
        clean_frame(dirty, RLELossless, geometry(s))
    assert failed.value.reason.startswith("rle-rebuild-failed:")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda f: f[:40], "rle-truncated"),
        (lambda f: struct.pack("<I", 2) + f[4:], "rle-segment-count"),
        (lambda f: f[:4] + struct.pack("<I", 80) + f[8:], "rle-segment-offsets"),
        (lambda f: f[: 64 + 3], "rle-rebuild-failed:"),
    ],
)
def test_an_rle_frame_that_does_not_match_its_image_is_unprocessable(
    damage: Callable[[bytes], bytes], reason: str
) -> None:
    s = rle(picture(64, 48, 8), 8)
    with pytest.raises(Unprocessable) as failed:
        clean_frame(damage(s.frame), RLELossless, geometry(s))
    assert failed.value.reason.startswith(reason)


def test_rle_without_its_geometry_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="geometry"):
        clean_frame(rle(picture(8, 8, 8), 8).frame, RLELossless)


# --- what is not supported -------------------------------------------------------------------


@pytest.mark.parametrize(
    "syntax",
    [
        *(f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)),  # MPEG-2, MPEG-4, H.264, HEVC
        "1.2.840.10008.1.2.4.110",  # JPEG XL lossless
        "1.2.840.10008.1.2.4.111",  # JPEG XL JPEG recompression
        "1.2.840.10008.1.2.4.112",  # JPEG XL
        "1.2.840.10008.1.2.8.1",  # Deflated Image Frame Compression
        "1.2.840.10008.1.2.4.55",  # JPEG progressive, retired
        ExplicitVRLittleEndian,  # native: no container to clean
        "1.2.3.4.5",
    ],
)
def test_other_syntaxes_are_unprocessable(syntax: str) -> None:
    """Video streams carry user data that cannot be proven absent without decoding them."""
    assert syntax not in supported_syntaxes()
    with pytest.raises(Unprocessable) as failed:
        clean_frame(b"\x00\x00\x01\xb3" + NAME, syntax)
    assert failed.value.reason == "container-syntax-unsupported"


def test_the_supported_syntaxes_are_the_jpeg_j2k_and_rle_families() -> None:
    expected = {
        *(f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 57, 70, 80, 81, 90, 91, 92, 93)),
        *(f"1.2.840.10008.1.2.4.{n}" for n in (201, 202, 203)),
        "1.2.840.10008.1.2.5",
    }
    assert expected == supported_syntaxes()
