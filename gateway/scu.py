"""C-ECHO and C-STORE as an SCU: for testing a node and for sites sending files by hand.

Files are sent as they are on disk (pynetdicom streams the encoded data set without decoding),
in their own transfer syntax. What this needs of pynetdicom beyond its public API (chunked
sending, closing the socket of a failed TLS start) goes through `ingest.pynetdicom_seam`, whose
check runs before any association is requested.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from gateway.errors import NetworkError
from gateway.ingest.pynetdicom_seam import (
    check_pynetdicom,
    close_failed_transport,
    reachable,
    send_promptly,
    stream_stored_files,
)

MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1-255
#: What `store` answers when the peer accepts no proposed context for the data set: the DIMSE
#: status "Refused: SOP Class not supported" (PS3.7 C.5.x) it would have given a C-STORE
SOP_CLASS_NOT_SUPPORTED = 0x0122


class ContextsRefused(NetworkError):
    """The peer accepted none of the proposed presentation contexts."""


@dataclass(frozen=True)
class Node:
    host: str
    port: int
    calling_ae_title: str
    called_ae_title: str
    tls: ssl.SSLContext | None = None
    timeout: float = 30.0


@dataclass(frozen=True)
class SendResult:
    path: Path
    status: int | None  # None: not sent (unreadable, or the association failed)
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 0x0000


def client_tls(ca: Path, certificate: Path | None, key: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if certificate is not None:
        ctx.load_cert_chain(certificate, key)
    return ctx


def _ae(node: Node) -> AE:
    ae = AE(ae_title=node.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = node.timeout
    return ae


def _associate(ae: AE, node: Node) -> Association:
    tls_args = (node.tls, node.host) if node.tls is not None else None
    assoc = ae.associate(node.host, node.port, ae_title=node.called_ae_title, tls_args=tls_args)
    if not assoc.is_established:
        close_failed_transport(assoc)
        where = f"association with {node.host}:{node.port}"
        if assoc.rejected_contexts and not assoc.accepted_contexts:
            raise ContextsRefused(f"{where} refused every proposed SOP class/transfer syntax")
        what = "rejected" if assoc.is_rejected else "aborted or unreachable"
        raise NetworkError(f"{where} {what}")
    send_promptly(assoc)
    return assoc


def echo(node: Node) -> int:
    """C-ECHO; returns the DIMSE status."""
    check_pynetdicom()  # an incompatible upgrade fails here, naming what changed
    ae = _ae(node)
    ae.add_requested_context(Verification)
    assoc = _associate(ae, node)
    try:
        rsp = assoc.send_c_echo()
    finally:
        assoc.release()
    if "Status" not in rsp:
        raise NetworkError("no C-ECHO response")
    return int(rsp.Status)


def store(node: Node, ds: Dataset) -> int | None:
    """C-STORE one data set held in memory (a re-identified result: never written to disk),
    in its own transfer syntax or an uncompressed one the peer accepts (`_syntaxes`); the
    DIMSE status, `SOP_CLASS_NOT_SUPPORTED` when the peer accepts no context for it, or None
    when the association or the request failed (PACS down)."""
    check_pynetdicom()
    if not reachable(node.host, node.port, node.timeout):  # PACS down (see `reachable`)
        return None
    ae = _ae(node)
    ae.requested_contexts = [build_context(str(ds.SOPClassUID), _syntaxes(ds))]
    try:
        assoc = _associate(ae, node)
    except ContextsRefused:
        return SOP_CLASS_NOT_SUPPORTED
    except NetworkError:
        return None
    try:
        if not assoc.accepted_contexts:
            return SOP_CLASS_NOT_SUPPORTED
        rsp = assoc.send_c_store(ds)
        return int(rsp.Status) if "Status" in rsp else None
    except (AttributeError, ValueError, OSError):
        return None
    finally:
        if assoc.is_established:
            assoc.release()


def _syntaxes(ds: Dataset) -> list[str]:
    """The data set's own transfer syntax first; a native one may also go as either
    uncompressed little endian syntax, whichever the peer accepts (pynetdicom encodes the
    data set in the one accepted). Encapsulated pixel data goes only as it is."""
    own = UID(str(ds.file_meta.TransferSyntaxUID))
    if own.is_encapsulated:
        return [own]
    return [own, *(ts for ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if ts != own)]


def dicom_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files named, and every file under folders named, in a stable order."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        else:
            yield path


def _context_of(path: Path) -> tuple[str, str] | None:
    try:
        meta = read_file_meta_info(path)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return None
    sop, ts = meta.get("MediaStorageSOPClassUID"), meta.get("TransferSyntaxUID")
    complete = sop and ts and meta.get("MediaStorageSOPInstanceUID")
    return (str(sop), str(ts)) if complete else None


def send(node: Node, paths: Iterable[Path]) -> list[SendResult]:
    """C-STORE every file; files whose contexts exceed one association go in further ones.

    Files are streamed as stored (pynetdicom's chunked mode): not decoded, not re-encoded.
    """
    check_pynetdicom()
    stream_stored_files()
    results: list[SendResult] = []
    batch: dict[Path, tuple[str, str]] = {}
    for path in dicom_files(paths):
        context = _context_of(path)
        if context is None:
            results.append(
                SendResult(path, None, "not a DICOM file with complete file meta information")
            )
            continue
        if context not in batch.values() and len(set(batch.values())) == MAX_CONTEXTS:
            results.extend(_send_batch(node, batch))
            batch = {}
        batch[path] = context
    if batch:
        results.extend(_send_batch(node, batch))
    return results


def _send_batch(node: Node, batch: dict[Path, tuple[str, str]]) -> list[SendResult]:
    ae = _ae(node)
    ae.requested_contexts = [build_context(sop, ts) for sop, ts in sorted(set(batch.values()))]
    try:
        assoc = _associate(ae, node)
    except NetworkError as exc:
        return [SendResult(path, None, str(exc)) for path in batch]
    accepted = {
        (str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cx in assoc.accepted_contexts
    }
    results = []
    try:
        for path, context in batch.items():
            if context not in accepted:
                results.append(
                    SendResult(path, None, "peer refused this SOP class/transfer syntax")
                )
                continue
            try:
                rsp = assoc.send_c_store(path)
            except (AttributeError, ValueError, OSError) as exc:
                results.append(SendResult(path, None, f"cannot send: {exc.__class__.__name__}"))
                continue
            status = int(rsp.Status) if "Status" in rsp else None
            results.append(SendResult(path, status, "" if status is not None else "no response"))
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    sent = {r.path for r in results}
    results += [SendResult(p, None, "association ended") for p in batch if p not in sent]
    return results
