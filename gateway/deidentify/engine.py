"""Header de-identification of one instance: PS3.15 Annex E, then an allow-list, fail closed.

`Engine.run(data)` takes one encoded instance (a Part 10 file, or a bare data set) and returns
the de-identified Part 10 bytes. Per element, at every sequence depth:

1. Top level only, the identities: PatientName and PatientID are written afresh as the
   patient's coded identifier (site code + random code), AccessionNumber and StudyID become
   random IDs, all from the vault; the provenance attributes are written afresh at the end.
2. The profile (`profile.Profile`: the gateway's rules, then Table E.1-1 under the options)
   decides for every attribute it names: X remove, Z empty, D dummy (a vault-consistent random
   ID for LO/SH), K keep, C clean (descriptors cleaned, dates shifted), U new UID.
3. The allow-list decides the rest: a public attribute the DICOM dictionary knows and does not
   retire is kept, with its UIDs mapped, its dates shifted, its ages aggregated; person names,
   retired and unknown attributes go. Private attributes go, except the safe-private list when
   that option is on. Every text value kept, at any depth, keeps only known words (`words.py`;
   codes whole or empty), then this instance's identifiers are removed from it
   (`descriptors.py`); free narrative goes unless the site keeps it cleaned (`profile.py`).
4. Group 0002 is rebuilt (our implementation UID and AE title; MediaStorageSOPInstanceUID =
   the new SOPInstanceUID) and provenance is written (PatientIdentityRemoved,
   DeidentificationMethod and its CID 7050 codes, LongitudinalTemporalInformationModified).

Elements kept unchanged are never decoded: their bytes (pixel data above all) are written as
read. Anything the engine cannot do safely raises `Unprocessable` with a fixed reason code;
its message never carries a value from the instance.
"""

from __future__ import annotations

import enum
import io
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import cast

from pydicom import dcmread
from pydicom.datadict import dictionary_is_retired, dictionary_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import correct_ambiguous_vr_element
from pydicom.multival import MultiValue
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from gateway.deidentify import dates
from gateway.deidentify.descriptors import Identifiers
from gateway.deidentify.elements import (
    ACCESSION_NUMBER,
    BODY_PART_EXAMINED,
    CODED,
    DEFAULT_CHARSET,
    FREE_TEXT,
    MODALITY,
    PATIENT_ID,
    PATIENT_NAME,
    PIXEL_DATA,
    PROVENANCE,
    SERIES_DESCRIPTION,
    SERIES_INSTANCE_UID,
    SINGLE_VALUED,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_ID,
    STUDY_INSTANCE_UID,
    TEXT,
    UNDEFINED_LENGTH,
    ascii_element,
    ascii_map,
    ascii_text,
    dictionary_vr,
    emptied,
    has_items,
    is_empty,
    keyword,
    peek,
    plausible,
    text,
    text_values,
    undefer,
    undefined_length,
    values,
)
from gateway.deidentify.elements import (
    encodings as charset_of,
)
from gateway.deidentify.encode import Encoder, Encodings, Item, Out, Seq
from gateway.deidentify.failures import guard
from gateway.deidentify.iod import EMPTY, OPTIONAL, Kind, Node, Requirements
from gateway.deidentify.pixels.frames import native_length
from gateway.deidentify.policy import Facts
from gateway.deidentify.private import SafePrivate
from gateway.deidentify.profile import Action, Profile
from gateway.deidentify.pseudonyms import Pseudonyms, patient_key
from gateway.deidentify.uids import PseudonymStore, UidMapper
from gateway.deidentify.words import CODE_ATTRIBUTES, Cleaner, Vocabulary
from gateway.errors import Unprocessable
from gateway.part10 import part10_head
from gateway.settings import DeidentifySettings

#: The gateway's own implementation class UID (PS3.7 D.3.3.2), a 2.25 UUID UID drawn once.
IMPLEMENTATION_CLASS_UID = "2.25.162650821892412602811294785024994956258"
IMPLEMENTATION_VERSION_NAME = "DICOM_GATEWAY_1"

_DEFER_BYTES = 65_536  # values at least this long are not copied while parsing
_UID_CHARS = re.compile(r"[0-9.]{1,64}")
# Attributes the table does not name whose keyword says they identify a person or an
# organisation (issuers, requesters, owners, authors, contacts, encrypted originals...).
_IDENTITY = re.compile(
    r"Physician|Operator|Institution|Issuer|Person|Observer|Address|Telephone|Responsible"
    r"|Requesting|Author|Owner|ContactDisplayName|ContactURI|Mail|PatientGroup|GroupOfPatients"
    r"|OrderPlacer|OrderFiller|Encrypted|Signature|Asserter|HangingProtocolUser|AssigningAuthority"
)
_DATES = frozenset({"DA", "DT"})
_DUMMY_TEXT = {  # also the value a Type 1 attribute keeps when nothing of its own can stay
    "SH": "ANONYMIZED",
    "LO": "ANONYMIZED",
    "PN": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "CS": "ANONYMIZED",
    "AE": "ANONYMOUS",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "IS": "0",
    "DS": "0",
}
_ID_LENGTH = {"SH": 10, "LO": 16}
# IDs that must read the same nested as at the top level (an order's accession number)
_ID_KINDS = {0x00080050: ("accession", 12)}

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

# Values that identify the patient, staff or site, gathered before anything changes: every
# person name at any depth (`_collect_names`), and these.
_IDS = (
    0x00100020,  # PatientID
    0x00101000,  # OtherPatientIDs
    0x00080050,  # AccessionNumber
    0x00200010,  # StudyID
    0x00380010,  # AdmissionID
    0x00402016,  # PlacerOrderNumberImagingServiceRequest
    0x00402017,  # FillerOrderNumberImagingServiceRequest
    0x00401001,  # RequestedProcedureID
)
_PATIENT_PHRASES = (0x00101040, 0x00102154, 0x00102299)  # address, telephones, owner org.
_INSTITUTION = (0x00080080, 0x00080081, 0x00081040)  # name, address, department
_DEVICE = (0x00081010, 0x00181000)  # StationName, DeviceSerialNumber
_BIRTH_DATE = 0x00100030


class Step(enum.Enum):
    REMOVE = "remove"
    EMPTY = "empty"
    DUMMY = "dummy"
    KEEP = "keep"
    FORM = "form"  # keep a time (or an unshifted date) in its current form (PS3.5 6.2)
    CLEAN = "clean"  # descriptor cleaning
    SCRUB = "scrub"  # identifier scrub of an allow-listed text value
    DATE = "date"
    UID = "uid"
    AGE = "age"
    SEQUENCE = "sequence"  # keep the sequence, de-identify its items
    ACCESSION = "accession"
    STUDY_ID = "study_id"


_TOP_LEVEL = {
    PATIENT_NAME: Step.REMOVE,  # written afresh: the patient's pseudonym, present or not before
    PATIENT_ID: Step.REMOVE,
    ACCESSION_NUMBER: Step.ACCESSION,
    STUDY_ID: Step.STUDY_ID,
    **{tag: Step.REMOVE for tag in PROVENANCE},
}
#: Top-level attributes whatever the profile says: pseudonyms and provenance, written afresh.
REWRITTEN = frozenset(_TOP_LEVEL)


@dataclass(frozen=True)
class Replacement:
    """Top-level elements written instead of the received ones (the pixel stage's new pixel
    data and the header that describes it), and the transfer syntax they are encoded in."""

    transfer_syntax: str
    elements: Mapping[int, RawDataElement | DataElement]


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
        self._steps: dict[int, Step] = {}
        self._vrs: dict[int, str | None] = {}
        self._provenance = _provenance(options)

    # -- decisions (per tag, cached: they do not depend on values) ---------------------------

    def step(self, tag: int) -> Step:
        found = self._steps.get(tag)
        if found is None:
            found = self._steps[tag] = self._decide(tag)
        return found

    def _decide(self, tag: int) -> Step:
        group, element = tag >> 16, tag & 0xFFFF
        if element == 0 or group in (0x0000, 0x0002, 0xFFFE):
            return Step.REMOVE  # group lengths, command and file meta groups (rebuilt)
        vr = dictionary_vr(tag)
        resolved = self.profile.lookup(tag)
        if resolved is None:
            return self._allow_list(tag, vr)
        action = resolved.action
        if action is Action.REMOVE or vr is None:
            return Step.REMOVE
        if vr == "SQ":
            # Z or D on a sequence: no item can stay (no dummy item can stand for what
            # identified someone); it goes, or stays with no items where the IOD requires it
            if action in (Action.EMPTY, Action.DUMMY):
                return Step.REMOVE
            return Step.SEQUENCE
        if action is Action.EMPTY:
            return Step.EMPTY
        if vr == "UI" and action in (Action.NEW_UID, Action.DUMMY):
            return Step.UID
        if action is Action.DUMMY:
            return Step.DUMMY
        if action is Action.KEEP:
            return self._keep(vr)
        if action is Action.CLEAN:
            if vr in _DATES:
                return Step.DATE
            if vr == "TM":
                return Step.FORM  # whole days move: the time of day stays
            return Step.CLEAN if vr in TEXT else Step.REMOVE  # nothing else can be cleaned
        return Step.REMOVE  # U on anything but a UID or a sequence

    def _keep(self, vr: str) -> Step:
        """K: keep, but a kept age is still aggregated, kept text still scrubbed (codes too:
        a CS can spell a name) and free text cleaned."""
        if vr == "AS":
            return Step.AGE
        if vr in FREE_TEXT:
            return Step.CLEAN
        if vr in ("DA", "TM"):
            return Step.FORM
        return Step.SCRUB if vr in TEXT or vr in CODED else Step.KEEP

    def _allow_list(self, tag: int, vr: str | None) -> Step:
        """A public attribute Table E.1-1 does not name."""
        if vr is None or vr in ("PN", "UR") or dictionary_is_retired(tag):
            return Step.REMOVE  # unknown, retired, person names, URLs (they carry IDs, UIDs)
        if _IDENTITY.search(dictionary_keyword(tag)):
            return Step.REMOVE  # who did, asked, owns or issued something: people and places
        if vr == "SQ":
            return Step.SEQUENCE
        if vr == "UI":
            return Step.KEEP if self.options.retain_uids else Step.UID
        if vr in _DATES:
            if self.options.longitudinal_dates == "off":
                return Step.REMOVE
            return self._keep(vr) if self.options.longitudinal_dates == "full" else Step.DATE
        return self._keep(vr)

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
        self, ds: Dataset, data: bytes, replace: Replacement | None = None
    ) -> Deidentified:
        """De-identify a data set `read()` from `data` and encode it as Part 10. Large values
        were left in `data` while parsing; they are taken from there. `replace` is what the
        pixel stage changed: top-level elements written instead of the received ones, and the
        transfer syntax of the new pixel data."""
        with guard("deidentify-error:"):
            return self._deidentify(ds, data, replace)

    def _deidentify(self, ds: Dataset, data: bytes, replace: Replacement | None) -> Deidentified:
        transfer_syntax = self.load_pixels(ds, data)
        sop_class = text(ds, SOP_CLASS_UID)
        if not sop_class or not text(ds, SOP_INSTANCE_UID) or not text(ds, STUDY_INSTANCE_UID):
            raise Unprocessable("missing-uid")
        syntax = UID(transfer_syntax)
        job = _Job(
            self, ds, data, explicit=not syntax.is_implicit_VR, little=syntax.is_little_endian
        )
        encodings = charset_of(ds, DEFAULT_CHARSET)
        elements = self.walk(
            ds, job, encodings, self.requirements.for_sop_class(sop_class), top=True
        )
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
            *self._provenance,
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
            data=encoder.encode(elements, encodings, head),
            sop_class_uid=sop_class,
            sop_instance_uid=uids[SOP_INSTANCE_UID],
            study_instance_uid=uids[STUDY_INSTANCE_UID],
            transfer_syntax_uid=transfer_syntax,
            counts=dict(job.counts),
            series_instance_uid=series if _UID_CHARS.fullmatch(series) else "",
            patient=patient,
        )

    def walk(
        self, ds: Dataset, job: _Job, encodings: Encodings, node: Node, *, top: bool = False
    ) -> list[Out]:
        """The de-identified elements of one data set (the top level or a sequence item);
        `node` says what its IOD requires there (`iod.py`): what it requires present is
        emptied rather than removed, what it requires valued gets a fixed dummy rather than
        nothing, and an optional sequence left without items goes."""
        out: list[Out] = []
        creators: dict[int, RawDataElement | DataElement] = {}
        kept_blocks: set[int] = set()
        steps, top_level = self._steps, _TOP_LEVEL if top else {}
        removed = private_removed = 0
        for key in list(ds.keys()):
            tag = int(key)  # a plain int: BaseTag compares in Python, slowly
            elem = undefer(ds, key, job.data) if top else ds.get_item(key)
            if (tag >> 16) & 1:  # private: only the safe-private list stays, with its creators
                if 0x0010 <= tag & 0xFFFF <= 0x00FF:
                    creators[tag] = elem
                elif self.safe_private is not None and self._safe(
                    ds, elem, kept_blocks, job.identifiers
                ):
                    out.append(elem)
                    job.counts["private_kept"] += 1
                else:
                    private_removed += 1
                continue
            step = top_level.get(tag) or steps.get(tag) or self.step(tag)
            kind = OPTIONAL if tag in top_level else node.kinds.get(tag, OPTIONAL)
            if step is Step.REMOVE:
                kept = job.conform(elem, None, kind) if kind else None
                if kept is None:
                    removed += 1
                else:
                    out.append(kept)
                continue
            raw = elem if isinstance(elem, RawDataElement) else None
            undefined = raw is not None and raw.length == UNDEFINED_LENGTH
            if raw is not None and not undefined and len(raw.value or b"") != raw.length:
                raise Unprocessable("truncated-element")
            nested = undefined or elem.VR == "SQ"
            if (nested and self.vr(tag) != "SQ" and tag != PIXEL_DATA) or (
                raw is not None
                and step in (Step.KEEP, Step.FORM)
                and not plausible(raw, self.vr(tag))
            ):
                job.counts["removed_implausible"] += 1  # items or text where they don't belong
                if kind and (kept := job.conform(elem, None, kind)) is not None:
                    out.append(kept)
                continue
            if step is Step.KEEP and (elem.VR is not None or not job.explicit):
                out.append(elem)
                continue
            if isinstance(elem, RawDataElement) and elem.VR is None and job.explicit:
                elem = ds[tag]  # read as implicit VR inside an explicit file: learn its VR
            result = job.apply(ds, elem, step, encodings, node.item(tag))
            if isinstance(result, DataElement) and " or " in result.VR:
                result = cast(DataElement, correct_ambiguous_vr_element(result, ds, job.little))
            result = job.conform(elem, result, kind)
            if result is not None:
                out.append(result)
        job.counts["removed"] += removed
        job.counts["private_removed"] += private_removed
        out += [creators[tag] for tag in sorted(kept_blocks) if tag in creators]
        return out

    def _safe(
        self,
        ds: Dataset,
        elem: RawDataElement | DataElement,
        kept: set[int],
        identifiers: Identifiers,
    ) -> bool:
        """Whether a private data element is on the safe-private list, with the VR the list
        gives and a value of that VR (its creator then stays)."""
        tag = int(elem.tag)
        element = tag & 0xFFFF
        if element < 0x1000 or self.safe_private is None or not isinstance(elem, RawDataElement):
            return False
        creator_tag = (tag & 0xFFFF0000) | (element >> 8)
        creator = peek(ds, creator_tag)
        name = creator.value if creator is not None else None
        if not isinstance(name, str):
            return False
        listed = self.safe_private.vr(name, tag)
        if listed is None or listed != elem.VR or not plausible(elem, listed):
            return False
        if listed == "CS" and identifiers.may_match(elem.value or b"", digits=False):
            return False  # a code that spells an identifier of this instance
        if listed in TEXT | CODED and not self._known_words(tag, listed, elem.value or b""):
            return False  # private text keeps its value only if every word is known
        kept.add(creator_tag)
        return True

    def _known_words(self, tag: int, vr: str, raw: bytes) -> bool:
        """Whether a private text value passes the allow-list of words untouched (it is kept
        as it is or not at all: the private block's meaning is the vendor's)."""
        if not raw.isascii():
            return False
        text = raw.decode("ascii").rstrip("\0 ")
        parts = [text] if vr in SINGLE_VALUED else text.split("\\")
        for part in parts:
            value = part.strip("\0 ")
            _, removed = self.words.code(tag, value) if vr in CODED else self.words.text(value)
            if removed:
                return False
        return True

    def vr(self, tag: int) -> str | None:
        """The dictionary VR of a public tag (cached)."""
        found = self._vrs.get(tag, "")
        if found == "":
            found = self._vrs[tag] = dictionary_vr(tag)
        return found


class _Job:
    """The state of one instance's de-identification."""

    def __init__(
        self, engine: Engine, ds: Dataset, data: bytes, *, explicit: bool, little: bool
    ) -> None:
        self.engine = engine
        self.data = data
        self.explicit = explicit
        self.little = little
        self.counts: Counter[str] = Counter()
        self.study_uid = text(ds, STUDY_INSTANCE_UID)
        self.patient = patient_key(
            text(ds, 0x00100021), text(ds, PATIENT_ID), text(ds, PATIENT_NAME), self.study_uid
        )
        self.identifiers = _identifiers(ds, data, engine.options, engine.vr)
        self._offset: int | None = None

    def offset(self) -> int:
        if self._offset is None:
            self._offset = self.engine.pseudonyms.date_offset(self.patient)
        return self._offset

    def apply(
        self,
        ds: Dataset,
        elem: RawDataElement | DataElement,
        step: Step,
        encodings: Encodings,
        node: Node = EMPTY,
    ) -> Out | None:
        """The element after `step`; None: it goes. `node`: what the IOD requires of the
        items of a sequence."""
        if step is Step.KEEP:
            return elem
        if step is Step.SEQUENCE:
            items = []
            for item in ds[elem.tag].value or ():
                inner = charset_of(item, encodings)
                items.append(Item(self.engine.walk(item, self, inner, node), inner))
            return Seq(elem.tag, items)
        if is_empty(elem):
            return elem
        if step is Step.EMPTY:
            self.counts["emptied"] += 1
            return emptied(elem)
        if step is Step.UID:
            self.counts["uids"] += 1
            return ascii_map(ds, elem, self.engine.uids.map_value, b"\0")
        if step in (Step.DATE, Step.AGE):
            return self._temporal(ds, elem, step)
        if step is Step.FORM:
            return self._form(ds, elem)
        if step in (Step.CLEAN, Step.SCRUB):
            return self._text(ds, elem, step)
        if step is Step.ACCESSION:
            self.counts["pseudonyms"] += 1
            value = self.engine.pseudonyms.identifier("accession", text(ds, elem.tag), 12)
            return ascii_element(elem.tag, "SH", value)
        if step is Step.STUDY_ID:
            self.counts["pseudonyms"] += 1
            original = f"{self.study_uid}\0{text(ds, elem.tag)}"
            value = self.engine.pseudonyms.identifier("study_id", original, 10)
            return ascii_element(elem.tag, "SH", value)
        return self._dummy(ds, elem)

    def conform(
        self, elem: RawDataElement | DataElement, result: Out | None, kind: Kind
    ) -> Out | None:
        """What an action made of `elem` (None: removed), held to what the IOD requires of it
        (`iod.py`): removed but Type 1, 2 or 2C -> present (`required`); emptied but Type 1 or
        1C -> a fixed dummy; a sequence left without items that the IOD does not require ->
        removed."""
        if result is None:
            return None if kind in (OPTIONAL, Kind.VALUED_IF) else self.required(elem, kind)
        if self.engine.vr(int(elem.tag)) == "SQ":
            if not kind and not has_items(result):
                self.counts["removed_empty_sequence"] += 1
                return None
            return result
        if kind.valued and not isinstance(result, Seq) and is_empty(result) and not is_empty(elem):
            return self.required(elem, kind)
        return result

    def required(self, elem: RawDataElement | DataElement, kind: Kind) -> Out:
        """An attribute of the input the IOD requires, when the actions left nothing of it:
        present and empty (Type 2, 2C), or with the fixed dummy of its VR (Type 1, 1C), never
        the original. A sequence stays with no items; a required value with no dummy (a UID,
        a binary value) stays empty."""
        tag = int(elem.tag)
        vr = self.engine.vr(tag) or "UN"
        if vr == "SQ":
            self.counts["emptied_required"] += 1
            return Seq(tag, [])
        dummy = _DUMMY_TEXT.get(vr) if kind.valued else None
        self.counts["dummy_required" if dummy else "emptied_required"] += 1
        return ascii_element(tag, vr, dummy or "")

    def _form(self, ds: Dataset, elem: RawDataElement | DataElement) -> Out:
        """A date or time kept as it is, unless written in a retired form (ACR-NEMA YYYY.MM.DD,
        HH:MM:SS; PS3.5 6.2): then in the current one, or emptied if it cannot be read."""
        vr = dictionary_vr(elem.tag)
        value = ascii_text(elem)
        if value is None or (":" if vr == "TM" else ".") not in value:
            return elem  # the current form (a TM's "." is its fraction of a second)
        try:
            new = dates.current_tm(value) if vr == "TM" else dates.shift_da(value, 0)
        except ValueError:
            self.counts["emptied_unreadable"] += 1
            return emptied(elem)
        if new == value:
            return elem
        self.counts["legacy_form"] += 1
        return ascii_map(ds, elem, lambda _: new, b" ")

    def _temporal(self, ds: Dataset, elem: RawDataElement | DataElement, step: Step) -> Out | None:
        """Shift or cut a date, aggregate an age; a value that does not parse is emptied
        (a Type 2 date stays present), never left as it was."""
        vr = dictionary_vr(elem.tag) or ""
        mode = self.engine.options.longitudinal_dates
        fn: Callable[[str], str]
        if step is Step.AGE:
            fn = dates.aggregate_age
        elif mode == "year":
            fn = partial(dates.year_only, vr=vr)
        elif vr == "DA":
            fn = partial(dates.shift_da, days=self.offset())
        else:
            fn = partial(dates.shift_dt, days=self.offset())
        try:
            result = ascii_map(ds, elem, fn, b" ")
        except ValueError:
            self.counts["emptied_unreadable"] += 1
            return emptied(elem)  # unreadable: nothing of it goes, the attribute stays
        self.counts["ages" if step is Step.AGE else "dates"] += 1
        return result

    def _text(self, ds: Dataset, elem: RawDataElement | DataElement, step: Step) -> Out:
        """Allow-list cleaning of each value (words.py), then this instance's identifiers
        removed on top; a coded value (CS, AE) that is a defined term stays whole."""
        values, vr = text_values(ds, elem)
        words, ids = self.engine.words, self.identifiers
        coded = vr in CODED or int(elem.tag) in CODE_ATTRIBUTES
        tag = int(elem.tag)
        removed = identifiers = 0
        new = []
        for value in values:
            cleaned, n = words.code(tag, value) if coded else words.text(value)
            removed += n
            if cleaned and not (coded and words.is_term(tag, cleaned)):
                cleaned, m = ids.clean(cleaned) if step is Step.CLEAN else ids.scrub(cleaned)
                identifiers += m
            new.append(cleaned)
        if not removed and not identifiers:
            return elem
        if not any(new):
            new = [""]  # nothing left of any value: empty, not a row of backslashes
        if removed:
            self.counts[f"words_removed:{keyword(tag)}"] += removed
        if identifiers:
            self.counts["descriptor_parts_removed" if step is Step.CLEAN else "scrubbed"] += (
                identifiers
            )
        return DataElement(elem.tag, vr, new if len(new) > 1 else new[0])

    def _dummy(self, ds: Dataset, elem: RawDataElement | DataElement) -> Out:
        converted = ds[elem.tag]
        vr = converted.VR
        self.counts["replaced"] += 1
        if vr in _ID_LENGTH:
            kind, length = _ID_KINDS.get(int(elem.tag), (f"id:{elem.tag:08X}", _ID_LENGTH[vr]))
            values = converted.value
            many = isinstance(values, MultiValue | list)
            new = [
                self.engine.pseudonyms.identifier(kind, str(v), length)
                for v in (values if many else [values])
            ]
            return ascii_element(elem.tag, vr, "\\".join(new))
        if vr in _DUMMY_TEXT:
            return ascii_element(elem.tag, vr, _DUMMY_TEXT[vr])
        return emptied(elem)  # numbers and binary values: no dummy says less than nothing


def _identifiers(
    ds: Dataset, data: bytes, options: DeidentifySettings, vr: Callable[[int], str | None]
) -> Identifiers:
    ids = Identifiers()
    _collect_names(ds, data, ids, vr, institutions=not options.retain_institution_identity)
    for tag in _IDS:
        for value in values(ds, tag):
            ids.add_id(value)
    phrases = list(_PATIENT_PHRASES)
    if not options.retain_institution_identity:
        phrases += _INSTITUTION
    if not options.retain_device_identity:
        phrases += _DEVICE
    for tag in phrases:
        for value in values(ds, tag):
            ids.add_phrase(value)
    for value in values(ds, _BIRTH_DATE):
        ids.add_date(value)
    return ids


def _collect_names(
    ds: Dataset,
    data: bytes,
    ids: Identifiers,
    vr: Callable[[int], str | None],
    *,
    institutions: bool,
) -> None:
    """Every person name, and (unless kept) every institution name, at any depth of the
    public data set: text anywhere may repeat them, in any order of elements."""
    for key in list(ds.keys()):
        tag = int(key)
        if (tag >> 16) & 1:
            continue
        kind = vr(tag)
        if kind == "PN" or (institutions and tag in _INSTITUTION):
            add = ids.add_name if kind == "PN" else ids.add_phrase
            for value in values(ds, tag):
                add(value)
        elif kind == "SQ":
            undefer(ds, tag, data)  # a long sequence may have been left in `data`
            for item in ds[tag].value or ():
                _collect_names(item, data, ids, vr, institutions=institutions)


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


def _provenance(options: DeidentifySettings) -> list[Out]:
    """PatientIdentityRemoved, DeidentificationMethod with its CID 7050 codes, and whether
    dates were modified (PS3.15 E.1.1; PS3.3 C.7.1.1)."""
    codes = [_CID_7050["basic"]]
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
    items = [
        Item(
            [
                ascii_element(0x00080100, "SH", value),
                ascii_element(0x00080102, "SH", "DCM"),
                ascii_element(0x00080104, "LO", meaning),
            ],
            DEFAULT_CHARSET,
        )
        for value, meaning in codes
    ]
    modified = {"full": "UNMODIFIED", "off": "REMOVED"}.get(options.longitudinal_dates, "MODIFIED")
    return [
        ascii_element(0x00120062, "CS", "YES"),
        ascii_element(0x00120063, "LO", "dicom-gateway: PS3.15 E.1-1 (2024b) and allow-list"),
        Seq(0x00120064, items),
        ascii_element(0x00280303, "CS", modified),
    ]
