"""What filing a result under its original study needs, recorded when the study is
de-identified: the original Patient and Study attributes PACS matches and shows, and the
patient pseudonym the result must name.

The worker records it once per study (`Vault.record_identity`: encrypted under the vault key,
bound to the pseudonymous Study Instance UID, first record standing); re-identification reads
it back. The original UIDs are not here: every UID goes back through the vault's UID map.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

#: the attributes a result gets back from the original study (Patient module, General Study)
RESTORED = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyDescription",
)
_FORMAT = 1


@dataclass(frozen=True)
class StudyIdentity:
    patient: str  # the patient pseudonym the de-identified instances carry
    values: dict[str, str] = field(default_factory=dict)  # keyword -> original text

    @classmethod
    def of(cls, original: Dataset, patient: str) -> StudyIdentity:
        """From a received instance (pydicom decodes its text in its own character set)."""
        values = {}
        for keyword in RESTORED:
            value = original.get(keyword)
            if value is not None and str(value).strip():
                values[keyword] = str(value)
        return cls(patient, values)

    def to_json(self) -> str:
        return json.dumps(
            {"format": _FORMAT, "patient": self.patient, "values": self.values},
            ensure_ascii=False,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> StudyIdentity:
        document = json.loads(text)
        if document.get("format") != _FORMAT:
            raise ValueError("an identity record of an unknown format")
        return cls(
            str(document["patient"]), {str(k): str(v) for k, v in document["values"].items()}
        )
