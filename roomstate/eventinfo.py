"""What the store keeps of one event: :class:`EventInfo` (``StateStore.event``)."""
from dataclasses import dataclass
from typing import Optional

__all__ = ["EventInfo", "StateReset"]


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


@dataclass(frozen=True)
class StateReset:
    """A key a merge resolved against every prev state (``StateStore.state_resets``).

    ``event_id``: the event whose prev events' states were merged; ``type`` and
    ``state_key``: the key; ``prev_state``: the events the prev states held for it
    (``None`` for one that held nothing), in the order of the prev events; ``resolved``:
    the event the state before ``event_id`` holds there, or None.  ``kind`` is
    ``"older"`` when ``resolved`` is an event none of the prev states held (an event of
    the auth difference, or an older one the resolution went back to) and ``"dropped"``
    when every prev state held the key and the merged state holds nothing.
    """

    event_id: str
    type: str
    state_key: str
    kind: str
    resolved: Optional[str]
    prev_state: "list[Optional[str]]"
