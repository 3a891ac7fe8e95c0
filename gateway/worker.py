"""The work done for one instance, the same in the daemon's worker processes and offline.

`Worker.process(data, peer)` is a function of the encoded instance, the settings the worker was
built with and the vault: policy filter -> pixel check (burned-in text masked, or the instance
quarantined) -> header de-identification -> the release check (`gateway.release`, written
apart from the de-identifier: it re-reads the output against the original and quarantines
anything it cannot prove clean, with the tag paths it points at). It never raises
for a bad instance: every instance ends in one `Outcome` with a fixed reason code, and no
outcome or exception carries a value from the instance. It raises VaultError when the vault
fails: no instance can be processed then.
A worker holds no module-level state; each process builds its own.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from gateway.deidentify.engine import Deidentified, Engine, Replacement
from gateway.deidentify.pixels.reading import TextFinder
from gateway.deidentify.pixels.stage import PixelOutcome, PixelStage
from gateway.deidentify.policy import Policy
from gateway.errors import Unprocessable
from gateway.fate import Fate
from gateway.reidentify.identity import StudyIdentity
from gateway.release import PixelEvidence, ReleaseCheck
from gateway.settings import DeidentifySettings, PolicySettings, Settings
from gateway.vault import Vault

#: vault kind: pseudonymous study UID -> "<patient pseudonym>:<nonce>" of its first instance
STUDY_PATIENT_KIND = "study_patient"
_IDENTIFIED_KEPT = 4096  # studies a process remembers having recorded (then it asks again)


@dataclass(frozen=True)
class Outcome:
    status: Fate  # WRITTEN, DROPPED or QUARANTINED
    reason: str | None = None
    result: Deidentified | None = None
    counts: dict[str, int] = field(default_factory=dict)
    pixels: PixelOutcome | None = None
    where: tuple[str, ...] = ()  # tag paths the release check pointed at (never values)


class Worker:
    def __init__(
        self,
        options: DeidentifySettings,
        policy: PolicySettings,
        vault: Vault,
        *,
        ae_title: str,
        pixels: PixelStage,
        release: ReleaseCheck | None = None,
    ) -> None:
        self.engine = Engine(options, vault, ae_title=ae_title)
        self.vault = vault
        self.policy = Policy(policy, options)
        self.pixels = pixels
        self.release = release or ReleaseCheck(options)
        self._identified: set[str] = set()  # studies whose identity this process recorded

    @classmethod
    def for_settings(
        cls, settings: Settings, vault: Vault, finder: TextFinder | None = None
    ) -> Worker:
        """A worker for a site's settings (with `finder`: the text detector another worker of
        this process loaded); raises ConfigError when its pixel rules or the text detector's
        models cannot be loaded."""
        return cls(
            settings.deidentify,
            settings.policy,
            vault,
            ae_title=settings.ingest.ae_title,
            pixels=PixelStage.for_settings(settings, finder),
        )

    def _mixed(self, result: Deidentified) -> bool:
        """Whether the study is held for naming two patients: this instance's patient is not
        the study's (then the hold is recorded in the vault), or another process - of this
        gateway or another sharing the vault - recorded the hold before."""
        if self._other_patient(result):
            self.vault.hold_study(result.study_instance_uid)
            return True
        return self.vault.study_held(result.study_instance_uid)

    def _other_patient(self, result: Deidentified) -> bool:
        """Whether the study already belongs to another patient (by pseudonym): the first
        instance of a study records its patient in the vault, for every process alike."""
        if not result.patient:
            return False
        owner = self.vault.pseudonym(
            STUDY_PATIENT_KIND,
            result.study_instance_uid,
            lambda: (
                f"{result.patient}:{secrets.token_hex(8)}"
            ),  # unique per kind, as the vault wants
        )
        return owner.split(":", 1)[0] != result.patient

    def process(self, data: bytes, peer: str | None = None) -> Outcome:
        """Filter and de-identify one instance; `peer` is the configured sender's name."""
        try:
            ds = self.engine.read(data)
            decision = self.policy.decide(self.engine.facts(ds, peer))
            if not decision.process:
                return Outcome(Fate.DROPPED, decision.reason)
            syntax = self.engine.load_pixels(ds, data)
            pixels = self.pixels.clean(ds, syntax)
            replace = None
            if pixels.elements:
                replace = Replacement(
                    pixels.transfer_syntax or syntax, pixels.elements, pixels.checked
                )
            result = self.engine.deidentify(ds, data, replace, loaded=syntax)
        except Unprocessable as exc:
            return Outcome(Fate.QUARANTINED, exc.reason)
        counts = {**result.counts, **pixels.counts}
        if self._mixed(result):
            return Outcome(Fate.QUARANTINED, "study-mixed-patients", None, counts, pixels)
        evidence = PixelEvidence(
            has_pixels=pixels.reason is not None,
            checked=pixels.checked,
            masked=len(pixels.masked),
            skipped_by_site=not pixels.checked and pixels.reason in self.pixels.settings.skip,
        )
        findings = self.release.check(data, result.data, evidence)
        if findings:
            where = tuple(sorted({f.where for f in findings}))
            return Outcome(Fate.QUARANTINED, findings[0].reason, None, counts, pixels, where)
        self._record_identity(ds, result)
        return Outcome(Fate.WRITTEN, None, result, counts, pixels)

    def _record_identity(self, original: Dataset, result: Deidentified) -> None:
        """Once per study and process: what re-identifying its results needs (the first
        record of a study stands, whichever process or gateway wrote it)."""
        study = result.study_instance_uid
        if study in self._identified:
            return
        identity = StudyIdentity.of(original, result.patient)
        self.vault.record_identity(study, identity.to_json())
        if len(self._identified) >= _IDENTIFIED_KEPT:
            self._identified.clear()
        self._identified.add(study)
