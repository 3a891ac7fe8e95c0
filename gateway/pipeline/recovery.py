"""What waits in the spool when the gateway starts: the queues are rebuilt from it alone.

The spool put right what a crash left half-done when it opened (`Spool.open`: partial writes
gone, originals whose sealed copy exists removed); this reads what is left: originals to
de-identify and sealed items to send, oldest first, and the studies whose delivered instances
their last manifest does not list yet.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.spool import Item, Spool, State


@dataclass(frozen=True)
class Backlog:
    originals: list[Item]  # in incoming/, oldest first
    sealed: list[Item]  # in the outbox, oldest first
    unlisted: list[str]  # studies with delivered instances no manifest lists yet


def backlog(spool: Spool) -> Backlog:
    unlisted = [
        study_id
        for study_id in spool.studies(State.SENT)
        if {i.name for i in spool.delivered(study_id)}
        - set(spool.records.read(study_id).get("seen", ()))
    ]
    return Backlog(
        _oldest_first(spool.items(State.INCOMING)),
        _oldest_first(spool.items(State.OUTBOX)),
        unlisted,
    )


def _oldest_first(items: list[Item]) -> list[Item]:
    """Items by their stamp (receive or seal time), those gone meanwhile left out."""
    stamped = [(stamp, item.path, item) for item in items if (stamp := item.stamp()) is not None]
    return [item for _, _, item in sorted(stamped)]
