"""Dates and ages under PS3.15 E.3.6 (Retain Longitudinal Temporal Information) and Safe Harbor.

- Modified dates: every DA and DT value of a patient moves by the same whole number of days, so
  intervals between a patient's dates (across studies too) are preserved. TM values are times
  of day and stay as they are when whole days move.
- Year-only (strict HIPAA Safe Harbor, 45 CFR 164.514(b)(2)(i)(C)): every date keeps its year.
- Ages (AS) over 89 years become 090Y.

Values may be multi-valued (backslash-separated), of partial precision (YYYY, YYYYMM,
YYYYMMDDHH...) or in the ACR-NEMA forms YYYY.MM.DD and HH:MM:SS of older archives (written back
as YYYYMMDD and HHMMSS);
a value that does not parse raises ValueError, which the caller treats as a reason to empty the
element rather than to let it through.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

# YYYYMMDD, partial precision, and the ACR-NEMA form YYYY.MM.DD (retired; PS3.5 2002 6.2):
# read in either, written in the current one
_DA = re.compile(r"^(\d{4})(?:\.?(\d{2}))?(?:\.?(\d{2}))?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2,}(?:\.\d{1,6})?)?([+-]\d{4})?$")
# HHMMSS.FFFFFF, partial precision, and the retired HH:MM:SS.FFFFFF
_TM = re.compile(r"^(\d{2})(?::?(\d{2}))?(?::?(\d{2}))?(\.\d{1,6})?$")
_AS = re.compile(r"^(\d{3})([DWMY])$")
_DAYS_PER = {"D": 1.0, "W": 7.0, "M": 365.25 / 12, "Y": 365.25}


def _per_value(
    value: str, pattern: re.Pattern[str], vr: str, fn: Callable[[re.Match[str]], str]
) -> str:
    """Apply `fn` to each backslash-separated value; empty values stay empty; a value that
    does not match `pattern` raises ValueError (without echoing it: it may be PHI)."""
    out: list[str] = []
    for part in (p.strip() for p in value.split("\\")):
        if not part:
            out.append(part)
            continue
        match = pattern.match(part)
        if match is None:
            raise ValueError(f"not a {vr} value")
        out.append(fn(match))
    return "\\".join(out)


def _shift_date(year: str, month: str | None, day: str | None, days: int) -> str:
    """Shift a (possibly partial) date; the result keeps the input's precision (a partial
    date moves as its first day, then is cut back to its precision)."""
    base = dt.date(int(year), int(month or 1), int(day or 1))
    moved = base + dt.timedelta(days=days)
    text = f"{moved.year:04d}"
    if month:
        text += f"{moved.month:02d}"
    if day:
        text += f"{moved.day:02d}"
    return text


def shift_da(value: str, days: int) -> str:
    """DA (YYYYMMDD, or legacy partial precision) moved by `days`; empty values stay empty."""
    return _per_value(value, _DA, "DA", lambda m: _shift_date(m[1], m[2], m[3], days))


def shift_dt(value: str, days: int) -> str:
    """DT moved by `days`: the date part moves, time of day and UTC offset stay."""

    def shift(m: re.Match[str]) -> str:
        return _shift_date(m[1], m[2], m[3], days) + (m.group(4) or "") + (m.group(5) or "")

    return _per_value(value, _DT, "DT", shift)


def current_tm(value: str) -> str:
    """TM in the current form HHMMSS.FFFFFF: the retired HH:MM:SS (PS3.5 2002 6.2) loses its
    colons; a value in neither form raises ValueError."""
    return _per_value(value, _TM, "TM", lambda m: "".join(g or "" for g in m.groups()))


def year_only(value: str, vr: str) -> str:
    """DA/DT reduced to the year (Safe Harbor); TM has no year and becomes empty."""
    if vr == "TM":
        return ""
    return _per_value(value, _DA if vr == "DA" else _DT, vr, lambda m: m.group(1))


def aggregate_age(value: str) -> str:
    """AS over 89 years -> 090Y (Safe Harbor: ages over 89 aggregated); others unchanged."""

    def aggregate(m: re.Match[str]) -> str:
        over_89 = int(m.group(1)) * _DAYS_PER[m.group(2)] >= 90 * 365.25
        return "090Y" if over_89 else m.group(0)

    return _per_value(value, _AS, "AS", aggregate)
