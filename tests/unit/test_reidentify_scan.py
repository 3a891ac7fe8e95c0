"""`restore.contains_any`, the last check of re-identification (`result-pseudonym-left`): it
must find every needle wherever it is, like `needle in data` for each, in one scan per
leading run."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.reidentify.restore import contains_any

UIDS = st.builds(lambda n: f"2.25.{n}", st.integers(min_value=0, max_value=2**128))
PSEUDONYMS = st.from_regex(r"[A-Z0-9]{1,8}-[0-9A-HJKMNP-TV-Z]{10}", fullmatch=True)
NEEDLES = st.sets(st.one_of(UIDS, PSEUDONYMS), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(needles=NEEDLES, noise=st.binary(max_size=2000), at=st.integers(min_value=0), pick=st.data())
def test_a_needle_anywhere_is_found(
    needles: set[str], noise: bytes, at: int, pick: st.DataObject
) -> None:
    needle = pick.draw(st.sampled_from(sorted(needles)))
    at %= len(noise) + 1
    data = noise[:at] + needle.encode("ascii") + noise[at:]
    assert contains_any(data, needles)


@settings(max_examples=300, deadline=None)
@given(needles=NEEDLES, data=st.binary(max_size=2000))
def test_it_agrees_with_one_search_per_needle(needles: set[str], data: bytes) -> None:
    assert contains_any(data, needles) == any(n.encode("ascii") in data for n in needles)


def test_near_misses_and_edges() -> None:
    uid = "2.25.123456789"
    assert not contains_any(b"2.25.12345678", {uid})  # cut short at the end
    assert not contains_any(b"2.25.123456780", {uid})
    assert contains_any(b"x2.25.1234567890", {uid})  # a longer UID holds it: still found
    assert contains_any(uid.encode(), {uid})
    assert not contains_any(b"anything", set())
    assert not contains_any(b"", {uid})
    big = bytearray(os.urandom(1_000_000))
    spot = 654_321
    big[spot:spot] = b"SITE-0123456789"
    assert contains_any(bytes(big), {uid, "SITE-0123456789"})
