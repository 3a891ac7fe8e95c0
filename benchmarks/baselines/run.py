"""Baseline: header de-identification of one DICOM instance by a third-party tool, N times.

Runs in the benchmark venv only (benchmarks/baselines/setup.sh), never with the gateway:

    taskset -c 0 .venv-bench/bin/python benchmarks/baselines/run.py \
        --tool deid --input FILE.dcm --count 200

Given a folder, the iterations go through its files in name order (a series), round and round.
Each iteration reads a file, parses its bytes into a dataset, de-identifies the whole header the way
the tool is normally used, and writes the result to an in-memory buffer, so the figure compares
with a pipeline that parses and writes. Three iterations are run first and not counted. Prints
one JSON line: tool, version, count, seconds, instances_per_s, peak_rss_mib.

- deid: the default recipe (deid/data/deid.dicom), loaded once as `DeidRecipe()`, applied with
  `get_identifiers` then `replace_identifiers`; the variables the recipe's ADD lines ask for
  (entity_id, item_id, entity_timestamp, item_timestamp) are filled into the identifiers
  between the two calls, as its docs do. Private tags are kept (deid's default). deid 0.4.13
  keeps every dataset it has seen in an unbounded functools.cache (`_get_fields_inner`,
  pydicom/deid#301), so its peak RSS grows with --count: compare it at the same count.
- dicognito: one `Anonymizer()` for the run, `anonymize(dataset)` on each instance.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import cast

import pydicom
from pydicom.dataset import Dataset

WARMUP = 3

# Values for the `var:` lookups in deid's default recipe; without them those ADD lines do nothing.
DEID_VARS = {
    "entity_id": "ANON0001",
    "item_id": "ACC0001",
    "entity_timestamp": "19000101",
    "item_timestamp": "20000101",
}


def deid_tool() -> Callable[[Dataset], Dataset]:
    # The project's mypy checks benchmarks/; these tools live only in .venv-bench.
    from deid.config import DeidRecipe  # type: ignore[import-not-found]
    from deid.dicom import get_identifiers, replace_identifiers  # type: ignore[import-not-found]

    recipe = DeidRecipe()

    def run(ds: Dataset) -> Dataset:
        ids = get_identifiers([ds])
        for fields in ids.values():
            fields.update(DEID_VARS)
        [out] = replace_identifiers([ds], deid=recipe, ids=ids)
        return cast(Dataset, out)

    return run


def dicognito_tool() -> Callable[[Dataset], Dataset]:
    from dicognito.anonymizer import Anonymizer  # type: ignore[import-not-found]

    anonymizer = Anonymizer()

    def run(ds: Dataset) -> Dataset:
        anonymizer.anonymize(ds)
        return ds

    return run


TOOLS = {"deid": deid_tool, "dicognito": dicognito_tool}


def once(raw: bytes, deidentify: Callable[[Dataset], Dataset]) -> int:
    ds = pydicom.dcmread(io.BytesIO(raw))
    out = io.BytesIO()
    # deid's default recipe removes every *UID*, file meta's included, so the output cannot be
    # written with enforce_file_format=True; write it as the tool leaves it.
    pydicom.dcmwrite(out, deidentify(ds))
    return out.tell()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tool", choices=sorted(TOOLS), required=True)
    parser.add_argument(
        "--input", type=Path, required=True, help="a DICOM file, or a folder of them (a series)"
    )
    parser.add_argument("--count", type=int, default=200, help="timed iterations")
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be at least 1")

    files = sorted(args.input.iterdir()) if args.input.is_dir() else [args.input]
    deidentify = TOOLS[args.tool]()
    for i in range(WARMUP):
        once(files[i % len(files)].read_bytes(), deidentify)

    start = time.perf_counter()
    for i in range(args.count):
        once(files[i % len(files)].read_bytes(), deidentify)
    seconds = time.perf_counter() - start

    # ru_maxrss is in KiB on Linux.
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "tool": args.tool,
        "version": version(args.tool),
        "count": args.count,
        "seconds": round(seconds, 4),
        "instances_per_s": round(args.count / seconds, 2),
        "peak_rss_mib": round(peak_rss_mib, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
