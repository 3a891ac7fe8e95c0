"""The reference receiver's HTTP handlers (Starlette), protocol v1 (docs/protocol.md).

Each request is checked in the order a vendor's server should: the names in the path and
headers (UIDs, site code, key id, manifest version), the body's Content-Digest, then the seal
(opened with the `info` rebuilt from those names: a body replayed under another name fails
here), then the plaintext (a DICOM file whose UIDs are the ones in the path; a manifest whose
study and version are the ones named). Only then is it stored, idempotently. Answers carry a
short reason code in JSON, never content.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from collections.abc import Callable
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.errors import SealError
from gateway.logs import get_logger
from gateway.receiver.results import Results
from gateway.receiver.store import Store, Stored
from gateway.seal.envelope import (
    CONTENT_TYPE,
    KEY_ID_HEADER,
    SITE_HEADER,
    STUDY_HEADER,
    VERSION_HEADER,
    Name,
    open_sealed,
    seal,
)
from gateway.seal.keys import PrivateKey, PublicKey

log = get_logger("gateway.receiver")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_SITE = re.compile(r"[A-Z0-9]{1,8}")
_VERSION = re.compile(r"[1-9][0-9]{0,8}")
_DIGEST = re.compile(r"sha-256=:([A-Za-z0-9+/=]+):")
_PAGE = 100  # results listed per request


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def build(
    key: PrivateKey,
    store: Store,
    max_body_bytes: int,
    results: Results | None = None,
    results_key: PublicKey | None = None,
    on_stored: Callable[[str, str], None] | None = None,
) -> Starlette:
    """The receiver application for one HPKE key and one storage folder; with `results` and
    the gateway's `results_key`, the results channel too. `on_stored(site, study)` is called
    after an instance or manifest was newly stored (it must not block: the demo analysis
    only puts the study on its queue)."""

    async def instance(request: Request) -> JSONResponse:
        return await _handle(request, "instance")

    async def manifest(request: Request) -> JSONResponse:
        return await _handle(request, "manifest")

    async def _handle(request: Request, kind: str) -> JSONResponse:
        try:
            name = _name(request, kind, key)
            body = await _body(request, max_body_bytes)
            # opening, parsing and the fsync run in a worker thread, not on the event loop
            stored = await run_in_threadpool(_open_and_store, name, body)
        except Refused as refused:
            log.info("receiver.answered", kind=kind, status=refused.status, reason=refused.reason)
            return JSONResponse({"reason": refused.reason}, status_code=refused.status)
        reason = {
            Stored.CREATED: "stored",
            Stored.REPEAT: "already-stored",
            Stored.CONFLICT: "stored-with-other-content",
        }[stored]
        log.info("receiver.answered", kind=kind, status=stored.value, reason=reason)
        if on_stored is not None and stored is Stored.CREATED:
            on_stored(name.site, name.study)
        return JSONResponse({"reason": reason}, status_code=stored.value)

    def _open_and_store(name: Name, body: bytes) -> Stored:
        try:
            plain = open_sealed(body, name, key)
        except SealError:
            raise Refused(400, "seal-does-not-open") from None
        if name.kind == "instance":
            _check_instance(plain, name)
            return store.put(name.site, name.study, f"{name.item}.dcm", plain)
        _check_manifest(plain, name)
        return store.put(name.site, name.study, f"manifest-{name.item}.json", plain)

    async def waiting(request: Request) -> Response:
        site, offered, gateway_key = _results_channel(request, results, results_key)
        after = request.query_params.get("after", "0")
        if not after.isdigit():
            return _refuse(400, "bad-cursor")
        found = await run_in_threadpool(offered.waiting, site, int(after), _PAGE)
        listed = [{"id": o.result, "study": o.study, "cursor": o.cursor} for o in found]
        next_cursor = found[-1].cursor if found else int(after)
        body = {"results": listed, "cursor": next_cursor, "key_id": gateway_key.key_id}
        return JSONResponse(body)

    async def result(request: Request) -> Response:
        site, offered, gateway_key = _results_channel(request, results, results_key)
        found = await run_in_threadpool(offered.read, site, _result_id(request))
        if found is None:
            return _refuse(404, "no-such-result")
        offer, plain = found
        body = seal(plain, Name("result", site, offer.study, offer.result), gateway_key)
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
        headers = {
            "Content-Digest": f"sha-256=:{digest}:",
            KEY_ID_HEADER: gateway_key.key_id,
            STUDY_HEADER: offer.study,
        }
        log.info("receiver.result_sent")
        return Response(body, media_type=CONTENT_TYPE, headers=headers)

    async def acknowledge(request: Request) -> Response:
        site, offered, _ = _results_channel(request, results, results_key)
        if not await run_in_threadpool(offered.acknowledge, site, _result_id(request)):
            return _refuse(404, "no-such-result")
        log.info("receiver.result_acknowledged")
        return Response(status_code=204)

    routes = [
        Route("/v1/studies/{study}/instances/{instance}", instance, methods=["PUT"]),
        Route("/v1/studies/{study}/manifest", manifest, methods=["PUT"]),
        Route("/v1/results", waiting, methods=["GET"]),
        Route("/v1/results/{result}", result, methods=["GET"]),
        Route("/v1/results/{result}", acknowledge, methods=["DELETE"]),
    ]
    return Starlette(routes=routes, exception_handlers={Refused: _refused})


def _results_channel(
    request: Request, results: Results | None, key: PublicKey | None
) -> tuple[str, Results, PublicKey]:
    if results is None or key is None:
        raise Refused(404, "no-results-channel")
    site = request.headers.get(SITE_HEADER, "")
    if not _SITE.fullmatch(site):
        raise Refused(400, "bad-site-header")
    return site, results, key


def _result_id(request: Request) -> str:
    result = str(request.path_params["result"])
    if not _UID.fullmatch(result) or len(result) > 64:
        raise Refused(404, "not-a-result-id")
    return result


def _refuse(status: int, reason: str) -> JSONResponse:
    log.info("receiver.answered", kind="result", status=status, reason=reason)
    return JSONResponse({"reason": reason}, status_code=status)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return _refuse(exc.status, exc.reason)


def _name(request: Request, kind: str, key: PrivateKey) -> Name:
    study = request.path_params["study"]
    site = request.headers.get(SITE_HEADER, "")
    if not _UID.fullmatch(study) or len(study) > 64:
        raise Refused(404, "not-a-study-uid")
    if not _SITE.fullmatch(site):
        raise Refused(400, "bad-site-header")
    if request.headers.get(KEY_ID_HEADER) != key.public.key_id:
        raise Refused(400, "unknown-key-id")
    if request.headers.get("content-type") != CONTENT_TYPE:
        raise Refused(415, "not-sealed")
    if kind == "instance":
        item = request.path_params["instance"]
        if not _UID.fullmatch(item) or len(item) > 64:
            raise Refused(404, "not-an-instance-uid")
    else:
        item = request.headers.get(VERSION_HEADER, "")
        if not _VERSION.fullmatch(item):
            raise Refused(400, "bad-manifest-version")
    return Name("instance" if kind == "instance" else "manifest", site, study, item)


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-digest", "")
    found = _DIGEST.fullmatch(declared.strip())
    if found is None:
        raise Refused(400, "missing-content-digest")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, "body-too-large")
        parts.append(chunk)
    body = b"".join(parts)
    try:
        wanted = base64.b64decode(found.group(1), validate=True)
    except ValueError:
        raise Refused(400, "missing-content-digest") from None
    if hashlib.sha256(body).digest() != wanted:
        raise Refused(400, "content-digest-mismatch")
    return body


def _check_instance(plain: bytes, name: Name) -> None:
    try:
        ds = dcmread(io.BytesIO(plain), stop_before_pixels=True)
        uids = (str(ds.StudyInstanceUID), str(ds.SOPInstanceUID))
    except (InvalidDicomError, AttributeError, ValueError, EOFError):
        raise Refused(422, "not-a-dicom-file") from None
    if uids != (name.study, name.item):
        raise Refused(422, "uids-do-not-match-the-path")


def _check_manifest(plain: bytes, name: Name) -> None:
    try:
        document: Any = json.loads(plain)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise Refused(422, "manifest-not-json") from None
    if not isinstance(document, dict) or not isinstance(document.get("instances"), list):
        raise Refused(422, "manifest-without-instances")
    if str(document.get("study")) != name.study or str(document.get("version")) != name.item:
        raise Refused(422, "manifest-names-another-study-or-version")
