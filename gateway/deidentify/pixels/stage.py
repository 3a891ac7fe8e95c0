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

import cv2
import numpy as np
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset

from gateway.deidentify.failures import guard
from gateway.deidentify.pixels.ctp import Region, Rule, parse_script, regions_for
from gateway.deidentify.pixels.frames import PIXEL_DATA, iter_frames
from gateway.deidentify.pixels.models import ModelError, load_finder
from gateway.deidentify.pixels.reading import Before, Readings, TextFinder, WindowReader
from gateway.deidentify.pixels.reencode import Rewriter
from gateway.deidentify.pixels.regions import black, mask, mask_outside, ultrasound_keep, widen
from gateway.deidentify.pixels.render import Renderer, brightest_channel
from gateway.deidentify.pixels.sanitise import check_layout, sanitise
from gateway.deidentify.pixels.screening import check_reason
from gateway.errors import ConfigError, RuleError, Unprocessable
from gateway.settings import PixelSettings, Settings

BURNED_IN_ANNOTATION = 0x00280301
_CONTEXT = 32  # pixels around a changed area that are read again with it (a text line)
#: A cine frame's pixels that differ from the previous frame's by at most a tolerance count as
#: unchanged (noise on a static banner): a share of the values that frame uses - between its
#: 0.5th and 99.5th percentiles, so that one hot pixel cannot stretch it - that follows where
#: the noise is (`_tolerance`): lossy compression is noisy at edges, not in flat areas, where
#: the views find text a few levels from its background, and lossless frames are not noisy
#: there at all; a captured video is noisy everywhere, by as much as most of its pixels
#: differ from frame to frame. Text drawn anew differs by more: the faintest the views are
#: measured to find on texture is 12 levels of 255 (docs/pixels.md). Every 30th frame is read
#: whole all the same.
_TOLERANCE = 10 / 255  # at most (at edges)
_FLAT_TOLERANCE = 1 / 255  # at least (flat and still)
_NOISE_PER_CONTRAST = 0.25  # per level of local contrast (3x3 gradient) of the frame before
_BLOCK = 17  # a 4:2:0 JPEG block and its neighbours: how far an edge's noise reaches
_NOISE_SIGMAS = 5.0  # the frame-to-frame noise (robust standard deviation) times this
_ROBUST = (0.5, 99.5)
_SQUARE = np.ones((3, 3), np.uint8)
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


@dataclass
class _Seen:
    """The last frame read of a series and what was found there."""

    frame: np.ndarray
    boxes: list[Region]
    readings: Readings
    frames: int  # read since the series' first, for the whole readings


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
        self.reader = WindowReader(
            finder, settings.margin, {m.upper() for m in settings.keep_markers}
        )
        self._series: OrderedDict[tuple[object, ...], _Seen] = OrderedDict()

    @classmethod
    def for_settings(cls, settings: Settings, finder: TextFinder | None = None) -> PixelStage:
        """The stage for a site: its CTP scripts read and the detector's models loaded (or
        `finder` reused: a worker taking a reloaded configuration); raises ConfigError naming
        the key and file when one cannot be used."""
        rules, problems = read_rules(settings)
        try:
            found = finder or load_finder()
        except ModelError as exc:
            problems.append(f"{settings.source}: pixels: text detector: {exc}")
        if problems:
            raise ConfigError(problems)
        return cls(settings.pixels, rules, found)

    def clean(self, ds: Dataset, transfer_syntax: str) -> PixelOutcome:
        """Check one image (pixel data already loaded) and mask what carries text; raises
        Unprocessable (a reason code) when that cannot be done."""
        with guard("pixel-error:"):
            try:
                return self._clean(ds, transfer_syntax)
            finally:
                self.finder.settle()  # what a large image took goes back (`ocr.OnnxText`)

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
        lossy = _lossy(ds)
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
            window, moved = _changed(None if fresh else previous, frame, lossy)
            if window is not None:
                stale = [b for b in boxes if not fresh and not _inside(b, window)]
                before = Before(moved, boxes) if moved is not None else None
                boxes = stale + self.reader.boxes(renderer, frame, window, keep, readings, before)
            previous, index = frame, index + 1
            yield boxes
        if series is not None and previous is not None and previous.nbytes <= _SERIES_FRAME_BYTES:
            if len(readings) > _READINGS_KEPT:
                readings = {}
            self._series[series] = _Seen(previous.copy(), boxes, readings, index)
            while len(self._series) > _SERIES_KEPT:
                self._series.popitem(last=False)


def _changed(
    previous: np.ndarray | None, frame: np.ndarray, lossy: bool = False
) -> tuple[Region | None, np.ndarray | None]:
    """The window of `frame` to read: all of it first, then where it differs from the
    previous frame by more than the noise there (`_tolerance`; `lossy`: the frames were ever
    lossy compressed), widened by a text line's context; None when nothing changed. With it, where
    the frame differs (rows x columns, True: changed; None when read whole)."""
    rows, columns = frame.shape[:2]
    if previous is None or previous.shape != frame.shape or previous.dtype != frame.dtype:
        return Region(0, 0, columns, rows), None
    difference = np.asarray(cv2.absdiff(previous, frame))
    if difference.ndim == 3:  # the largest of the samples
        difference = brightest_channel(difference)
    moved = difference > _tolerance(previous, difference, lossy)
    changed_rows = np.flatnonzero(moved.any(axis=1))
    if changed_rows.size == 0:
        return None, None
    changed_columns = np.flatnonzero(moved.any(axis=0))
    y0, y1 = int(changed_rows[0]), int(changed_rows[-1]) + 1
    x0, x1 = int(changed_columns[0]), int(changed_columns[-1]) + 1
    return widen(Region(x0, y0, x1 - x0, y1 - y0), _CONTEXT, rows, columns), moved


def _tolerance(previous: np.ndarray, difference: np.ndarray, lossy: bool) -> np.ndarray:
    """Per pixel, how much a frame may differ from `previous` (by `difference`) and count as
    unchanged: the noise of the whole frame (`_NOISE_SIGMAS` robust standard deviations of
    `difference`, from the median of its values up to `_TOLERANCE`: what moved by more is a
    picture, not noise), at least `_FLAT_TOLERANCE` of the values `previous` uses (robust
    range) but never more than one stored value for that (a few saturated pixels stretch the
    range of a 16-bit frame); where the frames were ever lossy compressed, near edges also
    what the local contrast of `previous` lets compression noise reach
    (`_NOISE_PER_CONTRAST`, as far as a compression block's neighbours), up to `_TOLERANCE`
    of the range."""
    grey = brightest_channel(previous) if previous.ndim == 3 else previous
    low, high = (float(v) for v in np.percentile(grey[::4, ::4], _ROBUST))
    spread = max(high - low, 1.0)
    small = difference[::2, ::2]
    small = small[small <= _TOLERANCE * spread]  # what moved by more is no noise
    noise = _NOISE_SIGMAS * 1.4826 * float(np.median(small)) if small.size else 0.0
    floor = max(_FLAT_TOLERANCE * min(spread, 255.0), noise)
    if not lossy:
        return np.full(grey.shape, floor, np.float32)
    contrast = cv2.morphologyEx(grey.astype(np.float32), cv2.MORPH_GRADIENT, _SQUARE)
    near = np.asarray(cv2.dilate(contrast, np.ones((_BLOCK, _BLOCK), np.uint8)))
    tolerance: np.ndarray = np.clip(
        near * _NOISE_PER_CONTRAST, floor, max(_TOLERANCE * spread, floor)
    )
    return tolerance


#: JPEG baseline and extended are always lossy; other syntaxes that may be (JPEG-LS
#: near-lossless, JPEG 2000, HTJ2K) say so in LossyImageCompression (PS3.3 C.7.6.1.1.5), as
#: do native frames decoded from lossy ones.
_LOSSY = frozenset({"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"})


def _lossy(ds: Dataset) -> bool:
    """Whether the frames were ever lossy compressed, so their edges carry compression noise
    that changes from frame to frame (when unsure: no, and more is read)."""
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    return syntax in _LOSSY or str(ds.get("LossyImageCompression", "") or "").strip() == "01"


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


def _inside(box: Region, window: Region) -> bool:
    return (
        box.x >= window.x
        and box.y >= window.y
        and box.x + box.width <= window.x + window.width
        and box.y + box.height <= window.y + window.height
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
