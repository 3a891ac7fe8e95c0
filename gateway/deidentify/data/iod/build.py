"""Build the attribute types of every IOD, by which de-identification keeps its outputs valid.

An IOD (PS3.3 A) is a list of modules; a module lists its attributes with a type (PS3.5 7.4):
1 present with a value, 2 present (maybe empty), 1C/2C the same under a condition, 3 optional.
Nested attributes are typed inside their sequence. De-identification must not remove what the
IOD needs present, nor leave what it needs valued empty (`gateway/deidentify/iod.py`).

    .venv/bin/python gateway/deidentify/data/iod/build.py          # write types.json.gz
    .venv/bin/python gateway/deidentify/data/iod/build.py --check  # exit 1 if stale

Source: the package data of highdicom 0.28.2 (MIT, LICENSE.highdicom.txt beside this file),
`highdicom/_standard/`: `sop_class_iod_map.json`, `iod_module_map.json` and
`module_attribute_map.json`, which highdicom generates from innolitics `dicom-standard` (MIT),
itself parsed from the DICOM Standard's PS3.3 (NEMA). The same source as the packaged Table
E.1-1, read offline from an installed, pinned package.

Output `types.json.gz` (gzip without a time stamp, so the same input writes the same bytes),
lines of text, so that a reader parses only the modules of the IODs it meets (all of them
parsed take some 6 MiB in each worker):

- the first, a JSON object: `source`, the package and version read; `sop_classes`, SOP Class
  UID -> IOD key; `iods`, IOD key -> its module keys (mandatory, conditional and user-optional
  alike: a module's attribute types bind where it is present, and an attribute the output
  keeps is there because its input had it);
- then one line per module: its key, a space, its tree as JSON. A tree maps a tag
  ("00080020", as pydicom's dictionary names the keyword) to its type ("1", "1C", "2", "2C"),
  or, for a sequence that holds typed attributes, to `[type, tree]` (its type may then be
  "3"). Type 3 attributes, and the types of non-IOD (normalised service) tables, are left
  out: optional is what absence means. Two entries for one tag at one path keep the stronger
  type. Keywords pydicom does not know (the repeating overlay group 60xx, a few retired ones)
  are left out and counted.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from pydicom.datadict import tag_for_keyword

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "types.json.gz"
PACKAGE = "highdicom"
STRENGTH = {"3": 0, "2C": 1, "2": 2, "1C": 3, "1": 4}
Tree = dict[str, Any]  # tag -> type | [type, Tree]


def load(name: str) -> Any:
    return json.loads((resources.files(PACKAGE) / "_standard" / name).read_text("utf-8"))


def stronger(a: str, b: str) -> str:
    return a if STRENGTH[a] >= STRENGTH[b] else b


def module_tree(entries: list[dict[str, Any]], unknown: set[str]) -> Tree:
    """One module's typed attributes as a tree of tags."""
    root: Tree = {}
    for entry in entries:
        keywords = [*entry["path"], entry["keyword"]]
        tags = [tag_for_keyword(k) for k in keywords]
        if any(t is None for t in tags):
            unknown.update(k for k, t in zip(keywords, tags, strict=True) if t is None)
            continue
        kind = entry["type"] if entry["type"] in STRENGTH else "3"
        node = root
        for tag in tags[:-1]:
            key = f"{tag:08X}"
            found = node.get(key)
            if not isinstance(found, list):
                found = node[key] = [found or "3", {}]
            node = found[1]
        key = f"{tags[-1]:08X}"
        found = node.get(key)
        if isinstance(found, list):
            found[0] = stronger(found[0], kind)
        else:
            node[key] = stronger(found or "3", kind)
    return prune(root)


def prune(tree: Tree) -> Tree:
    """Drop what is optional and holds nothing typed."""
    out: Tree = {}
    for key, found in sorted(tree.items()):
        if isinstance(found, list):
            inner = prune(found[1])
            if inner:
                out[key] = [found[0], inner]
            elif found[0] != "3":
                out[key] = found[0]
        elif found != "3":
            out[key] = found
    return out


def build() -> tuple[dict[str, Any], set[str]]:
    unknown: set[str] = set()
    modules = {
        key: tree
        for key, entries in sorted(load("module_attribute_map.json").items())
        if (tree := module_tree(entries, unknown))
    }
    iods = {
        iod: sorted({m["key"] for m in rows if m["key"] in modules})
        for iod, rows in sorted(load("iod_module_map.json").items())
    }
    sop_classes = dict(sorted(load("sop_class_iod_map.json").items()))
    data = {
        "source": f"{PACKAGE} {metadata.version(PACKAGE)} _standard/",
        "sop_classes": sop_classes,
        "iods": iods,
        "modules": modules,
    }
    return data, unknown


def encode(data: dict[str, Any]) -> bytes:
    head = {key: value for key, value in data.items() if key != "modules"}
    lines = [_json(head), *(f"{key} {_json(tree)}" for key, tree in data["modules"].items())]
    return gzip.compress("\n".join(lines).encode() + b"\n", compresslevel=9, mtime=0)


def decode(raw: bytes) -> dict[str, Any]:
    head, *modules = gzip.decompress(raw).decode().splitlines()
    data: dict[str, Any] = json.loads(head)
    data["modules"] = {k: json.loads(t) for k, t in (line.split(" ", 1) for line in modules)}
    return data


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if types.json.gz is stale")
    args = parser.parse_args(argv)
    data, unknown = build()
    if args.check:
        shipped = decode(OUTPUT.read_bytes()) if OUTPUT.exists() else None
        if shipped != data:
            sys.stderr.write(f"{OUTPUT.name} is stale: run {Path(__file__).name}\n")
            return 1
        return 0
    OUTPUT.write_bytes(encode(data))
    sys.stderr.write(
        f"{OUTPUT.name}: {len(data['sop_classes'])} SOP classes, {len(data['iods'])} IODs, "
        f"{len(data['modules'])} modules; {len(unknown)} keywords unknown to pydicom\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
