"""The action table: one action (`actions.py`) per public attribute, chosen once per site.

The profile (`profile.Profile`: the gateway's rules, then Table E.1-1 under the options) decides
for every attribute it names; the allow-list decides the rest. The choice depends on the tag,
its dictionary VR and the site's options only, never on a value, so it is made once per tag
and kept; the same action applies at every depth. At the top level a few attributes are
written afresh whatever the profile says (`TOP_LEVEL`).

How a Table E.1-1 code becomes an action:
- X, or a tag the dictionary does not know: remove.
- On a sequence: Z or D remove it (no dummy item can stand for what identified someone;
  where the IOD requires the sequence it stays without items); K, C or U keep it and
  de-identify its items.
- Z: empty. U, or D on a UID: a new UID, consistently mapped. D: a dummy of the VR.
- K: keep, but an age is aggregated, text keeps only known words and loses this instance's
  identifiers (codes too: a CS can spell a name), free text is cleaned as a descriptor, and
  a date or time is written in its current form.
- C: dates shifted (or cut to the year), times kept in their current form (whole days move),
  text cleaned as a descriptor; nothing else can be cleaned: removed.
"""

from __future__ import annotations

import re

from pydicom.datadict import dictionary_is_retired, dictionary_keyword

from gateway.deidentify.actions import (
    ACCESSION,
    CLEAN_DESCRIPTOR,
    EMPTY,
    FILE_META_UID,
    KEEP,
    MAP_UID,
    PATIENT_PSEUDONYM,
    PROVENANCE_WRITTEN,
    RECURSE,
    REMOVE,
    SCRUB,
    STUDY_ID,
    Action,
    Dummy,
)
from gateway.deidentify.elements import (
    ACCESSION_NUMBER,
    CODED,
    FREE_TEXT,
    PATIENT_ID,
    PATIENT_NAME,
    PROVENANCE,
    TEXT,
    dictionary_vr,
)
from gateway.deidentify.elements import STUDY_ID as STUDY_ID_TAG
from gateway.deidentify.profile import Code, Profile
from gateway.deidentify.temporal import AGGREGATE_AGE, KeepForm, ShiftDate, YearOnly
from gateway.settings import DeidentifySettings

_DATES = frozenset({"DA", "DT"})
# Attributes the table does not name whose keyword says they identify a person or an
# organisation (issuers, requesters, owners, authors, contacts, encrypted originals...).
_IDENTITY = re.compile(
    r"Physician|Operator|Institution|Issuer|Person|Observer|Address|Telephone|Responsible"
    r"|Requesting|Author|Owner|ContactDisplayName|ContactURI|Mail|PatientGroup|GroupOfPatients"
    r"|OrderPlacer|OrderFiller|Encrypted|Signature|Asserter|HangingProtocolUser|AssigningAuthority"
)
_MEDIA_STORAGE_SOP_INSTANCE_UID = 0x00020003

#: Top-level attributes whatever the profile says: pseudonyms and provenance, written afresh
#: (in sequence items the table's action applies).
TOP_LEVEL: dict[int, Action] = {
    PATIENT_NAME: PATIENT_PSEUDONYM,  # written afresh, present or not before
    PATIENT_ID: PATIENT_PSEUDONYM,
    ACCESSION_NUMBER: ACCESSION,
    STUDY_ID_TAG: STUDY_ID,
    **dict.fromkeys(PROVENANCE, PROVENANCE_WRITTEN),
}
REWRITTEN = frozenset(TOP_LEVEL)


class ActionTable:
    """The action for each public tag under one site's options (cached: they do not depend on
    values)."""

    def __init__(self, options: DeidentifySettings, profile: Profile) -> None:
        self.options = options
        self.profile = profile
        self.chosen: dict[int, Action] = {}
        self._vrs: dict[int, str | None] = {}

    def action(self, tag: int) -> Action:
        found = self.chosen.get(tag)
        if found is None:
            found = self.chosen[tag] = self._decide(tag)
        return found

    def vr(self, tag: int) -> str | None:
        """The dictionary VR of a public tag (cached)."""
        found = self._vrs.get(tag, "")
        if found == "":
            found = self._vrs[tag] = dictionary_vr(tag)
        return found

    def _decide(self, tag: int) -> Action:
        group, element = tag >> 16, tag & 0xFFFF
        if tag == _MEDIA_STORAGE_SOP_INSTANCE_UID:
            return FILE_META_UID
        if element == 0 or group in (0x0000, 0x0002, 0xFFFE):
            return REMOVE  # group lengths, command and file meta groups (rebuilt)
        vr = dictionary_vr(tag)
        resolved = self.profile.lookup(tag)
        if resolved is None:
            return self._allow_list(tag, vr)
        code = resolved.action
        if code is Code.REMOVE or vr is None:
            return REMOVE
        if vr == "SQ":
            return REMOVE if code in (Code.EMPTY, Code.DUMMY) else RECURSE
        if code is Code.EMPTY:
            return EMPTY
        if vr == "UI" and code in (Code.NEW_UID, Code.DUMMY):
            return MAP_UID
        if code is Code.DUMMY:
            return Dummy(vr)
        if code is Code.KEEP:
            return _keep(vr)
        if code is Code.CLEAN:
            if vr in _DATES:
                return self._date(vr)
            if vr == "TM":
                return KeepForm(vr)  # whole days move: the time of day stays
            return CLEAN_DESCRIPTOR if vr in TEXT else REMOVE  # nothing else can be cleaned
        return REMOVE  # U on anything but a UID or a sequence

    def _allow_list(self, tag: int, vr: str | None) -> Action:
        """A public attribute Table E.1-1 does not name."""
        if vr is None or dictionary_is_retired(tag):
            return REMOVE  # unknown or retired
        if _IDENTITY.search(dictionary_keyword(tag)):
            return REMOVE  # who did, asked, owns or issued something: people and places
        return self.unnamed(vr)

    def unnamed(self, vr: str) -> Action:
        """A known, current public attribute of `vr` that Table E.1-1 does not name and whose
        keyword names no person or organisation (the rest of the allow-list)."""
        if vr in ("PN", "UR"):
            return REMOVE  # person names, URLs (they carry IDs, UIDs)
        if vr == "SQ":
            return RECURSE
        if vr == "UI":
            return KEEP if self.options.retain_uids else MAP_UID
        if vr in _DATES:
            if self.options.longitudinal_dates == "off":
                return REMOVE
            return _keep(vr) if self.options.longitudinal_dates == "full" else self._date(vr)
        return _keep(vr)

    def _date(self, vr: str) -> Action:
        """A date cleaned: shifted by the patient's offset, or cut to the year."""
        return YearOnly(vr) if self.options.longitudinal_dates == "year" else ShiftDate(vr)


def _keep(vr: str) -> Action:
    """K: keep, but a kept age is still aggregated, kept text still scrubbed (codes too: a CS
    can spell a name) and free text cleaned."""
    if vr == "AS":
        return AGGREGATE_AGE
    if vr in FREE_TEXT:
        return CLEAN_DESCRIPTOR
    if vr in ("DA", "TM"):
        return KeepForm(vr)
    return SCRUB if vr in TEXT or vr in CODED else KEEP
