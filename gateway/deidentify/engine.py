"""Header de-identification of one instance: PS3.15 Annex E, then an allow-list, fail closed.

`Engine.run(data)` takes one encoded instance (a Part 10 file, or a bare data set) and returns
the de-identified Part 10 bytes. Per element, at every sequence depth, one action object
(`actions.py`, `temporal.py`) chosen once per attribute from a table (`decide.py`) and applied
by the walker (`walker.py`):

1. Top level only, the identities: PatientName and PatientID are written afresh as the
   patient's coded identifier (site code + random code), AccessionNumber and StudyID become
   random IDs, all from the vault; the provenance attributes are written afresh at the end.
2. The profile (`profile.Profile`: the gateway's rules, then Table E.1-1 under the options)
   decides for every attribute it names: X remove, Z empty, D dummy (a vault-consistent random
   ID for LO/SH), K keep, C clean (descriptors cleaned, dates shifted), U new UID.
3. The allow-list decides the rest: a public attribute the DICOM dictionary knows and does not
   retire is kept, with its UIDs mapped, its dates shifted, its ages aggregated; person names,
   retired and unknown attributes go. Private attributes go, except the safe-private list when
   that option is on (`private.PrivateFilter`). Every text value kept, at any depth, keeps only
   known words (`words.py`; codes whole or empty), then this instance's identifiers are
   removed from it (`descriptors.py`); free narrative goes unless the site keeps it cleaned
   (`profile.py`).
4. Group 0002 is rebuilt (our implementation UID and AE title; MediaStorageSOPInstanceUID =
   the new SOPInstanceUID) and provenance is written (PatientIdentityRemoved,
   DeidentificationMethod and its CID 7050 codes, LongitudinalTemporalInformationModified).

This module reads the instance, runs the walker over it and writes the result. Elements kept
unchanged are never decoded: their bytes (pixel data above all) are written as read. Anything
the engine cannot do safely raises `Unprocessable` with a fixed reason code; its message never
carries a value from the instance. `describe-profile` prints the descriptions of the very
action objects the engine's table holds (`explain.py`).
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from gateway.deidentify.actions import Action
from gateway.deidentify.decide import ActionTable
from gateway.deidentify.elements import (
    BODY_PART_EXAMINED,
    DEFAULT_CHARSET,
    MODALITY,
    PATIENT_ID,
    PATIENT_NAME,
    PIXEL_DATA,
    SERIES_DESCRIPTION,
    SERIES_INSTANCE_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_INSTANCE_UID,
    ascii_element,
    ascii_text,
    encodings,
    peek,
    text,
    undefer,
    undefined_length,
)
from gateway.deidentify.encode import Encoder, Item, Out, Seq
from gateway.deidentify.failures import guard
from gateway.deidentify.iod import Requirements
from gateway.deidentify.pixels.frames import native_length
from gateway.deidentify.policy import Facts
from gateway.deidentify.private import PrivateFilter, SafePrivate
from gateway.deidentify.profile import Profile
from gateway.deidentify.pseudonyms import Pseudonyms
from gateway.deidentify.uids import PseudonymStore, UidMapper
from gateway.deidentify.walker import Walker
from gateway.deidentify.words import Cleaner, Vocabulary
from gateway.errors import Unprocessable
from gateway.part10 import part10_head
from gateway.settings import DeidentifySettings

#: The gateway's own implementation class UID (PS3.7 D.3.3.2), a 2.25 UUID UID drawn once.
IMPLEMENTATION_CLASS_UID = "2.25.162650821892412602811294785024994956258"
IMPLEMENTATION_VERSION_NAME = "DICOM_GATEWAY_1"

_DEFER_BYTES = 65_536  # values at least this long are not copied while parsing
_UID_CHARS = re.compile(r"[0-9.]{1,64}")
_INSTANCE_UIDS = frozenset({SOP_INSTANCE_UID, STUDY_INSTANCE_UID})
_NAMING_UIDS = _INSTANCE_UIDS | {SERIES_INSTANCE_UID}  # what names the output downstream

# CID 7050 De-identification Method (PS3.16), scheme DCM.
_CID_7050 = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean_graphics": ("113103", "Clean Graphics Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "full": ("113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "modified": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
}


@dataclass(frozen=True)
class Replacement:
    """Top-level elements written instead of the received ones (the pixel stage's new pixel
    data and the header that describes it), and the transfer syntax they are encoded in.
    `pixels_checked`: every frame was checked for burned-in text and what was found masked
    (the output then records the Clean Pixel Data Option)."""

    transfer_syntax: str
    elements: Mapping[int, RawDataElement | DataElement]
    pixels_checked: bool = False


@dataclass(frozen=True)
class Deidentified:
    """One de-identified instance: its Part 10 bytes, new UIDs and what was done (counts)."""

    data: bytes
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    counts: dict[str, int]
    series_instance_uid: str = ""
    patient: str = ""  # the patient pseudonym written as PatientID


class Engine:
    """De-identification for one site's options and vault; one per worker process."""

    def __init__(
        self, options: DeidentifySettings, vault: PseudonymStore, *, ae_title: str
    ) -> None:
        self.options = options
        self.profile = Profile(options)
        self.pseudonyms = Pseudonyms(vault, options.site_code)
        self.uids = UidMapper(vault, options.uid_root)
        self.safe_private = SafePrivate.load() if options.retain_safe_private else None
        self.words = Cleaner(Vocabulary.load(options.vocabulary))
        self.requirements = Requirements.load()
        self.ae_title = ae_title
        self.table = ActionTable(options, self.profile)
        self.private = PrivateFilter(self.safe_private, self.words)
        self.walker = Walker(
            options, self.table, self.private, self.uids, self.pseudonyms, self.words
        )
        self._provenance = {cleaned: _provenance(options, cleaned) for cleaned in (False, True)}

    def action(self, tag: int) -> Action:
        """The action for a public tag, at any depth (at the top level, `decide.TOP_LEVEL`
        first): what the walker applies and describe-profile describes."""
        return self.table.action(tag)

    def vr(self, tag: int) -> str | None:
        """The dictionary VR of a public tag (cached)."""
        return self.table.vr(tag)

    # -- one instance ------------------------------------------------------------------------

    def run(self, data: bytes) -> Deidentified:
        """Read and de-identify one encoded instance."""
        return self.deidentify(self.read(data), data)

    def read(self, data: bytes) -> Dataset:
        """Parse an instance (Part 10 or a bare data set); nothing is decoded yet."""
        with guard("unreadable"):
            ds = dcmread(io.BytesIO(data), force=True, defer_size=_DEFER_BYTES)
            if str(ds.file_meta.get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
                ds = dcmread(io.BytesIO(data), force=True)  # positions are in the inflated data
            sop_class = peek(ds, SOP_CLASS_UID)  # a file that is not DICOM fails here
        if sop_class is None:  # a Part 10 file without it is broken DICOM; else not DICOM
            raise Unprocessable("missing-uid" if data[128:132] == b"DICM" else "not-dicom")
        return ds

    def facts(self, ds: Dataset, peer: str | None = None) -> Facts:
        """What the policy's routes look at, from a data set from `read()`."""
        with guard("unreadable"):
            return Facts(
                text(ds, SOP_CLASS_UID),
                text(ds, MODALITY),
                peer,
                text(ds, BODY_PART_EXAMINED),
                text(ds, SERIES_DESCRIPTION),
            )

    def load_pixels(self, ds: Dataset, data: bytes) -> str:
        """Bring a data set's pixel data in from `data` (a view, no copy), check that it is
        complete, and return the transfer syntax it is encoded in."""
        with guard("deidentify-error:"):
            transfer_syntax = _transfer_syntax(ds)
            if PIXEL_DATA in ds:
                undefer(ds, PIXEL_DATA, data)
            _check_pixel_length(ds)
            return transfer_syntax

    def deidentify(
        self,
        ds: Dataset,
        data: bytes,
        replace: Replacement | None = None,
        loaded: str | None = None,
    ) -> Deidentified:
        """De-identify a data set `read()` from `data` and encode it as Part 10. Large values
        were left in `data` while parsing; they are taken from there. `replace` is what the
        pixel stage changed: top-level elements written instead of the received ones, and the
        transfer syntax of the new pixel data. `loaded`: the transfer syntax `load_pixels`
        returned for this data set already (it is not loaded and checked twice)."""
        with guard("deidentify-error:"):
            return self._deidentify(ds, data, replace, loaded)

    def _deidentify(
        self, ds: Dataset, data: bytes, replace: Replacement | None, loaded: str | None
    ) -> Deidentified:
        transfer_syntax = loaded if loaded is not None else self.load_pixels(ds, data)
        sop_class = text(ds, SOP_CLASS_UID)
        if not sop_class or not text(ds, SOP_INSTANCE_UID) or not text(ds, STUDY_INSTANCE_UID):
            raise Unprocessable("missing-uid")
        syntax = UID(transfer_syntax)
        job = self.walker.job(
            ds, data, explicit=not syntax.is_implicit_VR, little=syntax.is_little_endian
        )
        charset = encodings(ds, DEFAULT_CHARSET)
        node = self.requirements.for_sop_class(sop_class)
        elements = self.walker.walk(ds, job, charset, node, top=True)
        if replace is not None:
            new_syntax = UID(replace.transfer_syntax)
            if (new_syntax.is_implicit_VR, new_syntax.is_little_endian) != (
                syntax.is_implicit_VR,
                syntax.is_little_endian,
            ):
                raise Unprocessable("pixel-syntax-change")  # the rest is written as read
            transfer_syntax = replace.transfer_syntax
            elements = [e for e in elements if int(e.tag) not in replace.elements]
            elements += replace.elements.values()
        patient = self.pseudonyms.patient(job.patient)
        elements += [
            ascii_element(PATIENT_NAME, "PN", patient),
            ascii_element(PATIENT_ID, "LO", patient),
            *self._provenance[replace is not None and replace.pixels_checked],
        ]
        uids = {int(e.tag): ascii_text(e) or "" for e in elements if e.tag in _NAMING_UIDS}
        if not all(_UID_CHARS.fullmatch(uids.get(tag, "")) for tag in _INSTANCE_UIDS):
            raise Unprocessable("invalid-uid")  # they name files and URLs downstream
        series = uids.get(SERIES_INSTANCE_UID, "")
        head = part10_head(
            sop_class,
            uids[SOP_INSTANCE_UID],
            transfer_syntax,
            implementation_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version=IMPLEMENTATION_VERSION_NAME,
            source_ae_title=self.ae_title,
        )
        encoder = Encoder(implicit=syntax.is_implicit_VR, little=syntax.is_little_endian)
        return Deidentified(
            data=encoder.encode(elements, charset, head),
            sop_class_uid=sop_class,
            sop_instance_uid=uids[SOP_INSTANCE_UID],
            study_instance_uid=uids[STUDY_INSTANCE_UID],
            transfer_syntax_uid=transfer_syntax,
            counts=dict(job.counts),
            series_instance_uid=series if _UID_CHARS.fullmatch(series) else "",
            patient=patient,
        )


def _check_pixel_length(ds: Dataset) -> None:
    """Native pixel data shorter than its header says is a truncated file: not passed on."""
    if PIXEL_DATA not in ds:
        return
    raw = ds.get_item(PIXEL_DATA)
    if raw is None or undefined_length(raw):
        return  # encapsulated: frames are checked where they are decoded
    try:
        expected = native_length(
            int(text(ds, 0x00280010) or 0) * int(text(ds, 0x00280011) or 0),  # Rows, Columns
            int(text(ds, 0x00280002) or 1),  # SamplesPerPixel
            int(text(ds, 0x00280008) or 1),  # NumberOfFrames
            int(text(ds, 0x00280100) or 0),  # BitsAllocated
            text(ds, 0x00280004),  # PhotometricInterpretation
        )
    except (TypeError, ValueError):
        raise Unprocessable("bad-image-header") from None
    if len(raw.value or b"") < expected:
        raise Unprocessable("truncated-pixel-data")


def _transfer_syntax(ds: Dataset) -> str:
    """The transfer syntax to write: the input's (pixel data stays as it is), inflated."""
    meta = getattr(ds, "file_meta", None)
    declared = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if declared == DeflatedExplicitVRLittleEndian:
        return ExplicitVRLittleEndian
    if declared:
        syntax = UID(declared)
        if not syntax.is_transfer_syntax:
            raise Unprocessable("unknown-transfer-syntax")
        if ds.original_encoding != (syntax.is_implicit_VR, syntax.is_little_endian):
            raise Unprocessable("transfer-syntax-mismatch")  # the header lies about the data
        return declared
    pixels = ds.get_item(PIXEL_DATA) if PIXEL_DATA in ds else None
    if pixels is not None and undefined_length(pixels):
        raise Unprocessable("encapsulated-without-transfer-syntax")
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


#: CID 7050, recorded on an image whose every frame the pixel stage checked (`method_codes`)
CLEAN_PIXEL_DATA = ("113101", "Clean Pixel Data Option")


def method_codes(
    options: DeidentifySettings, *, pixels_checked: bool = False
) -> list[tuple[str, str]]:
    """The CID 7050 codes (value, meaning) an output under `options` carries in its
    DeidentificationMethodCodeSequence: the basic profile, Clean Pixel Data on an image whose
    every frame the pixel stage checked (`pixels_checked`), and each option in force."""
    codes = [_CID_7050["basic"]]
    if pixels_checked:
        codes.append(CLEAN_PIXEL_DATA)
    for flag in (
        "retain_patient_characteristics",
        "retain_device_identity",
        "retain_institution_identity",
        "retain_uids",
        "retain_safe_private",
        "clean_descriptors",
        "clean_structured_content",
        "clean_graphics",
    ):
        if getattr(options, flag):
            codes.append(_CID_7050[flag])
    if options.longitudinal_dates in ("full", "modified", "year"):
        codes.append(_CID_7050["full" if options.longitudinal_dates == "full" else "modified"])
    return codes


def _provenance(options: DeidentifySettings, pixels_checked: bool) -> list[Out]:
    """PatientIdentityRemoved, DeidentificationMethod with its CID 7050 codes, and whether
    dates were modified (PS3.15 E.1.1; PS3.3 C.7.1.1)."""
    items = [
        Item(
            [
                ascii_element(0x00080100, "SH", value),
                ascii_element(0x00080102, "SH", "DCM"),
                ascii_element(0x00080104, "LO", meaning),
            ],
            DEFAULT_CHARSET,
        )
        for value, meaning in method_codes(options, pixels_checked=pixels_checked)
    ]
    modified = {"full": "UNMODIFIED", "off": "REMOVED"}.get(options.longitudinal_dates, "MODIFIED")
    return [
        ascii_element(0x00120062, "CS", "YES"),
        ascii_element(0x00120063, "LO", "dicom-gateway: PS3.15 E.1-1 (2024b) and allow-list"),
        Seq(0x00120064, items),
        ascii_element(0x00280303, "CS", modified),
    ]
