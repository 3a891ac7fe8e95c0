"""Where the spool keeps what: its states, the names of items in them, and how to list them.

Layout (no PHI in any name: study directories are keyed hashes, instance files are random):

    <spool>/.lock                          held (flock) by the one gateway that owns the spool
    <spool>/keys/<study-id>.key            the study's data key, wrapped by the master key
    <spool>/incoming/<study-id>/<instance-id>.dgs      received, acknowledged, not yet sealed
    <spool>/outbox/<study-id>/<instance-id>.sealed     de-identified, sealed, waiting to be sent
    <spool>/outbox/<study-id>/manifest-<n>.sealed      a study's manifest, version n
    <spool>/sent/<study-id>/<name>.sealed              delivered; kept for the support window
    <spool>/dead/<study-id>/<name>.sealed (+ .reason.json)       refused by the server for good
    <spool>/quarantine/<study-id>/<instance-id>.dgs (+ .reason.json)   held: not proven clean
    <spool>/studies/<study-id>.json        the study's last manifest: version and instance ids
    <spool>/requests/<id>.json             an operator's request to the running gateway
    <spool>/returns/, returns-held/        results on their way back to PACS (`returns`)
    .../.<random>.part                     a write in progress, beside its final name; removed
                                           at start (it was never acknowledged)

This module is the only one that knows these names; everything else asks it (`Layout`) or the
spool for items (`Item`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class State(StrEnum):
    """Where an item is; each state is a directory, a change of state one rename."""

    INCOMING = "incoming"  # an original (PHI, encrypted), acknowledged, not yet sealed
    OUTBOX = "outbox"  # sealed, waiting to be sent
    SENT = "sent"  # delivered
    DEAD = "dead"  # refused by the analysis server for good (a reason file beside it)
    QUARANTINE = "quarantine"  # an original held: not proven clean (a reason file beside it)

    @property
    def suffix(self) -> str:
        """The file suffix of items in this state: originals `.dgs`, sealed copies `.sealed`."""
        return ORIGINAL if self in (State.INCOMING, State.QUARANTINE) else SEALED


STATES: tuple[State, ...] = tuple(State)
#: The states an operator may act on (release, retry, purge); their items have reason files.
HELD: tuple[State, ...] = (State.QUARANTINE, State.DEAD)
#: The states of sealed copies, where manifests are too.
SEALED_STATES: tuple[State, ...] = (State.OUTBOX, State.SENT, State.DEAD)
ORIGINAL = ".dgs"
SEALED = ".sealed"
REASON_SUFFIX = ".reason.json"
RETURNS = "returns"  # results fetched, waiting for PACS (`returns`)
RETURNS_HELD = "returns-held"  # results quarantined or dead-lettered
RETURNS_CURSOR = "cursor"  # in returns/: the results channel's cursor
RETURNS_STORED = ".stored"  # in returns/: beside a result PACS stored, not yet acknowledged
PARTIAL = ".part"
_MANIFEST = "manifest-"


def manifest_name(version: int) -> str:
    return f"{_MANIFEST}{version}"


def manifest_version(name: str) -> int | None:
    """The version of a manifest item's name; None when the name is no manifest's."""
    if not name.startswith(_MANIFEST):
        return None
    try:
        return int(name.removeprefix(_MANIFEST))
    except ValueError:
        return 0


def item_name(path: Path) -> str:
    """The item's name without its suffix (`<instance-id>`, `manifest-3`)."""
    name = path.name
    for suffix in (REASON_SUFFIX, ORIGINAL, SEALED):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def reason_path(path: Path) -> Path:
    """The reason file beside a held item."""
    return path.with_name(item_name(path) + REASON_SUFFIX)


@dataclass(frozen=True)
class Item:
    """One item of the spool: an original or a sealed copy, in one state, of one study."""

    state: State
    study_id: str
    name: str  # the instance id, or `manifest-<n>`
    path: Path

    @property
    def ref(self) -> str:
        """How operators name it: `<study-id>/<name>`."""
        return f"{self.study_id}/{self.name}"

    @property
    def is_manifest(self) -> bool:
        return manifest_version(self.name) is not None

    @property
    def reason_path(self) -> Path:
        return reason_path(self.path)

    def stamp(self) -> float | None:
        """The item's modification time (received, sealed, delivered or held: see
        `Spool.move`); None once it is gone."""
        try:
            return self.path.stat().st_mtime
        except FileNotFoundError:
            return None


class Layout:
    """The spool's directories and names under one root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = root / "keys"
        self.records = root / "studies"
        self.requests = root / "requests"

    def directory(self, state: State, study_id: str) -> Path:
        return self.root / state / study_id

    def path(self, state: State, study_id: str, name: str) -> Path:
        return self.root / state / study_id / f"{name}{state.suffix}"

    def key_path(self, study_id: str) -> Path:
        return self.keys / f"{study_id}.key"

    def record_path(self, study_id: str) -> Path:
        return self.records / f"{study_id}.json"

    def item(self, path: Path) -> Item:
        """The item at `path` (a path this layout made)."""
        return Item(State(path.parent.parent.name), path.parent.name, item_name(path), path)

    def items(self, state: State, study_id: str | None = None) -> list[Item]:
        """The items in one state (of one study, or all), in (study, name) order; reason files
        and writes in progress are no items."""
        where = self.root / state
        pattern = f"{study_id or '*'}/*{state.suffix}"
        return [
            Item(state, p.parent.name, p.name[: -len(state.suffix)], p)
            for p in sorted(where.glob(pattern))
            if not p.name.startswith(".")
        ]

    def has_items(self, state: State, study_id: str) -> bool:
        """Whether the study has an item in `state` (stops at the first)."""
        try:
            with os.scandir(self.directory(state, study_id)) as entries:
                return any(
                    e.name.endswith(state.suffix) and not e.name.startswith(".") for e in entries
                )
        except (FileNotFoundError, NotADirectoryError):
            return False

    def studies(self, state: State) -> list[str]:
        """The studies that have a directory in `state` (empty or not), in order."""
        where = self.root / state
        with contextlib.suppress(FileNotFoundError):
            return sorted(p.name for p in where.iterdir() if p.is_dir())
        return []

    def occupied(self, study_id: str) -> bool:
        """Whether any file of the study is left in any state."""
        return any(any(self.directory(s, study_id).glob("*")) for s in STATES)

    def manifest_versions(self, study_id: str) -> list[int]:
        """The versions of the study's manifests still in the spool (outbox, sent or dead)."""
        versions = []
        for state in SEALED_STATES:
            for found in self.directory(state, study_id).glob(f"{_MANIFEST}*{SEALED}"):
                version = manifest_version(found.name[: -len(SEALED)])
                versions.append(version or 0)
        return versions

    def record_ids(self) -> list[str]:
        """The studies that have a record, in order."""
        return sorted(p.stem for p in self.records.glob("*.json"))

    def partial(self) -> list[Path]:
        """Writes that never completed: nothing here was ever acknowledged."""
        found = [*self.keys.glob(f".*{PARTIAL}"), *self.records.glob(f".*{PARTIAL}")]
        found.extend((self.root / State.INCOMING).glob(f".*{PARTIAL}"))  # a probe cut short
        for state in STATES:
            found.extend((self.root / state).glob(f"*/.*{PARTIAL}"))
        return found

    def stray_reasons(self) -> list[Path]:
        """Reason files whose item is gone (a crash between writing one and the move)."""
        return [
            reason
            for state in HELD
            for reason in (self.root / state).glob(f"*/*{REASON_SUFFIX}")
            if not any(reason.with_name(item_name(reason) + s).exists() for s in (ORIGINAL, SEALED))
        ]
