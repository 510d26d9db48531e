from ._write import merge_delta as merge_delta, merge_split as merge_split
from .blocks import entries_from as entries_from, frozen as frozen
from .errors import InvalidEventError as InvalidEventError
from .ids import EVENT as EVENT, STATE_KEY as STATE_KEY, TYPE as TYPE
from .resolvers import ResolverContext as ResolverContext
from _typeshed import Incomplete

class _EventsAt:
    def __init__(self, events, tx) -> None: ...
    def depth(self, nid): ...
    def event_id(self, nid): ...

class Merger:
    ids: Incomplete
    events: Incomplete
    snaps: Incomplete
    reader: Incomplete
    store: Incomplete
    def __init__(self, tables, reader, store) -> None: ...
    def merged_snapshot(self, tx, room_id, snaps, resolver): ...
    def merged_entries(self, tx, room_id, snaps, resolver): ...
