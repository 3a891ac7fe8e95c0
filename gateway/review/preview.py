"""The sign-off page of `dicom-gateway deidentify --preview`: one self-contained HTML file.

Every image the pixel stage masked gets a section: the original and the de-identified image
side by side (a strip of frames for a multi-frame image), the masked rectangles outlined, and
the header diff as a table. Every other input is counted on one line per fate and reason.
Images are embedded as `data:image/png;base64,...`; every value from an instance, and every
input's name, goes through `html.escape`: a patient name holding `<script>` is text.

The page holds PHI: the original images and header values. It is built in memory, one
section at a time as inputs are processed (only the small PNGs are kept), and written where
the operator asks (`batch`); nothing here writes, logs or counts a value.
"""

from __future__ import annotations

import base64
from collections import Counter
from html import escape

from pydicom.dataset import Dataset

from gateway.deidentify.pixels.frames import Undecodable, frame_count
from gateway.deidentify.pixels.stage import Masked
from gateway.fate import Fate
from gateway.review.core import Review, reviewed
from gateway.review.pictures import has_pixels, spaced, strip, thumbnail
from gateway.worker import Outcome

#: a multi-frame image shows this many frames at most, each this many pixels on its longer side
STRIP_FRAMES = 8
STRIP_SIDE = 160
THUMBNAIL_SIDE = 320

_STYLE = """
body { font-family: sans-serif; margin: 1em 2em; }
section { border-top: 1px solid #999; margin-top: 1.5em; }
.pair { display: flex; gap: 1em; flex-wrap: wrap; }
figure { margin: 0; }
table { border-collapse: collapse; font-size: 90%; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
td.value { font-family: monospace; white-space: pre-wrap; word-break: break-all; max-width: 40em; }
.removed { background: #fdd; } .replaced { background: #ffd; } .added { background: #dfd; }
"""


class Preview:
    """The page, built one input at a time."""

    def __init__(self) -> None:
        self._sections: list[str] = []
        self._others: Counter[tuple[str, str]] = Counter()

    def add(self, name: str, outcome: Outcome, data: bytes) -> None:
        """One input (`data`) and what the worker made of it: a section if its pixels were
        masked (only then is it read again and compared), else a count."""
        if outcome.pixels is not None and outcome.pixels.masked:
            review = reviewed(outcome, data)
            if review.original is not None:
                self._sections.append(_section(name, review, review.original))
                return
        self.note(outcome.status, outcome.reason)

    def note(self, fate: Fate, reason: str | None) -> None:
        """An input that gets no section (nothing masked, not DICOM, not readable)."""
        if reason is None and fate is Fate.WRITTEN:
            reason = "nothing masked"
        self._others[(str(fate), reason or "")] += 1

    def html(self) -> str:
        others = "".join(
            f"<li>{escape(fate)}{f' ({escape(reason)})' if reason else ''}: {count}</li>"
            for (fate, reason), count in sorted(self._others.items())
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            "<title>dicom-gateway deidentify: preview</title>"
            f"<style>{_STYLE}</style></head><body>"
            "<h1>De-identification preview</h1>"
            "<p><strong>This page holds protected health information</strong> (the original "
            "images and header values). Keep it on site and delete it after sign-off.</p>"
            "<p>Red outlines: rectangles masked (a site rule, or text found). Green outlines: "
            "ultrasound regions kept (everything outside them masked).</p>"
            f"<h2>Masked images: {len(self._sections)}</h2>{''.join(self._sections)}"
            f'<section id="others"><h2>Other inputs</h2><ul>{others}</ul></section>'
            "</body></html>\n"
        )


def _section(name: str, review: Review, original: Dataset) -> str:
    fate = escape(str(review.fate)) + (f" ({escape(review.reason)})" if review.reason else "")
    where = (
        f"<p>The release check points at: {escape(', '.join(review.where))}</p>"
        if review.where
        else ""
    )
    sources = Counter(m.source for m in review.masked)
    masked = ", ".join(f"{escape(s)}: {n}" for s, n in sorted(sources.items()))
    after = (
        _figure("de-identified", review.output, review.masked)
        if review.output is not None
        else "<figure><p>no output</p></figure>"
    )
    return (
        f'<section class="masked"><h3>{escape(name)}</h3>'
        f"<p>{fate}; masked rectangles: {masked}</p>{where}"
        f'<div class="pair">{_figure("original", original, review.masked)}{after}</div>'
        f"{_changes(review)}</section>"
    )


def _figure(caption: str, ds: Dataset, boxes: tuple[Masked, ...]) -> str:
    if not has_pixels(ds):
        return f"<figure><p>{escape(caption)}: no pixel data</p></figure>"
    try:
        count = frame_count(ds)
        if count > 1:
            png = strip(ds, boxes=boxes, frames=STRIP_FRAMES, max_side=STRIP_SIDE)
            shown = ", ".join(str(i) for i in spaced(count, STRIP_FRAMES))
            caption += f" (frames {shown} of {count}, from 0)"
        else:
            png = thumbnail(ds, boxes=boxes, max_side=THUMBNAIL_SIDE)
    except Undecodable as exc:
        return f"<figure><p>{escape(caption)}: cannot be shown ({escape(exc.reason)})</p></figure>"
    source = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img alt="{escape(caption)}" src="{source}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def _changes(review: Review) -> str:
    if not review.changes:
        return "<p>No header diff (no output).</p>" if review.output is None else ""
    rows = "".join(
        f'<tr class="{escape(c.kind)}"><td>{escape(c.path)}</td><td>{escape(c.keyword)}</td>'
        f"<td>{escape(c.kind)}</td>"
        f'<td class="value">{escape(c.before or "")}</td>'
        f'<td class="value">{escape(c.after or "")}</td></tr>'
        for c in review.changes
    )
    return (
        '<table class="changes"><tr><th>tag path</th><th>keyword</th><th>change</th>'
        f"<th>before</th><th>after</th></tr>{rows}</table>"
    )
