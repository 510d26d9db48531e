from ._core import pack_event_id as pack_event_id, pack_uvarints as pack_uvarints, unpack_event_id as unpack_event_id, unpack_uvarints as unpack_uvarints
from .errors import InvalidEventError as InvalidEventError, RoomStateError as RoomStateError
from .ids import decode as decode, encode as encode
from .txn import BoundedCache as BoundedCache
from _typeshed import Incomplete

MEMBERSHIPS: Incomplete
MEMBERSHIP_CODE: Incomplete
OTHER_MEMBERSHIP: int
MEMBERSHIP_MASK: int
HAS_CHILD: int
IS_STATE: Incomplete
REJECTED: Incomplete
OUTLIER: Incomplete
PLACEHOLDER: Incomplete
HASH_ID: int
MAX_DEPTH: Incomplete
MAX_PREVS: int
CHUNK: int

class Parsed:
    event_id: Incomplete
    room_id: Incomplete
    type: Incomplete
    state_key: Incomplete
    prev_ids: Incomplete
    depth: Incomplete
    rejected: Incomplete
    membership: Incomplete
    def __init__(self, event_id, room_id, type_, state_key, prev_ids, depth, rejected, membership) -> None: ...

def parse(ev): ...

class Record:
    flags: Incomplete
    membership: Incomplete
    room: Incomplete
    type: Incomplete
    state_key: Incomplete
    depth: Incomplete
    before: Incomplete
    after: Incomplete
    prevs: Incomplete
    event_id: Incomplete
    def __init__(self, flags, membership, room, type_, state_key, depth, before, after, prevs, event_id) -> None: ...
    @property
    def is_state(self): ...
    @property
    def rejected(self): ...
    @property
    def outlier(self): ...
    def pack(self, nid): ...
    @classmethod
    def unpack(cls, raw, nid): ...

class EventTable:
    db: Incomplete
    ids_db: Incomplete
    flags_db: Incomplete
    ids: Incomplete
    cache: Incomplete
    to_nid: Incomplete
    to_str: Incomplete
    free_key: Incomplete
    def __init__(self, events_db, event_ids_db, flags_db, ids, cache_items: int = 200000) -> None: ...
    def lookup(self, tx, event_id): ...
    def lookup_or_assign(self, tx, event_id): ...
    def assign(self, tx, event_id): ...
    def assign_new(self, tx, event_id): ...
    def event_id(self, tx, nid): ...
    def names(self, tx, nids): ...
    def get(self, tx, nid): ...
    def put(self, tx, nid, rec, append: bool = False) -> None: ...
    def put_placeholder(self, tx, nid, event_id) -> None: ...
    def publish(self, pending) -> None: ...
    def flags(self, tx, nid): ...
    def set_flags(self, tx, nid, value) -> None: ...
    def memberships(self, tx, nids): ...
    def flush(self, tx) -> None: ...
