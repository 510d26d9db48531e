"""The tables of one store, built over a backend's table handles.

A write transaction's dirty tables are flushed here before its outermost
commit, and what it cached is published to the process-wide caches after it.
"""
from .blocks import BlockStore
from .checksum import intact, meta_value, seal, seal_short
from .damage import damaged
from .events import EventTable
from .format import CHECKED_TABLES, CHECKSUM_BYTES, CHECKSUMS_SINCE, FORMAT_VERSION, META_COUNT_RESETS, META_FORMAT
from .ids import ROOM, STATE_KEY, TYPE, IdMaps
from .rooms import MetaTable, RoomTable
from .snapshots import SnapshotStore
from .txn import BoundedCache, ReadThrough

#: Answers of the authorization rules kept across transactions (roomstate.authcheck).
AUTH_MEMO_LIMIT = 100_000
#: Rooms whose auth closure the store keeps between transactions.
AUTH_CLOSURES_LIMIT = 8
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
        # The Matrix resolution's auth closures of committed states, by room ID
        # (roomstate.matrixres.AuthClosure): taken by a transaction while it moves one,
        # given back by a read when done and by a write transaction at its commit.
        self.auth_closures = {}
        self.handles = h
        self.checksums = True

    def set_checksums(self, on):
        """Whether the stored values carry checksums (format version 3 on): every table's
        decoders check them, or read values of an older format as they are."""
        self.checksums = on
        for table in (self.ids, self.blocks, self.snaps, self.events, self.rooms):
            table.sums = on

    def check_meta(self, tx, version):
        """At open: every ``meta`` value has the shape of the stored format version (with a
        right checksum from version 3 on), so a damaged ``format`` value (3 read as 2)
        cannot make checked values read as unchecked ones."""
        sums = version >= CHECKSUMS_SINCE
        with tx.txn.cursor(db=self.meta.db) as cur:
            for key, raw in cur:
                key = bytes(key)
                if key == META_FORMAT:
                    continue
                if sums and len(raw) != 8 + CHECKSUM_BYTES:
                    raise damaged("meta", key, f"a format-{version} meta value is 8 bytes and a 4-byte checksum,"
                                  f" this one {len(raw)} bytes")
                if sums and not intact(key, raw):
                    raise damaged("meta", key, "its checksum is wrong (the value was changed)")
                if not sums and len(raw) != 8:
                    raise damaged("meta", key, f"a format-{version} meta value is 8 bytes, this one {len(raw)}"
                                  " (a checksum follows from format 3 on: is the format version damaged?)")

    def refresh_format(self, txn):
        """A store opened read-only in an older format: True once another writer has
        upgraded it (its values carry checksums from then on)."""
        raw = txn.get(META_FORMAT, None, self.meta.db)
        if raw is not None and len(raw) == 8 and int.from_bytes(raw, "big") >= CHECKSUMS_SINCE:
            self.set_checksums(True)
            return True
        return False

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
        self.meta.put_now(tx, META_COUNT_RESETS, 0)

    def upgrade(self, tx):
        """Make a store of an older format this code reads (``READS``) the current one.

        Versions 1 and 2 hold no checksums: every value of ``CHECKED_TABLES`` is written
        again with its checksum (one pass; the store is then a version-3 store in every
        value).  The auth sections of version 2 need nothing: version-1 records are
        valid version-2 ones."""
        version = self.format_version(tx)
        if version is None or version >= FORMAT_VERSION:
            return
        if version < CHECKSUMS_SINCE:
            txn = tx.txn
            for table in CHECKED_TABLES:
                db = self.handles[table]
                with txn.cursor(db=db) as cur:
                    keys = [bytes(k) for k in cur.iternext(keys=True, values=False)]
                for key in keys:
                    if key == META_FORMAT:
                        continue
                    raw = bytes(txn.get(key, None, db))
                    if table == "meta":
                        value = meta_value(key, int.from_bytes(raw, "big"))
                    else:
                        value = (seal_short if table == "flags" else seal)(key, raw)
                    txn.put(key, value, True, True, False, db)
            self.set_checksums(True)
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
        closures = pending.get("auth:closures")
        if closures:
            kept = self.auth_closures
            if len(kept) + len(closures) > AUTH_CLOSURES_LIMIT:
                kept.clear()
            kept.update(closures)
