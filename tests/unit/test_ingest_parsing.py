"""Reading only as far as Study Instance UID, in every uncompressed byte order and VR mode."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from gateway.errors import UnreadableDataset
from gateway.ingest.contexts import NEVER_ACCEPTED, TRANSFER_SYNTAXES, supported_contexts
from gateway.ingest.scp import read_study_uid
from gateway.part10 import part10_head
from tests.support import dataset_bytes

FILES = [
    "pydicom_wheel__MR_small.dcm",
    "pydicom_wheel__MR_small_implicit.dcm",
    "pydicom_wheel__MR_small_bigendian.dcm",
    "pydicom_data__693_J2KR.dcm",
    "orthanc_tests__1.2.840.10008.1.2.4.91.dcm",
]


@pytest.mark.parametrize("name", FILES)
def test_study_uid_is_read_from_the_encoded_data_set(testdata: Path, name: str) -> None:
    path = testdata / "transfer_syntaxes" / name
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    stream = dataset_bytes(path.read_bytes())
    assert (
        read_study_uid(BytesIO(stream), UID(ds.file_meta.TransferSyntaxUID)) == ds.StudyInstanceUID
    )


def test_missing_study_uid_is_none(testdata: Path) -> None:
    path = testdata / "transfer_syntaxes" / "pydicom_wheel__JPEGLSNearLossless_16.dcm"
    ts = UID(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    assert read_study_uid(BytesIO(dataset_bytes(path.read_bytes())), ts) is None


def test_garbage_is_unreadable_not_a_crash() -> None:
    # (0008,0005) as a sequence of undefined length whose item runs off the end
    garbage = b"\x08\x00\x05\x00SQ\x00\x00" + b"\xff" * 4 + b"\xfe\xff\x00\xe0" + b"\xff" * 4
    with pytest.raises(UnreadableDataset):
        read_study_uid(BytesIO(garbage), UID("1.2.840.10008.1.2.1"))


def test_deflate_is_not_offered_and_every_listed_syntax_is() -> None:
    for cx in supported_contexts():
        assert not NEVER_ACCEPTED & set(cx.transfer_syntax)
        assert tuple(cx.transfer_syntax) == TRANSFER_SYNTAXES
    abstract = {cx.abstract_syntax for cx in supported_contexts()}
    for needed in (
        "1.2.840.10008.1.1",  # Verification
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT
        "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
        "1.2.840.10008.5.1.4.1.1.6",  # Ultrasound Image Storage (Retired)
    ):
        assert needed in abstract


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "transfer_syntax"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1"),  # even lengths
        ("1.2.840.10008.5.1.4.1.1.6.1", "1.2.3.45", "1.2.840.10008.1.2.4.70"),  # odd lengths
    ],
)
def test_part10_head_is_what_pydicom_writes(
    sop_class: str, sop_instance: str, transfer_syntax: str
) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = UID(PYNETDICOM_IMPLEMENTATION_UID)
    meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
    expected = DicomBytesIO()
    write_file_meta_info(expected, meta)
    head = part10_head(sop_class, sop_instance, transfer_syntax)
    assert head == b"\0" * 128 + b"DICM" + expected.getvalue()
