"""`dicom-gateway deidentify`: the worker's code path over files and folders, offline.

Every input file gets one line in the report, whatever happens to it: "written" (the output's
path, and what the pixel check masked), "dropped" (policy, or the same instance as an earlier
input: reason code) or "quarantined" (could not be made safe, or not DICOM: reason code).
Outputs are named by their new SOP Instance UID and written atomically; a bad file never stops
the run.

Inputs that share a SOP Instance UID are one instance (PS3.3 C.12.1.1.1): the first one read
is written, a later one is not (it would replace an output the report already describes) and
is reported as `same-sop-instance`, naming the input that was written. pydicom's warnings
about an input (an invalid value, the wrong VR encoding) are counted per input by kind, never
with their text: it can quote element values.

With a `Preview` (`--preview`), each input's outcome also goes to the sign-off page
(`review.preview`), written as `preview.html` beside the outputs: the worker runs once per file.
That page holds PHI (the original images and header values); the command says so.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pydicom.valuerep import VR

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
    #: dropped as `SAME_INSTANCE`: the earlier input whose output holds this instance
    same_instance_as: str | None = None
    #: pydicom's warnings while this input was read and de-identified: kind -> how many
    warnings: dict[str, int] = field(default_factory=dict)


SAME_INSTANCE = "same-sop-instance"


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
    written: dict[str, str] = {}  # output -> the input written there
    for done, path in enumerate(inputs, 1):
        with pydicom_warnings() as kinds:
            entry = _one(worker, path, out_dir, preview, written)
        entries.append(replace(entry, warnings=dict(sorted(kinds.items()))))
        if progress is not None:
            progress(done, len(inputs))
    if preview is not None:
        _write_atomically(out_dir / PREVIEW_NAME, preview.html().encode())
    return entries


def _one(
    worker: Worker, path: Path, out_dir: Path, preview: Preview | None, written: dict[str, str]
) -> Entry:
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
    first = written.get(str(target))
    if first is not None:  # the same SOP Instance UID as an earlier input: not replaced
        return Entry(str(path), None, Fate.DROPPED, SAME_INSTANCE, {}, same_instance_as=first)
    _write_atomically(target, outcome.result.data)
    written[str(target)] = str(path)
    return Entry(str(path), str(target), Fate.WRITTEN, None, outcome.counts, _pixels(outcome))


@contextmanager
def pydicom_warnings() -> Iterator[Counter[str]]:
    """Count pydicom's warnings inside the block by kind (`warning_kind`), and keep them off
    stderr. pydicom both logs and warns most of them (`misc.warn_and_log`): every log record
    counts, and a warning only if no record said the same."""
    kinds: Counter[str] = Counter()
    records = _Records()
    logger = logging.getLogger("pydicom")
    logger.addHandler(records)
    propagate, logger.propagate = logger.propagate, False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield kinds
    finally:
        logger.removeHandler(records)
        logger.propagate = propagate
    logged = Counter(records.messages)
    warned = Counter(str(w.message) for w in caught) - logged
    kinds.update(warning_kind(m) for m in [*records.messages, *warned.elements()])


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


#: pydicom's warning texts (3.0) -> a kind without values; `{vr}` is the VR the text names
_KINDS = (
    (
        re.compile(r"exceeds the maximum length of \d+ allowed for VR (?P<vr>[A-Z]{2})\b"),
        "too-long:{vr}",
    ),
    (re.compile(r"^Invalid value for VR (?P<vr>[A-Z]{2}):"), "invalid-value:{vr}"),
    (
        re.compile(r"is not valid for elements with a VR of (?P<vr>[A-Z]{2})\s*\Z"),
        "invalid-value:{vr}",
    ),
    (
        re.compile(r"^Invalid value: a value for a tag with VR (?P<vr>[A-Z]{2})\b"),
        "invalid-value:{vr}",
    ),
    (
        re.compile(
            r"^Invalid value length \d+: the value length for a tag with VR (?P<vr>[A-Z]{2})\b"
        ),
        "invalid-length:{vr}",
    ),
    (re.compile(r"^Expected explicit VR, but found implicit VR"), "implicit-vr-in-explicit-file"),
    (re.compile(r"^Expected implicit VR, but found explicit VR"), "explicit-vr-in-implicit-file"),
    (
        re.compile(r"^(Unknown encoding|Incorrect value for Specific Character Set)"),
        "unknown-character-set",
    ),
    (re.compile(r"code extension"), "character-set-extension-ignored"),
    (re.compile(r"^Failed to decode byte string"), "undecodable-text"),
    (re.compile(r"^Found unknown escape sequence"), "undecodable-text"),
    (re.compile(r"^Failed to encode value"), "unencodable-text"),
    (re.compile(r"^Unknown DICOM tag"), "unknown-tag"),
    (re.compile(r"value of '60' for the seconds component"), "leap-second"),
)


def warning_kind(message: str) -> str:
    """The kind of a pydicom warning, from an allow-list of its texts: the VR it names is kept,
    every value is left out; a text not on the list is `other`."""
    for pattern, kind in _KINDS:
        found = pattern.search(message)
        if found is not None:
            vr = found.groupdict().get("vr", "")
            return kind.format(vr=vr if vr in VR.__members__ else "unknown")
    return "other"


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
    warned: Counter[str] = Counter()
    for e in entries:
        changes.update(e.changes)
        warned.update(e.warnings.keys())
    return {
        "files": [asdict(e) for e in entries],
        "summary": {
            "inputs": len(entries),
            **{
                fate.value: statuses[fate]
                for fate in (Fate.WRITTEN, Fate.DROPPED, Fate.QUARANTINED)
            },
            # one per instance: inputs sharing a SOP Instance UID are written once
            "outputs": len({e.output for e in entries if e.output is not None}),
            "reasons": dict(sorted(reasons.items())),
            "changes": dict(sorted(changes.items())),
            # inputs not written: the same SOP Instance UID as the input written before them
            "same_sop_instance": [
                {"input": e.input, "same_as": e.same_instance_as}
                for e in entries
                if e.same_instance_as is not None
            ],
            # pydicom's warnings, by kind: how many inputs had them
            "pydicom_warnings": dict(sorted(warned.items())),
        },
    }


def write_report(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(path, (json.dumps(document, indent=1) + "\n").encode())
