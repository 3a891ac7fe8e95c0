"""Builds every object once, starts them in order, and drains on SIGTERM.

Start order: spool (recovery, lock) -> metrics endpoint -> DICOM listener last, so nothing is
acknowledged before the place it goes to is ready. Stop order is the reverse: stop accepting,
let running associations finish (bounded), then exit. A second signal exits at once; nothing
acknowledged can be lost by that, because acknowledged instances are already fsynced.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType

from prometheus_client import CollectorRegistry, start_http_server

from gateway.errors import ListenError
from gateway.ingest import IngestService
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.settings import Settings
from gateway.spool import Spool

log = get_logger("gateway.app")


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.spool = Spool.open(settings.spool)
        self.metrics.watch_free_space(self.spool.free_bytes)
        self.ingest = IngestService(settings.ingest, self.spool, self.metrics)
        self._stop = threading.Event()
        self._signals = 0
        self._signal: int = signal.SIGTERM

    def _listen(self) -> None:
        if self.settings.metrics.enabled:
            m = self.settings.metrics
            server, _ = start_http_server(m.port, addr=m.host, registry=self.registry)
            log.info("metrics.listening", host=m.host, port=server.server_port)
        self.ingest.start()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # No logging here: the signal may interrupt this thread while it holds the log
        # writer's lock, and logging again would wait for it forever (seen under load).
        self._signals += 1
        if self._signals > 1:
            os.write(2, b'{"event": "gateway.forced_exit", "level": "warning"}\n')
            os._exit(128 + signum)
        self._signal = signum
        self._stop.set()

    def serve(self) -> int:
        """Run until SIGTERM or SIGINT; returns the process exit code."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        try:
            self._listen()
        except OSError as exc:
            self.spool.close()
            raise ListenError(f"cannot listen: {exc.strerror or exc.__class__.__name__}") from None
        log.info("gateway.started", spool=str(self.spool.root))
        self._stop.wait()
        log.info("gateway.stopping", signal=signal.Signals(self._signal).name)
        aborted = self.ingest.stop()
        self.spool.close()
        log.info("gateway.stopped", aborted_associations=aborted)
        return 0
