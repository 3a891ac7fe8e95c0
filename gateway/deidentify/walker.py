"""The walk over one data set: each element gets its action, held to what the IOD requires.

`Walker.walk` goes through a data set (the top level or a sequence item) element by element:
private elements through the `PrivateFilter`; public ones through the action the table chose
for their tag (`decide.ActionTable`; at the top level `decide.TOP_LEVEL` first). Before an
action runs, an element whose value cannot be what its attribute holds (items or text where
they do not belong, a value cut short) is removed or refused. After it, `conform` holds the
result to what the instance's IOD requires there (`iod.py`): what it requires present is
emptied rather than removed, what it requires valued gets a fixed dummy rather than nothing,
and an optional sequence left without items goes.

`Job` is the state of one instance: its counts, what identifies its patient, staff and site
(gathered before anything changes), and the patient's date offset; it is what actions see.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import cast

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import correct_ambiguous_vr_element

from gateway.deidentify.actions import DUMMY_TEXT, Action, Level
from gateway.deidentify.decide import TOP_LEVEL, ActionTable
from gateway.deidentify.descriptors import Identifiers
from gateway.deidentify.elements import (
    PATIENT_ID,
    PATIENT_NAME,
    PIXEL_DATA,
    STUDY_INSTANCE_UID,
    UNDEFINED_LENGTH,
    Element,
    ascii_element,
    has_items,
    is_empty,
    plausible,
    text,
    undefer,
    values,
)
from gateway.deidentify.encode import Encodings, Out, Seq
from gateway.deidentify.iod import OPTIONAL, Kind, Node
from gateway.deidentify.private import PrivateFilter
from gateway.deidentify.pseudonyms import Pseudonyms, patient_key
from gateway.deidentify.uids import UidMapper
from gateway.deidentify.words import Cleaner
from gateway.errors import Unprocessable
from gateway.settings import DeidentifySettings

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


class Walker:
    """Applies one site's action table to data sets; one per engine."""

    def __init__(
        self,
        options: DeidentifySettings,
        table: ActionTable,
        private: PrivateFilter,
        uids: UidMapper,
        pseudonyms: Pseudonyms,
        words: Cleaner,
    ) -> None:
        self.options = options
        self.table = table
        self.private = private
        self.uids = uids
        self.pseudonyms = pseudonyms
        self.words = words

    def job(self, ds: Dataset, data: bytes, *, explicit: bool, little: bool) -> Job:
        """The state of de-identifying the instance `ds` read from `data`."""
        return Job(self, ds, data, explicit=explicit, little=little)

    def walk(
        self, ds: Dataset, job: Job, encodings: Encodings, node: Node, *, top: bool = False
    ) -> list[Out]:
        """The de-identified elements of one data set (the top level or a sequence item);
        `node` says what its IOD requires there."""
        out: list[Out] = []
        creators: dict[int, Element] = {}
        kept_blocks: set[int] = set()
        chosen, top_level = self.table.chosen, TOP_LEVEL if top else {}
        at = Level(ds, encodings, node)
        removed = private_removed = 0
        for key in list(ds.keys()):
            tag = int(key)  # a plain int: BaseTag compares in Python, slowly
            elem = undefer(ds, key, job.data) if top else ds.get_item(key)
            if (tag >> 16) & 1:  # private: only the safe-private list stays, with its creators
                if 0x0010 <= tag & 0xFFFF <= 0x00FF:
                    creators[tag] = elem
                elif self.private.keeps(ds, elem, kept_blocks, job.identifiers):
                    out.append(elem)
                    job.counts["private_kept"] += 1
                else:
                    private_removed += 1
                continue
            action = top_level.get(tag) or chosen.get(tag) or self.table.action(tag)
            kind = OPTIONAL if tag in top_level else node.kinds.get(tag, OPTIONAL)
            if action.removes:
                kept = self.conform(job, elem, None, kind) if kind else None
                if kept is None:
                    removed += 1
                else:
                    out.append(kept)
                continue
            result = self._apply(at, job, elem, action, kind)
            if result is not None:
                out.append(result)
        job.counts["removed"] += removed
        job.counts["private_removed"] += private_removed
        out += [creators[tag] for tag in sorted(kept_blocks) if tag in creators]
        return out

    def _apply(self, at: Level, job: Job, elem: Element, action: Action, kind: Kind) -> Out | None:
        """`action` on a public element that is not simply removed, held to `kind`."""
        tag, ds = int(elem.tag), at.ds
        raw = elem if isinstance(elem, RawDataElement) else None
        undefined = raw is not None and raw.length == UNDEFINED_LENGTH
        if raw is not None and not undefined and len(raw.value or b"") != raw.length:
            raise Unprocessable("truncated-element")
        nested = undefined or elem.VR == "SQ"
        if (nested and self.table.vr(tag) != "SQ" and tag != PIXEL_DATA) or (
            raw is not None and action.keeps_bytes and not plausible(raw, self.table.vr(tag))
        ):
            job.counts["removed_implausible"] += 1  # items or text where they don't belong
            return self.conform(job, elem, None, kind) if kind else None
        if action.unchanged and (elem.VR is not None or not job.explicit):
            return elem
        if isinstance(elem, RawDataElement) and elem.VR is None and job.explicit:
            elem = ds[tag]  # read as implicit VR inside an explicit file: learn its VR
        result = action.apply(job, at, elem)
        if isinstance(result, DataElement) and " or " in result.VR:
            result = cast(DataElement, correct_ambiguous_vr_element(result, ds, job.little))
        return self.conform(job, elem, result, kind)

    def conform(self, job: Job, elem: Element, result: Out | None, kind: Kind) -> Out | None:
        """What an action made of `elem` (None: removed), held to what the IOD requires of it
        (`iod.py`): removed but Type 1, 2 or 2C -> present (`required`); emptied but Type 1 or
        1C -> a fixed dummy; a sequence left without items that the IOD does not require ->
        removed."""
        if result is None:
            return None if kind in (OPTIONAL, Kind.VALUED_IF) else self.required(job, elem, kind)
        if self.table.vr(int(elem.tag)) == "SQ":
            if not kind and not has_items(result):
                job.counts["removed_empty_sequence"] += 1
                return None
            return result
        if kind.valued and not isinstance(result, Seq) and is_empty(result) and not is_empty(elem):
            return self.required(job, elem, kind)
        return result

    def required(self, job: Job, elem: Element, kind: Kind) -> Out:
        """An attribute of the input the IOD requires, when the actions left nothing of it:
        present and empty (Type 2, 2C), or with the fixed dummy of its VR (Type 1, 1C), never
        the original. A sequence stays with no items; a required value with no dummy (a UID,
        a binary value) stays empty."""
        tag = int(elem.tag)
        vr = self.table.vr(tag) or "UN"
        if vr == "SQ":
            job.counts["emptied_required"] += 1
            return Seq(tag, [])
        dummy = DUMMY_TEXT.get(vr) if kind.valued else None
        job.counts["dummy_required" if dummy else "emptied_required"] += 1
        return ascii_element(tag, vr, dummy or "")


class Job:
    """The state of one instance's de-identification: what actions see (`actions.Job`)."""

    def __init__(
        self, walker: Walker, ds: Dataset, data: bytes, *, explicit: bool, little: bool
    ) -> None:
        self.walker = walker
        self.data = data
        self.explicit = explicit
        self.little = little
        self.uids = walker.uids
        self.pseudonyms = walker.pseudonyms
        self.words = walker.words
        self.counts: Counter[str] = Counter()
        self.study_uid = text(ds, STUDY_INSTANCE_UID)
        self.patient = patient_key(
            text(ds, 0x00100021), text(ds, PATIENT_ID), text(ds, PATIENT_NAME), self.study_uid
        )
        self.identifiers = identifiers(ds, data, walker.options, walker.table.vr)
        self._offset: int | None = None

    def offset(self) -> int:
        if self._offset is None:
            self._offset = self.pseudonyms.date_offset(self.patient)
        return self._offset

    def walk(self, ds: Dataset, encodings: Encodings, node: Node) -> list[Out]:
        return self.walker.walk(ds, self, encodings, node)


def identifiers(
    ds: Dataset, data: bytes, options: DeidentifySettings, vr: Callable[[int], str | None]
) -> Identifiers:
    """What identifies an instance's patient, staff and site, read before anything changes:
    text anywhere may repeat it (`descriptors.py`)."""
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
