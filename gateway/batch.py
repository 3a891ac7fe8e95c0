"""`dicom-gateway deidentify`: the worker's code path over files and folders, offline.

Every input file gets one line in the report, whatever happens to it: "written" (the output's
path, and what the pixel check masked), "dropped" (policy: reason code) or "quarantined"
(could not be made safe, or not DICOM: reason code). Outputs are named by their new SOP
Instance UID and written atomically; a bad file never stops the run.

With a `Preview` (`--preview`), each input's outcome also goes to the sign-off page
(`review.preview`), written as `preview.html` beside the outputs: the worker runs once per file.
That page holds PHI (the original images and header values); the command says so.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gateway.fate import Fate
from gateway.review.preview import Preview
from gateway.worker import Outcome, Worker

PREVIEW_NAME = "preview.html"


@dataclass(frozen=True)
class Entry:
    input: str
    output: str | None
    status: Fate  # WRITTEN, DROPPED or QUARANTINED
    reason: str | None
    changes: dict[str, int]
    #: the pixel check: why the image was checked (null: no pixels) and what was masked
    pixels: dict[str, Any] | None = None
    #: quarantined by the release check: the tag paths it points at (never values)
    where: tuple[str, ...] = ()


def _pixels(outcome: Outcome) -> dict[str, Any] | None:
    px = outcome.pixels
    if px is None or px.reason is None:
        return None
    return {
        "checked_because": px.reason,
        "checked": px.checked,
        "masked": [asdict(m) for m in px.masked],
        "transfer_syntax": px.transfer_syntax,
    }


def iter_inputs(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given, folders walked in name order; each file once."""
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found: Iterable[Path] = (
                Path(root) / name
                for root, dirs, files in os.walk(path)
                if not dirs.sort()  # walk sub-folders in name order too
                for name in sorted(files)
            )
        else:
            found = (path,)
        for file in found:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                yield file


def run(
    worker: Worker,
    inputs: list[Path],
    out_dir: Path,
    progress: Callable[[int, int], None] | None = None,
    preview: Preview | None = None,
) -> list[Entry]:
    """Every input through `worker`, outputs into `out_dir`; with a `preview`, its page is
    written there too (`PREVIEW_NAME`) once all are done."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries: list[Entry] = []
    for done, path in enumerate(inputs, 1):
        entries.append(_one(worker, path, out_dir, preview))
        if progress is not None:
            progress(done, len(inputs))
    if preview is not None:
        _write_atomically(out_dir / PREVIEW_NAME, preview.html().encode())
    return entries


def _one(worker: Worker, path: Path, out_dir: Path, preview: Preview | None) -> Entry:
    try:
        data = path.read_bytes()
    except OSError:
        if preview is not None:
            preview.note(Fate.QUARANTINED, "unreadable-file")
        return Entry(str(path), None, Fate.QUARANTINED, "unreadable-file", {})
    outcome: Outcome = worker.process(data)
    if preview is not None:
        preview.add(str(path), outcome, data)
    if outcome.result is None:
        return Entry(str(path), None, outcome.status, outcome.reason, {}, where=outcome.where)
    target = out_dir / f"{outcome.result.sop_instance_uid}.dcm"
    _write_atomically(target, outcome.result.data)
    return Entry(str(path), str(target), Fate.WRITTEN, None, outcome.counts, _pixels(outcome))


def _write_atomically(target: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def report(entries: list[Entry]) -> dict[str, Any]:
    statuses = Counter(e.status for e in entries)
    reasons = Counter(f"{e.status}:{e.reason}" for e in entries if e.reason)
    changes: Counter[str] = Counter()
    for e in entries:
        changes.update(e.changes)
    return {
        "files": [asdict(e) for e in entries],
        "summary": {
            "inputs": len(entries),
            **{
                fate.value: statuses[fate]
                for fate in (Fate.WRITTEN, Fate.DROPPED, Fate.QUARANTINED)
            },
            # inputs sharing a SOP Instance UID are one instance: one output between them
            "outputs": len({e.output for e in entries if e.output is not None}),
            "reasons": dict(sorted(reasons.items())),
            "changes": dict(sorted(changes.items())),
        },
    }


def write_report(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, (json.dumps(document, indent=1) + "\n").encode())
