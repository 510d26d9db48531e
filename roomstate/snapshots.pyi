from .format import U64 as U64
from .damage import DECODE_ERRORS as DECODE_ERRORS
from ._core import ENTRY_DTYPE as ENTRY_DTYPE
from ._write import Components as Components, chain_link as chain_link
from .blocks import empty_entries as empty_entries, frozen as frozen
from .errors import RoomStateError as RoomStateError
from .txn import BoundedCache as BoundedCache, ReadThrough as ReadThrough
from _typeshed import Incomplete

SNAPSHOT_KIND: bytes
EMPTY_SNAPSHOT: int
MAX_HOPS: int
MAX_WEIGHT: int
FANOUT: int
TIER_BASE: int
MAX_BLOCKS: int
CHAIN_LIMIT: int
MAX_WEIGHT_LIMIT: int
LAYER_SETS: int

def tier(size): ...

class SnapshotStore:
    db: Incomplete
    hashes_db: Incomplete
    blocks: Incomplete
    ids: Incomplete
    cache: Incomplete
    state_cache: Incomplete
    sums: bool
    def __init__(self, snapshots_db, hashes_db, blocks, ids, cache_items: int = 50000, state_cache_items: int = 32) -> None: ...
    def components(self, tx, snap): ...
    def layers(self, tx, c, start: int = 0, stop: int | None = None): ...
    def create_empty(self, tx): ...
    def derive(self, tx, parent, delta, indexed: bool = False): ...
    def derive_state(self, tx, parent, type_nid, state_key_nid, event_nid): ...
    def state(self, tx, snap): ...
    def get(self, tx, snap, type_nid, state_key_nid): ...
    def get_many(self, tx, snap, keys): ...
    def aligned(self, tx, snaps): ...
    def publish(self, pending) -> None: ...
