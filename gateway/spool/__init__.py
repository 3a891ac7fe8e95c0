"""Durable states of the work, as directories; every acknowledged instance lives here, encrypted."""

from gateway.spool.store import InstanceHeader, Received, Spool

__all__ = ["InstanceHeader", "Received", "Spool"]
