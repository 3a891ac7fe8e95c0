"""One instance through the whole worker path, kept for a person to look at: what became of it,
the original and the de-identified data sets, what the pixel stage masked and what changed in
the header.

`review` runs `Worker.process` in this process, as `admin.check_release` does: the same policy,
pixel check, de-identifier and release check as the daemon, with the site's vault (pseudonyms
are the site's, and are recorded as the daemon would record them). `reviewed` builds the same
from an outcome already at hand (`batch`'s preview: the worker runs once per file).

Everything stays in memory. A `Review` holds PHI (the original and the header values in
`changes`); nothing here logs, counts or writes it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from gateway.deidentify.failures import guard
from gateway.deidentify.pixels.stage import Masked
from gateway.errors import Unprocessable
from gateway.fate import Fate
from gateway.review.diff import Change, diff
from gateway.worker import Outcome, Worker


@dataclass(frozen=True)
class Review:
    """`fate`, `reason` and `where` are the worker's `Outcome`'s. `original` is None when the
    input cannot be read as DICOM at all (then it is quarantined); `output` is None unless the
    instance was written (dropped, or quarantined - by the release check too: what it refused
    is not kept). `masked`: the pixel stage's rectangles, each with the frames it applies
    to. `changes`: the header diff, () without an output."""

    fate: Fate
    reason: str | None
    where: tuple[str, ...]
    original: Dataset | None
    output: Dataset | None
    masked: tuple[Masked, ...]
    changes: tuple[Change, ...]


def review(worker: Worker, data: bytes, peer: str | None = None) -> Review:
    """Run one encoded instance (Part 10 or a bare data set) through `worker` and keep what
    a person needs to see; `peer` is the configured sender's name, for the policy's routes.
    Raises VaultError when the vault fails, as `Worker.process` does."""
    return reviewed(worker.process(data, peer), data)


def reviewed(outcome: Outcome, data: bytes) -> Review:
    """The review of `data` from the outcome `Worker.process` gave for it."""
    original = read(data)
    output = read(outcome.result.data) if outcome.result is not None else None
    return Review(
        fate=outcome.status,
        reason=outcome.reason,
        where=outcome.where,
        original=original,
        output=output,
        masked=outcome.pixels.masked if outcome.pixels is not None else (),
        changes=diff(original, output) if original is not None else (),
    )


def read(data: bytes) -> Dataset | None:
    """An encoded instance as a data set with its pixel data, ready for `thumbnail` (a bare
    data set gets the transfer syntax it was read in); None when it is not DICOM."""
    try:
        with guard("unreadable"):
            ds = dcmread(io.BytesIO(data), force=True)
            if len(ds) == 0 or "SOPClassUID" not in ds:
                return None
            if not ds.file_meta.get("TransferSyntaxUID"):
                implicit, little = ds.original_encoding
                ds.file_meta.TransferSyntaxUID = (
                    ImplicitVRLittleEndian
                    if implicit
                    else ExplicitVRLittleEndian
                    if little
                    else ExplicitVRBigEndian
                )
            return ds
    except Unprocessable:
        return None
