"""The tables of one store, built over a backend's table handles.

A write transaction's dirty tables are flushed here before its outermost
commit, and what it cached is published to the process-wide caches after it.
"""
from .blocks import BlockStore
from .events import EventTable
from .format import FORMAT_VERSION, META_FORMAT
from .ids import ROOM, STATE_KEY, TYPE, IdMaps
from .rooms import MetaTable, RoomTable
from .snapshots import SnapshotStore
from .txn import BoundedCache, ReadThrough

#: Answers of the authorization rules kept across transactions (roomstate.authcheck).
AUTH_MEMO_LIMIT = 100_000
#: Events whose auth event NIDs the Matrix resolution keeps between merges.
AUTH_EDGES_LIMIT = 400_000


class Tables:
    def __init__(self, handles):
        h = handles
        self.ids = IdMaps(h["ids"], {ROOM: h["names_r"], TYPE: h["names_t"], STATE_KEY: h["names_k"]}, h["meta"])
        self.blocks = BlockStore(h["blocks"], h["block_hashes"], self.ids)
        self.snaps = SnapshotStore(h["snapshots"], h["snapshot_hashes"], self.blocks, self.ids)
        self.events = EventTable(h["events"], h["event_ids"], h["flags"], self.ids)
        self.ids.events = self.events
        self.rooms = RoomTable(h["rooms"])
        self.meta = MetaTable(h["meta"])
        self.auth_memo = ReadThrough(BoundedCache(AUTH_MEMO_LIMIT), "auth:memo")
        # An event's auth events never change once committed: the Matrix resolution
        # walks the same ones at every merge.
        self.auth_edges = ReadThrough(BoundedCache(AUTH_EDGES_LIMIT), "auth:edges")

    def format_version(self, tx):
        """The stored format version, or None for a store not initialised yet."""
        return self.meta.value(tx, META_FORMAT, None)

    def has_events(self, tx):
        with tx.txn.cursor(db=self.events.db) as cur:
            return next(iter(cur), None) is not None

    def initialise(self, tx):
        """Preassigned NIDs, the empty snapshot and the format version, once."""
        if self.format_version(tx) is not None:
            return  # another process initialised it first
        self.ids.initialise(tx)
        self.snaps.create_empty(tx)
        self.meta.put_now(tx, META_FORMAT, FORMAT_VERSION)

    def upgrade(self, tx):
        """Mark a store of an older format this code reads (``READS``) as the current one.

        Every older version's tables are valid in the current one; only what is written
        from now on may use what the newer version added."""
        version = self.format_version(tx)
        if version is not None and version < FORMAT_VERSION:
            self.meta.put_now(tx, META_FORMAT, FORMAT_VERSION)

    def flush(self, tx):
        self.meta.flush(tx)
        self.rooms.flush(tx)
        self.events.flush(tx)

    def publish(self, pending):
        self.ids.publish(pending)
        self.blocks.publish(pending)
        self.snaps.publish(pending)
        self.events.publish(pending)
        self.auth_memo.publish(pending)
        self.auth_edges.publish(pending)
