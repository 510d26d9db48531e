"""What the store keeps of one event: :class:`EventInfo` (``StateStore.event``)."""
from dataclasses import dataclass
from typing import Optional

__all__ = ["EventInfo"]


@dataclass(frozen=True)
class EventInfo:
    """A stored event, as the engine keeps it.

    ``sender``, ``origin_server_ts`` and ``auth_events`` are None for an event added
    without them (``check_auth=False`` input).  ``auth_events`` are in NID order, which
    is the order they were first stored in, not the order the event lists them.
    ``membership`` is None unless the event is an ``m.room.member`` state event; one
    outside the five memberships the specification defines reads as ``""`` (only its
    being another one is kept).  ``rejected_reason`` says why a rejected event was
    rejected; None when it was not.
    """

    event_id: str
    room_id: str
    type: str
    state_key: Optional[str]
    sender: Optional[str]
    origin_server_ts: Optional[int]
    depth: int
    prev_events: "list[str]"
    auth_events: "Optional[list[str]]"
    membership: Optional[str]
    outlier: bool
    rejected: bool
    rejected_reason: Optional[str]
