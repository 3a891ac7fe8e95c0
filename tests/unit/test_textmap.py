"""The text map: its input planes, its cells turned into rectangles, its pinned file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.deidentify.pixels import textmap
from gateway.deidentify.pixels.ctp import Region
from gateway.deidentify.pixels.models import TEXT_MAP, locate
from gateway.deidentify.pixels.ocr import check_model
from gateway.errors import ModelError


def test_planes_show_the_full_range_and_a_robust_window() -> None:
    """MONOCHROME2: min..max to 0..1; a few extreme pixels do not squeeze the robust plane
    (text at 4095 over anatomy at 0..1000 still shows both)."""
    frame = np.tile(np.linspace(0, 1000, 64, dtype=np.float32), (64, 1)).astype(np.uint16)
    frame[10, 10] = 4095
    planes, scale = textmap.planes(frame, "MONOCHROME2")
    assert planes.shape == (1, 2, 64, 64)
    assert planes.dtype == np.float32
    assert scale == 1.0
    full, robust = planes[0]
    assert full.min() == 0.0
    assert full.max() == 1.0
    assert full[10, 10] == 1.0
    assert full[0, 63] == pytest.approx(1000 / 4095, abs=1e-4)
    assert robust[0, 63] == pytest.approx(1.0, abs=0.02)  # anatomy spans the robust plane
    assert robust[10, 10] == 1.0


def test_monochrome1_is_shown_inverted() -> None:
    frame = np.zeros((16, 16), np.uint16)
    frame[4, 4] = 100
    planes, _ = textmap.planes(frame, "MONOCHROME1")
    assert planes[0, 0, 4, 4] == 0.0
    assert planes[0, 0, 0, 0] == 1.0


def test_colour_is_luma_and_brightest_channel() -> None:
    frame = np.zeros((8, 8, 3), np.uint8)
    frame[2, 2] = (255, 0, 0)
    planes, _ = textmap.planes(frame, "RGB")
    assert planes[0, 0, 2, 2] == pytest.approx(0.299, abs=1e-3)
    assert planes[0, 1, 2, 2] == 1.0


def test_planes_are_padded_to_whole_cells_with_the_edge_repeated() -> None:
    frame = np.arange(10 * 13, dtype=np.uint8).reshape(10, 13)
    planes, _ = textmap.planes(frame, "MONOCHROME2")
    assert planes.shape[2:] == (16, 16)
    assert np.array_equal(planes[0, 0, 10:, :13], np.repeat(planes[0, 0, 9:10, :13], 6, axis=0))
    assert np.array_equal(planes[0, 0, :10, 13:], np.repeat(planes[0, 0, :10, 12:13], 3, axis=1))


def test_large_frames_are_scaled_down_and_cells_map_back_to_frame_pixels() -> None:
    """A 4096-pixel side is read at `MAX_SIDE`: a cell is then 16 frame pixels."""
    frame = np.zeros((4096, 1024), np.uint8)
    planes, scale = textmap.planes(frame, "MONOCHROME2")
    assert scale == pytest.approx(textmap.MAX_SIDE / 4096)
    assert planes.shape[2:] == (textmap.MAX_SIDE, textmap.MAX_SIDE * 1024 // 4096)
    cells = np.zeros((planes.shape[2] // 8, planes.shape[3] // 8), np.float32)
    cells[10, 3] = 5.0
    ((box, peak),) = textmap.boxes(cells, 0.0, scale, 4096, 1024)
    assert peak == 5.0
    step = textmap.CELL / scale
    assert box == Region(int(2 * step), int(9 * step), int(3 * step), int(3 * step))


def test_cells_above_the_threshold_become_rectangles_grown_by_a_cell() -> None:
    cells = np.full((8, 8), -5.0, np.float32)
    cells[1, 1:4] = 2.0  # a line of three cells
    cells[6, 6] = 0.5  # one cell, above 0.0 but not above 1.0
    found = [r for r, _ in textmap.boxes(cells, 0.0, 1.0, 60, 60)]
    assert sorted(found, key=lambda r: r.x) == [Region(0, 0, 40, 24), Region(40, 40, 20, 20)]
    assert textmap.boxes(cells, 1.0, 1.0, 60, 60) == [(Region(0, 0, 40, 24), 2.0)]
    assert textmap.boxes(cells, 3.0, 1.0, 60, 60) == []


def test_the_likeliest_text_comes_first() -> None:
    """Regions are ranked by their most certain cell, not by where they are: the stage reads
    only the first few of a frame."""
    cells = np.full((12, 12), -5.0, np.float32)
    cells[1, 1:3] = 0.5  # top left, less certain
    cells[9, 8:11] = 4.0  # bottom right, most certain
    cells[5, 5] = 2.0
    found = textmap.boxes(cells, 0.0, 1.0, 96, 96)
    assert found == [
        (Region(56, 64, 40, 24), 4.0),
        (Region(32, 32, 24, 24), 2.0),
        (Region(0, 0, 32, 24), 0.5),
    ]


def test_the_map_is_the_pinned_one_and_a_changed_file_is_refused(tmp_path: Path) -> None:
    """The map ships in the package and is checked like the detector's files: other bytes
    are another model, whose recall was never measured."""
    data = check_model(locate(TEXT_MAP), TEXT_MAP.sha256)
    assert len(data) > 100_000
    changed = tmp_path / "textmap.onnx"
    changed.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(ModelError, match="SHA-256 differs"):
        check_model(changed, TEXT_MAP.sha256)
    with pytest.raises(ModelError, match="cannot read"):
        check_model(tmp_path / "absent.onnx", TEXT_MAP.sha256)
