"""`dicom-gateway receiver`: the reference receiver as an HTTPS server (uvicorn), mutual TLS.

Clients must present a certificate issued by `receiver.client_ca` (TLS >= 1.2; a client
without one fails the handshake). The listening socket is bound before uvicorn starts, so port
0 works and the port actually used is logged (`receiver.listening`). SIGTERM/SIGINT: uvicorn
finishes running requests and the command exits 0. What this relies on of uvicorn and asyncio
beyond their documented behaviour is in `uvicorn_seam`, checked before the socket is bound.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import structlog
import uvicorn

from gateway.errors import ConfigError
from gateway.logs import ignore_hangups
from gateway.receiver.app import build
from gateway.receiver.demo import DemoAnalysis
from gateway.receiver.results import Results
from gateway.receiver.store import Store
from gateway.receiver.uvicorn_seam import (
    check_uvicorn,
    exit_quietly_after_signals,
    listening_socket,
)
from gateway.seal.keys import read_private, read_public
from gateway.settings import Settings

log = structlog.get_logger("gateway.receiver")
MAX_BODY_BYTES = 4 * 1024**3


def _required(settings: Settings) -> tuple[Path, Path, Path, Path, Path]:
    r = settings.receiver
    values = (r.certificate, r.private_key, r.client_ca, r.hpke_private_key, r.storage)
    names = ("certificate", "private_key", "client_ca", "hpke_private_key", "storage")
    missing = [name for name, value in zip(names, values, strict=True) if value is None]
    if missing:
        raise ConfigError(
            [f"{settings.source}: receiver.{n}: is required to run the receiver" for n in missing]
        )
    certificate, private_key, client_ca, hpke_key, storage = [v for v in values if v is not None]
    return certificate, private_key, client_ca, hpke_key, storage


def _tls_1_2_at_least(config: uvicorn.Config, make: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    context = make()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _demo(settings: Settings, storage: Path, demo_analysis: bool) -> DemoAnalysis | None:
    if not (demo_analysis or settings.receiver.demo_analysis):
        return None
    if settings.receiver.results_key is None:
        raise ConfigError(
            [f"{settings.source}: receiver.results_key: is required for the demo analysis"]
        )
    return DemoAnalysis(storage, Results(storage))


def serve(settings: Settings, demo_analysis: bool = False) -> None:
    """Run the receiver until SIGTERM/SIGINT; with `demo_analysis` (or the setting), the
    demo analysis beside it, in one thread started before the listener and stopped after."""
    certificate, private_key, client_ca, hpke_key, storage = _required(settings)
    key = read_private(hpke_key)
    storage.mkdir(parents=True, exist_ok=True)
    results_key = settings.receiver.results_key
    demo = _demo(settings, storage, demo_analysis)
    app = build(
        key,
        Store(storage),
        MAX_BODY_BYTES,
        Results(storage) if results_key is not None else None,
        read_public(results_key) if results_key is not None else None,
        demo.submit if demo is not None else None,
    )
    config = uvicorn.Config(
        app,
        ssl_certfile=str(certificate),
        ssl_keyfile=str(private_key),
        ssl_ca_certs=str(client_ca),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
        ssl_context_factory=_tls_1_2_at_least,
        log_config=None,
        access_log=False,
        lifespan="off",
        server_header=False,
        timeout_keep_alive=30,
        # on SIGTERM: requests in flight get this long; idle keep-alive connections (the
        # gateway holds some open) would otherwise keep the server up for timeout_keep_alive
        timeout_graceful_shutdown=5,
    )
    check_uvicorn()  # an incompatible upgrade fails here, naming what changed
    # bound before uvicorn starts: port 0 works, and a client reading the log may connect at once
    sock = listening_socket(settings.receiver.host, settings.receiver.port, "receiver.port")
    # a closed terminal must not end it; set before the "listening" line, which tells a
    # supervisor (or a test) it may signal
    ignore_hangups("receiver.hangup_ignored")
    log.info(
        "receiver.listening",
        host=settings.receiver.host,
        port=sock.getsockname()[1],
        key_id=key.public.key_id,
    )
    exit_quietly_after_signals()  # uvicorn re-raises the signal it stopped on
    if demo is not None:
        demo.start()
        log.info("receiver.demo_analysis_started")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if demo is not None:
            demo.stop()
    log.info("receiver.stopped")
