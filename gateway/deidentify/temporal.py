"""The actions on dates, times and ages (`actions.py`): PS3.15 E.3.6 and Safe Harbor.

A date is shifted by the patient's offset (intervals kept) or cut to its year, an age over 89
becomes 090Y (`dates.py` does the arithmetic); a value that does not parse is emptied, never
left as it was. A time, or a date that is kept, stays as it is unless written in a retired
form, which is written in the current one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from pydicom.dataset import Dataset

from gateway.deidentify import dates
from gateway.deidentify.actions import Job, OnValue
from gateway.deidentify.elements import Element, ascii_map, ascii_text, emptied
from gateway.deidentify.encode import Out


def _mapped(job: Job, ds: Dataset, elem: Element, fn: Callable[[str], str], done: str) -> Out:
    """A date or age re-made by `fn`; a value that does not parse is emptied (a Type 2 date
    stays present), never left as it was."""
    try:
        result = ascii_map(ds, elem, fn, b" ")
    except ValueError:
        job.counts["emptied_unreadable"] += 1
        return emptied(elem)  # unreadable: nothing of it goes, the attribute stays
    job.counts[done] += 1
    return result


@dataclass(frozen=True)
class ShiftDate(OnValue):
    """A date (DA) or date-time (DT) moved by the patient's offset: intervals stay true."""

    vr: str
    CODE = "C"
    EMPTIES = True

    def describe(self) -> str:
        return "shift by the patient's date offset (intervals kept)"

    def change(self, job: Job, ds: Dataset, elem: Element) -> Out | None:
        shift = dates.shift_da if self.vr == "DA" else dates.shift_dt
        return _mapped(job, ds, elem, partial(shift, days=job.offset()), "dates")


@dataclass(frozen=True)
class YearOnly(OnValue):
    """A date (DA) or date-time (DT) cut to its year (longitudinal_dates = "year")."""

    vr: str
    CODE = "C"
    EMPTIES = True

    def describe(self) -> str:
        return "keep the year only"

    def change(self, job: Job, ds: Dataset, elem: Element) -> Out | None:
        return _mapped(job, ds, elem, partial(dates.year_only, vr=self.vr), "dates")


@dataclass(frozen=True)
class AggregateAge(OnValue):
    CODE = "C"
    EMPTIES = True

    def describe(self) -> str:
        return "keep, ages over 89 as 090Y"

    def change(self, job: Job, ds: Dataset, elem: Element) -> Out | None:
        return _mapped(job, ds, elem, dates.aggregate_age, "ages")


@dataclass(frozen=True)
class KeepForm(OnValue):
    """A time (TM), or a date (DA) that is not shifted, kept as it is, unless written in a
    retired form (ACR-NEMA YYYY.MM.DD, HH:MM:SS; PS3.5 6.2): then in the current one, or
    emptied if it cannot be read."""

    vr: str
    CODE = "K"
    EMPTIES = True
    keeps_bytes = True

    def describe(self) -> str:
        return "keep; the retired forms YYYY.MM.DD, HH:MM:SS written as now"

    def change(self, job: Job, ds: Dataset, elem: Element) -> Out | None:
        value = ascii_text(elem)
        if value is None or (":" if self.vr == "TM" else ".") not in value:
            return elem  # the current form (a TM's "." is its fraction of a second)
        try:
            new = dates.current_tm(value) if self.vr == "TM" else dates.shift_da(value, 0)
        except ValueError:
            job.counts["emptied_unreadable"] += 1
            return emptied(elem)
        if new == value:
            return elem
        job.counts["legacy_form"] += 1
        return ascii_map(ds, elem, lambda _: new, b" ")


AGGREGATE_AGE = AggregateAge()
