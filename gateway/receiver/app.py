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
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.errors import SealError
from gateway.logs import get_logger
from gateway.receiver.store import Store, Stored
from gateway.seal.envelope import (
    CONTENT_TYPE,
    KEY_ID_HEADER,
    SITE_HEADER,
    VERSION_HEADER,
    Name,
    open_sealed,
)
from gateway.seal.keys import PrivateKey

log = get_logger("gateway.receiver")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_SITE = re.compile(r"[A-Z0-9]{1,8}")
_VERSION = re.compile(r"[1-9][0-9]{0,8}")
_DIGEST = re.compile(r"sha-256=:([A-Za-z0-9+/=]+):")


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def build(key: PrivateKey, store: Store, max_body_bytes: int) -> Starlette:
    """The receiver application for one HPKE key and one storage folder."""

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

    routes = [
        Route("/v1/studies/{study}/instances/{instance}", instance, methods=["PUT"]),
        Route("/v1/studies/{study}/manifest", manifest, methods=["PUT"]),
    ]
    return Starlette(routes=routes)


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
