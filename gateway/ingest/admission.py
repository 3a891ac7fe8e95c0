"""Who gets in (DESIGN promise 6), decided before any dataset byte is read.

Two doors, counted separately so idle sockets cannot lock PACS out:
- at TCP accept, a bound on connections that have not yet asked for an association
  (including TLS handshakes in progress);
- at A-ASSOCIATE-RQ (pynetdicom's EVT_REQUESTED, before negotiation), the called AE title must be
  ours, the calling AE title must be a configured peer, the peer address must be allowed for that
  peer, and the number of admitted associations must stay within the limit.

Logs and metrics name the reason, the peer address and at most the *configured* peer name;
never an AE title read from the wire.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pynetdicom.association import Association
from pynetdicom.events import Event

from gateway.ingest.pynetdicom_seam import reject
from gateway.ingest.status import AssociateReject
from gateway.logs import get_logger
from gateway.metrics import Metrics, Refusal
from gateway.settings import IngestSettings, PeerSettings

log = get_logger("gateway.ingest")


@dataclass
class Session:
    """What we know about one admitted association; counters feed its closing log line."""

    peer: PeerSettings
    address: str
    started: float = field(default_factory=time.monotonic)
    instances: int = 0
    bytes: int = 0
    ended: bool = False


#: records an event in the audit trail: (event name, fields); must not raise
AuditHook = Callable[..., None]


class AdmissionControl:
    """Both doors above, and the `Session` of each association admitted through them."""

    def __init__(
        self, settings: IngestSettings, metrics: Metrics, audit: AuditHook | None = None
    ) -> None:
        #: replaced whole on reload (SIGHUP); each decision reads it once, so an association
        #: is judged by one configuration, the old or the new
        self.settings = settings
        self.metrics = metrics
        self.audit = audit or (lambda event, **fields: None)
        self._lock = threading.Lock()
        self._handshaking = 0
        self._sessions: weakref.WeakKeyDictionary[Association, Session] = (
            weakref.WeakKeyDictionary()
        )

    # -- door 1: TCP accept ---------------------------------------------------------------------

    def may_open(self, address: str, acceptors: list[Association]) -> bool:
        """Called on the accept loop: refuse when too many connections are not admitted ones.

        Counts TLS handshakes, connections yet to ask, and rejected associations still waiting
        for their peer to close: all of them hold a thread, none of them is a PACS at work.
        """
        with self._lock:
            waiting = self._handshaking + sum(1 for a in acceptors if a not in self._sessions)
        if waiting < self.settings.max_pending_connections:
            return True
        self.refuse(Refusal.TOO_MANY_PENDING, address)
        return False

    def handshake_started(self) -> None:
        with self._lock:
            self._handshaking += 1

    def handshake_ended(self) -> None:
        with self._lock:
            self._handshaking -= 1

    def refuse(self, reason: Refusal, address: str, **fields: Any) -> None:
        self.metrics.associations_refused.labels(reason=reason).inc()
        log.warning("association.refused", reason=str(reason), peer_address=address, **fields)
        if reason is not Refusal.TOO_MANY_PENDING:  # a connection flood is counted, not audited
            peer = {"peer": fields["peer"]} if "peer" in fields else {}  # a configured name
            self.audit("association.refused", reason=str(reason), **peer)

    # -- door 2: A-ASSOCIATE-RQ -----------------------------------------------------------------

    def on_requested(self, event: Event) -> None:
        """EVT_REQUESTED handler: admit, or send A-ASSOCIATE-RJ and end the association.

        Fails closed: pynetdicom logs and ignores an exception from a notification handler and
        would then go on to accept, so any error here rejects instead.
        """
        assoc = event.assoc
        try:
            self._admit_or_reject(assoc)
        except Exception as exc:  # noqa: BLE001 - fail closed, whatever went wrong
            log.error("admission.error", error=exc.__class__.__name__)
            reject(assoc, *AssociateReject.NO_REASON_GIVEN.value)

    def _admit_or_reject(self, assoc: Association) -> None:
        address = str(assoc.requestor.address)
        decision = self._decide(assoc, address)
        if isinstance(decision, Session):
            self.metrics.associations_accepted.inc()
            log.info("association.admitted", peer=decision.peer.name, peer_address=address)
            self.audit("association.accepted", peer=decision.peer.name)
            return
        reason, rejection, peer = decision
        self.refuse(reason, address, **({"peer": peer.name} if peer else {}))
        reject(assoc, *rejection.value)

    def _decide(
        self, assoc: Association, address: str
    ) -> Session | tuple[Refusal, AssociateReject, PeerSettings | None]:
        settings = self.settings  # once: a reload may replace it meanwhile
        rq = assoc.requestor.primitive
        assert rq is not None, "EVT_REQUESTED fires after the A-ASSOCIATE-RQ arrived"
        if str(rq.called_ae_title).strip(" ") != settings.ae_title.strip(" "):
            return Refusal.CALLED_AE_WRONG, AssociateReject.CALLED_AE_NOT_RECOGNISED, None
        peer = settings.peer_for(str(rq.calling_ae_title))
        if peer is None:
            return Refusal.CALLING_AE_UNKNOWN, AssociateReject.CALLING_AE_NOT_RECOGNISED, None
        if not peer.allows_address(address):
            return Refusal.PEER_ADDRESS_NOT_ALLOWED, AssociateReject.NO_REASON_GIVEN, peer
        with self._lock:
            live = sum(1 for a in self._sessions if a.is_alive())
            if live >= settings.max_associations:
                return Refusal.TOO_MANY_ASSOCIATIONS, AssociateReject.LOCAL_LIMIT_EXCEEDED, peer
            session = self._sessions[assoc] = Session(peer, address)
        return session

    def session(self, assoc: Association) -> Session | None:
        with self._lock:
            return self._sessions.get(assoc)

    def on_ended(self, event: Event) -> None:
        """EVT_ABORTED / EVT_CONN_CLOSE from pynetdicom (an association that ends before or
        outside the data phase)."""
        self.finish(event.assoc, "aborted" if event.event.name == "EVT_ABORTED" else "closed")

    def finish(self, assoc: Association, how: str) -> None:
        """One summary line per admitted association, however it ended."""
        with self._lock:
            session = self._sessions.get(assoc)
            if session is None or session.ended:
                return
            session.ended = True
        log.info(
            "association.ended",
            how=how,
            peer=session.peer.name,
            instances=session.instances,
            bytes=session.bytes,
            seconds=round(time.monotonic() - session.started, 3),
        )
