from .blocks import BlockStore as BlockStore
from .events import EventTable as EventTable
from .format import FORMAT_VERSION as FORMAT_VERSION, META_COUNT_RESETS as META_COUNT_RESETS, META_FORMAT as META_FORMAT
from .ids import IdMaps as IdMaps, ROOM as ROOM, STATE_KEY as STATE_KEY, TYPE as TYPE
from .rooms import MetaTable as MetaTable, RoomTable as RoomTable
from .snapshots import SnapshotStore as SnapshotStore
from _typeshed import Incomplete
from .format import CHECKED_TABLES as CHECKED_TABLES, CHECKSUMS_SINCE as CHECKSUMS_SINCE, CHECKSUM_BYTES as CHECKSUM_BYTES

AUTH_MEMO_LIMIT: int
AUTH_CLOSURES_LIMIT: int
AUTH_EDGES_LIMIT: int

class Tables:
    ids: Incomplete
    blocks: Incomplete
    auth_memo: Incomplete
    auth_edges: Incomplete
    auth_closures: dict
    snaps: Incomplete
    events: Incomplete
    rooms: Incomplete
    meta: Incomplete
    handles: Incomplete
    checksums: bool
    def __init__(self, handles) -> None: ...
    def set_checksums(self, on) -> None: ...
    def check_meta(self, tx, version) -> None: ...
    def refresh_format(self, txn) -> bool: ...
    def format_version(self, tx): ...
    def has_events(self, tx): ...
    def initialise(self, tx) -> None: ...
    def upgrade(self, tx) -> None: ...
    def flush(self, tx) -> None: ...
    def publish(self, pending) -> None: ...
