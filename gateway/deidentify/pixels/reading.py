"""Where a window of one frame holds text that must be masked: the detector's boxes, grown
along their line, read by the recogniser where a box might be harmless (a site's orientation
marker, a squat box with nothing legible, textured anatomy the detector takes for text).

`WindowReader.boxes` is what the pixel stage (`stage`) calls per changed window of a frame; it
knows nothing of frames, series or masking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from gateway.deidentify.pixels.ctp import Region
from gateway.deidentify.pixels.regions import widen
from gateway.deidentify.pixels.render import (
    TURNED_VIEW,
    Renderer,
    brightest_channel,
    local_contrast,
    parts,
)

_MARKER_ASPECT = 2.0  # boxes wider than this many heights hold more than a marker (LAT)
#: Burned-in annotation lines are at most this tall (pixels, or share of the shorter side of
#: the frame, whichever is more); taller boxes must read as text with this confidence.
_LINE_PIXELS = 48
_LINE_SHARE = 0.08
_CONFIDENT = 0.8
_LEGIBLE = 0.5  # a character or two read with less confidence than this is no text
#: A box smaller than this (pixels of the frame) both ways holds no legible character, however
#: it reads (validation set, --limit 400: a 4 x 4 speck read as "1" at 0.82 and 0.93 masked
#: two text-free images; the smallest text drawn there is 7 pixels, burned-in text seen in
#: the shared material 5)
_SPECK = 5
#: Detected boxes grow along their line as far as ink goes on (`_along_line`), by at most this
#: many heights: measured on the shared ground truth (docs/pixels.md), where detectors miss
#: the ends of lines over bright anatomy (PP-OCRv6 tiny misses a 10-pixel "Study Date:" of
#: 67 pixels before a date it finds: 3 heights cover 0.89 of it); a gap of more than `_GAP`
#: heights without ink ends the line.
_LINE_EXTENSION = 4.0
_GAP = 1.0
#: The text map's regions (`WindowReader._confirmed`): at most this many of a window are
#: read, the map's likeliest first (on the validation set's 660 text images, 1,601 regions read,
#: 400 read as text, none of them later than the 11th of its image; 32 before the ranking made
#: a large radiograph read 32 regions of anatomy); one the detector's boxes cover this share of
#: is not read (nor counted); it is text when the recogniser reads this many letters or digits
#: in it with `_CONFIDENT` confidence (the map alone on 150 text-free images of the validation
#: set: one character at 0.5 masks anatomy in 15 of them, one at 0.7 in 9, two at 0.8 in none).
_MAX_CANDIDATES = 16
_COVERED = 0.9
_CONFIRM_CHARACTERS = 2
#: ... or one letter or digit (not a site's marker) read with this confidence: on the validation
#: set's --limit 200, single characters masked 0.364 -> 0.455 and recall 0.802 -> 0.820 with the
#: same 23 of 200 text-free images over 0.5 % masked (at 0.9: 0.823, but 26 of 200).
_SINGLE_CONFIDENT = 0.97
#: ... or masked unread, itself only: a region of a text line's thickness (across or along)
#: whose most certain cell the map is this sure of (validation set, --limit 200: recall 0.820
#: -> 0.832, text-free images over 0.5 % masked 23 -> 24, outside the truth the same; grown
#: along its line like a region read as text, 0.836 and 25, but a strip beside a chest
#: radiograph's label grew over a third of the lung: docs/benchmarks.md).
_MAP_CERTAIN = 0.995
#: Ink: a local contrast (3x3 morphological gradient) of at least this, in any view
_INK = 64


Readings = dict[tuple[int, Region, bytes], tuple[str, float]]


@dataclass(frozen=True)
class Before:
    """What the frame before showed: where this frame differs from it (rows x columns, True:
    changed beyond noise) and the boxes masked in it (frame pixels, margin added)."""

    moved: np.ndarray
    boxes: list[Region]


class TextFinder(Protocol):
    """A text detector and recogniser over 8-bit BGR pictures."""

    def find(self, image: np.ndarray, whole: tuple[int, int] | None = None) -> list[Region]: ...

    def read_many(self, image: np.ndarray, boxes: list[Region]) -> list[tuple[str, float]]: ...

    def candidates(self, frame: np.ndarray, photometric: str) -> list[tuple[Region, float]]: ...

    def settle(self) -> None:
        """After each image: memory taken for it and not needed for the next may go back."""


class WindowReader:
    """The text boxes to mask in a window of a frame, with `margin` added; `markers`: what
    the site keeps (orientation markers, upper case)."""

    def __init__(self, finder: TextFinder, margin: int, markers: set[str]):
        self.finder = finder
        self.margin = margin
        self.markers = markers

    def boxes(
        self,
        renderer: Renderer,
        frame: np.ndarray,
        window: Region,
        keep: list[Region] | None,
        known: Readings | None = None,
        before: Before | None = None,
    ) -> list[Region]:
        """The boxes to mask in `window` of `frame`: the detector's, read in every view, and
        the text map's that the detector missed and the recogniser reads as text
        (`_confirmed`). `known`: what boxes of earlier frames read as, by view, place and exact
        pixels (a cine's labels are read once); `before`: the frame before, when `window` is
        where this one differs from it."""
        known = {} if known is None else known
        line = max(_LINE_PIXELS, round(_LINE_SHARE * min(frame.shape[:2])))
        found, ink = self._read_window(renderer, frame, window, keep, known, line, before)
        confirmed = self._confirmed(
            renderer, frame, window, keep, known, (found, ink), line, before
        )
        return found + confirmed

    def _confirmed(
        self,
        renderer: Renderer,
        frame: np.ndarray,
        window: Region,
        keep: list[Region] | None,
        known: Readings,
        detected: tuple[list[Region], np.ndarray],
        line: int,
        before: Before | None = None,
    ) -> list[Region]:
        """The text map's regions (`TextFinder.candidates`) that the detector's boxes do not
        cover and the recogniser reads as text (`_reads_as_text`), grown along their line
        while ink goes on (`_grown`), with the margin. `detected`: the detector's boxes to
        mask and the window's ink (`_read_window`). The map finds faint text and lines
        written downwards or upwards that the detector misses, but on its own it also takes
        anatomy for text: what it finds is only ever masked in addition to the detector's
        boxes, and only when it reads as text.

        A region whose every pixel is as in the frame before (`before`) is not read again:
        what was masked over it in that frame is masked again, and nothing more. Those
        pixels were read in the frame where they last changed (a cine's first frame is read
        whole), as the stage keeps the boxes outside the changed window; reading them again
        costs a recogniser call per turn in every frame of a cine (labels beside a moving
        picture, in compression noise that makes no two frames' pixels equal)."""
        x, y, w, h = window.x, window.y, window.width, window.height
        rows, columns = frame.shape[:2]
        found, ink = detected
        part = frame[y : y + h, x : x + w]
        candidates = self.finder.candidates(renderer.values(part), renderer.photometric)
        if not candidates:
            return []
        covered = np.zeros((h, w), bool)
        for r in found:
            x0, y0 = min(max(r.x - x, 0), w), min(max(r.y - y, 0), h)
            covered[y0 : max(r.y - y + r.height, y0), x0 : max(r.x - x + r.width, x0)] = True
        raised: np.ndarray | None = None
        out = []
        read = 0
        for box, certainty in candidates:  # the map's likeliest text first
            placed = widen(
                Region(box.x + x, box.y + y, box.width, box.height), self.margin, rows, columns
            )
            if keep is not None and not any(_overlaps(placed, k) for k in keep):
                continue  # outside the regions all is masked anyway
            if covered[box.y : box.y + box.height, box.x : box.x + box.width].mean() >= _COVERED:
                continue
            if min(box.width, box.height) > 2 * line:
                continue  # no line of text, and lines run together read as nothing
            if before is not None and not _moved(before, placed):
                out += [b for b in before.boxes if _overlaps(placed, b)]  # as masked before
                continue
            if read == _MAX_CANDIDATES:
                break
            read += 1
            if raised is None:
                raised = local_contrast(renderer.picture(part))
            certain = certainty >= _MAP_CERTAIN and min(box.width, box.height) <= line
            if certain or self._reads_as_text(raised, box, placed, known):
                grown = box if certain else _grown(ink, box)  # unread: no more than it found
                out.append(
                    widen(
                        Region(grown.x + x, grown.y + y, grown.width, grown.height),
                        self.margin,
                        rows,
                        columns,
                    )
                )
        return list(dict.fromkeys(out))

    def _reads_as_text(
        self, picture: np.ndarray, box: Region, placed: Region, known: Readings
    ) -> bool:
        """Whether `box` of `picture` (the window as shown, small differences raised) reads
        as text (`_is_text`), turned the ways a line of its shape can be written (`_turns`);
        the first such reading ends the search, and a place with the same pixels is not read
        again."""
        crop = picture[box.y : box.y + box.height, box.x : box.x + box.width]
        key = (-1, placed, crop.tobytes())
        if key not in known:
            known[key] = ("", 0.0)
            for turns in _turns(box):
                turned = np.ascontiguousarray(np.rot90(crop, turns))
                whole = Region(0, 0, turned.shape[1], turned.shape[0])
                reading = self.finder.read_many(turned, [whole])[0]
                if self._is_text(*reading):
                    known[key] = reading
                    break
        return known[key][1] > 0

    def _is_text(self, text: str, confidence: float) -> bool:
        """A reading of a map region that is text, not a glyph seen in anatomy
        (`_reads_as_text`): letters or digits read with `_CONFIDENT` confidence, or one read
        with `_SINGLE_CONFIDENT` that is not one of the site's markers."""
        characters = sum(c.isalnum() for c in text)
        if characters == 1:
            marker = "".join(text.split()).upper() in self.markers
            return confidence >= _SINGLE_CONFIDENT and not marker
        return characters >= _CONFIRM_CHARACTERS and confidence >= _CONFIDENT

    def _read_window(
        self,
        renderer: Renderer,
        frame: np.ndarray,
        window: Region,
        keep: list[Region] | None,
        known: Readings,
        line: int,
        before: Before | None = None,
    ) -> tuple[list[Region], np.ndarray]:
        """The detector's boxes to mask in `window` of `frame`, read in every view, and where
        the window has ink (`_ink`)."""
        x, y, w, h = window.x, window.y, window.width, window.height
        rows, columns = frame.shape[:2]
        margin = self.margin
        found: list[Region] = []
        views = renderer.views(frame[y : y + h, x : x + w])
        ink = _ink(views)
        for number, view in enumerate(views):
            boxes = []
            turned = number == TURNED_VIEW and len(views) > TURNED_VIEW
            for box in self._find(view, (rows, columns), turned=turned):
                grown = _along_line(ink, box, vertical=_vertical(box, line))
                placed = Region(grown.x + x, grown.y + y, grown.width, grown.height)
                widened = widen(placed, margin, rows, columns)
                if keep is None or any(_overlaps(widened, k) for k in keep):
                    boxes.append((box, widened))  # outside the regions all is masked anyway
            doubtful = [
                b
                for b, _ in boxes
                if not _vertical(b, line)
                and (b.height > line or b.width <= _MARKER_ASPECT * b.height)
            ]
            # a doubtful box whose pixels stayed as in the frame before keeps its decision
            # there: masked if anything masked then touches it, unread (`_confirmed`)
            carried = {
                box: any(_overlaps(widened, b) for b in before.boxes)
                for box, widened in boxes
                if before is not None and box in doubtful and not _moved(before, widened)
            }
            unread = [b for b in doubtful if b not in carried]
            readings = self._read(view, number, Region(x, y, w, h), unread, known, line)
            for box, widened in boxes:
                if box in carried:
                    masked = carried[box]
                else:
                    masked = box not in readings or not self._harmless(box, *readings[box], line)
                if masked:
                    found.append(widened)
        return found, ink

    def _find(
        self, view: np.ndarray, whole: tuple[int, int], *, turned: bool = False
    ) -> list[Region]:
        """The detector's boxes in `view`: read whole, or only in its parts (`render.parts`);
        `turned`: read a second time turned a quarter anticlockwise, boxes turned back."""
        where = parts(view)
        if where is None:
            found = self.finder.find(view, whole)
        else:
            found = [
                Region(box.x + part.x, box.y + part.y, box.width, box.height)
                for part in where
                for box in self.finder.find(
                    view[part.y : part.y + part.height, part.x : part.x + part.width], whole
                )
            ]
        if turned:
            picture = np.ascontiguousarray(np.rot90(view))  # [r, c] is view[c, width - 1 - r]
            width = view.shape[1]
            found += [
                Region(width - box.y - box.height, box.x, box.height, box.width)
                for box in self.finder.find(picture, (whole[1], whole[0]))
            ]
        return found

    def _read(
        self,
        view: np.ndarray,
        number: int,
        window: Region,
        boxes: list[Region],
        known: Readings,
        line: int,
    ) -> dict[Region, tuple[str, float]]:
        """What each box reads as; boxes whose exact pixels were read before are not read
        again."""
        keys = {
            box: (
                number,
                Region(box.x + window.x, box.y + window.y, box.width, box.height),
                view[box.y : box.y + box.height, box.x : box.x + box.width].tobytes(),
            )
            for box in boxes
        }
        new = [box for box in boxes if keys[box] not in known]
        for box, reading in zip(new, self.finder.read_many(view, new), strict=True):
            known[keys[box]] = self._turned(view, box, reading, line)
        return {box: known[keys[box]] for box in boxes}

    def _turned(
        self, view: np.ndarray, box: Region, upright: tuple[str, float], line: int
    ) -> tuple[str, float]:
        """`box` read upright, and turned a quarter either way if it could hold characters of
        a line written downwards or upwards (no taller than a text line, or taller than wide)
        and may stay as it reads upright (a marker excepted): the most confident reading
        counts. A box masked as it reads upright is not read turned (it could only stay if a
        turned reading made a marker of it). A region taller than a line and wider than tall
        (anatomy, as the detector sees it) is read upright only: turned, its texture reads as
        confident garbage."""
        if "".join(upright[0].split()).upper() in self.markers:
            return upright
        if not self._harmless(box, *upright, line):
            return upright
        if box.height > line and box.width >= box.height:
            return upright
        best = upright
        crop = view[box.y : box.y + box.height, box.x : box.x + box.width]
        for turns in (1, 3):
            turned = np.ascontiguousarray(np.rot90(crop, turns))
            whole = Region(0, 0, turned.shape[1], turned.shape[0])
            reading = self.finder.read_many(turned, [whole])[0]
            if reading[1] >= max(best[1], _CONFIDENT) and any(c.isalnum() for c in reading[0]):
                best = reading
        return best

    def _harmless(self, box: Region, text: str, confidence: float, line: int) -> bool:
        """Whether a detected box that was read may stay: a short box (at most
        `_MARKER_ASPECT` heights wide: the only ones of line height that are read) read as
        one of the site's markers, or in which nothing is legible (teeth, a bolt, a speck of
        bone: detectors see glyphs in them), or too small to hold a character (`_SPECK`); a
        box taller than a text line (`line` pixels) that does not read confidently as text
        (textured anatomy - bowel, lung, trabecular bone - looks like text to the detector as
        a whole region; big text reads clearly). A box of line height, wide enough to hold
        more than a marker, is never read: it is masked; so is its rotated shape, a line
        written downwards or upwards (`_vertical`).

        Only short boxes narrower than 1.5 heights used to stay: on the validation set's
        --limit 400 (1,294 boxes, 400 text-free images), recall 0.823 -> 0.822 (one box of a
        7-pixel date) and 46 -> 31 text-free images over 0.5 % masked; specks 31 -> 29
        (docs/benchmarks.md)."""
        text = "".join(text.split()).upper()
        if box.height > line:
            return not (confidence >= _CONFIDENT and any(ch.isalnum() for ch in text))
        if text in self.markers or max(box.width, box.height) < _SPECK:
            return True
        return not (confidence >= _LEGIBLE and any(ch.isalnum() for ch in text))


def _ink(views: list[np.ndarray]) -> np.ndarray:
    """Where any view has a stroke-like edge: text drawn at any value has sharp edges; flat
    background and smooth anatomy have none."""
    kernel = np.ones((3, 3), np.uint8)
    found = np.zeros(views[0].shape[:2], bool)
    for view in views:
        grey = view if view.ndim == 2 else brightest_channel(view)
        found |= cv2.morphologyEx(grey, cv2.MORPH_GRADIENT, kernel) >= _INK
    return found


def _turns(box: Region) -> tuple[int, ...]:
    """Quarter turns (anticlockwise) that bring a line of text in `box` upright: across for a
    box clearly wider than tall, up or down for one clearly taller than wide, all four for a
    squat one (a word or two)."""
    if box.width >= _MARKER_ASPECT * box.height:
        return (0, 2)
    if box.height >= _MARKER_ASPECT * box.width:
        return (1, 3)
    return (0, 1, 3, 2)


def _vertical(box: Region, line: int) -> bool:
    """A line of text written downwards or upwards: no wider than a text line and taller than
    a marker could be (the rotated shape of a box `_read_window` masks unread)."""
    return box.width <= line and box.height > _MARKER_ASPECT * box.width


def _along_line(ink: np.ndarray, box: Region, *, vertical: bool) -> Region:
    """`box` grown along its line (rows, or columns for vertical text) while ink continues,
    with gaps of at most `_GAP` line heights, by at most `_LINE_EXTENSION` line heights on
    each side (a detector most often misses the start or end of a line, rarely a whole
    line)."""
    if vertical:
        turned = _along_line(ink.T, Region(box.y, box.x, box.height, box.width), vertical=False)
        return Region(turned.y, turned.x, turned.height, turned.width)
    reach, gap = round(_LINE_EXTENSION * box.height), max(round(_GAP * box.height), 1)
    band = ink[box.y : box.y + box.height]
    columns = band.shape[1]
    right = np.any(band[:, box.x + box.width : min(box.x + box.width + reach, columns)], axis=0)
    left = np.any(band[:, max(box.x - reach, 0) : box.x], axis=0)
    before, after = _run(np.asarray(left)[::-1], gap), _run(np.asarray(right), gap)
    return Region(box.x - before, box.y, box.width + before + after, box.height)


def _grown(ink: np.ndarray, box: Region) -> Region:
    """A map region read as text, with its line: the ink inside it (the strokes, not the
    map's cells around them) grown along the line (`_along_line`, so reach and gaps are in
    heights of the strokes) - across unless the region is clearly taller than wide,
    downwards unless it is clearly wider than tall (a squat region both ways). The map often
    finds part of a line only (on the validation set, 26 of its regions read as text were
    masked over less than 90 % of their line)."""
    ys, xs = np.nonzero(ink[box.y : box.y + box.height, box.x : box.x + box.width])
    if not ys.size:
        return box
    x0, y0 = box.x + int(xs.min()), box.y + int(ys.min())
    strokes = Region(x0, y0, box.x + int(xs.max()) + 1 - x0, box.y + int(ys.max()) + 1 - y0)
    out = box
    for vertical in (False, True):
        along, across = (box.height, box.width) if vertical else (box.width, box.height)
        if across < _MARKER_ASPECT * along:  # it may hold a line this way
            line = _along_line(ink, strokes, vertical=vertical)
            x0, y0 = min(out.x, line.x), min(out.y, line.y)
            x1 = max(out.x + out.width, line.x + line.width)
            y1 = max(out.y + out.height, line.y + line.height)
            out = Region(x0, y0, x1 - x0, y1 - y0)
    return out


def _run(inked: np.ndarray, gap: int) -> int:
    """Columns from the box edge to the last inked one reached with gaps of at most `gap`."""
    last = 0
    for column in np.flatnonzero(inked):
        if column - last > gap:
            break
        last = int(column) + 1
    return last


def _moved(before: Before, region: Region) -> bool:
    """Whether any pixel of `region` changed since the frame before."""
    y, x = region.y, region.x
    return bool(before.moved[y : y + region.height, x : x + region.width].any())


def _overlaps(a: Region, b: Region) -> bool:
    return (
        a.x < b.x + b.width
        and b.x < a.x + a.width
        and a.y < b.y + b.height
        and b.y < a.y + a.height
    )
