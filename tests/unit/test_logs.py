"""Logs carry events, never values read from the wire or from data sets."""

from __future__ import annotations

import io
import json
import logging
import warnings

from gateway.logs import configure, get_logger
from gateway.settings import LoggingSettings


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_library_messages_lose_their_text() -> None:
    stream = io.StringIO()
    configure(LoggingSettings(level="info"), stream)
    logging.getLogger("pynetdicom.acse").error("Calling AE 'SECRET_AE' for DOE^JOHN rejected")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        logging.captureWarnings(True)
        warnings.warn("Invalid value 'DOE^JANE' for VR PN", UserWarning, stacklevel=1)
    out = stream.getvalue()
    assert "DOE^" not in out
    assert "SECRET_AE" not in out
    events = lines(stream)
    assert {e["library"] for e in events} == {"pynetdicom", "py"}
    assert {e["event"] for e in events} == {"library.log"}


def test_raw_bytes_are_redacted_whoever_logs_them() -> None:
    stream = io.StringIO()
    configure(LoggingSettings(level="info"), stream)
    get_logger("test").info("oops", blob=b"DOE^JOHN", count=3)
    [event] = lines(stream)
    assert event["blob"] == "<redacted>"
    assert event["count"] == 3
