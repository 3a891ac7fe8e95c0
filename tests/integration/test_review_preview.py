"""`dicom-gateway deidentify --preview`: the sign-off page on real ultrasound files and a
synthetic screen whose patient name is markup. The page is parsed, its images decoded."""

from __future__ import annotations

import base64
import json
import stat
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
import pytest

from gateway.review.pictures import GAP
from gateway.review.preview import STRIP_SIDE, THUMBNAIL_SIDE
from tests.dicom_builders import part10, synthetic
from tests.support import cli

#: a handful (the detector is slow): RGB native, lossy JPEG 2000 (YBR_ICT), MONOCHROME2 with
#: ultrasound regions, a 2-frame palette colour RLE cine, and one with nothing to mask
FILES = (
    "pydicom_data__US1_UNCR.dcm",
    "pydicom_data__US1_J2KI.dcm",
    "deid_data__GREYSCALE_IMAGE.dcm",
    "pydicom_data__OBXXXX1A_rle_2frame.dcm",
    "pydicom_wheel__ExplVR_BigEnd.dcm",
)
MARKUP = "<script>alert(1)</script>^Eve"
PNG_PREFIX = "data:image/png;base64,"


@dataclass
class Section:
    name: str = ""
    images: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


class Page(HTMLParser):
    """The masked sections (their input's name, images and diff rows), every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[Section] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = dict(attrs)
        if tag == "section" and found.get("class") == "masked":
            self.sections.append(Section())
        elif self.sections and tag == "img":
            self.sections[-1].images.append(found.get("src") or "")
        elif self.sections and tag == "tr":
            self.sections[-1].rows.append([])
        self._in = tag

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if not self.sections:
            return
        if self._in == "h3":
            self.sections[-1].name += data
        elif self._in == "td" and self.sections[-1].rows:
            self.sections[-1].rows[-1].append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in = None


def _png(source: str) -> np.ndarray:
    assert source.startswith(PNG_PREFIX)
    picture = cv2.imdecode(
        np.frombuffer(base64.b64decode(source[len(PNG_PREFIX) :]), np.uint8), cv2.IMREAD_COLOR
    )
    assert picture is not None
    return picture


def _screen(folder: Path) -> Path:
    """A secondary capture with a burned-in line (the detector masks it) and markup as its
    patient's name."""
    pixels = np.zeros((240, 480), np.uint8)
    cv2.putText(pixels, "EVE 4471902 DOB 1961", (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 1, 255, 2)
    ds = synthetic(
        PatientName=MARKUP,
        Rows=240,
        Columns=480,
        SamplesPerPixel=1,
        PhotometricInterpretation="MONOCHROME2",
        BitsAllocated=8,
        BitsStored=8,
        HighBit=7,
        PixelRepresentation=0,
        PixelData=pixels.tobytes(),
    )
    path = folder / "screen.dcm"
    path.write_bytes(part10(ds))
    return path


def _unchanged_far_from_masks(
    before: np.ndarray, after: np.ndarray, masked: list[dict[str, Any]], scale: float
) -> None:
    """Inside every masked rectangle the two differ; far from all of them (and inside the
    ultrasound regions kept, outside which all is masked) they are equal."""
    far = np.ones(before.shape[:2], bool)
    kept = np.zeros(before.shape[:2], bool)
    margin = 4
    for m in masked:
        x0, y0 = int(m["x"] * scale), int(m["y"] * scale)
        x1, y1 = int((m["x"] + m["width"]) * scale), int((m["y"] + m["height"]) * scale)
        if m["source"] == "outside-ultrasound-regions":
            kept[y0 + margin : y1 - margin, x0 + margin : x1 - margin] = True
            continue
        far[max(y0 - margin, 0) : y1 + margin, max(x0 - margin, 0) : x1 + margin] = False
        inside = (slice(y0 + 2, y1 - 1), slice(x0 + 2, x1 - 1))  # within the outline
        if (y1 - y0) > 4 and (x1 - x0) > 4:
            assert not np.array_equal(before[inside], after[inside]), m
    if any(m["source"] == "outside-ultrasound-regions" for m in masked):
        far &= kept
    assert far.sum() > 0.1 * far.size
    assert np.array_equal(before[far], after[far])


@pytest.mark.timeout(300)
def test_the_preview_shows_every_masked_image_before_and_after_with_its_header_diff(
    testdata: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in FILES:
        (folder / name).symlink_to(testdata / "ultrasound" / name)
    _screen(folder)
    (folder / "notes.txt").write_text("not DICOM")
    out, report = tmp_path / "out", tmp_path / "report.json"
    done = cli("deidentify", str(folder), "--out", str(out), "--report", str(report), "--preview")
    assert done.returncode == 0, done.stderr
    assert f"--preview writes {out / 'preview.html'}: it holds PHI" in done.stderr
    entries = {Path(f["input"]).name: f for f in json.loads(report.read_text())["files"]}
    masked = {n: e for n, e in entries.items() if e["pixels"] and e["pixels"]["masked"]}
    assert set(masked) == {*FILES[:4], "screen.dcm"}  # the last of FILES has no text

    html = (out / "preview.html").read_text()
    assert stat.S_IMODE((out / "preview.html").stat().st_mode) == 0o600  # PHI: owner only
    page = Page()
    page.feed(html)
    sections = {Path(s.name).name: s for s in page.sections}
    assert set(sections) == set(masked)
    assert "script" not in page.tags  # the name is text, not markup
    assert MARKUP not in html
    (name_row,) = [r for r in sections["screen.dcm"].rows if r[:1] == ["(0010,0010)"]]
    assert name_row[:4] == ["(0010,0010)", "PatientName", "replaced", MARKUP]
    others = "".join(page.text[page.text.index("Other inputs") :])
    assert "written (nothing masked): 1" in others
    assert "quarantined (not-dicom): 1" in others

    for name, section in sections.items():
        assert len(section.images) == 2, name
        before, after = (_png(source) for source in section.images)
        assert before.shape == after.shape, name
        assert section.rows, name  # the header diff
        if name == "screen.dcm":
            path: Path = folder / name
        else:
            path = testdata / "ultrasound" / name
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        side = max(int(ds.Rows), int(ds.Columns))
        if frames > 1:
            assert before.shape[1] == frames * STRIP_SIDE + (frames - 1) * GAP, name
            continue
        assert max(before.shape[:2]) == THUMBNAIL_SIDE, name
        _unchanged_far_from_masks(
            before, after, masked[name]["pixels"]["masked"], THUMBNAIL_SIDE / side
        )


def test_without_preview_no_page_is_written(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("not DICOM")
    out = tmp_path / "out"
    done = cli("deidentify", str(folder), "--out", str(out), "--report", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    assert not (out / "preview.html").exists()
    assert "PHI" not in done.stderr
