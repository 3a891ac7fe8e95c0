"""`dicom-gateway describe-profile --conformance`: the de-identification section of a
Conformance Statement (PS3.2 Annex N) says, row by row, what the engine does under the
configuration it names, and names that configuration by SHA-256."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from gateway.deidentify.engine import Engine
from gateway.deidentify.explain import explain
from gateway.release.allowed import FIXED_DUMMIES
from gateway.settings import load
from gateway.vault.sqlite import SqliteVault
from tests.dicom_builders import NEUTRAL, item, part10, synthetic
from tests.support import base_config, cli, shared_dir, write_config

RETAINED = {
    "retain_device_identity": True,
    "retain_institution_identity": True,
    "retain_uids": True,
    "retain_safe_private": True,
    "clean_structured_content": True,
    "clean_graphics": True,
    "longitudinal_dates": "year",
    "uid_root": "1.2.826.0.1.3680043.10.999",
}


def _reference() -> list[dict[str, str]]:
    """The shared Table E.1-1 (rev 2024b), one dict per row."""
    path = shared_dir() / "reference" / "ps3.15_tableE1-1_rev2024b.csv"
    if not path.is_file():
        pytest.skip(f"shared Table E.1-1 CSV not found at {path}")
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _statement(root: Path, deidentify: dict[str, Any], **sections: Any) -> tuple[str, Path]:
    """The statement `describe-profile --conformance --output` writes for a config."""
    config = {**base_config(root), **sections}
    if deidentify:
        config["deidentify"] = deidentify
    path = write_config(root, config)
    out = root / "statement.md"
    done = cli("describe-profile", "--conformance", "--config", str(path), "--output", str(out))
    assert done.returncode == 0, done.stderr
    return out.read_text(encoding="utf-8"), path


def _cells(line: str) -> list[str]:
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def _table(markdown: str, heading: str) -> Iterator[dict[str, str]]:
    """The rows of the first Markdown table after `heading`, by column name."""
    lines = iter(markdown[markdown.index(heading) :].splitlines()[1:])
    line = next(line for line in lines if line.startswith("|"))
    header = _cells(line)
    next(lines)  # |---|
    for line in lines:
        if not line.startswith("|"):
            return
        yield dict(zip(header, _cells(line), strict=True))


def _rows(markdown: str) -> dict[str, dict[str, str]]:
    return {r["Tag"]: r for r in _table(markdown, "### 3.2 PS3.15 Table E.1-1")}


# -- every row, against the engine --------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, RETAINED], ids=["defaults", "retained"])
def test_every_table_row_is_listed_with_the_action_the_engine_takes(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    """Every row of the shared Table E.1-1: listed with its name and the table's basic code,
    and the action and text the engine's own explanation gives (row by row); then an
    instance holding every attribute a data set can hold is de-identified by an engine built
    from the same config, and each comes out as its printed action says."""
    reference = _reference()
    markdown, path = _statement(tmp_path, options)
    printed = _rows(markdown)
    settings = load(path).deidentify
    explained = {r.row.rule.tag: r for r in explain(settings) if r.source == "table"}
    assert len(printed) == len(reference) == 621
    for row in reference:
        shown = printed[row["tag"]]
        assert (shown["Attribute Name"], shown["Basic Profile"]) == (
            " ".join(row["name"].split()),  # a table cell holds one line
            row["basic_profile"],
        ), row["tag"]
        engine_says = explained[row["tag"]]
        assert (shown["Action"], shown["What happens"]) == (
            engine_says.effect.action,
            engine_says.does,
        ), row["tag"]

    vault = SqliteVault(tmp_path / "check.sqlite3", b"c" * 32)
    try:
        engine = Engine(settings, vault, ae_title="GATEWAY_UT")
        given, out = _deidentified(engine, reference)
    finally:
        vault.close()
    wrong = {
        tag: (printed[_text(tag)]["Action"], printed[_text(tag)]["What happens"])
        for tag, value in given.items()
        if not _agrees(printed[_text(tag)], value, out, tag, settings.uid_root)
    }
    assert wrong == {}
    assert len(given) >= 400  # most rows are checked by a run, not only by explain()


def _text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _deidentified(
    engine: Engine, reference: list[dict[str, str]]
) -> tuple[dict[int, Any], Dataset]:
    """An instance with every attribute of the table a data set can hold (a value of its VR;
    a sequence with one coded item), and what the engine makes of it."""
    ds = synthetic()
    for row in reference:
        vr = row["vr_pydicom"]
        if not vr or row["retired_pydicom"] == "Y" or row["tag"][1:5] in ("0000", "0002"):
            continue
        tag = int(row["tag"][1:5] + row["tag"][6:10], 16)
        if tag not in ds and (vr in NEUTRAL or vr == "SQ"):
            ds.add_new(tag, vr, [item(CodeValue="QX1")] if vr == "SQ" else NEUTRAL[vr])
    given = {int(elem.tag): elem.value for elem in ds if _text(int(elem.tag)) in _tags(reference)}
    out = dcmread(io.BytesIO(engine.run(part10(ds)).data))
    return given, out


def _tags(reference: list[dict[str, str]]) -> set[str]:
    return {row["tag"] for row in reference}


def _agrees(shown: dict[str, str], given: Any, out: Dataset, tag: int, root: str | None) -> bool:
    """The attribute came out of the run as the statement's action says."""
    action, does = shown["Action"], shown["What happens"]
    value = out[tag].value if tag in out else None
    held = value not in (None, "", b"", [])
    dummy = held and isinstance(value, str) and value in FIXED_DUMMIES
    if action == "X":
        return tag not in out or ("where the IOD requires" in does and (not held or dummy))
    if action == "Z":
        return tag in out and (not held or dummy)
    if action == "D":
        return held and value != given
    if action == "U":
        return held and value != given and str(value).startswith(f"{root or '2.25'}.")
    if action == "K":
        return tag in out and value == given
    if "date offset" in does:
        return held and value != given
    if "year only" in does:
        return bool(value == given[:4])
    if "090Y" in does:
        return bool(value == "090Y")
    return tag in out  # cleaned text, sequences with de-identified items


# -- options, the configuration, problems -------------------------------------------------------


def _option(markdown: str, name: str) -> str:
    table = _table(markdown, "## 1. Attribute Confidentiality Profiles")
    return next(r["In force"] for r in table if r["Profile / option"] == name)


def _setting(markdown: str, section: str, key: str) -> str:
    table = _table(markdown, f"`[{section}]`\n")
    return next(r["Value"] for r in table if r["Setting"] == f"`{key}`")


def test_options_in_the_config_change_the_options_and_the_rows(tmp_path: Path) -> None:
    default, _ = _statement(tmp_path / "default", {})
    site, _ = _statement(
        tmp_path / "site",
        {"site_code": "ZZ9", "retain_device_identity": True, "longitudinal_dates": "year"},
        pixels={"skip": ["cross-sectional"], "margin": 6},
        policy={"rules": [{"action": "drop", "reason": "not-chest", "modalities": ["MR"]}]},
    )
    assert _option(default, "Retain Device Identity") == "No"
    assert _option(site, "Retain Device Identity") == "Yes"
    assert _option(site, "Clean Pixel Data").startswith("Yes, except images screened as cross")
    assert _setting(default, "deidentify", "retain_device_identity") == "false *(default)*"
    assert _setting(site, "deidentify", "retain_device_identity") == "true"
    assert _setting(site, "deidentify", "site_code") == '"ZZ9"'
    assert _setting(site, "pixels", "margin") == "6"
    assert '| 1 | drop | `not-chest` | modalities ["MR"] |' in site
    assert "`ZZ9-` and a random code" in site
    before, after = _rows(default), _rows(site)
    serial = "(0018,1000)"  # Device Serial Number: Retain Device Identity keeps it
    assert (before[serial]["Action"], after[serial]["Action"]) == ("D", "C")  # C: known words
    assert after[serial]["Why"] == "Retain Device Identity Option"
    study_date = "(0008,0020)"
    assert "date offset" in before[study_date]["What happens"]
    assert after[study_date]["What happens"] == "keep the year only"
    changed = {tag for tag in before if before[tag] != after[tag]}
    assert serial in changed
    assert len(changed) < len(before)  # only the affected rows


def test_the_statement_names_the_config_and_its_files_by_sha256(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("ZYLOPHAX\n", encoding="utf-8")
    markdown, path = _statement(tmp_path, {"vocabulary": str(words)})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"| Configuration file | `{path}` |" in markdown
    assert f"| Configuration SHA-256 | `{digest}` |" in markdown
    assert f"configuration with SHA-256 `{digest}`" in markdown  # in the sign-off
    word_digest = hashlib.sha256(words.read_bytes()).hexdigest()
    assert f"| `deidentify.vocabulary` | `{words}`, SHA-256 `{word_digest}` |" in markdown
    for line in ("Name", "Role", "Date", "Signature"):
        assert f"| {line} | |" in markdown
    path.write_text(path.read_text() + "# a comment changes the file\n")
    out = tmp_path / "again.md"
    again = cli("describe-profile", "--conformance", "--config", str(path), "--output", str(out))
    assert again.returncode == 0, again.stderr
    assert digest not in out.read_text()
    assert hashlib.sha256(path.read_bytes()).hexdigest() in out.read_text()


def test_a_config_problem_is_named_with_its_key_file_and_line(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("ZYLOPHAX\nroom 12\n", encoding="utf-8")
    config = base_config(tmp_path)
    config["deidentify"] = {"vocabulary": str(words), "retain_device_idenity": True}
    path = write_config(tmp_path, config)
    out = tmp_path / "statement.md"
    bad = cli("describe-profile", "--conformance", "--config", str(path), "--output", str(out))
    assert bad.returncode == 2
    assert f"{path}: deidentify.retain_device_idenity: unknown key" in bad.stderr
    assert "Traceback" not in bad.stderr
    del config["deidentify"]["retain_device_idenity"]
    path = write_config(tmp_path, config)
    bad = cli("describe-profile", "--conformance", "--config", str(path), "--output", str(out))
    assert bad.returncode == 2
    assert f"{path}: deidentify.vocabulary: {words}: line 2: one word per line" in bad.stderr
    assert not out.exists()


def test_without_a_config_the_statement_is_the_defaults_and_goes_to_stdout() -> None:
    shown = cli("describe-profile", "--conformance")
    assert shown.returncode == 0, shown.stderr
    assert "| Configuration file | none: the built-in defaults |" in shown.stdout
    assert len(_rows(shown.stdout)) == 621
    misuse = cli("describe-profile", "--output", "x.md")
    assert misuse.returncode == 2
    assert "--output goes with --conformance" in misuse.stderr
