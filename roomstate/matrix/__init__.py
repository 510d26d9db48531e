"""The Matrix rules: room versions, event IDs, authorization, state resolution (spec.matrix.org is
the authority)."""
from .eventid import compute_event_id, compute_room_id, content_hash, reference_hash
from .pdu import MatrixEvent, validate_event
from .redaction import redact
from .stateres import resolve
from .versions import VERSIONS, RoomVersion, room_version

__all__ = [
    "VERSIONS",
    "MatrixEvent",
    "RoomVersion",
    "compute_event_id",
    "compute_room_id",
    "content_hash",
    "redact",
    "reference_hash",
    "resolve",
    "room_version",
    "validate_event",
]
