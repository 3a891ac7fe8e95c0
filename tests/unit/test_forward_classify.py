"""What answers and failures of the analysis server mean, and when to try again (issue 6)."""

from __future__ import annotations

import random
import ssl

import httpx
import pytest

from gateway.forward.backoff import Backoff
from gateway.forward.classify import (
    ERRORS,
    Kind,
    Verdict,
    classify_error,
    classify_response,
    retry_after,
)


def test_every_exception_class_httpx_exports_is_classified() -> None:
    exported = {
        getattr(httpx, name)
        for name in httpx.__all__
        if isinstance(getattr(httpx, name), type) and issubclass(getattr(httpx, name), Exception)
    }
    assert len(exported) >= 25
    assert exported - set(ERRORS) == set()  # httpx grew an exception: classify it


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (201, Kind.DONE),
        (200, Kind.DONE),
        (409, Kind.CONFLICT),
        (400, Kind.PERMANENT),
        (401, Kind.PERMANENT),
        (403, Kind.PERMANENT),
        (404, Kind.PERMANENT),
        (413, Kind.PERMANENT),
        (422, Kind.PERMANENT),
        (408, Kind.TRANSIENT),
        (429, Kind.TRANSIENT),
        (500, Kind.TRANSIENT),
        (502, Kind.TRANSIENT),
        (503, Kind.TRANSIENT),
        (504, Kind.TRANSIENT),
        (301, Kind.PERMANENT),
    ],
)
def test_status_codes_follow_protocol_v1(status: int, kind: Kind) -> None:
    assert classify_response(status, httpx.Headers()).kind is kind


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after(httpx.Headers({"Retry-After": "120"})) == 120.0
    date = httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"})
    assert retry_after(date, now=1445412480.0) == pytest.approx(30.0)
    assert retry_after(httpx.Headers({"Retry-After": "soon"})) is None
    verdict = classify_response(503, httpx.Headers({"Retry-After": "7"}))
    assert (verdict.kind, verdict.retry_after) == (Kind.TRANSIENT, 7.0)


def test_transport_failures_are_transient_and_certificates_rejected() -> None:
    request = httpx.Request("PUT", "https://127.0.0.1/v1/studies/1/manifest")
    assert classify_error(httpx.ReadTimeout("t", request=request)).kind is Kind.TRANSIENT
    assert classify_error(httpx.RemoteProtocolError("reset")).kind is Kind.TRANSIENT
    assert classify_error(ConnectionResetError()).kind is Kind.TRANSIENT
    assert classify_error(httpx.UnsupportedProtocol("ftp")).kind is Kind.PERMANENT
    try:
        raise httpx.ConnectError("failed") from ssl.SSLCertVerificationError("expired")
    except httpx.ConnectError as exc:
        rejected = classify_error(exc)
    assert (rejected.kind, rejected.reason) == (Kind.REJECTED, "server-certificate-rejected")


def test_backoff_grows_to_its_ceiling_honours_retry_after_and_gives_up() -> None:
    policy = Backoff(base=1.0, ceiling=60.0, give_up_after=24 * 3600.0)
    rng = random.Random(5)  # noqa: S311 - jitter in a test, not a secret
    transient = Verdict(Kind.TRANSIENT, "http-503")
    delays = [policy.delay(n, transient, rng) for n in range(12)]
    assert all(0.5 * min(60.0, 2.0**n) <= d <= min(60.0, 2.0**n) for n, d in enumerate(delays))
    assert max(delays) <= 60.0
    assert policy.delay(0, Verdict(Kind.TRANSIENT, "http-429", retry_after=30.0), rng) >= 30.0
    assert policy.delay(0, Verdict(Kind.TRANSIENT, "x", retry_after=1e9), rng) <= 3600.0
    assert policy.delay(0, Verdict(Kind.REJECTED, "server-certificate-rejected"), rng) == 60.0
    assert not policy.exhausted(first_attempt=0.0, now=23 * 3600.0)
    assert policy.exhausted(first_attempt=0.0, now=24 * 3600.0)
