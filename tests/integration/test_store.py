"""Acknowledged means durable and exact: real senders, real files, the spool decrypted."""

from __future__ import annotations

import struct
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway import scu
from gateway.ingest.pump import encode_command
from tests.conftest import GatewayFactory
from tests.support import GatewayProcess, dataset_bytes, ingest, read_spool, spool_files, storescu

# dcmtk storescu proposes only uncompressed transfer syntaxes unless told which compressed one.
STORESCU_FILES = {
    "pydicom_wheel__CT_small.dcm": "-xe",  # Explicit VR Little Endian
    "pydicom_wheel__MR_small_RLE.dcm": "-xr",  # RLE Lossless
    "pylibjpeg_data__JPEGBaseline_1s_1f_u_08_08.dcm": "-xy",  # JPEG Baseline
    "pydicom_data__JPEG-LL.dcm": "-xs",  # JPEG Lossless SV1
    "pydicom_wheel__MR_small_jpeg_ls_lossless.dcm": "-xt",  # JPEG-LS Lossless
    "pydicom_data__693_J2KR.dcm": "-xv",  # JPEG 2000 Lossless
    "pydicom_data__MR2_J2KI.dcm": "-xw",  # JPEG 2000
}

PYNETDICOM_FILES = (
    "pydicom_wheel__MR_small_implicit.dcm",  # Implicit VR Little Endian
    "pydicom_wheel__MR_small_bigendian.dcm",  # Explicit VR Big Endian
    "pydicom_wheel__JPGExtended.dcm",  # JPEG Extended
    "pylibjpeg_data__CT1_JLSN.dcm",  # JPEG-LS near-lossless
    "orthanc_tests__1.2.840.10008.1.2.4.57.dcm",  # JPEG Lossless (process 14)
    "orthanc_tests__1.2.840.10008.1.2.1.dcm",  # retired Ultrasound Image Storage
)


TRAILING_PADDING = 0xFFFCFFFC


def node(gw: GatewayProcess, aet: str = "PACS") -> scu.Node:
    return scu.Node("127.0.0.1", gw.port, aet, "GATEWAY_UT", timeout=10)


def by_instance_and_syntax(spooled: list[bytes]) -> dict[tuple[str, str], bytes]:
    """Spooled Part 10 streams keyed by (SOP Instance UID, transfer syntax) from their meta."""
    out = {}
    for part10 in spooled:
        meta = pydicom.dcmread(DicomBytesIO(part10), stop_before_pixels=True).file_meta
        out[str(meta.MediaStorageSOPInstanceUID), str(meta.TransferSyntaxUID)] = part10
    return out


def comparable(ds: pydicom.Dataset) -> dict[int, object]:
    """Element values minus what dcmtk drops when it re-encodes: group lengths, trailing padding."""
    return {int(e.tag): e.value for e in ds if e.tag.element != 0 and e.tag != TRAILING_PADDING}


def assert_spooled(config: Path, files: list[Path], *, byte_exact: bool) -> None:
    """Every file is in the spool once; byte for byte, or (dcmtk re-encodes) element for element."""
    spooled = by_instance_and_syntax([s.part10 for s in read_spool(config)])
    assert len(spooled) == len(files)
    for path in files:
        meta = read_file_meta_info(path)
        part10 = spooled[str(meta.MediaStorageSOPInstanceUID), str(meta.TransferSyntaxUID)]
        if byte_exact:
            assert dataset_bytes(part10) == dataset_bytes(path.read_bytes()), path.name
        else:
            received = pydicom.dcmread(DicomBytesIO(part10))
            assert comparable(received) == comparable(pydicom.dcmread(path)), path.name


@pytest.mark.usefixtures("dcmtk")
def test_storescu_in_seven_transfer_syntaxes_spools_what_was_sent(
    gateway: GatewayProcess, testdata: Path
) -> None:
    files = []
    for name, option in STORESCU_FILES.items():
        path = testdata / "transfer_syntaxes" / name
        result = storescu(gateway.port, [path], option)
        assert result.returncode == 0, result.stderr
        files.append(path)
    assert_spooled(gateway.config, files, byte_exact=False)
    headers = [s.header for s in read_spool(gateway.config)]
    assert {h.peer for h in headers} == {"dcmtk"}
    assert {h.transfer_syntax_uid for h in headers} == {
        str(read_file_meta_info(f).TransferSyntaxUID) for f in files
    }
    # seven associations opened and closed by the peer: no error inside pynetdicom
    errors = [e for e in gateway.events("library.log") if e["level"] in ("error", "critical")]
    assert errors == []


def test_pynetdicom_scu_in_six_more_spools_exact_bytes(
    gateway: GatewayProcess, testdata: Path
) -> None:
    files = [testdata / "transfer_syntaxes" / name for name in PYNETDICOM_FILES]
    results = scu.send(node(gateway), files)
    assert [r.status for r in results] == [0] * len(files)
    assert_spooled(gateway.config, files, byte_exact=True)
    assert gateway.metric("dicom_gateway_store_requests_total", result="stored") == len(files)


def test_spool_names_and_headers_hold_no_uid(gateway: GatewayProcess, testdata: Path) -> None:
    path = testdata / "transfer_syntaxes" / "pydicom_wheel__CT_small.dcm"
    assert scu.send(node(gateway), [path])[0].ok
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    uids = {str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)}
    for file in spool_files(gateway.config):
        raw = file.read_bytes()
        for uid in uids:
            assert uid not in str(file)
            assert uid.encode() not in raw, "a UID is readable in a spool file"
        assert str(ds.PatientName).encode() not in raw


def test_dataset_without_study_uid_is_refused_not_acknowledged(
    gateway: GatewayProcess, testdata: Path
) -> None:
    path = testdata / "transfer_syntaxes" / "pydicom_wheel__JPEGLSNearLossless_16.dcm"
    assert "StudyInstanceUID" not in pydicom.dcmread(path, stop_before_pixels=True)
    [result] = scu.send(node(gateway), [path])
    assert result.status == 0xA900
    assert read_spool(gateway.config) == []
    gateway.wait_for_event("instance.refused", reason="no_study_instance_uid")
    assert gateway.metric("dicom_gateway_store_requests_total", result="no_study_instance_uid") == 1


def test_echo_answers_success(gateway: GatewayProcess) -> None:
    assert scu.echo(node(gateway)) == 0x0000


def test_unparseable_data_set_is_refused_with_cannot_understand(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.2")
    meta.MediaStorageSOPInstanceUID = UID("1.2.826.0.1.3680043.8.498.99")
    meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1")
    buffer = DicomBytesIO()
    write_file_meta_info(buffer, meta)
    # (0008,0005) as a sequence of undefined length whose item runs off the end
    garbage = b"\x08\x00\x05\x00SQ\x00\x00" + b"\xff" * 4 + b"\xfe\xff\x00\xe0" + b"\xff" * 4
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM" + buffer.getvalue() + garbage)
    [result] = scu.send(node(gateway), [path])
    assert result.status == 0xC000
    assert read_spool(gateway.config) == []
    gateway.wait_for_event("instance.refused", reason="unparseable")
    assert gateway.metric("dicom_gateway_store_requests_total", result="unparseable") == 1


@pytest.mark.usefixtures("dcmtk")
def test_data_sets_fragmented_into_small_pdus_arrive_whole(
    gateway_factory: GatewayFactory, testdata: Path
) -> None:
    """4 KiB PDUs: every instance crosses dozens of PDUs and fragments."""

    gw = gateway_factory(ingest(max_pdu_size=4096))
    big = testdata / "private_tags" / "orthanc_tests__2019-06-17-VedranZdesic.dcm"
    j2k = testdata / "transfer_syntaxes" / "pydicom_data__693_J2KR.dcm"
    assert storescu(gw.port, [big], "-xe").returncode == 0
    assert scu.send(node(gw), [j2k])[0].ok
    spooled = by_instance_and_syntax([s.part10 for s in read_spool(gw.config)])
    for path in (j2k,):  # pynetdicom sends the file's bytes as they are
        meta = read_file_meta_info(path)
        part10 = spooled[str(meta.MediaStorageSOPInstanceUID), str(meta.TransferSyntaxUID)]
        assert dataset_bytes(part10) == dataset_bytes(path.read_bytes())
    meta = read_file_meta_info(big)
    received = pydicom.dcmread(
        DicomBytesIO(spooled[str(meta.MediaStorageSOPInstanceUID), str(meta.TransferSyntaxUID)])
    )
    assert comparable(received) == comparable(pydicom.dcmread(big))


def test_a_store_on_the_verification_context_is_refused(gateway: GatewayProcess) -> None:
    """Written on the wire by hand: no well-behaved SCU would send this."""
    ae = AE(ae_title="PACS")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", gateway.port, ae_title="GATEWAY_UT")
    assert assoc.is_established
    [cx] = assoc.accepted_contexts
    command = encode_command(
        {
            0x00000002: b"1.2.840.10008.5.1.4.1.1.2\0",
            0x00000100: (0x0001).to_bytes(2, "little"),
            0x00000110: (9).to_bytes(2, "little"),
            0x00000800: (0).to_bytes(2, "little"),
            0x00001000: b"1.2.3.4\0",
        }
    )
    raw = assoc.dul.socket.socket if assoc.dul.socket is not None else None
    assert raw is not None
    command_pdv = struct.pack(">IBB", len(command) + 2, cx.context_id, 0x03) + command
    data_pdv = struct.pack(">IBB", 4, cx.context_id, 0x02) + b"\x08\x00"
    body = command_pdv + data_pdv
    raw.sendall(struct.pack(">BBI", 0x04, 0, len(body)) + body)
    gateway.wait_for_event("instance.refused", reason="sop_class_not_supported")
    assert gateway.metric("dicom_gateway_store_requests_total", result="sop_class_not_supported")
    assoc.release()
    assert read_spool(gateway.config) == []
