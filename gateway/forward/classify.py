"""What an answer or a failure of the analysis server means for the instance sent.

This module is the only place that interprets httpx: every exception class httpx exports has
an explicit verdict here (a test fails when httpx adds one we have not classified), and every
status code falls in one of protocol v1's classes:

- `done`: 201 stored, 200 already stored with the same digest;
- `conflict`: 409, stored with other content - recorded, never resent;
- `permanent`: any other 4xx, and our own mistakes (a bad URL, a request httpx refuses to
  write) - dead letter with the reason, never retried in a loop;
- `transient`: 5xx, 429, timeouts, refused or reset connections - retried with backoff,
  honouring Retry-After;
- `rejected`: the server's certificate failed verification (expired, another CA, another
  host) or the TLS handshake failed - nothing was sent; retried at the slowest pace only, so
  the gateway does not hammer a misconfigured server.
"""

from __future__ import annotations

import email.utils
import enum
import ssl
import time
from dataclasses import dataclass

import httpx


class Kind(enum.Enum):
    DONE = "done"
    CONFLICT = "conflict"
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str  # a fixed code for logs and metrics: never a value from the wire
    retry_after: float | None = None  # seconds the server asked us to wait

    @property
    def final(self) -> bool:
        return self.kind in (Kind.DONE, Kind.CONFLICT, Kind.PERMANENT)


_T, _P = Kind.TRANSIENT, Kind.PERMANENT
#: Every exception class httpx exports, with its verdict (most specific first wins).
ERRORS: dict[type[Exception], tuple[Kind, str]] = {
    httpx.ConnectTimeout: (_T, "connect-timeout"),
    httpx.ReadTimeout: (_T, "read-timeout"),
    httpx.WriteTimeout: (_T, "write-timeout"),
    httpx.PoolTimeout: (_T, "pool-timeout"),
    httpx.TimeoutException: (_T, "timeout"),
    httpx.ConnectError: (_T, "connect-failed"),
    httpx.ReadError: (_T, "connection-lost"),
    httpx.WriteError: (_T, "connection-lost"),
    httpx.CloseError: (_T, "connection-lost"),
    httpx.NetworkError: (_T, "network-error"),
    httpx.RemoteProtocolError: (_T, "bad-response"),
    httpx.LocalProtocolError: (_P, "request-not-writable"),
    httpx.ProtocolError: (_T, "protocol-error"),
    httpx.ProxyError: (_T, "proxy-error"),
    httpx.UnsupportedProtocol: (_P, "bad-url"),
    httpx.TransportError: (_T, "transport-error"),
    httpx.DecodingError: (_T, "bad-response"),
    httpx.TooManyRedirects: (_P, "redirected"),
    httpx.RequestError: (_T, "request-error"),
    httpx.HTTPStatusError: (_P, "status-error"),
    httpx.HTTPError: (_T, "http-error"),
    httpx.InvalidURL: (_P, "bad-url"),
    httpx.CookieConflict: (_P, "client-error"),
    httpx.RequestNotRead: (_P, "client-error"),
    httpx.ResponseNotRead: (_P, "client-error"),
    httpx.StreamClosed: (_P, "client-error"),
    httpx.StreamConsumed: (_P, "client-error"),
    httpx.StreamError: (_P, "client-error"),
}
#: What a request through httpx can raise: its exceptions, and OS errors under them.
HTTPX_ERRORS: tuple[type[Exception], ...] = (*ERRORS, OSError)
_TRANSIENT_STATUS = frozenset({408, 425, 429})
#: what the forwarder's own SPKI pin check raises (as an SSLCertVerificationError)
PIN_MISMATCH = "server public key does not match the pin"


def classify_error(exc: Exception) -> Verdict:
    """The verdict on a request that raised `exc` (httpx's, or an OSError under it)."""
    if _certificate_problem(exc):
        return Verdict(Kind.REJECTED, _certificate_reason(exc))
    if _tls_problem(exc):
        return Verdict(Kind.REJECTED, "tls-handshake-failed")
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            kind, reason = ERRORS[cls]
            return Verdict(kind, reason)
    if isinstance(exc, OSError):
        return Verdict(Kind.TRANSIENT, "network-error")
    return Verdict(Kind.PERMANENT, "unexpected-error")


def classify_response(status: int, headers: httpx.Headers) -> Verdict:
    if status in (200, 201):
        return Verdict(Kind.DONE, "stored" if status == 201 else "already-stored")
    if status == 409:
        return Verdict(Kind.CONFLICT, "conflict")
    if status in _TRANSIENT_STATUS or status >= 500:
        return Verdict(Kind.TRANSIENT, f"http-{status}", retry_after(headers))
    return Verdict(Kind.PERMANENT, f"http-{status}")


def retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or an HTTP date), if any."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _causes(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _certificate_problem(exc: BaseException) -> bool:
    return any(isinstance(e, ssl.SSLCertVerificationError) for e in _causes(exc)) or (
        isinstance(exc, httpx.ConnectError) and "CERTIFICATE_VERIFY_FAILED" in str(exc)
    )


#: OpenSSL X509_V_ERR_* codes (x509_vfy.h) -> why the server's certificate was refused
_VERIFY_CODES = {
    9: "server-certificate-not-yet-valid",
    10: "server-certificate-expired",
    62: "server-certificate-wrong-host",
    64: "server-certificate-wrong-host",
    2: "server-certificate-untrusted",
    18: "server-certificate-untrusted",
    19: "server-certificate-untrusted",
    20: "server-certificate-untrusted",
    21: "server-certificate-untrusted",
}


def _certificate_reason(exc: BaseException) -> str:
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            if cause.args and cause.args[0] == PIN_MISMATCH:
                return "server-key-not-pinned"
            code = getattr(cause, "verify_code", None)
            return _VERIFY_CODES.get(code or -1, "server-certificate-rejected")
    return "server-certificate-rejected"


def _tls_problem(exc: BaseException) -> bool:
    return isinstance(exc, httpx.ConnectError) and (
        any(isinstance(e, ssl.SSLError) for e in _causes(exc)) or "SSL" in str(exc)
    )
