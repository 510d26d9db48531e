"""The Matrix rules: room versions, event IDs, authorization (spec.matrix.org is the authority)."""
from .eventid import compute_event_id, compute_room_id, content_hash, reference_hash
from .pdu import MatrixEvent, validate_event
from .redaction import redact
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
    "room_version",
    "validate_event",
]
