"""Date shifting keeps intervals and precision; Safe Harbor years; ages over 89."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.deidentify.dates import aggregate_age, shift_da, shift_dt, year_only


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20240301", -1, "20240229"),  # leap day
        ("20231231", 1, "20240101"),
        ("20240115\\20240220", -30, "20231216\\20240121"),  # multi-valued
        ("2024", 400, "2025"),  # year precision kept
        ("202402", 29, "202403"),  # month precision kept
        ("", -10, ""),
        ("20240115\\", 1, "20240116\\"),
        ("2024.03.01", -1, "20240229"),  # ACR-NEMA form of older archives: written anew
        ("1998.12.31\\1999.01.02", 1, "19990101\\19990103"),
    ],
)
def test_shift_da(value: str, days: int, expected: str) -> None:
    assert shift_da(value, days) == expected


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20240301123015.123456+0100", -1, "20240229123015.123456+0100"),
        ("20240301", 2, "20240303"),
        ("2024030112", 1, "2024030212"),
        ("202403", -31, "202401"),  # partial: shifted as its first day, then truncated
    ],
)
def test_shift_dt(value: str, days: int, expected: str) -> None:
    assert shift_dt(value, days) == expected


def test_intervals_between_a_patients_dates_are_preserved() -> None:
    dates = ["19991231", "20000229", "20240615"]
    shifted = [shift_da(d, -4321) for d in dates]

    def parse(value: str) -> dt.date:
        return dt.datetime.strptime(value, "%Y%m%d").date()

    for a, b, sa, sb in zip(dates, dates[1:], shifted, shifted[1:], strict=False):
        assert parse(b) - parse(a) == parse(sb) - parse(sa)


@pytest.mark.parametrize(
    ("value", "vr", "expected"),
    [
        ("20240301", "DA", "2024"),
        ("20240301123015+0100\\19990101", "DT", "2024\\1999"),
        ("123015", "TM", ""),
    ],
)
def test_year_only(value: str, vr: str, expected: str) -> None:
    assert year_only(value, vr) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("089Y", "089Y"),
        ("090Y", "090Y"),
        ("104Y", "090Y"),
        ("999M", "999M"),  # 83.25 years
        ("012W", "012W"),
        ("", ""),
    ],
)
def test_aggregate_age(value: str, expected: str) -> None:
    assert aggregate_age(value) == expected


@pytest.mark.parametrize("bad", ["2024-03-01", "yesterday", "2024030"])
def test_unparseable_dates_raise(bad: str) -> None:
    with pytest.raises(ValueError, match="not a DA"):
        shift_da(bad, 1)
