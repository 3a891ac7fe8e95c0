"""The pixel stage of one instance: check, mask, re-encode - or quarantine.

For an image that needs checking (`screening.check_reason`), every frame is decoded, one at a
time, and what must be masked is gathered from three sources:

1. the site's CTP rules whose header signature matches (rectangles, every frame);
2. ultrasound: everything outside a sane Sequence of Ultrasound Regions (every frame);
3. the text detector, on every frame. Across a cine, and across the slices of a series that
   reach the same worker, only what changed is read again: where a frame's pixels equal the
   previous frame's, so does its text, and the boxes found there are kept (a static banner is
   read once); where they changed, the detector reads that window.

Detected text is masked with a margin unless the recogniser reads it as one of the site's
orientation markers (L, R, ...). Nothing found: the pixels stay exactly as received, in a
container that hides nothing (`sanitise`: no bits outside Bits Stored, no bytes after the
last pixel), and BurnedInAnnotation says NO. Something found: a second pass masks every
frame and re-encodes (`reencode`). An image that cannot be decoded, or whose check runs past
its time, is quarantined with a reason code: an image that may carry text is never passed
unchecked.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset

from gateway.deidentify.failures import guard
from gateway.deidentify.pixels.ctp import Region, Rule, parse_script, regions_for
from gateway.deidentify.pixels.frames import PIXEL_DATA, iter_frames
from gateway.deidentify.pixels.models import ModelError, load_finder
from gateway.deidentify.pixels.reencode import Rewriter
from gateway.deidentify.pixels.regions import black, mask, mask_outside, ultrasound_keep
from gateway.deidentify.pixels.render import TURNED_VIEW, Renderer, parts
from gateway.deidentify.pixels.sanitise import check_layout, sanitise
from gateway.deidentify.pixels.screening import check_reason
from gateway.errors import ConfigError, RuleError, Unprocessable
from gateway.settings import PixelSettings, Settings

BURNED_IN_ANNOTATION = 0x00280301
_CONTEXT = 32  # pixels around a changed area that are read again with it (a text line)
#: A cine frame's pixels that differ from the previous frame's by at most this share of the
#: values that frame uses (its minimum to maximum, as the full view shows it) count as
#: unchanged (noise on a static banner); text drawn anew differs by more: the faintest the
#: views are measured to find is 12 levels of 255 (docs/pixels.md). Every 30th frame is read
#: whole all the same.
_TOLERANCE = 10 / 255
_READ_WHOLE_EVERY = 30
#: The slices of a series are read like the frames of a cine: what a worker saw last in a
#: series (its last frame, the boxes found, what boxes read as) is kept for the next instance
#: of that series, for this many series, frames up to this size; reading the whole frame
#: again every `_READ_WHOLE_EVERY` frames counts across the series.
_SERIES_KEPT = 4
_SERIES_FRAME_BYTES = 8 << 20
_READINGS_KEPT = 512
#: An image whose decoded frames fit in this is decoded once: the masking pass reuses the
#: frames the check decoded; a larger one (a long cine) is decoded again, one frame at a time.
_DECODED_BYTES = 32 << 20
_MARKER_ASPECT = 2.0  # boxes wider than this many heights hold more than a marker (LAT)
_SQUAT = 1.5  # boxes narrower than this many heights hold a character or two at most
#: Burned-in annotation lines are at most this tall (pixels, or share of the shorter side of
#: the frame, whichever is more); taller boxes must read as text with this confidence.
_LINE_PIXELS = 48
_LINE_SHARE = 0.08
_CONFIDENT = 0.8
_LEGIBLE = 0.5  # a character or two read with less confidence than this is no text
#: Detected boxes grow along their line as far as ink goes on (`_along_line`), by at most this
#: many heights: measured on the shared ground truth (docs/pixels.md), where detectors miss
#: the ends of lines over bright anatomy (PP-OCRv6 tiny misses a 10-pixel "Study Date:" of
#: 67 pixels before a date it finds: 3 heights cover 0.89 of it); a gap of more than `_GAP`
#: heights without ink ends the line.
_LINE_EXTENSION = 4.0
_GAP = 1.0
#: Ink: a local contrast (3x3 morphological gradient) of at least this, in any view
_INK = 64


Readings = dict[tuple[int, Region, bytes], tuple[str, float]]


@dataclass
class _Seen:
    """The last frame read of a series and what was found there."""

    frame: np.ndarray
    boxes: list[Region]
    readings: Readings
    frames: int  # read since the series' first, for the whole readings


class TextFinder(Protocol):
    """A text detector and recogniser over 8-bit BGR pictures."""

    def find(self, image: np.ndarray, whole: tuple[int, int] | None = None) -> list[Region]: ...

    def read_many(self, image: np.ndarray, boxes: list[Region]) -> list[tuple[str, float]]: ...


@dataclass(frozen=True)
class Masked:
    """One masked rectangle, for the report: where, on which frames, found by what."""

    source: str  # "rule", "outside-ultrasound-regions" (everything outside them) or "detected"
    x: int
    y: int
    width: int
    height: int
    first_frame: int
    last_frame: int


@dataclass(frozen=True)
class PixelOutcome:
    """What the pixel stage did: why it looked (None: no pixels), what it masked, and the
    header and pixel elements that replace the received ones."""

    reason: str | None
    checked: bool
    masked: tuple[Masked, ...] = ()
    transfer_syntax: str | None = None
    elements: Mapping[int, DataElement | RawDataElement] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def read_rules(settings: Settings) -> tuple[tuple[Rule, ...], list[str]]:
    """The rules of the site's CTP scripts, and one problem per script that cannot be used,
    naming the config file, the key and the script's `file:line:column` (one path for
    check-config, deidentify and run, so each refuses a script with the same words)."""
    rules: list[Rule] = []
    problems: list[str] = []
    for i, path in enumerate(settings.pixels.ctp_scripts):
        key = f"{settings.source}: pixels.ctp_scripts[{i}]"
        try:
            rules += parse_script(path.read_text(encoding="utf-8"), str(path))
        except OSError as exc:
            problems.append(f"{key}: cannot read {path}: {exc.strerror}")
        except UnicodeDecodeError:
            problems.append(f"{key}: {path}: not UTF-8 text")
        except RuleError as exc:
            problems.append(f"{key}: {exc}")
    return tuple(rules), problems


def rule_problems(settings: Settings) -> list[str]:
    """What is wrong with the site's CTP scripts, without loading the text detector."""
    return read_rules(settings)[1]


class PixelStage:
    def __init__(self, settings: PixelSettings, rules: tuple[Rule, ...], finder: TextFinder):
        self.settings = settings
        self.rules = rules
        self.finder = finder
        self.markers = {m.upper() for m in settings.keep_markers}
        self._series: OrderedDict[tuple[object, ...], _Seen] = OrderedDict()

    @classmethod
    def for_settings(cls, settings: Settings) -> PixelStage:
        """The stage for a site: its CTP scripts read and the detector's models loaded; raises
        ConfigError naming the key and file when one cannot be used."""
        rules, problems = read_rules(settings)
        try:
            finder = load_finder()
        except ModelError as exc:
            problems.append(f"{settings.source}: pixels: text detector: {exc}")
        if problems:
            raise ConfigError(problems)
        return cls(settings.pixels, rules, finder)

    def clean(self, ds: Dataset, transfer_syntax: str) -> PixelOutcome:
        """Check one image (pixel data already loaded) and mask what carries text; raises
        Unprocessable (a reason code) when that cannot be done."""
        with guard("pixel-error:"):
            return self._clean(ds, transfer_syntax)

    def _clean(self, ds: Dataset, transfer_syntax: str) -> PixelOutcome:
        reason = check_reason(ds)
        if reason is None:
            return PixelOutcome(None, checked=False)
        if PIXEL_DATA in ds:
            check_layout(ds)  # a High Bit decoders do not follow: no check can be trusted
        if reason in self.settings.skip:
            # the site chose not to look: the output claims nothing about burned-in text (an
            # unverified "NO" from the sender is not passed on); its container is still clean
            clean = sanitise(ds, transfer_syntax)
            unknown = {BURNED_IN_ANNOTATION: DataElement(BURNED_IN_ANNOTATION, "CS", None)}
            return PixelOutcome(
                reason,
                checked=False,
                elements={**clean.elements, **unknown},
                counts={"pixels_unchecked": 1, **clean.counts},
            )
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            ds.file_meta = meta = FileMetaDataset()
        if not meta.get("TransferSyntaxUID"):  # a bare data set: the syntax it was read in
            meta.TransferSyntaxUID = transfer_syntax
        deadline = time.monotonic() + self.settings.max_seconds
        fixed = [("rule", r) for r in regions_for(self.rules, ds)]
        keep = ultrasound_keep(ds) if self.settings.ultrasound_regions else None
        if keep is not None and reason in ("ultrasound", "burned-in-flag"):
            fixed += [("outside-ultrasound-regions", r) for r in keep]
        else:
            keep = None
        decoded: list[np.ndarray] = []
        detected = list(self._detect(ds, keep, deadline, decoded))
        masked = _summarise(fixed, detected)
        counts = {
            "frames_checked": len(detected),
            "text_boxes": sum(len(boxes) for boxes in detected),
        }
        no = {BURNED_IN_ANNOTATION: DataElement(BURNED_IN_ANNOTATION, "CS", "NO")}
        if not masked:
            clean = sanitise(ds, transfer_syntax)  # what was read, in a container of known parts
            counts.update(clean.counts)
            return PixelOutcome(reason, True, (), None, {**clean.elements, **no}, counts)
        if PIXEL_DATA not in ds:
            raise Unprocessable("float-pixel-data-with-text")  # checked, but no writer for it
        rewriter = Rewriter(ds, transfer_syntax)
        rules = [r for source, r in fixed if source == "rule"]
        value: int | float | None = None
        for index, frame in enumerate(decoded or iter_frames(ds)):
            if time.monotonic() > deadline:
                raise Unprocessable("pixel-check-timeout")
            frame = frame if frame.flags.writeable else frame.copy()
            value = black(ds, frame) if value is None else value
            if keep is not None:
                mask_outside(frame, keep, value)
            mask(frame, rules, value)
            mask(frame, detected[index], value)
            rewriter.add(frame)
        rewritten = rewriter.finish()
        counts["masked_frames"] = len(detected)
        return PixelOutcome(
            reason, True, masked, rewritten.transfer_syntax, {**rewritten.elements, **no}, counts
        )

    def _detect(
        self,
        ds: Dataset,
        keep: list[Region] | None,
        deadline: float,
        decoded: list[np.ndarray] | None = None,
    ) -> Iterator[list[Region]]:
        """Per frame: the text boxes to mask (margin added), reading only what changed since
        the previous frame - of this image, or the last one read of its series. The frames
        are kept in `decoded` (if given) for the masking pass while they fit in
        `_DECODED_BYTES` (a cine that does not is decoded again, frame by frame: `decoded` is
        left empty)."""
        renderer = Renderer(ds)
        series = _series_key(ds, keep)
        seen = self._series.pop(series, None) if series is not None else None
        previous = seen.frame if seen is not None else None
        boxes = seen.boxes if seen is not None else []
        readings: Readings = seen.readings if seen is not None else {}
        index = seen.frames if seen is not None else 0
        kept = 0
        for frame in iter_frames(ds):
            if time.monotonic() > deadline:
                raise Unprocessable("pixel-check-timeout")
            kept += frame.nbytes
            if decoded is not None and kept <= _DECODED_BYTES:
                decoded.append(frame)
            elif decoded:
                decoded.clear()
            fresh = index % _READ_WHOLE_EVERY == 0
            window = _changed(None if fresh else previous, frame)
            if window is not None:
                stale = [b for b in boxes if not fresh and not _inside(b, window)]
                boxes = stale + self._read_window(renderer, frame, window, keep, readings)
            previous, index = frame, index + 1
            yield boxes
        if series is not None and previous is not None and previous.nbytes <= _SERIES_FRAME_BYTES:
            if len(readings) > _READINGS_KEPT:
                readings = {}
            self._series[series] = _Seen(previous.copy(), boxes, readings, index)
            while len(self._series) > _SERIES_KEPT:
                self._series.popitem(last=False)

    def _read_window(
        self,
        renderer: Renderer,
        frame: np.ndarray,
        window: Region,
        keep: list[Region] | None,
        known: Readings | None = None,
    ) -> list[Region]:
        """The boxes to mask in `window` of `frame`. `known`: what boxes of earlier frames
        read as, by view, place and exact pixels (a cine's labels are read once)."""
        known = {} if known is None else known
        x, y, w, h = window.x, window.y, window.width, window.height
        rows, columns = frame.shape[:2]
        line = max(_LINE_PIXELS, round(_LINE_SHARE * min(rows, columns)))
        margin = self.settings.margin
        found: list[Region] = []
        views = renderer.views(frame[y : y + h, x : x + w])
        ink = _ink(views)
        for number, view in enumerate(views):
            boxes = []
            turned = number == TURNED_VIEW and len(views) > TURNED_VIEW
            for box in self._find(view, (rows, columns), turned=turned):
                grown = _along_line(ink, box, vertical=_vertical(box, line))
                placed = Region(grown.x + x, grown.y + y, grown.width, grown.height)
                widened = _widen(placed, margin, rows, columns)
                if keep is None or any(_overlaps(widened, k) for k in keep):
                    boxes.append((box, widened))  # outside the regions all is masked anyway
            doubtful = [
                b
                for b, _ in boxes
                if not _vertical(b, line)
                and (b.height > line or b.width <= _MARKER_ASPECT * b.height)
            ]
            readings = self._read(view, number, Region(x, y, w, h), doubtful, known, line)
            found += [
                widened
                for box, widened in boxes
                if box not in readings or not self._harmless(box, *readings[box], line)
            ]
        return found

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
        """Whether a detected box that was read may stay: a short box read as one of the
        site's markers; a squat box in which nothing is legible (teeth, a bolt: detectors see
        glyphs in them); a box taller than a text line (`line` pixels) that does not read
        confidently as text (textured anatomy - bowel, lung, trabecular bone - looks like text
        to the detector as a whole region; big text reads clearly). A box of line height, wide
        enough to hold more than a marker, is never read: it is masked; so is its rotated
        shape, a line written downwards or upwards (`_vertical`)."""
        text = "".join(text.split()).upper()
        if box.height > line:
            return not (confidence >= _CONFIDENT and any(ch.isalnum() for ch in text))
        if text in self.markers:
            return True
        legible = confidence >= _LEGIBLE and any(ch.isalnum() for ch in text)
        return box.width < _SQUAT * box.height and not legible


def _changed(previous: np.ndarray | None, frame: np.ndarray) -> Region | None:
    """The window of `frame` to read: all of it first, then where it differs from the
    previous frame by more than `_TOLERANCE` of the values that frame uses (noise does not
    count), widened by a text line's context; None when nothing changed."""
    rows, columns = frame.shape[:2]
    if previous is None or previous.shape != frame.shape or previous.dtype != frame.dtype:
        return Region(0, 0, columns, rows)
    used = float(previous.max()) - float(previous.min())
    tolerance = _TOLERANCE * used
    samples = frame.shape[2] if frame.ndim == 3 else 1
    # the largest difference per row and per column, samples side by side (contiguous axes)
    difference = np.asarray(cv2.absdiff(previous, frame)).reshape(rows, columns * samples)
    changed_rows = np.flatnonzero(difference.max(axis=1) > tolerance)
    if changed_rows.size == 0:
        return None
    changed_columns = np.flatnonzero(difference.max(axis=0) > tolerance) // samples
    y0, y1 = int(changed_rows[0]), int(changed_rows[-1]) + 1
    x0, x1 = int(changed_columns[0]), int(changed_columns[-1]) + 1
    return _widen(Region(x0, y0, x1 - x0, y1 - y0), _CONTEXT, rows, columns)


def _series_key(ds: Dataset, keep: list[Region] | None) -> tuple[object, ...] | None:
    """What an instance shares with the others of its series when their frames may be
    compared pixel by pixel: the series, and everything that decides how a frame is shown
    and which boxes stay (None: no series, or a palette, whose lookup table may differ)."""
    series = str(ds.get("SeriesInstanceUID", "") or "")
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    if not series or photometric == "PALETTE COLOR":
        return None
    layout = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "BitsStored")
    values = tuple(str(ds.get(keyword, "")) for keyword in (*layout, "PixelRepresentation"))
    regions = tuple(keep) if keep is not None else None
    return (str(ds.get("StudyInstanceUID", "") or ""), series, photometric, values, regions)


def _widen(box: Region, margin: int, rows: int, columns: int) -> Region:
    """`box` grown by `margin` on every side, inside the frame."""
    x0, y0 = max(box.x - margin, 0), max(box.y - margin, 0)
    x1, y1 = min(box.x + box.width + margin, columns), min(box.y + box.height + margin, rows)
    return Region(x0, y0, x1 - x0, y1 - y0)


def _ink(views: list[np.ndarray]) -> np.ndarray:
    """Where any view has a stroke-like edge: text drawn at any value has sharp edges; flat
    background and smooth anatomy have none."""
    kernel = np.ones((3, 3), np.uint8)
    found = np.zeros(views[0].shape[:2], bool)
    for view in views:
        grey = view if view.ndim == 2 else _brightest_channel(view)
        found |= cv2.morphologyEx(grey, cv2.MORPH_GRADIENT, kernel) >= _INK
    return found


def _brightest_channel(view: np.ndarray) -> np.ndarray:
    """Per pixel, the largest of the view's channels (OpenCV: 10x numpy's max(axis=2))."""
    channels = cv2.split(view)
    out = channels[0]
    for channel in channels[1:]:
        out = cv2.max(out, channel)
    return out


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


def _run(inked: np.ndarray, gap: int) -> int:
    """Columns from the box edge to the last inked one reached with gaps of at most `gap`."""
    last = 0
    for column in np.flatnonzero(inked):
        if column - last > gap:
            break
        last = int(column) + 1
    return last


def _inside(box: Region, window: Region) -> bool:
    return (
        box.x >= window.x
        and box.y >= window.y
        and box.x + box.width <= window.x + window.width
        and box.y + box.height <= window.y + window.height
    )


def _overlaps(a: Region, b: Region) -> bool:
    return (
        a.x < b.x + b.width
        and b.x < a.x + a.width
        and a.y < b.y + b.height
        and b.y < a.y + a.height
    )


def _summarise(
    fixed: Iterable[tuple[str, Region]], detected: list[list[Region]]
) -> tuple[Masked, ...]:
    """Masked rectangles with the frames they apply to (a box on consecutive frames once)."""
    frames = len(detected)
    out = [Masked(source, r.x, r.y, r.width, r.height, 0, frames - 1) for source, r in fixed]
    open_boxes: dict[Region, int] = {}
    for index, boxes in enumerate([*detected, []]):
        current = set(boxes)
        for box, first in list(open_boxes.items()):
            if box not in current:
                out.append(
                    Masked("detected", box.x, box.y, box.width, box.height, first, index - 1)
                )
                del open_boxes[box]
        for box in boxes:
            open_boxes.setdefault(box, index)
    return tuple(out)
