"""Which instances are de-identified at all (data minimisation, fail closed).

Decided before de-identification from a few facts (`Facts`): the SOP class, the modality, the
body part examined, the series description and the name of the configured peer that sent the
instance (never an AE title from the wire). These are the site's routes: the rules
(`[[policy.rules]]`) come first, first match wins, so a site sends only what the analysis
needs (say, chest CT from the emergency department's modality) and drops the rest, counted by
reason. Then the built-in rules drop what header de-identification cannot make safe:

- encapsulated documents (PDF, CDA, STL, OBJ, MTL): free text and pictures inside a blob;
- structured reports, unless Clean Structured Content is on: free text in content items;
- raw data and audio: vendor blobs and voice recordings;
- private (non-standard) SOP classes: nothing says what they hold;
- visible-light photographs and video, and anything of modality XC (external camera): they may
  show a face (HIPAA Safe Harbor: full-face photographs).

Everything else is processed.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from gateway.deidentify.uids import is_standard_uid
from gateway.settings import DeidentifySettings, PolicyRule, PolicySettings

_SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
_DOCUMENT_PREFIX = "1.2.840.10008.5.1.4.1.1.104."
_RAW = {
    "1.2.840.10008.5.1.4.1.1.66": "raw-data",  # Raw Data Storage
    "1.2.840.10008.5.1.4.1.1.9.4.1": "audio",  # Basic Voice Audio Waveform Storage
    "1.2.840.10008.5.1.4.1.1.9.4.2": "audio",  # General Audio Waveform Storage
}
_PHOTOGRAPHS = {
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image Storage
    "1.2.840.10008.5.1.4.1.1.77.1.4.1",  # Video Photographic Image Storage
}


@dataclass(frozen=True)
class Facts:
    """What the routes look at. Body part and series description are matched, never logged."""

    sop_class: str
    modality: str
    peer: str | None = None
    body_part: str = ""
    series_description: str = ""


@dataclass(frozen=True)
class Decision:
    process: bool
    reason: str | None  # why it is dropped (or which site rule let it through)


class Policy:
    def __init__(self, settings: PolicySettings, options: DeidentifySettings) -> None:
        self.rules = settings.rules
        self.clean_structured_content = options.clean_structured_content

    def decide(self, facts: Facts) -> Decision:
        for rule in self.rules:
            if _matches(rule, facts):
                return Decision(rule.action == "process", rule.reason)
        reason = self._built_in(facts.sop_class, facts.modality)
        return Decision(reason is None, reason)

    def _built_in(self, sop_class: str, modality: str) -> str | None:
        if sop_class.startswith(_DOCUMENT_PREFIX):
            return "encapsulated-document"
        if sop_class.startswith(_SR_PREFIX) and not self.clean_structured_content:
            return "structured-report"
        if sop_class in _RAW:
            return _RAW[sop_class]
        if sop_class in _PHOTOGRAPHS or modality == "XC":
            return "photograph"
        if not is_standard_uid(sop_class):
            return "private-sop-class"
        return None


def _matches(rule: PolicyRule, facts: Facts) -> bool:
    """Every non-empty list of the rule has a match: exact for SOP classes, modalities and
    peers; case-insensitive for body parts; a case-insensitive shell pattern (`*CHEST*`) for
    series descriptions."""
    description = facts.series_description.casefold()
    return (
        (not rule.sop_classes or facts.sop_class in rule.sop_classes)
        and (not rule.modalities or facts.modality in rule.modalities)
        and (not rule.peers or facts.peer in rule.peers)
        and (
            not rule.body_parts
            or facts.body_part.strip().casefold() in {b.casefold() for b in rule.body_parts}
        )
        and (
            not rule.series_descriptions
            or any(fnmatch.fnmatchcase(description, p.casefold()) for p in rule.series_descriptions)
        )
    )
