"""De-identification adds no IOD error its input did not have (issue 16, item 3).

dicom3tools' `dciodvfy` (D. Clunie) checks a file against the IOD of its SOP Class: each module's
attributes by type (PS3.3 C; Type 1/1C present with a value, 2/2C present, 3 optional, PS3.5 7.4)
and each value against its VR (PS3.5 6.2). It runs over the input and the output of every file
that one `dicom-gateway deidentify` run over the shared test material writes (the session's
run, shared with test_deidentify.py: tests/deidentified_corpus.py). An error of an
output is new when its key — the message with values taken out, keeping kind, attribute and
module — is not among its input's keys. The shared material is full of broken files: only what
de-identification adds counts.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

from tests.deidentified_corpus import Run
from tests.support import dcmtk as dcmtk_tool

pytestmark = pytest.mark.timeout(
    600
)  # one deidentify over the corpus (~1 min, unless test_deidentify.py made it), dciodvfy

DCIODVFY_TIMEOUT = 60.0

# (input path relative to the shared DICOM folder, error key) -> why a DICOM expert accepts
# that de-identification adds this error. Each entry must still occur.
EXCEPTIONS: dict[tuple[str, str], str] = {}

_ERROR = re.compile(r"^(?P<where>.*?)[\s-]*\bError - (?P<what>.*)$")
_VR_VALUE = re.compile(r" \[\d+\] = <.*> - | \[\d+\] = <.*$")  # `[n] = <value>`, maybe unended
_VR_DETAIL = re.compile(r" = .*$")  # "Length invalid for this VR = 56, expected <= 16"
_VALUES = (
    (re.compile(r"\"[^\"]*\"|'[^']*'"), "''"),  # quoted values
    (re.compile(r"enumerated value <[^<>]*>"), "enumerated value <>"),
    (re.compile(r"<[^<>]*\d[^<>]*>"), "<>"),  # UIDs and numbers in angle brackets
    (re.compile(r" - values are .*$"), ""),
    # numbers, but not a tag's "(0x0008,0x0020)" nor "Type 1C"
    (re.compile(r"(?<![\w(,])(?<!Type )(?:0x[0-9a-fA-F]+|\d[\d.:\\-]*\d|\d)"), "#"),
)


def error_key(line: str) -> str | None:
    """The error of one dciodvfy line without its values; None for warnings and other lines.

    "Element=<...> Module=<...>" errors hold no value (their item counts are structure, not
    data) and are kept whole; in every other error, values become `''`, `<>` or `#`."""
    found = _ERROR.match(" ".join(line.split()))
    if found is None or "Warning - " in found["where"]:
        return None
    where, what = found["where"], found["what"]
    if "Element=<" in what:
        return what
    if what.startswith("Value invalid for this VR"):
        what = _VR_DETAIL.sub("", _VR_VALUE.sub(" - ", what)).rstrip(" -")
    text = f"{where} - {what}" if where else what
    for pattern, replacement in _VALUES:
        text = pattern.sub(replacement, text)
    return text


def iod_errors(dciodvfy: str, path: Path, scratch: Path) -> frozenset[str]:
    """The error keys of one file. dciodvfy asserts on some valid files (32-bit pixel data):
    its abnormal end is a key too, so an output that ends it where its input did not fails."""
    done = subprocess.run(
        [dciodvfy, str(readable(path, scratch))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        encoding="latin-1",
        timeout=DCIODVFY_TIMEOUT,
        check=False,
    )
    keys = {key for line in done.stdout.splitlines() if (key := error_key(line))}
    if done.returncode not in (0, 1):  # 1: errors found
        keys.add(f"dciodvfy ended with status {done.returncode}")
    return frozenset(keys)


def readable(path: Path, scratch: Path) -> Path:
    """dciodvfy does not inflate Deflated Explicit VR Little Endian (PS3.5 A.5): it reads the
    deflated bytes as tags and finds next to nothing. Such a file is checked as an Explicit VR
    Little Endian copy made by dcmtk's dcmconv, which keeps every value as it was."""
    try:
        syntax = read_file_meta_info(path).get("TransferSyntaxUID")
    except InvalidDicomError:  # no File Meta Information: no deflate
        return path
    if syntax != DeflatedExplicitVRLittleEndian:
        return path
    copy = scratch / f"{path.parent.name}-{path.name}"
    done = subprocess.run(
        [dcmtk_tool("dcmconv"), "+te", str(path), str(copy)],
        capture_output=True,
        text=True,
        timeout=DCIODVFY_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return copy


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    path = shutil.which("dciodvfy")
    if path is None:
        pytest.fail("dciodvfy is not installed (.ci/debian-packages lists dicom3tools)")
    return path


@pytest.fixture
def run(deidentified_corpus: Run) -> Run:
    """The session's one run over the shared material, which test_deidentify.py checks too
    (tests/deidentified_corpus.py)."""
    return deidentified_corpus


@pytest.mark.parametrize(
    ("line", "key"),
    [
        (
            "Error - Missing attribute Type 2 Required Element=<StudyDate> Module=<GeneralStudy>",
            "Missing attribute Type 2 Required Element=<StudyDate> Module=<GeneralStudy>",
        ),
        (
            "Error - Bad Sequence number of Items 0 (1-n Required by Module definition)"
            " Element=<ReferencedStudySequence> Module=<GeneralStudy>",
            "Bad Sequence number of Items 0 (1-n Required by Module definition)"
            " Element=<ReferencedStudySequence> Module=<GeneralStudy>",
        ),
        (
            "Error - Value invalid for this VR - (0x0008,0x0020) DA Study Date  DA [1] ="
            " <1994.06.13> - Character invalid for this VR = '.' (0x2e)",
            "Value invalid for this VR - (0x0008,0x0020) DA Study Date DA"
            " - Character invalid for this VR",
        ),
        (
            "Error - Value invalid for this VR - (0x0008,0x1010) SH Station Name  SH [1] ="
            " <Diag Radiology Grosshadern> - Length invalid for this VR = 26, expected <= 16",
            "Value invalid for this VR - (0x0008,0x1010) SH Station Name SH"
            " - Length invalid for this VR",
        ),
        (
            "Error - Value invalid for this VR - (0x0010,0x0010) PN Patient's Name  PN"
            " - Trailing character invalid for this VR = '' (0)",
            "Value invalid for this VR - (0x0010,0x0010) PN Patient's Name PN"
            " - Trailing character invalid for this VR",
        ),
        (
            "Error - Value invalid for this VR - (0x0029,0x1010)  ?  UT [1] = <<?xml version=",
            "Value invalid for this VR - (0x0029,0x1010) ? UT",
        ),
        (
            'Error - Illegal root for UID - "999.999.2.19941105" in (0x0020,0x000d)'
            " Study Instance UID",
            "Illegal root for UID - '' in (0x0020,0x000d) Study Instance UID",
        ),
        (
            "Error - Unrecognized enumerated value <NO> for value 1 of attribute <Laterality>",
            "Unrecognized enumerated value <> for value # of attribute <Laterality>",
        ),
        (
            "Error - SeriesInstanceUID has same value as StudyInstanceUID <1.2.840.10008.1>",
            "SeriesInstanceUID has same value as StudyInstanceUID <>",
        ),
        (
            "(0x0011,0x0011) LO PrivateCreator  - Error - Bad Value Length - not a multiple"
            " of 2 - VL is 0x5 should be 0x6",
            "(0x0011,0x0011) LO PrivateCreator - Bad Value Length - not a multiple of #"
            " - VL is # should be #",
        ),
        (
            "Error - PixelAspectRatio may not be present when it has a ratio of 1:1"
            " - values are 180\\180",
            "PixelAspectRatio may not be present when it has a ratio of #",
        ),
        ("Warning - Missing attribute or value needed to build DICOMDIR - Study ID", None),
        ("(0x0009,0x0010) ? - Warning - Unrecognized tag - assuming explicit VR OK", None),
        ("CTImage", None),
    ],
)
def test_an_error_key_keeps_kind_attribute_and_module_but_no_value(
    line: str, key: str | None
) -> None:
    assert error_key(line) == key


@pytest.mark.usefixtures("dcmtk")
def test_deidentify_adds_no_iod_error_its_input_did_not_have(
    run: Run, testdata: Path, dciodvfy: str, tmp_path: Path
) -> None:
    """Each output is held to its input's errors (of inputs that share a SOP Instance UID, the
    first read is written, the others are reported as same-sop-instance)."""
    allowed: dict[Path, set[str]] = defaultdict(set)
    sources: dict[Path, list[str]] = defaultdict(list)
    for source, output in run.written():
        allowed[output] |= iod_errors(dciodvfy, source, tmp_path)
        sources[output].append(str(source.relative_to(testdata)))
    assert len(allowed) >= 100
    assert sum(map(len, allowed.values())) > 500  # the validator does find the inputs' errors
    new: dict[str, list[str]] = defaultdict(list)
    excepted: set[tuple[str, str]] = set()
    for output, known in allowed.items():
        for key in sorted(iod_errors(dciodvfy, output, tmp_path) - known):
            listed = {(name, key) for name in sources[output]} & EXCEPTIONS.keys()
            excepted |= listed
            if not listed:
                new[key].append(" = ".join(sources[output]))
    if new:
        pytest.fail(_report(new), pytrace=False)
    stale = sorted(EXCEPTIONS.keys() - excepted)
    assert not stale, f"exceptions that no longer occur, to remove: {stale}"


def _report(new: dict[str, list[str]]) -> str:
    lines = [f"dciodvfy errors in outputs that their inputs did not have ({len(new)} kinds):"]
    for key, names in sorted(new.items(), key=lambda item: (-len(item[1]), item[0])):
        lines += [f"  {key}  [{len(names)} files]", *(f"      {name}" for name in names)]
    return "\n".join(lines)
