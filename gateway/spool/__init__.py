"""Durable states of the work, as directories; every acknowledged instance lives here, encrypted.

`store.Spool` is the one holder of where each item is; `layout` names the states and files,
`format` the files' clear headers, `durable` makes writes and renames durable, `keys` holds the
study keys (crypto-erasure).
"""

from gateway.spool.format import InstanceHeader, OutgoingHeader
from gateway.spool.layout import HELD, STATES, Item, State, manifest_name, manifest_version
from gateway.spool.store import Received, Recovery, Spool

__all__ = [
    "HELD",
    "STATES",
    "InstanceHeader",
    "Item",
    "OutgoingHeader",
    "Received",
    "Recovery",
    "Spool",
    "State",
    "manifest_name",
    "manifest_version",
]
