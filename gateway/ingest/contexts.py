"""What the SCP accepts: storage SOP classes and an explicit transfer-syntax list.

Deflated Explicit VR Little Endian (1.2.840.10008.1.2.1.99) is never offered: a few hundred KiB
of deflate stream inflates to hundreds of MiB inside pynetdicom before any handler could object.
"""

from __future__ import annotations

from pydicom import uid
from pynetdicom import sop_class
from pynetdicom.presentation import AllStoragePresentationContexts, PresentationContext
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

# PS3.5 Annex A / PS3.6 Table A-1: uncompressed, then the lossless and lossy encapsulated ones.
TRANSFER_SYNTAXES: tuple[str, ...] = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.HTJ2K,
    uid.RLELossless,
)

NEVER_ACCEPTED: frozenset[str] = frozenset({uid.DeflatedExplicitVRLittleEndian})

# Retired image storage classes (PS3.6 Table A-1) that older modalities still send and PACS
# archives still hold; pynetdicom's list carries only current classes.
RETIRED_IMAGE_STORAGE: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.6": "UltrasoundImageStorageRetired",
    "1.2.840.10008.5.1.4.1.1.3": "UltrasoundMultiFrameImageStorageRetired",
    "1.2.840.10008.5.1.4.1.1.5": "NuclearMedicineImageStorageRetired",
    "1.2.840.10008.5.1.4.1.1.12.3": "XRayAngiographicBiPlaneImageStorage",
}


def _register_retired() -> None:
    """pynetdicom routes a C-STORE only for SOP classes it knows; teach it the retired ones."""
    for class_uid, keyword in RETIRED_IMAGE_STORAGE.items():
        if not hasattr(sop_class, keyword):
            sop_class.register_uid(class_uid, keyword, StorageServiceClass)


def storage_sop_classes() -> tuple[str, ...]:
    """Every storage SOP class pynetdicom knows: images incl. enhanced/multi-frame, SR, documents.

    Policy (what goes where, what is dropped) is decided by later stages, not at the door.
    """
    current = tuple(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)
    return current + tuple(RETIRED_IMAGE_STORAGE)


def verification_sop_class() -> str:
    return str(Verification)


def supported_contexts() -> list[PresentationContext]:
    """(abstract syntax, transfer syntaxes) pairs the SCP offers, in our preference order."""
    _register_retired()
    contexts = []
    for abstract in (verification_sop_class(), *storage_sop_classes()):
        cx = PresentationContext()
        cx.abstract_syntax = abstract
        cx.transfer_syntax = list(TRANSFER_SYNTAXES)
        contexts.append(cx)
    return contexts
