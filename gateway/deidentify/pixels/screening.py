"""Which images must be checked for burned-in text, and why (a reason for logs and reports).

The header flag BurnedInAnnotation is absent or wrong too often to decide alone (absent on 209
of the 231 files of the shared test material, "NO" on several that carry text), and the shared
ground truth has text burned into ORIGINAL\\PRIMARY CT, MR, DX and MG images. So by default
every image is checked; the reason says what made it a candidate, most telling first, so that
a site's later choice to relax a category (for instance primary CT) is a visible, named one.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataset import Dataset

from gateway.deidentify.pixels.frames import PIXEL_TAGS

_ULTRASOUND = {"US", "IVUS"}
_PROJECTION = {"DX", "CR", "MG", "XA", "RF", "IO", "PX", "RG"}
_CROSS_SECTIONAL = {"CT", "MR", "PT", "NM"}
_PHOTOGRAPHIC = {"ES", "XC", "GM", "SM", "OP", "OT"}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"  # and its multi-frame variants (.7.x)
_DERIVED = {"SECONDARY", "DERIVED", "SCREEN SAVE", "SCREENSHOT", "REPORT", "DOSE_REPORT"}


def check_reason(ds: Dataset) -> str | None:
    """Why this instance's pixels must be checked; None when it has no pixels."""
    if not any(tag in ds for tag in PIXEL_TAGS):
        return None
    modality = str(ds.get("Modality", "") or "").strip().upper()
    sop_class = str(ds.get("SOPClassUID", "") or "")
    image_type = {str(v).strip().upper() for v in _values(ds.get("ImageType"))}
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
        return "burned-in-flag"
    if modality in _ULTRASOUND:
        return "ultrasound"
    if sop_class == _SECONDARY_CAPTURE or sop_class.startswith(_SECONDARY_CAPTURE + "."):
        return "secondary-capture"
    if image_type & _DERIVED:
        return "derived-image"
    if photometric.startswith(("RGB", "YBR", "PALETTE")):
        return "colour"
    if modality in _PROJECTION:
        return "projection"
    if modality in _PHOTOGRAPHIC:
        return "photographic"
    if modality in _CROSS_SECTIONAL:
        return "cross-sectional"
    return "other-image"


def _values(value: object) -> list[object]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [value]
    if isinstance(value, Iterable):
        return list(value)
    return [value]
