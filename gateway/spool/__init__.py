"""Durable states of the work, as directories; every acknowledged instance lives here, encrypted."""

from gateway.spool.store import (
    STATES,
    InstanceHeader,
    OutgoingHeader,
    Received,
    Recovery,
    Spool,
    State,
)

__all__ = ["STATES", "InstanceHeader", "OutgoingHeader", "Received", "Recovery", "Spool", "State"]
