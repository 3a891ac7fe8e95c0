"""`dicom-gateway console run`: the console as an HTTPS server (uvicorn), TLS >= 1.2, on
`console.host` (loopback by default). With `console.client_ca`, the handshake also requires a
client certificate from that CA (a certificate from another CA, or none, fails it) - a second
factor before the officer's name and password. It serves the socket the way the reference
receiver does (`receiver.uvicorn_seam`, checked before the socket is bound): port 0 works, and
the port used is logged (`console.listening`). SIGTERM/SIGINT: running requests finish, exit 0.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import uvicorn

from gateway.console.app import Console
from gateway.console.officers import Officers
from gateway.console.views import Reviewing
from gateway.errors import ConfigError
from gateway.logs import get_logger, ignore_hangups
from gateway.receiver.uvicorn_seam import (
    check_uvicorn,
    exit_quietly_after_signals,
    listening_socket,
)
from gateway.settings import Settings

log = get_logger("gateway.console")


def required(settings: Settings) -> tuple[Path, Path, Path]:
    c = settings.console
    missing = [
        name
        for name, value in (
            ("certificate", c.certificate),
            ("private_key", c.private_key),
            ("officers", c.officers),
        )
        if value is None
    ]
    if missing:
        raise ConfigError(
            [f"{settings.source}: console.{n}: is required to run the console" for n in missing]
        )
    certificate, private_key, officers = c.certificate, c.private_key, c.officers
    if certificate is None or private_key is None or officers is None:  # for the type checker
        raise AssertionError("checked above")
    return certificate, private_key, officers


def _tls_1_2_at_least(config: uvicorn.Config, make: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    context = make()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def serve(settings: Settings) -> None:
    certificate, private_key, officers = required(settings)
    client_ca = settings.console.client_ca
    reviewing = Reviewing(settings)
    app = Console(settings, Officers(officers), reviewing).app()
    config = uvicorn.Config(
        app,
        ssl_certfile=str(certificate),
        ssl_keyfile=str(private_key),
        ssl_ca_certs=str(client_ca) if client_ca is not None else None,
        ssl_cert_reqs=ssl.CERT_REQUIRED if client_ca is not None else ssl.CERT_NONE,
        ssl_context_factory=_tls_1_2_at_least,
        log_config=None,
        access_log=False,  # the console logs routes and status codes itself, never a path
        lifespan="off",
        server_header=False,
        timeout_keep_alive=30,
        timeout_graceful_shutdown=5,
    )
    check_uvicorn()
    sock = listening_socket(settings.console.host, settings.console.port, "console.port")
    # nothing to reload: officers are read at every sign-in, the other keys need a restart;
    # before the "listening" line, which tells a supervisor (or a test) it may signal
    ignore_hangups("console.hangup_ignored")
    log.info("console.listening", host=settings.console.host, port=sock.getsockname()[1],
             client_certificates=client_ca is not None)  # fmt: skip
    exit_quietly_after_signals()
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        reviewing.close()
    log.info("console.stopped")
