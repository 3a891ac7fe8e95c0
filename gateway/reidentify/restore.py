"""A result from the analysis server, filed under the original patient and study - or refused.

`Reidentifier.restore(data)` reads a result (Part 10: an SR, a SEG, a presentation state, a
secondary capture, an encapsulated PDF) that names only what the gateway sent - pseudonymous
UIDs, the patient pseudonym - and returns it naming the originals:

- every UID at any depth that the vault issued goes back to its original (Study, Series, SOP
  Instance, Frame of Reference, every Referenced... UID in any sequence: SR content items, SEG
  referenced series and source images, presentation-state image references, RT and KOS
  references);
- the Patient module and the study's identifying attributes (`identity.RESTORED`) are the
  original study's, from its identity record; the result's own dates (when it was made) stay;
- the result's own new UIDs (its SOP Instance, its Series, a SEG's dimension organisation, an
  SR's tracking UIDs) are kept as the server made them: they identify nothing, and a result
  delivered twice is then the same object twice in PACS.

Fail closed: a result is refused (`Unprocessable` with a reason code; the caller quarantines
it) when the gateway cannot tie it to exactly one original study -

- `result-unknown-study`: its Study Instance UID is not a study this vault de-identified;
- `result-other-patient`: it names a patient other than the study's (Patient ID, or another
  patient pseudonym anywhere in its text);
- `result-unknown-reference`: it references a UID the vault never issued;
- `result-reference-outside-study`: it references an instance or series not delivered as part
  of this study (another patient's images, or a study's images older than the ledger keeps);
- `result-reuses-uid`: its own SOP Instance or Series UID is one of the originals' (it would
  overwrite or join original images in PACS);
- `result-pseudonym-left`: after re-identification a pseudonym is still in its bytes (in free
  text the gateway cannot place).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from gateway.deidentify.failures import guard
from gateway.deidentify.uids import UID_KIND, is_standard_uid
from gateway.errors import Unprocessable
from gateway.reidentify.identity import RESTORED, StudyIdentity
from gateway.vault import Vault

#: UIDs that point at something the gateway sent: each must be one the vault issued
_REFERENCES = frozenset(
    {
        "StudyInstanceUID",
        "FrameOfReferenceUID",
        "RelatedFrameOfReferenceUID",
        "SourceFrameOfReferenceUID",
        "ReferencedSOPInstanceUID",
        "ReferencedFrameOfReferenceUID",
        "ReferencedSeriesInstanceUID",
        "ReferencedStudyInstanceUID",
        "SourceSeriesInstanceUID",
    }
)
#: at any depth below the top, these name an instance or a series of the study
_NESTED_REFERENCES = frozenset({"SeriesInstanceUID", "SOPInstanceUID"})
_INSTANCE_REFERENCES = frozenset({"ReferencedSOPInstanceUID", "SOPInstanceUID"})
_SERIES_REFERENCES = frozenset(
    {"SeriesInstanceUID", "ReferencedSeriesInstanceUID", "SourceSeriesInstanceUID"}
)
_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
UTF8 = "ISO_IR 192"


@dataclass(frozen=True)
class Restored:
    data: bytes  # the result as Part 10, naming the originals
    study_instance_uid: str  # the original study's
    sop_instance_uid: str  # the result's own (kept)
    sop_class_uid: str


class Reidentifier:
    def __init__(self, vault: Vault, site_code: str) -> None:
        self.vault = vault
        # the shape of the patient pseudonyms this site makes (`pseudonyms.patient`)
        self._patient_pseudonym = re.compile(re.escape(site_code) + r"-[0-9A-HJKMNP-TV-Z]{10}")
        self._seen: dict[str, str | None] = {}

    def restore(self, data: bytes) -> Restored:
        """The result naming the originals; raises Unprocessable (a reason code above)."""
        self._seen = {}  # one result's UIDs, each asked once
        with guard("result-unreadable:"):
            ds = dcmread(io.BytesIO(data), force=True)
            study = str(ds.get("StudyInstanceUID", "") or "")
            record = self.vault.identity(study) if study else None
            if record is None:
                raise Unprocessable("result-unknown-study")
            identity = StudyIdentity.from_json(record)
            self._check_patient(ds, identity)
            pseudonyms = self._restore_uids(ds, study)
            self._restore_identity(ds, identity)
            out = io.BytesIO()
            ds.save_as(out, enforce_file_format=True)
            restored = out.getvalue()
        if contains_any(restored, {identity.patient, *pseudonyms}):
            raise Unprocessable("result-pseudonym-left")
        return Restored(
            restored,
            str(ds.StudyInstanceUID),
            str(ds.SOPInstanceUID),
            str(ds.SOPClassUID),
        )

    def _check_patient(self, ds: Dataset, identity: StudyIdentity) -> None:
        patient_id = str(ds.get("PatientID", "") or "").strip()
        if patient_id and patient_id != identity.patient:
            raise Unprocessable("result-other-patient")
        for element in _walk(ds):
            if element.VR in _TEXT_VRS and element.value is not None:
                for found in self._patient_pseudonym.findall(str(element.value)):
                    if found != identity.patient:
                        raise Unprocessable("result-other-patient")

    def _restore_uids(self, ds: Dataset, study: str) -> set[str]:
        """Every UID the vault issued back to its original; the pseudonymous UIDs replaced."""
        delivered = self.vault.delivered(study)
        instances = set(delivered)
        series = {entry.series for entry in delivered.values()}
        replaced: set[str] = set()
        for element, nested in _walk_uids(ds):
            keyword = element.keyword
            values = [str(v) for v in _values(element)]
            originals = []
            for value in values:
                original = None if is_standard_uid(value) else self._original(value)
                reference = keyword in _REFERENCES or (nested and keyword in _NESTED_REFERENCES)
                if original is None:
                    if reference and not is_standard_uid(value):
                        raise Unprocessable("result-unknown-reference")
                    originals.append(value)
                    continue
                if not nested and keyword in ("SOPInstanceUID", "SeriesInstanceUID"):
                    raise Unprocessable("result-reuses-uid")
                if keyword == "StudyInstanceUID" and value != study:
                    raise Unprocessable("result-reference-outside-study")
                in_study = (keyword in _INSTANCE_REFERENCES and value not in instances) or (
                    keyword in _SERIES_REFERENCES and nested and value not in series
                )
                if in_study:
                    raise Unprocessable("result-reference-outside-study")
                replaced.add(value)
                originals.append(original)
            element.value = originals if len(originals) > 1 else originals[0]
        return replaced

    def _original(self, uid: str) -> str | None:
        if uid not in self._seen:
            self._seen[uid] = self.vault.original(UID_KIND, uid)
        return self._seen[uid]

    def _restore_identity(self, ds: Dataset, identity: StudyIdentity) -> None:
        """The original study's Patient and Study attributes at the top (Type 2: present,
        empty when the original had none), in UTF-8; below the top, an accession number or
        study ID of the study is the original's too."""
        ds.SpecificCharacterSet = UTF8
        for keyword in RESTORED:
            setattr(ds, keyword, identity.values.get(keyword, ""))
        for element in _walk(ds, nested_only=True):
            if element.keyword in ("AccessionNumber", "StudyID"):
                element.value = identity.values.get(element.keyword, "")
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def contains_any(data: bytes, needles: set[str]) -> bool:
    """Whether any of `needles` occurs in `data`: one pass of `bytes.find` per distinct
    leading byte run rather than per needle (a SEG names a hundred pseudonymous UIDs, all under
    one root, and carries megabytes of frames)."""
    encoded = sorted({n.encode("ascii") for n in needles if n}, key=len)
    if not encoded:
        return False
    width = min(4, *(len(n) for n in encoded))  # UIDs under one root share their first bytes
    by_prefix: dict[bytes, list[bytes]] = {}
    for needle in encoded:
        by_prefix.setdefault(needle[:width], []).append(needle)
    for prefix, group in by_prefix.items():
        at = data.find(prefix)
        while at != -1:
            if any(data.startswith(needle, at) for needle in group):
                return True
            at = data.find(prefix, at + 1)
    return False


def _walk(ds: Dataset, *, nested_only: bool = False) -> Iterator[DataElement]:
    """Every element that is not a sequence, at every depth (file meta aside); with
    `nested_only`, those below the top level."""
    for element in ds:
        if element.VR == "SQ":
            for item in element.value or ():
                yield from _walk(item)
        elif not nested_only:
            yield element


def _walk_uids(ds: Dataset, nested: bool = False) -> Iterator[tuple[DataElement, bool]]:
    """Every UI element with a value, and whether it is below the top level."""
    for element in ds:
        if element.VR == "SQ" and isinstance(element.value, Sequence):
            for item in element.value:
                yield from _walk_uids(item, nested=True)
        elif element.VR == "UI" and element.value:
            yield element, nested


def _values(element: DataElement) -> list[str]:
    value = element.value
    if isinstance(value, str):
        return [value.strip("\0 ")]
    return [str(v).strip("\0 ") for v in value]
