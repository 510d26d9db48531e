"""Errors raised by roomstate.  Every one derives from :class:`RoomStateError`."""


class RoomStateError(Exception):
    """Base class of every roomstate error."""


class MissingEventError(RoomStateError, LookupError):
    """An event (or room) that the store does not hold, or whose state it does not know."""

    def __init__(self, message, event_id=None):
        super().__init__(message)
        self.event_id = event_id


class InvalidEventError(RoomStateError, ValueError):
    """Bad input: names the field and the reason."""

    def __init__(self, field, reason, event_id=None):
        where = f" (event {event_id!r})" if event_id is not None else ""
        super().__init__(f"invalid {field}{where}: {reason}")
        self.field = field
        self.reason = reason
        self.event_id = event_id


class ConflictError(RoomStateError):
    """The resolver refused to resolve conflicted state keys."""

    def __init__(self, room_id, keys):
        keys = sorted(keys)
        shown = ", ".join(f"({t!r}, {k!r})" for t, k in keys[:10])
        more = f" and {len(keys) - 10} more" if len(keys) > 10 else ""
        super().__init__(f"{len(keys)} conflicted state key(s) in {room_id}: {shown}{more}")
        self.room_id = room_id
        self.keys = keys


class ReadOnlyError(RoomStateError):
    """A write was attempted on a store opened with ``readonly=True``."""


class StoreFormatError(RoomStateError):
    """The path is not a roomstate store, or one of an unknown format version."""


class StorageError(RoomStateError, OSError):
    """LMDB could not read or write the store (disk full, I/O error, ...).

    The failed call changed nothing; what was committed before is intact.
    """
