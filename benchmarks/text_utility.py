"""Free-text utility: how much descriptor text the header engine keeps (issue 15).

Figures, not a test. For every DICOM file (`*.dcm`) of the shared test material, the gateway's
header engine alone (default `DeidentifySettings`, a real SQLite vault, no pixel stage)
de-identifies the instance; input and output are then compared element by element at every
depth, by tag path (sequence items matched by index). Per descriptor attribute, and for the
rest of the text, it counts the input's tokens (runs of letters and digits after NFKC and case
folding), how many of them the output value at the same path still holds (multiset
intersection), and how many values were emptied (the output element at that path holds no
letter or digit) or removed (no element there). Values without a letter or digit are not
counted. Instances the engine refuses (`Unprocessable`) are skipped and counted.

Then synthetic instances: do common descriptors keep every token, and do Body Part Examined
and Modality survive a patient whose name is made of those words.

The code measured is whichever `gateway` Python imports (the header names its commit); to
measure another commit, run this same file from a worktree of it with PYTHONPATH:

    .venv/bin/python benchmarks/text_utility.py [--data DIR] [--show-dropped 10]
    git worktree add /tmp/before COMMIT && cd /tmp/before && \\
        PYTHONPATH=/tmp/before /work/main/.venv/bin/python /work/main/benchmarks/text_utility.py
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import gateway

# The repository of the code measured, not of this file: its `tests` helpers go with it.
CODE = Path(gateway.__file__).resolve().parents[1]
if str(CODE) not in sys.path:
    sys.path.insert(0, str(CODE))

from pydicom import dcmread  # noqa: E402
from pydicom.dataelem import DataElement  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402
from pydicom.multival import MultiValue  # noqa: E402

from gateway.deidentify.engine import Engine  # noqa: E402
from gateway.errors import Unprocessable  # noqa: E402
from gateway.settings import DeidentifySettings  # noqa: E402
from gateway.vault.sqlite import SqliteVault  # noqa: E402
from tests import dicom_builders  # noqa: E402

REPO = Path(__file__).resolve().parents[1]  # this script's checkout: the shared data beside it
#: Descriptor and technical text, one row each (rows without values are not printed).
ATTRIBUTES = (
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "PerformedProcedureStepDescription",
    "RequestedProcedureDescription",
    "ScheduledProcedureStepDescription",
    "BodyPartExamined",
    "Modality",
    "ImageType",
    "CodeMeaning",
    "ConvolutionKernel",
    "FilterType",
    "Manufacturer",
    "ManufacturerModelName",
    "SoftwareVersions",
    "ContrastBolusAgent",
    "SequenceName",
    "ScanningSequence",
    "SequenceVariant",
    "ScanOptions",
    "SeriesType",
    "DerivationDescription",
    "WindowCenterWidthExplanation",
)
OTHER_TABLE = "other text named by PS3.15 E.1-1"
OTHER = "other text (LO/SH/ST/LT/UT/UC/CS)"
PRIVATE = "private text"
ROWS = (*ATTRIBUTES, OTHER_TABLE, OTHER, PRIVATE)
ALWAYS_SHOWN = frozenset({"BodyPartExamined", "Modality", OTHER, OTHER_TABLE})
TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC", "CS"})
_TOKEN = re.compile(r"[^\W_]+")

DESCRIPTORS = ("CT CHEST W CONTRAST", "T1 MPRAGE SAG", "AX DWI B1000")
#: (patient name, modality): names made of the words of Body Part Examined and Modality.
NAME_CASES = (("Head^Ct", "CT"), ("Ct^Head", "CT"), ("Head^Mr", "MR"), ("Mr^Head", "MR"))
BODY_PART = "HEAD"

TagPath = tuple[int, ...]  # tag, item index, tag, ... from the top level


@dataclass
class Row:
    """Token counts of one attribute (or catch-all) over every value of the material."""

    values: int = 0
    tokens_in: int = 0
    kept: int = 0
    emptied: int = 0
    removed: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def add(self, before: Counter[str], after: str | None) -> None:
        kept = before & Counter(tokens(after or ""))
        self.values += 1
        self.tokens_in += before.total()
        self.kept += kept.total()
        self.dropped.update(before - kept)
        if after is None:
            self.removed += 1
        elif not tokens(after):
            self.emptied += 1

    def merge(self, other: Row) -> None:
        self.values += other.values
        self.tokens_in += other.tokens_in
        self.kept += other.kept
        self.emptied += other.emptied
        self.removed += other.removed
        self.dropped.update(other.dropped)


@dataclass
class Tally:
    rows: dict[str, Row] = field(default_factory=lambda: {name: Row() for name in ROWS})
    files: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # Unprocessable reason codes


def tokens(text: str) -> list[str]:
    """Runs of letters and digits, after NFKC and case folding (B1000 is one token)."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def text_of(elem: DataElement) -> str:
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


def flatten(ds: Dataset, prefix: TagPath = ()) -> Iterator[tuple[TagPath, DataElement]]:
    """Every element that is not a sequence, at every depth, with its tag path."""
    for elem in ds:
        path = (*prefix, int(elem.tag))
        if elem.VR == "SQ":
            for index, item in enumerate(elem.value or ()):
                yield from flatten(item, (*path, index))
        else:
            yield path, elem


def table_tags() -> frozenset[int]:
    """The attributes PS3.15 Table E.1-1 names by exact tag (the gateway's shipped copy)."""
    text = resources.files("gateway.deidentify").joinpath("data/ps3.15_table_e1-1_rev2024b.json")
    rows = json.loads(text.read_text(encoding="utf-8"))
    return frozenset(int(row["id"], 16) for row in rows if re.fullmatch(r"[0-9A-F]{8}", row["id"]))


def row_of(elem: DataElement, named: frozenset[int]) -> str | None:
    if elem.keyword in ATTRIBUTES:
        return str(elem.keyword)
    if elem.VR not in TEXT_VRS:
        return None
    if elem.tag.is_private:
        return PRIVATE
    return OTHER_TABLE if int(elem.tag) in named else OTHER


def compare(before: Dataset, after: Dataset, tally: Tally, named: frozenset[int]) -> None:
    """Count each text value of `before` against the value at the same path in `after`."""
    output = {path: text_of(elem) for path, elem in flatten(after)}
    for path, elem in flatten(before):
        row = row_of(elem, named)
        if row is None:
            continue
        found = Counter(tokens(text_of(elem)))
        if found:  # a value without a letter or digit has nothing to keep
            tally.rows[row].add(found, output.get(path))


def read(data: bytes) -> Dataset:
    return dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)


def measure(files: list[Path], engine: Engine) -> Tally:
    tally = Tally()
    named = table_tags()
    for path in files:
        data = path.read_bytes()
        try:
            out = engine.run(data).data
        except Unprocessable as exc:
            tally.skipped[exc.reason] += 1
            continue
        tally.files += 1
        compare(read(data), read(out), tally, named)
    return tally


def share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def print_table(tally: Tally) -> None:
    head = ("attribute", "values", "tokens in", "kept", "share kept", "emptied", "removed")
    print(
        f"{head[0]:<36} {head[1]:>6} {head[2]:>9} {head[3]:>6} {head[4]:>10} "
        f"{head[5]:>7} {head[6]:>7}"
    )
    total = Row()
    for name, row in tally.rows.items():
        total.merge(row)
        if row.values or name in ALWAYS_SHOWN:
            print_row(name, row)
    print_row("all text", total)


def print_row(name: str, row: Row) -> None:
    print(
        f"{name:<36} {row.values:>6} {row.tokens_in:>9} {row.kept:>6} "
        f"{share(row.kept, row.tokens_in):>10} {row.emptied:>7} {row.removed:>7}"
    )


def print_dropped(tally: Tally, top: int) -> None:
    print(f"\nmost frequent dropped tokens (top {top} per attribute, count):")
    for name, row in tally.rows.items():
        if row.dropped:
            listed = ", ".join(f"{t} {n}" for t, n in row.dropped.most_common(top))
            print(f"  {name}: {listed}")


def deidentified(engine: Engine, **values: str) -> Dataset:
    """A synthetic instance with `values`, de-identified by `engine`."""
    data = dicom_builders.part10(dicom_builders.synthetic(**values))
    return read(engine.run(data).data)


def verdict(out: Dataset, keyword: str, wanted: str) -> str:
    got = str(out.get(keyword)) if keyword in out else "<removed>"
    return "kept" if got == wanted else f"CHANGED to {got!r}"


def print_synthetic(engine: Engine) -> None:
    print("\nsynthetic instances (patient Test^Patient):")
    for text in DESCRIPTORS:
        out = deidentified(engine, SeriesDescription=text)
        print(f"  SeriesDescription {text!r}: {verdict(out, 'SeriesDescription', text)}")
    print(f"synthetic instances, BodyPartExamined {BODY_PART!r}, named after it:")
    for name, modality in NAME_CASES:
        study = f"{modality} {BODY_PART} WO CONTRAST"
        out = deidentified(
            engine,
            PatientName=name,
            Modality=modality,
            BodyPartExamined=BODY_PART,
            StudyDescription=study,
        )
        print(
            f"  patient {name!r}: Modality {modality!r} {verdict(out, 'Modality', modality)}; "
            f"BodyPartExamined {verdict(out, 'BodyPartExamined', BODY_PART)}; "
            f"StudyDescription {study!r} {verdict(out, 'StudyDescription', study)}"
        )


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(CODE), *args], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def header(data: Path, files: int) -> str:
    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    if git("status", "--porcelain", "--untracked-files=no", "--", "gateway"):
        commit += " + uncommitted changes to gateway/"
    return (
        f"text_utility: gateway {commit} ({gateway.__file__}; tests from "
        f"{dicom_builders.__file__}); {files} files under {data}"
    )


def default_data() -> Path:
    shared = os.environ.get("DICOM_GATEWAY_SHARED")
    root = Path(shared) if shared else REPO.parent / "shared"
    return root / "testdata" / "dicom"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="folder of *.dcm")
    parser.add_argument(
        "--show-dropped",
        type=int,
        default=0,
        metavar="N",
        help="print the N most frequent dropped tokens per attribute (values of the material!)",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    files = sorted(p for p in args.data.rglob("*") if p.suffix.lower() == ".dcm")
    print(header(args.data, len(files)))
    with tempfile.TemporaryDirectory() as tmp:
        vault = SqliteVault(Path(tmp) / "vault.sqlite3", b"k" * 32)
        engine = Engine(DeidentifySettings(), vault, ae_title="BENCH")
        tally = measure(files, engine)
        skipped = ", ".join(f"{r} {n}" for r, n in tally.skipped.most_common()) or "none"
        print(
            f"de-identified {tally.files}; skipped (Unprocessable) {tally.skipped.total()}: "
            f"{skipped}\n"
        )
        print_table(tally)
        if args.show_dropped:
            print_dropped(tally, args.show_dropped)
        print_synthetic(engine)
        vault.close()


if __name__ == "__main__":
    main()
