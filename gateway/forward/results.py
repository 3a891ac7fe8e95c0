"""The gateway's end of the results channel (docs/protocol.md): ask the analysis server what
results wait for this site, fetch each sealed to the gateway's own key, acknowledge it.

The gateway only ever connects outwards, over the forwarder's mutual-TLS client (the same CA,
client certificate and pin). `waiting` lists what came after a cursor; `fetch` returns a
result's sealed body, its digest checked and its name (site, study, result id) the one it is
opened under, so a body offered under another study or id does not open; `acknowledge` tells
the server it may forget one - only once the result is stored in PACS (the caller's rule: a
crash before that fetches it again).

Every failure is a `ResultsError` with a fixed reason code (no text from the server).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import httpx

from gateway.errors import GatewayError
from gateway.forward.classify import HTTPX_ERRORS
from gateway.logs import get_logger
from gateway.seal.envelope import CONTENT_TYPE, KEY_ID_HEADER, SITE_HEADER, Name, Sealed

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_DIGEST = re.compile(r"sha-256=:([A-Za-z0-9+/=]+):")

log = get_logger("gateway.results")


class ResultsError(GatewayError):
    """The results channel failed; `reason` is a fixed code."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"results channel: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class Waiting:
    cursor: int
    result: str  # the result id (its SOP Instance UID)
    study: str  # the pseudonymous study it belongs to


class ResultsClient:
    def __init__(self, http: httpx.Client, base: str, site: str, key_id: str) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.site = site
        self.key_id = key_id  # of the gateway's results key: what the server must seal to

    def waiting(self, after: int) -> tuple[list[Waiting], int]:
        """Results after `after` (oldest first) and the cursor to ask after next."""
        document = self._json(self._get("/v1/results", params={"after": str(after)}))
        if document.get("key_id") != self.key_id:
            raise ResultsError("server-seals-to-another-key")
        listed = []
        for entry in document.get("results", []):
            if not isinstance(entry, dict):
                raise ResultsError("bad-listing")
            result, study, cursor = entry.get("id"), entry.get("study"), entry.get("cursor")
            if not (_is_uid(result) and _is_uid(study) and isinstance(cursor, int)):
                raise ResultsError("bad-listing")
            listed.append(Waiting(cursor, str(result), str(study)))
        cursor = document.get("cursor")
        if not isinstance(cursor, int) or cursor < after:
            raise ResultsError("bad-listing")
        return listed, cursor

    def fetch(self, waiting: Waiting) -> Sealed:
        """The result's sealed body (digest checked), named for opening under the gateway's
        key: `seal.envelope.open_sealed(item.body, item.name, private key)`."""
        response = self._get(f"/v1/results/{waiting.result}")
        if response.headers.get("content-type") != CONTENT_TYPE:
            raise ResultsError("not-sealed")
        if response.headers.get(KEY_ID_HEADER) != self.key_id:
            raise ResultsError("server-seals-to-another-key")
        found = _DIGEST.fullmatch(response.headers.get("content-digest", "").strip())
        body = response.content
        if found is None or base64.b64decode(found.group(1)) != hashlib.sha256(body).digest():
            raise ResultsError("content-digest-mismatch")
        return Sealed(Name("result", self.site, waiting.study, waiting.result), self.key_id, body)

    def acknowledge(self, result: str) -> None:
        """The server may forget the result (it is in PACS); idempotent."""
        try:
            response = self.http.delete(
                f"{self.base}/v1/results/{result}", headers={SITE_HEADER: self.site}
            )
        except HTTPX_ERRORS:
            raise ResultsError("unreachable") from None
        if response.status_code == 204:
            return
        if response.status_code == 404 and _reason(response) == "no-such-result":
            # forgotten already (a server may drop what was acknowledged, or expire it): the
            # gateway holds it or PACS has it, and there is nothing left to tell
            log.info("results.already_forgotten")
            return
        raise ResultsError(f"acknowledge-refused-{response.status_code}")

    def _get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        try:
            response = self.http.get(
                self.base + path, params=params, headers={SITE_HEADER: self.site}
            )
        except HTTPX_ERRORS:
            raise ResultsError("unreachable") from None
        if response.status_code != 200:
            raise ResultsError(f"refused-{response.status_code}")
        return response

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any]:
        try:
            document = response.json()
        except ValueError:
            raise ResultsError("bad-listing") from None
        if not isinstance(document, dict):
            raise ResultsError("bad-listing")
        return document


def _is_uid(value: object) -> bool:
    return isinstance(value, str) and len(value) <= 64 and _UID.fullmatch(value) is not None


def _reason(response: httpx.Response) -> str:
    try:
        return str(response.json().get("reason", ""))
    except (ValueError, AttributeError):
        return ""
