"""The Matrix rules: room versions, event IDs, authorization (spec.matrix.org is the authority)."""
from .versions import VERSIONS, RoomVersion, room_version

__all__ = ["VERSIONS", "RoomVersion", "room_version"]
