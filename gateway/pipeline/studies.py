"""Which studies are complete: the tracker the scheduler asks when a manifest is due.

A study is *stable* once `studies.stable_seconds` have passed since its last instance arrived
and none of its instances waits anywhere (not received-but-unsealed, not in the outbox: the
spool says, `busy`; nothing here counts them). A stable study whose delivered instances differ
from its last manifest gets a new manifest version (`manifests`).

The tracker lives in the scheduler thread only (no locks). It knows each study by its spool id
(a keyed hash); the pseudonymous study UID comes from the sealed copies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Study:
    study_id: str
    last_received: float  # monotonic
    dirty: bool = False  # delivered instances not in the last manifest (or not yet checked)


@dataclass
class Studies:
    stable_seconds: float
    #: whether an instance of the study waits anywhere (`Spool.busy`)
    busy: Callable[[str], bool]
    known: dict[str, Study] = field(default_factory=dict)

    def get(self, study_id: str, now: float) -> Study:
        study = self.known.get(study_id)
        if study is None:
            study = self.known[study_id] = Study(study_id, now)
        return study

    def received(self, study_id: str, now: float) -> None:
        self.get(study_id, now).last_received = now

    def stable(self, now: float) -> list[Study]:
        """Studies ready for a manifest."""
        return [s for s in self.known.values() if s.dirty and self._quiet(s, now)]

    def idle(self, now: float) -> list[Study]:
        """Studies with nothing left to do: the tracker may forget them."""
        return [s for s in self.known.values() if not s.dirty and self._quiet(s, now)]

    def _quiet(self, study: Study, now: float) -> bool:
        """Nothing of the study waits, and nothing arrived for `stable_seconds`."""
        return now - study.last_received >= self.stable_seconds and not self.busy(study.study_id)
