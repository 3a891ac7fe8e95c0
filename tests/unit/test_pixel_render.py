"""`render.parts`: where a two-valued view (the brightest or darkest values) can hold text."""

from __future__ import annotations

import cv2
import numpy as np

from gateway.deidentify.pixels.ctp import Region
from gateway.deidentify.pixels.render import parts


def _bgr(grey: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def _covers(regions: list[Region], y0: int, x0: int, y1: int, x1: int) -> bool:
    return any(
        r.x <= x0 and r.y <= y0 and x1 <= r.x + r.width and y1 <= r.y + r.height for r in regions
    )


def test_a_view_of_one_value_has_nothing_to_read() -> None:
    assert parts(_bgr(np.zeros((512, 512), np.uint8))) == []
    assert parts(_bgr(np.full((512, 512), 255, np.uint8))) == []


def test_a_view_of_more_than_two_values_is_read_whole() -> None:
    grey = np.zeros((512, 512), np.uint8)
    grey[100:110, 100:200] = 254
    assert parts(_bgr(grey)) is None
    coloured = _bgr(np.zeros((512, 512), np.uint8))
    coloured[100:110, 100:200, 2] = 255  # red only: not a picture of two grey values
    assert parts(coloured) is None


def test_each_mark_is_read_with_flat_context_around_it() -> None:
    grey = np.zeros((512, 640), np.uint8)
    cv2.putText(grey, "QXZ 4471902", (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2)
    grey = np.where(grey > 127, 255, 0).astype(np.uint8)  # two values, as render draws them
    grey[400:403, 600:603] = 255  # a bright speck far away
    found = parts(_bgr(grey))
    assert found is not None
    assert len(found) == 2
    ys, xs = np.nonzero(grey)
    line = ys < 100
    assert _covers(found, ys[line].min(), xs[line].min(), ys[line].max() + 1, xs[line].max() + 1)
    assert _covers(found, 400, 600, 403, 603)
    for r in found:  # two tiles of flat picture around the marks, no more than the frame
        assert r.x >= 0
        assert r.y >= 0
        assert r.x + r.width <= 640
        assert r.y + r.height <= 512
    speck = next(r for r in found if r.y > 200)
    assert speck.width <= 5 * 32
    assert speck.height <= 5 * 32
    assert speck.x <= 600 - 64
    assert speck.y <= 400 - 64


def test_a_view_with_marks_everywhere_is_read_whole() -> None:
    noise = np.random.default_rng(1).random((512, 512)) < 0.01
    assert parts(_bgr(np.where(noise, 255, 0).astype(np.uint8))) is None


def test_dark_marks_on_white_count_like_white_on_black() -> None:
    grey = np.full((512, 512), 255, np.uint8)
    grey[300:320, 40:200] = 0
    found = parts(_bgr(grey))
    assert found is not None
    assert _covers(found, 300, 40, 320, 200)
