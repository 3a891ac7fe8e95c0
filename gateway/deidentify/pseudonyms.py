"""Pseudonyms for a patient, their IDs and their date offset, kept in the vault.

All pseudonyms are random (HIPAA Safe Harbor, 45 CFR 164.514(c): a re-identification code must
not be derived from the identifier); the vault makes them consistent: the first time a value is
seen a random pseudonym is drawn and stored, every later time (any process, after a restart)
the stored one is returned.

A patient is (issuer of the patient ID, patient ID, patient name normalised): two patients who
share an ID but not a name stay apart (ID collisions between sources are common), while the same
patient written "Doe^John" and "DOE^JOHN^^^" stays one. An instance with neither ID nor name
is a patient of its own study: it is never linked to other anonymous instances.
"""

from __future__ import annotations

import json
import secrets

from gateway.deidentify.uids import PseudonymStore

PATIENT_KIND = "patient"
DATE_OFFSET_KIND = "date_offset"
_CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base 32: no I, L, O, U
_CODE_LENGTH = 10  # 50 random bits
# Dates move back by 1 to 10 years, whole days; intervals within a patient are kept exactly.
MIN_SHIFT_DAYS, MAX_SHIFT_DAYS = 365, 3652


def random_code(length: int = _CODE_LENGTH) -> str:
    return "".join(secrets.choice(_CODE_ALPHABET) for _ in range(length))


def normalise_name(name: str) -> str:
    """Case, spacing and empty trailing components do not make another patient."""
    groups = [
        "^".join(" ".join(c.split()) for c in group.split("^")).rstrip("^")
        for group in name.split("=")
    ]
    return "=".join(groups).rstrip("=").casefold()


def patient_key(issuer: str, patient_id: str, name: str, study_uid: str) -> str:
    patient_id, issuer = patient_id.strip(), issuer.strip()
    name = normalise_name(name)
    if not patient_id and not name:
        return json.dumps(["study", study_uid])
    return json.dumps(["patient", issuer, patient_id, name])


class Pseudonyms:
    """The vault-backed pseudonyms of one site."""

    def __init__(self, vault: PseudonymStore, site_code: str) -> None:
        self.vault = vault
        self.site_code = site_code

    def patient(self, key: str) -> str:
        """The patient's coded identifier: site code + random code."""
        return self.vault.pseudonym(PATIENT_KIND, key, lambda: f"{self.site_code}-{random_code()}")

    def date_offset(self, key: str) -> int:
        """The patient's date shift in days (negative: dates move into the past)."""

        def make() -> str:
            days = MIN_SHIFT_DAYS + secrets.randbelow(MAX_SHIFT_DAYS - MIN_SHIFT_DAYS + 1)
            # the vault wants pseudonyms unique per kind; offsets repeat, so a nonce follows
            return f"{-days}:{secrets.token_hex(8)}"

        return int(self.vault.pseudonym(DATE_OFFSET_KIND, key, make).split(":", 1)[0])

    def identifier(self, kind: str, original: str, length: int) -> str:
        """A random ID (accession number, study ID, ...) standing for `original` in `kind`."""
        return self.vault.pseudonym(kind, original, lambda: random_code(length))
