"""Structured JSON logs with no PHI (DESIGN promise 4).

Our own code logs events with PHI-free fields only: configured names, hashes, counts, reasons.
Libraries are the risk: pydicom warnings and pynetdicom messages can quote element values, UIDs
or AE titles read from the wire. Their records therefore pass through `_LibraryHandler`, which
keeps the logger name, level and exception type and drops the message text.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from collections.abc import MutableMapping
from types import FrameType
from typing import Any, TextIO

import structlog

from gateway.settings import LoggingSettings

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR
_UNSAFE_TYPES = (bytes, bytearray, memoryview)


def _redact_unsafe_values(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Safety net: raw bytes and DICOM objects never reach a log line, whoever passes them."""
    for key, value in event.items():
        module = type(value).__module__
        if isinstance(value, _UNSAFE_TYPES) or module.startswith(("pydicom", "pynetdicom")):
            event[key] = "<redacted>"
    return event


class _LibraryHandler(logging.Handler):
    """Re-emit library log records as PHI-free structlog events."""

    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = {"library": record.name.split(".")[0]}
        if record.exc_info and record.exc_info[0] is not None:
            fields["exception"] = record.exc_info[0].__name__
        structlog.get_logger("gateway.library").log(record.levelno, "library.log", **fields)


def _thread_crashed(args: threading.ExceptHookArgs) -> None:
    """Replaces the default hook, which prints the exception's message (maybe PHI) to stderr."""
    structlog.get_logger("gateway").error(
        "thread.crashed",
        thread=args.thread.name if args.thread is not None else None,
        exception=args.exc_type.__name__,
    )


def configure(settings: LoggingSettings, stream: TextIO = sys.stderr) -> None:
    """Set up structlog and route library logging and warnings through the redacting handler."""
    level = _LEVELS[settings.level]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_unsafe_values,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    logging.captureWarnings(True)
    threading.excepthook = _thread_crashed
    root = logging.getLogger()
    root.handlers[:] = [_LibraryHandler()]
    root.setLevel(logging.WARNING)


def ignore_hangups(event: str) -> None:
    """SIGHUP (`kill -HUP`, a closed terminal) must not end a process that has nothing to
    reload: it writes the one line `event` to stderr and goes on. Written with os.write, not
    through structlog: a signal may interrupt a thread that holds the log writer's lock."""
    line = json.dumps({"event": event, "level": "info"}).encode() + b"\n"

    def noted(signum: int, frame: FrameType | None) -> None:
        os.write(2, line)

    signal.signal(signal.SIGHUP, noted)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
