"""The one place that relies on how httpx opens a TLS connection; the forwarder calls only this.

When a pin is configured, the forwarder refuses a server whose public key differs, right after
the handshake and before any request is written. httpx has no hook between the two, so
`PinnedContext` overrides `ssl.SSLContext.wrap_socket` and relies on three things httpx and
httpcore do but do not document (each an entry of `INTERNALS`):

- `httpx.HTTPTransport(verify=context)` opens every connection with that context object itself,
  not a copy, so the subclass's `wrap_socket` runs;
- httpcore's sync backend starts TLS by calling `context.wrap_socket(sock, server_hostname=host)`
  on the plain TCP socket (not through `wrap_bio`, which it keeps for TLS inside a proxy);
- what `wrap_socket` raises reaches the caller as `httpx.ConnectError` with it in the cause
  chain, where `classify` reads the pin mismatch as `server-key-not-pinned`.

Were the first two to change, the pin would silently not be checked. `check_httpx()` (run when
the forwarder is built with its real transport) therefore makes one connection to a loopback
socket of its own through a real `HTTPTransport` and raises `IncompatibleHttpx` naming each
reliance that no longer holds and the installed versions. Checked against `CHECKED_WITH`.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.errors import IncompatibleHttpx
from gateway.forward.classify import PIN_MISMATCH, classify_error

#: httpx and httpcore versions every reliance below was read and tested against.
CHECKED_WITH: dict[str, tuple[str, ...]] = {"httpx": ("0.28.1",), "httpcore": ("1.0.9",)}

_PROBE_HOST = "127.0.0.1"
_PROBE_TIMEOUT = 1.0  # only a broken httpx waits for it: a TLS handshake nobody answers


class PinnedContext(ssl.SSLContext):
    """An SSLContext that also checks the server's public key against `pin` (SHA-256 of its
    SubjectPublicKeyInfo) after the handshake; on a mismatch the connection is closed before a
    byte of the request is written and `ssl.SSLCertVerificationError(PIN_MISMATCH)` is raised.
    """

    pin: bytes | None = None

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        wrapped = super().wrap_socket(sock, *args, **kwargs)
        if self.pin is not None:
            der = wrapped.getpeercert(binary_form=True)
            if der is None or spki_sha256(der) != self.pin:
                wrapped.close()
                raise ssl.SSLCertVerificationError(PIN_MISMATCH)
        return wrapped


def spki_sha256(certificate_der: bytes) -> bytes:
    """SHA-256 of a certificate's SubjectPublicKeyInfo (what `spki_pin` holds, in base64)."""
    public = x509.load_der_x509_certificate(certificate_der).public_key()
    spki = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


# -- the check -------------------------------------------------------------------------------


class _Recorder(ssl.SSLContext):
    """Notes how httpx calls `wrap_socket`, then fails as a pin mismatch would."""

    calls: list[tuple[socket.socket, tuple[Any, ...], dict[str, Any]]]

    def wrap_socket(self, sock: socket.socket, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        self.calls.append((sock, args, kwargs))
        raise ssl.SSLCertVerificationError(PIN_MISMATCH)


@dataclass
class Observed:
    """What one request through a real `HTTPTransport` with a recording context showed."""

    calls: list[tuple[socket.socket, tuple[Any, ...], dict[str, Any]]] = field(default_factory=list)
    error: Exception | None = None


def observe() -> Observed:
    """One HTTPS request to a loopback socket that listens but never answers: the recording
    context's `wrap_socket` fails it before the handshake, so no peer is needed."""
    context = _Recorder(ssl.PROTOCOL_TLS_CLIENT)
    observed = Observed()
    context.calls = observed.calls
    with socket.create_server((_PROBE_HOST, 0)) as listener:
        url = f"https://{_PROBE_HOST}:{listener.getsockname()[1]}/"
        transport = httpx.HTTPTransport(verify=context)
        with httpx.Client(transport=transport, timeout=_PROBE_TIMEOUT, trust_env=False) as client:
            try:
                client.get(url)
            except httpx.HTTPError as exc:
                observed.error = exc
    return observed


def _plain_socket_and_host(observed: Observed) -> bool:
    if len(observed.calls) != 1:
        return False
    sock, args, kwargs = observed.calls[0]
    plain = isinstance(sock, socket.socket) and not isinstance(sock, ssl.SSLSocket)
    return plain and args == () and kwargs == {"server_hostname": _PROBE_HOST}


def _reaches_classify(observed: Observed) -> bool:
    error = observed.error
    return isinstance(error, httpx.ConnectError) and (
        classify_error(error).reason == "server-key-not-pinned"
    )


@dataclass(frozen=True)
class Reliance:
    """One thing about httpx/httpcore the pin relies on, and how to tell it still holds."""

    name: str
    expected: str
    holds: Callable[[Observed], bool]


INTERNALS: tuple[Reliance, ...] = (
    Reliance(
        "httpx.HTTPTransport(verify=ssl_context)",
        "the given context object itself opens each connection, so a subclass's wrap_socket runs",
        lambda observed: len(observed.calls) > 0,
    ),
    Reliance(
        "httpcore sync backend start_tls -> SSLContext.wrap_socket",
        "wrap_socket(sock, server_hostname=host) called once, on the plain TCP socket",
        _plain_socket_and_host,
    ),
    Reliance(
        "an error raised in SSLContext.wrap_socket",
        "reaches the caller as httpx.ConnectError with it in the cause chain "
        "(classified server-key-not-pinned)",
        _reaches_classify,
    ),
)


def versions() -> dict[str, str]:
    return {"httpx": str(httpx.__version__), "httpcore": str(httpcore.__version__)}


def check_httpx() -> dict[str, str]:
    """Verify every reliance in `INTERNALS`; return the installed httpx and httpcore versions.

    Raises `IncompatibleHttpx` naming each reliance that no longer holds, the shape expected,
    the installed versions and the versions this module was checked against.
    """
    observed = observe()
    broken = [f"{r.name} (expected: {r.expected})" for r in INTERNALS if not r.holds(observed)]
    installed = versions()
    if broken:
        raise IncompatibleHttpx(
            f"{_named(installed)} installed, but the forwarder's SPKI pin relies on how they open "
            f"TLS connections, checked against {_named(CHECKED_WITH)}, and this changed: "
            + "; ".join(broken)
            + ". Adapt gateway/forward/httpx_seam.py or install a checked version."
        )
    return installed


def _named(versions: dict[str, str] | dict[str, tuple[str, ...]]) -> str:
    return ", ".join(
        f"{name} {v if isinstance(v, str) else ' or '.join(v)}" for name, v in versions.items()
    )
