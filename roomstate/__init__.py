"""roomstate: the state of Matrix rooms at every event, stored compactly in LMDB.

>>> import roomstate, tempfile
>>> with tempfile.TemporaryDirectory() as d, roomstate.open(d, check_auth=False) as store:
...     store.add_event({"event_id": "$c", "room_id": "!r", "type": "m.room.create", "state_key": ""})
...     store.add_event({"event_id": "$m", "room_id": "!r", "type": "m.room.message", "prev_events": ["$c"]})
...     dict(store.state_before("$m"))
{('m.room.create', ''): '$c'}
"""
from . import resolvers
from ._core import ENTRY_DTYPE
from .errors import (
    ConflictError,
    InvalidEventError,
    MissingEventError,
    ReadOnlyError,
    RoomStateError,
    StorageError,
    StoreFormatError,
)
from .eventinfo import EventInfo, StateReset
from .resolvers import ResolverContext, newest_event, raise_on_conflict
from .statemap import StateDiff, StateMap
from .store import Batch, StateStore, open

__version__ = "0.1.0"


def __getattr__(name):
    # ``roomstate.aio`` without importing asyncio machinery for sync users.
    if name == "aio":
        import importlib

        return importlib.import_module(".aio", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Batch",
    "ConflictError",
    "ENTRY_DTYPE",
    "EventInfo",
    "StateReset",
    "InvalidEventError",
    "MissingEventError",
    "ReadOnlyError",
    "ResolverContext",
    "RoomStateError",
    "StateDiff",
    "StateMap",
    "StateStore",
    "StorageError",
    "StoreFormatError",
    "aio",
    "newest_event",
    "open",
    "raise_on_conflict",
    "resolvers",
]
