"""Study manifests: what the analysis server learns a study holds (protocol v1).

A stable study (`studies`) whose delivered instances differ from its last manifest gets a new
manifest version listing every instance delivered so far, with its plaintext SHA-256: late
instances bump the version. The spool keeps the last manifest's list in the study record
(pseudonymous UIDs and digests), and which delivered items were already looked at (`seen`).

"Delivered so far" is the study's, not this gateway's: gateways sharing a vault may each
receive part of a study (docs/scaling.md). Each records what it delivered in the vault's study
ledger, claims its manifest version there (no two gateways send the same version), and lists
what the ledger holds after the claim - so the newest version any gateway sends lists every
instance recorded before it, and an instance recorded later makes its gateway send a newer
one. A study another gateway held (two patients) is held here too (`on_held`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gateway.errors import SpoolError
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.seal.envelope import Name, seal
from gateway.seal.keys import PublicKey
from gateway.spool import OutgoingHeader, Spool, manifest_name
from gateway.vault import Entry, Vault

log = get_logger("gateway.scheduler")


class Manifests:
    def __init__(
        self,
        spool: Spool,
        key: PublicKey,
        site: str,
        metrics: Metrics,
        ledger: Vault,
        on_held: Callable[[str], None],
    ) -> None:
        self.spool = spool
        self.key = key
        self.site = site
        self.metrics = metrics
        self.ledger = ledger
        self.on_held = on_held

    def assemble(self, study_id: str) -> Path | None:
        """Seal a new manifest version into the outbox if the study's delivered set changed;
        its path (None: nothing new, or the study is held). Raises VaultUnavailable when the
        ledger cannot be reached (nothing is changed then)."""
        record = self.spool.records.read(study_id)
        before: dict[str, dict[str, Any]] = record.get("instances", {})
        seen = set(record.get("seen", ()))  # spool ids already looked at
        study_uid = record.get("study", "")
        fresh: dict[str, dict[str, str]] = {}
        for item in self.spool.delivered(study_id):
            if item.name in seen:
                continue
            try:
                header, _ = self.spool.read_sealed(item.path, body=False)
            except (FileNotFoundError, SpoolError):
                continue
            fresh[header.item] = entry(header)
            seen.add(item.name)
            study_uid = header.study
        if not study_uid:
            return None
        self.ledger.record_delivered(study_uid, [Entry(**e) for e in fresh.values()])
        if self.ledger.study_held(study_uid):
            self.on_held(study_id)
            return None
        entries = {**before, **fresh, **self._listed(study_uid)}
        if entries == before:
            if seen != set(record.get("seen", ())):
                self.spool.records.write(study_id, {**record, "seen": sorted(seen)})
            return None
        at_least = self.spool.next_manifest(study_id, int(record.get("version", 0)))
        version = self.ledger.claim_manifest(study_uid, at_least)
        entries = {**entries, **self._listed(study_uid)}  # what was recorded before the claim
        path = self._seal(study_id, study_uid, version, entries)
        self.spool.records.write(
            study_id,
            {"study": study_uid, "version": version, "instances": entries, "seen": sorted(seen)},
        )
        self.metrics.manifests.inc()
        log.info("study.manifest", version=version, instances=len(entries))
        return path

    def _listed(self, study_uid: str) -> dict[str, dict[str, str]]:
        return {uid: asdict(e) for uid, e in self.ledger.delivered(study_uid).items()}

    def _seal(
        self, study_id: str, study_uid: str, version: int, entries: dict[str, dict[str, Any]]
    ) -> Path:
        document = manifest(study_uid, version, entries)
        name = Name("manifest", self.site, study_uid, str(version))
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        header = OutgoingHeader(
            name=manifest_name(version),
            study_id=study_id,
            kind="manifest",
            site=self.site,
            study=study_uid,
            item=str(version),
            key_id=self.key.key_id,
            sha256="",
            size=len(document),
            received_at=now,
            sealed_at=now,
        )
        return self.spool.write_sealed(header, seal(document, name, self.key))


def entry(header: OutgoingHeader) -> dict[str, str]:
    """How a delivered instance is listed in the manifest (protocol v1)."""
    return {
        "instance": header.item,
        "sop_class": header.sop_class,
        "series": header.series,
        "sha256": header.sha256,
    }


def manifest(study: str, version: int, entries: dict[str, dict[str, Any]]) -> bytes:
    """The manifest document: every instance delivered so far, in a stable order."""
    listed = sorted(entries.values(), key=lambda e: (e["series"], e["instance"]))
    document = {"version": version, "study": study, "instances": listed}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode("ascii")
