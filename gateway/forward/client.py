"""The forwarder: PUT sealed bodies to the analysis server over mutual TLS, and say what came of
it.

The TLS context trusts only the configured CA bundle (never the system store), requires TLS
1.2 or later, checks the host name, presents the gateway's client certificate and - when a
pin is configured - refuses a server whose public key (SHA-256 of its SubjectPublicKeyInfo)
differs, right after the handshake, before any request is written (`httpx_seam.PinnedContext`:
it relies on how httpx opens connections, checked when a pinned forwarder is built). One httpx
client keeps its HTTP/1.1 connections alive between requests; redirects are not followed.

The worker seals; `send` takes the sealed body and never raises for the network or the
server: it returns a `Verdict` (`classify`), which the caller turns into done, dead letter or
retry (`backoff`). `probe` makes the same handshake without a request, for readiness, and
reads the server certificate's expiry.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from cryptography import x509

from gateway.errors import ConfigError
from gateway.forward.classify import HTTPX_ERRORS, Verdict, classify_error, classify_response
from gateway.forward.httpx_seam import PinnedContext, check_httpx
from gateway.forward.httpx_seam import spki_sha256 as spki_sha256
from gateway.seal.envelope import (
    CONTENT_TYPE,
    KEY_ID_HEADER,
    SITE_HEADER,
    VERSION_HEADER,
    Sealed,
)
from gateway.settings import ForwardSettings, Settings


def tls_context(settings: ForwardSettings) -> ssl.SSLContext:
    context = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=str(settings.ca_bundle))
    context.load_cert_chain(str(settings.client_certificate), str(settings.client_key))
    if settings.spki_pin:
        context.pin = base64.b64decode(settings.spki_pin)
    return context


@dataclass(frozen=True)
class Probe:
    """What one TLS handshake with the analysis server showed."""

    reachable: bool
    reason: str  # "ok" or a fixed code
    not_after: float | None = None  # the server certificate's notAfter (Unix time)


class Forwarder:
    def __init__(self, settings: ForwardSettings, transport: httpx.BaseTransport | None = None):
        if settings.url is None:
            raise ValueError("forward.url is not set")
        self.base = settings.url.rstrip("/")
        self.settings = settings
        self._context: ssl.SSLContext | None = None
        if transport is None:
            if settings.spki_pin:
                check_httpx()  # an incompatible upgrade fails here, not by skipping the pin
            self._context = tls_context(settings)
            transport = httpx.HTTPTransport(
                verify=self._context,
                limits=httpx.Limits(
                    max_connections=settings.connections,
                    max_keepalive_connections=settings.connections,
                ),
                # headers and body go in separate writes: without this, Nagle and the server's
                # delayed ACK hold every request ~40 ms (20 instances/s on one connection)
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            )
        self.http = httpx.Client(
            timeout=httpx.Timeout(settings.timeout, connect=settings.connect_timeout),
            follow_redirects=False,
            transport=transport,
            # no proxy, CA file or credentials from the environment: the forwarder's TLS and
            # destination are the configuration's alone
            trust_env=False,
        )

    @classmethod
    def for_settings(cls, settings: Settings) -> Forwarder:
        """The forwarder of a site's configuration; ConfigError when a file cannot be used."""
        try:
            return cls(settings.forward)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                [f"{settings.source}: forward: cannot set up TLS: {exc.__class__.__name__}"]
            ) from None

    def send(self, item: Sealed) -> Verdict:
        """PUT one sealed instance or manifest; what came of it."""
        name = item.name
        headers = {SITE_HEADER: name.site, KEY_ID_HEADER: item.key_id}
        if name.kind == "instance":
            path = f"/v1/studies/{name.study}/instances/{name.item}"
        else:
            path = f"/v1/studies/{name.study}/manifest"
            headers[VERSION_HEADER] = name.item
        return self._put(path, item.body, headers)

    def _put(self, path: str, body: bytes, extra: dict[str, str]) -> Verdict:
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
        headers = {"Content-Type": CONTENT_TYPE, "Content-Digest": f"sha-256=:{digest}:", **extra}
        try:
            response = self.http.put(self.base + path, content=body, headers=headers)
        except HTTPX_ERRORS as exc:
            return classify_error(exc)
        return classify_response(response.status_code, response.headers)

    def probe(self, timeout: float | None = None) -> Probe:
        """One mutual-TLS handshake with the server, checked as a request would be (CA, host
        name, pin); no request is sent. For readiness: is the destination there and trusted?"""
        if self._context is None:
            return Probe(True, "ok")  # an injected transport: nothing to dial
        split = urlsplit(self.base)
        host, port = split.hostname or "", split.port or 443
        try:
            timeout = timeout or self.settings.connect_timeout
            with (
                socket.create_connection((host, port), timeout=timeout) as raw,
                self._context.wrap_socket(raw, server_hostname=host) as tls,
            ):
                der = tls.getpeercert(binary_form=True)
        except ssl.SSLCertVerificationError as exc:
            return Probe(False, classify_error(exc).reason)
        except ssl.SSLError:
            return Probe(False, "tls-handshake-failed")
        except TimeoutError:
            return Probe(False, "connect-timeout")
        except ConnectionRefusedError:
            return Probe(False, "connection-refused")
        except OSError:
            return Probe(False, "network-error")
        not_after = None
        if der is not None:
            not_after = x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()
        return Probe(True, "ok", not_after)

    def close(self) -> None:
        self.http.close()
