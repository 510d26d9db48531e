"""The state store: events in, state out, over one LMDB environment."""
import gc
import itertools
import os
import struct
import threading
import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import lmdb
import numpy as np

from . import _core, _names
from .blocks import BlockStore, empty_entries, entries_from, frozen
from .errors import (
    InvalidEventError,
    MissingEventError,
    ReadOnlyError,
    RoomStateError,
    StorageError,
    StoreFormatError,
)
from .events import (
    HAS_CHILD,
    IS_STATE,
    MEMBERSHIP_CODE,
    MEMBERSHIP_MASK,
    OUTLIER,
    REJECTED,
    EventTable,
    Record,
    parse,
    parse_common,
)
from .ids import EVENT, MEMBER_TYPE_NID, ROOM, STATE_KEY, TYPE, IdMaps
from .resolvers import BUILTIN, ResolverContext, newest_event, raise_on_conflict
from .snapshots import EMPTY_SNAPSHOT, SNAPSHOT_KIND, SnapshotStore
from .blocks import BLOCK_KIND
from .statemap import StateDiff, StateMap
from ._write import cached_nid, merge_delta, merge_split
from .txn import ReadTx, Tx

FORMAT_VERSION = 1
# Address space only: LMDB's file grows with the data, not with the map.  A big
# map makes a mid-transaction "map full" (and its replay) rare; it still grows.
DEFAULT_MAP_SIZE = 16 << 30
REPLAY_LIMIT = 100_000
TRIM_EVERY = 50_000
_DBS = (
    "meta",
    "ids",
    "names_r",
    "names_t",
    "names_k",
    "events",
    "event_ids",
    "flags",
    "blocks",
    "block_hashes",
    "snapshots",
    "snapshot_hashes",
    "rooms",
)
_STATE_DBS = ("blocks", "block_hashes", "snapshots", "snapshot_hashes")
_U64 = struct.Struct(">Q")
_COUNT_EVENTS = b"count:events"
_COUNT_STATE = b"count:state_events"


def open(path, *, resolver=None, readonly=False, durable=True, map_size=None):  # noqa: A001
    """Open (or create) the store at ``path``; see :class:`StateStore`."""
    return StateStore(path, resolver=resolver, readonly=readonly, durable=durable, map_size=map_size)


def _resolve_resolver(resolver):
    if resolver is None:
        return raise_on_conflict
    if isinstance(resolver, str):
        try:
            return BUILTIN[resolver]
        except KeyError:
            raise ValueError(f"unknown resolver {resolver!r}; built in: {', '.join(BUILTIN)}") from None
    if not callable(resolver):
        raise TypeError(f"resolver must be callable, got {type(resolver).__name__}")
    return resolver


class _Gate:
    """Many reading transactions, or one map resize (LMDB needs none open to resize)."""

    def __init__(self):
        self._cv = threading.Condition()
        self._readers = 0
        self._resizing = False

    def enter(self):
        with self._cv:
            while self._resizing:
                self._cv.wait()
            self._readers += 1

    def leave(self):
        with self._cv:
            self._readers -= 1
            if self._readers == 0:
                self._cv.notify_all()

    def resize(self, fn):
        with self._cv:
            self._resizing = True
            try:
                while self._readers:
                    self._cv.wait()
                fn()
            finally:
                self._resizing = False
                self._cv.notify_all()


class _Replay:
    """The items an iterator gave, up to ``limit`` of them (or a sequence, read again)."""

    def __init__(self, limit, items=None):
        self.items = [] if items is None else items
        self.limit = limit
        self.overflowed = False

    def remembering(self, source):
        items = self.items
        for item in source:
            if not self.overflowed:
                if len(items) < self.limit:
                    items.append(item)
                else:
                    self.overflowed = True
                    items.clear()
            yield item


class _RelaxedGC:
    """Collect young objects less often during bulk writes.

    A bulk write makes a great many small containers (records, cache
    entries) and no reference cycles; the default first-generation threshold
    has the collector rescan them every 700 allocations, about a sixth of the
    import time.  The previous thresholds come back when the write ends.
    """

    depth = 0
    saved = None
    lock = threading.Lock()

    def __enter__(self):
        with self.lock:
            cls = type(self)
            if cls.depth == 0:
                cls.saved = gc.get_threshold()
                gc.set_threshold(max(cls.saved[0], 100_000), *cls.saved[1:])
            cls.depth += 1

    def __exit__(self, *exc):
        with self.lock:
            cls = type(self)
            cls.depth -= 1
            if cls.depth == 0:
                gc.set_threshold(*cls.saved)


class _Reading:
    __slots__ = ("store", "tx", "own")

    def __init__(self, store):
        self.store = store

    def __enter__(self):
        store = self.store
        tx = getattr(store._local, "tx", None)
        if tx is not None:
            self.own = False
            self.tx = tx
            return tx
        store._check_open()
        self.own = True
        self.tx = ReadTx(store._begin_read, store._gate.leave)
        return self.tx

    def __exit__(self, *exc):
        if self.own:
            self.tx.close()


class _SharedEnv:
    """One LMDB environment per path per process (LMDB forbids opening one twice)."""

    registry = {}
    registry_lock = threading.Lock()

    def __init__(self, env, key, readonly):
        self.env = env
        self.key = key
        self.readonly = readonly
        self.refs = 1
        self.gate = _Gate()
        self.write_lock = threading.RLock()

    @classmethod
    def acquire(cls, path, readonly, opener):
        key = os.path.realpath(path)
        with cls.registry_lock:
            shared = cls.registry.get(key)
            if shared is not None:
                if shared.readonly and not readonly:
                    raise StoreFormatError(
                        f"{path!r} is already open read-only in this process; close it before opening it for writing"
                    )
                shared.refs += 1
                return shared
            shared = cls(opener(), key, readonly)
            cls.registry[key] = shared
            return shared

    def release(self):
        with self.registry_lock:
            self.refs -= 1
            if self.refs == 0:
                del self.registry[self.key]
                self.env.close()


class StateStore:
    """Matrix room state at every event, stored compactly in LMDB.

    Open with :func:`roomstate.open`.  One writer (thread) at a time; reads
    from any thread, each in its own short read transaction.
    """

    def __init__(self, path, *, resolver=None, readonly=False, durable=True, map_size=None):
        self.path = os.fspath(path)
        self.readonly = bool(readonly)
        self.durable = bool(durable)
        self.resolver = _resolve_resolver(resolver)
        self._local = threading.local()
        self._closed = True
        self._shared = _SharedEnv.acquire(self.path, self.readonly, lambda: self._open_env(map_size))
        self.env = self._shared.env
        self._gate = self._shared.gate
        self._write_lock = self._shared.write_lock
        self._closed = False
        try:
            while True:
                try:
                    self._open_dbs()
                    break
                except lmdb.MapResizedError:
                    self._adopt_map_size()
        except BaseException:
            self._closed = True
            self._shared.release()
            raise

    # -- opening -------------------------------------------------------------
    def _open_env(self, map_size):
        path = self.path
        data = os.path.join(path, "data.mdb")
        if not os.path.exists(path):
            if self.readonly:
                raise StoreFormatError(f"no roomstate store at {path!r}")
            os.makedirs(path)
        elif not os.path.isdir(path):
            raise StoreFormatError(f"{path!r} is not a directory, so not a roomstate store")
        elif not os.path.exists(data):
            if self.readonly or os.listdir(path):
                raise StoreFormatError(f"{path!r} is not a roomstate store (it has no data.mdb)")
        size = map_size or DEFAULT_MAP_SIZE
        if os.path.exists(data):
            size = max(size, os.path.getsize(data) * 2)
        try:
            return lmdb.open(
                path,
                map_size=size,
                max_dbs=len(_DBS) + 2,
                readonly=self.readonly,
                sync=self.durable,
                metasync=self.durable,
                max_readers=1024,
                lock=True,
            )
        except lmdb.Error as exc:
            raise StoreFormatError(f"cannot open the store at {path!r}: {exc}") from exc

    def _open_dbs(self):
        env = self.env
        # Named databases are keys of LMDB's main database: an environment
        # holding anything else there was written by another program.
        with env.begin() as txn:
            names = [bytes(k) for k, _ in txn.cursor()]
        foreign = [k for k in names if k.decode("utf-8", "replace") not in _DBS]
        if foreign or (names and b"meta" not in names):
            raise StoreFormatError(f"{self.path!r} is an LMDB environment of another program, not a roomstate store")
        try:
            self._db = {name: env.open_db(name.encode(), create=not self.readonly) for name in _DBS}
        except (lmdb.NotFoundError, lmdb.ReadonlyError) as exc:
            raise StoreFormatError(f"{self.path!r} is not a roomstate store (missing tables)") from exc
        except lmdb.MapFullError:
            self._grow()
            return self._open_dbs()
        if not self.readonly:
            env.reader_check()  # free the slots of reader processes that died
        d = self._db
        self._ids = IdMaps(d["ids"], {ROOM: d["names_r"], TYPE: d["names_t"], STATE_KEY: d["names_k"]}, d["meta"])
        self._blocks = BlockStore(d["blocks"], d["block_hashes"], self._ids)
        self._snaps = SnapshotStore(d["snapshots"], d["snapshot_hashes"], self._blocks, self._ids)
        self._events = EventTable(d["events"], d["event_ids"], d["flags"], self._ids)
        self._ids.events = self._events
        with env.begin(buffers=True) as txn:
            raw = txn.get(b"format", db=d["meta"])
            has_events = txn.stat(d["events"])["entries"] > 0
        if raw is None:
            if has_events:
                raise StoreFormatError(f"{self.path!r} has no format version: not a roomstate store")
            if self.readonly:
                raise StoreFormatError(f"{self.path!r} is an empty, uninitialised store")
            self._write(self._initialise)
        else:
            version = _U64.unpack(raw)[0]
            if version != FORMAT_VERSION:
                newer = "a newer" if version > FORMAT_VERSION else "an older"
                raise StoreFormatError(
                    f"{self.path!r} holds format version {version}, made by {newer} roomstate; "
                    f"this one reads version {FORMAT_VERSION}"
                )

    def _initialise(self, tx):
        if tx.txn.get(b"format", db=self._db["meta"]) is not None:
            return  # another process initialised it first
        self._ids.initialise(tx)
        self._snaps.create_empty(tx)
        tx.txn.put(b"format", _U64.pack(FORMAT_VERSION), db=self._db["meta"])

    # -- lifecycle -----------------------------------------------------------
    def close(self):
        """Close the store; reads and writes afterwards raise."""
        if not self._closed:
            self._closed = True
            self._shared.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if not getattr(self, "_closed", True):
            warnings.warn(f"roomstate store {self.path!r} was not closed", ResourceWarning, stacklevel=2)
            self.close()

    def _check_open(self):
        if self._closed:
            raise RoomStateError("the store is closed")

    # -- transactions ----------------------------------------------------------
    def _reading(self):
        """A context giving the thread's write transaction, or a lazy read transaction."""
        return _Reading(self)

    def _begin_read(self):
        self._check_open()
        self._gate.enter()
        try:
            return self.env.begin(buffers=True)
        except lmdb.MapResizedError:
            self._gate.leave()
            self._adopt_map_size()
            self._gate.enter()
            try:
                return self.env.begin(buffers=True)
            except BaseException:
                self._gate.leave()
                raise
        except BaseException:
            self._gate.leave()
            raise

    def _adopt_map_size(self):
        """Another process grew the map: map the file at its new size."""
        self._gate.resize(lambda: self.env.set_mapsize(0))

    def _grow(self):
        size = self.env.info()["map_size"] * 2
        self._gate.resize(lambda: self.env.set_mapsize(size))

    def _maybe_grow(self):
        info = self.env.info()
        used = (info["last_pgno"] + 1) * self.env.stat()["psize"]
        if used * 2 > info["map_size"]:
            self._grow()

    def _begin_top(self):
        self._maybe_grow()
        try:
            return Tx(self.env.begin(write=True, buffers=True), True)
        except lmdb.MapResizedError:
            self._adopt_map_size()
            return Tx(self.env.begin(write=True, buffers=True), True)

    def _commit_top(self, tx):
        self._flush(tx)
        tx.txn.commit()
        self._publish(tx.pending)

    def _write(self, fn):
        """Run ``fn(tx)`` in one write transaction (nested inside a batch)."""
        self._check_open()
        if self.readonly:
            raise ReadOnlyError(f"the store at {self.path!r} is open read-only")
        outer = getattr(self._local, "tx", None)
        if outer is not None:
            if not outer.write:
                raise RoomStateError("cannot write inside a read")
            child = Tx(self.env.begin(write=True, parent=outer.txn, buffers=True), True, parent=outer)
            self._local.tx = child
            try:
                result = fn(child)
            except BaseException:
                child.txn.abort()
                child.rollback()
                raise
            finally:
                self._local.tx = outer
            child.txn.commit()
            outer.last = child.last
            return result
        with self._write_lock:
            while True:
                tx = self._begin_top()
                self._local.tx = tx
                try:
                    result = fn(tx)
                    self._commit_top(tx)
                except lmdb.MapFullError:
                    tx.txn.abort()
                    self._local.tx = None
                    self._grow()
                    continue
                except lmdb.Error as exc:
                    tx.txn.abort()
                    raise StorageError(f"the store at {self.path!r} could not be written: {exc}") from exc
                except BaseException:
                    tx.txn.abort()
                    raise
                finally:
                    self._local.tx = None
                return result

    def _flush(self, tx):
        meta = tx.pending.get("meta")
        if meta:
            for key, value in meta.items():
                tx.txn.put(key, _U64.pack(value), db=self._db["meta"])
        rooms = tx.pending.get("rooms")
        if rooms:
            for room, ex in rooms.items():
                tx.txn.put(_U64.pack(room), np.asarray(ex, dtype="<u8").tobytes(), db=self._db["rooms"])
        self._events.flush(tx)

    def _publish(self, pending):
        self._ids.publish(pending)
        self._blocks.publish(pending)
        self._snaps.publish(pending)
        self._events.publish(pending)

    def _count(self, tx, key, delta):
        tx.put("meta", key, self._meta_count(tx, key) + delta)

    def _meta_count(self, tx, key):
        cur = tx.get("meta", key) if tx.write else None
        if cur is None:
            raw = tx.txn.get(key, db=self._db["meta"])
            cur = _U64.unpack(raw)[0] if raw is not None else 0
        return cur

    # -- writes ----------------------------------------------------------------
    def add_event(self, event, *, outlier=False, state_before=None, resolver=None):
        """Store one event and the state before and after it (one transaction)."""
        resolver = self.resolver if resolver is None else _resolve_resolver(resolver)
        self._write(lambda tx: self._add_one(tx, event, outlier, state_before, resolver))

    def add_events(self, events, *, resolver=None, progress=False):
        """Store many events in one transaction; returns how many were given."""
        resolver = self.resolver if resolver is None else _resolve_resolver(resolver)
        # A retry after the map grows replays the events: a sequence is simply
        # read again; an iterator's events are kept, up to REPLAY_LIMIT of
        # them (a long call's memory must not grow with it).
        if isinstance(events, Sequence):
            seen = _Replay(0, events)
            source = iter(())
        else:
            seen = _Replay(REPLAY_LIMIT)
            source = iter(events)
        attempts = [0]

        def run(tx):
            attempts[0] += 1
            if attempts[0] > 1 and seen.overflowed:
                raise StorageError(
                    f"the store's map filled up after more than {REPLAY_LIMIT:,} events of this add_events "
                    "call, too many to replay; the call was rolled back and the map has grown: "
                    "call add_events again with the same events"
                )
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(unit="ev", desc="import", disable=None)
            try:
                return self._add_all(tx, itertools.chain(seen.items, seen.remembering(source)), resolver, bar)
            finally:
                if bar is not None:
                    bar.close()

        with _RelaxedGC():
            return self._write(run)

    @contextmanager
    def batch(self, *, resolver=None):
        """One write transaction for many ``add_event`` calls.

        Each call inside is atomic on its own (a nested transaction); the
        batch commits when the block exits normally and is discarded when it
        raises.
        """
        self._check_open()
        if self.readonly:
            raise ReadOnlyError(f"the store at {self.path!r} is open read-only")
        if getattr(self._local, "tx", None) is not None:
            raise RoomStateError("batches do not nest")
        with self._write_lock:
            b = Batch(self, self.resolver if resolver is None else _resolve_resolver(resolver))
            with _RelaxedGC():
                b._begin()
                try:
                    yield b
                except BaseException:
                    b._abort()
                    raise
                b._commit()

    def _add(self, tx, ev, outlier, given, resolver):
        p = parse_common(ev) or parse(ev)  # parse() takes the full validation when the fast path declines
        ids, events = self._ids, self._events
        # Each field read once: ParsedEvent attributes are descriptor lookups.
        eid, room_id, type_, state_key = p.event_id, p.room_id, p.type, p.state_key
        prev_ids, membership, rejected = p.prev_ids, p.membership, p.rejected
        is_state = state_key is not None
        enid, fresh = events.lookup_or_assign(tx, eid)
        known_nid = not fresh
        existing = None if fresh else events.get(tx, enid)
        # Committed NIDs are in the process caches, this transaction's in its tables.
        to_nid, pending = ids.to_nid, tx.pending
        room = cached_nid(to_nid[ROOM], pending, "nid:r", room_id) or ids.assign(tx, ROOM, room_id)
        type_nid = cached_nid(to_nid[TYPE], pending, "nid:t", type_) or ids.assign(tx, TYPE, type_)
        skey_nid = 0
        if is_state:
            skey_nid = cached_nid(to_nid[STATE_KEY], pending, "nid:k", state_key) or ids.assign(
                tx, STATE_KEY, state_key
            )

        prev_nids = []
        prev_recs = []
        max_depth = 0
        missing = unsettled = False
        last = tx.last
        for pid in prev_ids:
            if last is not None and last[0] == pid:
                # The event just added in this transaction: the usual prev of a linear history.
                pnid, prec = last[1], last[2]
            else:
                pnid = events.lookup(tx, pid)
                prec = events.get(tx, pnid) if pnid else None
            if prec is None:
                missing = True
            else:
                if prec.room != room:
                    raise InvalidEventError("prev_events", f"prev event {pid!r} belongs to another room", eid)
                if prec.depth > max_depth:
                    max_depth = prec.depth
                if prec.flags & OUTLIER:
                    unsettled = True
            prev_nids.append(pnid)
            prev_recs.append(prec)

        depth = p.depth if p.depth is not None else 1 + max_depth
        flags = (IS_STATE if is_state else 0) | (REJECTED if rejected else 0)

        if existing is not None:
            self._check_same(tx, existing, p, room, type_nid, skey_nid, prev_nids, flags)
            if not existing.outlier or outlier:
                return 0  # stored already, with the same fields
        newest = enid  # a NID above every stored record: its record can be appended

        if missing:
            for i, pid in enumerate(prev_ids):
                if prev_recs[i] is None:
                    if not (outlier or given is not None):
                        raise MissingEventError(f"prev event {pid!r} of {eid!r} is not stored", pid)
                    if not prev_nids[i]:
                        prev_nids[i] = events.assign_new(tx, pid)
                        events.put_placeholder(tx, prev_nids[i], pid)
                        newest = 0

        if outlier:
            before = after = 0
            flags |= OUTLIER
        else:
            if given is not None:
                parents = [r.after for r in prev_recs if r is not None and not r.outlier]
                before = self._given_state(tx, room, eid, given, parents)
            else:
                if unsettled:
                    for pid, prec in zip(prev_ids, prev_recs):
                        if prec.outlier:
                            raise MissingEventError(
                                f"the state after prev event {pid!r} of {eid!r} is not known (it is an outlier)", pid
                            )
                if len(prev_recs) == 1:
                    before = prev_recs[0].after
                elif not prev_recs:
                    before = EMPTY_SNAPSHOT
                else:
                    before = self._merge(tx, room_id, [r.after for r in prev_recs], resolver, store=True)
            if is_state and not rejected:
                after = self._snaps.derive_state(tx, before, type_nid, skey_nid, enid)
            else:
                after = before

        rec = Record(flags, membership, room, type_nid, skey_nid, depth, before, after, tuple(prev_nids), eid)
        events.put(tx, enid, rec, append=not known_nid and newest == enid)
        # A brand-new NID has no flags yet; one that named a prev may have HAS_CHILD.
        own_flags = events.flags(tx, enid) if known_nid else 0
        if (own_flags & MEMBERSHIP_MASK) != membership:
            events.set_flags(tx, enid, (own_flags & ~MEMBERSHIP_MASK) | membership)
        new = (3 if is_state else 1) if existing is None else 0
        if outlier:
            return new
        # Forward extremities: the new event replaces its prevs, unless a
        # stored event already names it as a prev.
        tx.last = (eid, enid, rec)
        ex = tx.get("rooms", room)  # this transaction's extremities, read before
        if ex is None:
            ex = self._extremity_nids(tx, room)
        if len(prev_nids) == 1 and ex == (prev_nids[0],) and not own_flags & HAS_CHILD:
            tx.put("rooms", room, (enid,))
        else:
            prevset = set(prev_nids)
            new_ex = [e for e in ex if e not in prevset]
            if not (own_flags & HAS_CHILD):
                new_ex.append(enid)
            tx.put("rooms", room, tuple(new_ex))
        if missing or unsettled:
            # HAS_CHILD is read only when an event whose NID existed already is
            # added: a prev not stored yet, or an outlier whose state arrives.
            for pnid, prec in zip(prev_nids, prev_recs):
                if prec is None or prec.flags & OUTLIER:
                    f = events.flags(tx, pnid)
                    if not f & HAS_CHILD:
                        events.set_flags(tx, pnid, f | HAS_CHILD)
        return new

    def _count_new(self, tx, n_events, n_state):
        """Add to the stored event counts (``_add`` returns 1 for a new event, 3 for a new state event)."""
        if n_events:
            self._count(tx, _COUNT_EVENTS, n_events)
        if n_state:
            self._count(tx, _COUNT_STATE, n_state)

    def _add_one(self, tx, ev, outlier, given, resolver):
        new = self._add(tx, ev, outlier, given, resolver)
        if new:
            self._count_new(tx, 1, new >> 1)

    def _add_all(self, tx, events, resolver, bar=None):
        """Add events in order in ``tx``; how many there were."""
        n = n_new = n_state = 0
        add = self._add
        for ev in events:
            code = add(tx, ev, False, None, resolver)
            n += 1
            if n % TRIM_EVERY == 0:
                tx.trim()  # keep a long transaction's caches bounded
            if code:
                n_new += 1
                n_state += code >> 1
            if bar is not None:
                bar.update(1)
        self._count_new(tx, n_new, n_state)
        return n

    def _check_same(self, tx, rec, p, room, type_nid, skey_nid, prev_nids, flags):
        def differ(field, reason):
            raise InvalidEventError(field, f"already stored with a different {reason}", p.event_id)

        if rec.room != room:
            differ("room_id", "room")
        if rec.type != type_nid:
            differ("type", "type")
        if rec.state_key != skey_nid:
            differ("state_key", "state key")
        if tuple(prev_nids) != rec.prevs:
            differ("prev_events", "list of prev events")
        if (rec.flags & (IS_STATE | REJECTED)) != flags:
            differ("rejected", "rejected flag")
        if rec.membership != p.membership:
            differ("content.membership", "membership")
        if p.depth is not None and p.depth != rec.depth:
            differ("depth", "depth")

    def _given_state(self, tx, room, eid, given, parents):
        if not isinstance(given, Mapping):
            raise InvalidEventError("state_before", f"must be a mapping, got {type(given).__name__}", eid)
        ids, events = self._ids, self._events
        rows = []
        for key, sid in given.items():
            if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
                raise InvalidEventError("state_before", f"key {key!r} is not a (type, state_key) pair", eid)
            if not isinstance(sid, str):
                raise InvalidEventError("state_before", f"value for {key!r} is not an event ID", eid)
            snid = ids.lookup(tx, EVENT, sid)
            srec = events.get(tx, snid) if snid else None
            if srec is None:
                raise MissingEventError(f"state event {sid!r} given for {eid!r} is not stored", sid)
            if srec.room != room:
                raise InvalidEventError("state_before", f"event {sid!r} belongs to another room", eid)
            tnid = ids.lookup(tx, TYPE, key[0])
            knid = ids.lookup(tx, STATE_KEY, key[1])
            if not srec.is_state or srec.type != tnid or srec.state_key != knid:
                raise InvalidEventError(
                    "state_before", f"event {sid!r} is not the state event for {key!r}", eid
                )
            rows.append((tnid, knid, snid))
        target = _core.sort_unique(entries_from(rows)) if rows else empty_entries()
        # The state after the newest event named is often exactly the given
        # state (a join's state in a room we already follow): reuse it then.
        candidates = list(parents)
        if rows:
            newest = events.get(tx, max(r[2] for r in rows))
            if newest is not None and not newest.outlier:
                candidates.append(newest.after)
        best = None
        for snap in dict.fromkeys(candidates):
            added, removed = _core.diff(self._snaps.state(tx, snap), target)
            cost = len(added) + len(removed)
            if best is None or cost < best[0]:
                best = (cost, snap, added, removed)
        if best is None:
            return self._snaps.derive(tx, EMPTY_SNAPSHOT, target, indexed=True)
        cost, snap, added, removed = best
        if cost == 0:
            return snap
        tomb = removed.copy()
        tomb["event"] = 0
        delta = _core.overlay([tomb, added], keep_tombstones=True)
        return self._snaps.derive(tx, snap, delta, indexed=True)

    # -- merging ---------------------------------------------------------------
    def _merge(self, tx, room_id, snaps, resolver, store):
        """The state merging several snapshots.

        With ``store`` the result is stored as a delta against the closest
        input and its snapshot NID returned; otherwise the full entry array.
        """
        snaps = list(dict.fromkeys(snaps))
        S = self._snaps
        if len(snaps) == 1:
            return snaps[0] if store else S.state(tx, snaps[0])
        prefix, keys, vals = S.aligned(tx, snaps)
        result, agree, conflicted_rows = merge_split(vals)
        if len(conflicted_rows) and resolver is newest_event:
            self._resolve_newest(tx, vals, conflicted_rows, result)
        elif len(conflicted_rows):
            keys, vals, result = self._resolve(
                tx, room_id, snaps, prefix, keys, vals, agree, result, conflicted_rows, resolver
            )
        if not store:
            delta = keys.copy()
            delta["event"] = result
            return frozen(_core.overlay(prefix + [delta]))
        if len(keys) == 0:
            return snaps[0]
        j, delta = merge_delta(keys, vals, result)
        if delta is None:
            return snaps[j]
        return S.derive(tx, snaps[j], delta, indexed=True)

    def _resolve_newest(self, tx, vals, rows, result):
        """``newest_event`` on NIDs: no strings unless two candidates share a depth."""
        get = self._events.get
        for i, row in zip(rows.tolist(), vals[rows].tolist()):
            depths = {e: get(tx, e).depth for e in set(row) if e}  # one record read per candidate
            top = max(depths.values())
            tied = [e for e, d in depths.items() if d == top]
            result[i] = tied[0] if len(tied) == 1 else max(tied, key=lambda e: self._events.event_id(tx, e))

    def _resolve(self, tx, room_id, snaps, prefix, keys, vals, agree, result, rows, resolver):
        ids = self._ids
        ck = keys[rows]
        cv = vals[rows]
        tnames = ids.names(tx, TYPE, ck["type"])
        knames = ids.names(tx, STATE_KEY, ck["state_key"])
        uniq = np.unique(cv[cv != 0])
        enames = dict(zip(uniq.tolist(), ids.names(tx, EVENT, uniq)))
        conflicted = {}
        for i, key in enumerate(zip(tnames, knames)):
            conflicted[key] = {enames[e] for e in cv[i].tolist() if e}

        def unconflicted():
            d = keys.copy()
            d["event"] = np.where(agree, vals[:, 0] if len(keys) else 0, 0)
            return frozen(_core.overlay(prefix + [d]))

        state_sets = [StateMap(self, loader=lambda s=s: self._state_entries(s)) for s in snaps]
        ctx = ResolverContext(room_id, state_sets, conflicted, StateMap(self, loader=unconflicted), self)
        choice = resolver(ctx)
        if not isinstance(choice, Mapping):
            raise TypeError(f"the resolver returned {type(choice).__name__}, not a mapping")
        row_of = {tk: i for i, tk in enumerate(zip(keys["type"].tolist(), keys["state_key"].tolist()))}
        extra = []
        picked = set()
        for key, sid in choice.items():
            if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
                raise InvalidEventError("resolver", f"returned key {key!r}, not a (type, state_key) pair")
            if not isinstance(sid, str):
                raise InvalidEventError("resolver", f"returned {sid!r} for {key!r}, not an event ID")
            tnid = ids.lookup(tx, TYPE, key[0])
            knid = ids.lookup(tx, STATE_KEY, key[1])
            snid = ids.lookup(tx, EVENT, sid)
            srec = self._events.get(tx, snid) if snid else None
            if srec is None or not srec.is_state or srec.type != tnid or srec.state_key != knid:
                raise InvalidEventError(
                    "resolver", f"returned {sid!r} for {key!r}: not a stored state event for that key"
                )
            i = row_of.get((tnid, knid))
            if i is None:
                extra.append((tnid, knid, snid))
            else:
                result[i] = snid
                picked.add(i)
        # Conflicted keys the resolver left out are dropped.
        for i in rows.tolist():
            if i not in picked:
                result[i] = 0
        if extra:
            ek = entries_from((t, k, 0) for t, k, _ in extra)
            ev = _core.lookup_keys(prefix, ek)
            keys = np.concatenate([keys, ek])
            vals = np.concatenate([vals, np.repeat(ev[:, None], vals.shape[1], axis=1)])
            result = np.concatenate([result, np.array([e for _, _, e in extra], dtype=np.uint64)])
            order = np.lexsort((keys["state_key"], keys["type"]))
            keys, vals, result = keys[order], vals[order], result[order]
        return keys, vals, result

    # -- reads -----------------------------------------------------------------
    def _record(self, tx, event_id):
        if not isinstance(event_id, str):
            raise TypeError(f"event_id must be a string, got {type(event_id).__name__}")
        nid = self._ids.lookup(tx, EVENT, event_id)
        rec = self._events.get(tx, nid) if nid else None
        if rec is None:
            raise MissingEventError(f"unknown event {event_id!r}", event_id)
        return nid, rec

    def _snapshot_of(self, tx, event_id, after):
        _, rec = self._record(tx, event_id)
        if rec.outlier:
            raise MissingEventError(f"the state at {event_id!r} is not known (it is an outlier)", event_id)
        return rec.after if after else rec.before

    def _room(self, tx, room_id):
        if not isinstance(room_id, str):
            raise TypeError(f"room_id must be a string, got {type(room_id).__name__}")
        room = self._ids.lookup(tx, ROOM, room_id)
        if not room:
            raise MissingEventError(f"unknown room {room_id!r}")
        return room

    def _extremity_nids(self, tx, room):
        ex = tx.get("rooms", room) if tx.write else None
        if ex is None:
            raw = tx.txn.get(_U64.pack(room), db=self._db["rooms"])
            ex = tuple(np.frombuffer(raw, dtype="<u8").tolist()) if raw is not None else ()
        return ex

    def _state_entries(self, snap):
        with self._reading() as tx:
            return self._snaps.state(tx, snap)

    def _filter(self, tx, entries, types):
        if types is None:
            return entries
        if isinstance(types, (str, bytes)) or not hasattr(types, "__iter__"):
            raise TypeError("types must be an iterable of (type, state_key) pairs")
        tn, kn = [], []
        for pair in types:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(f"types: {pair!r} is not a (type, state_key) pair")
            t, k = pair
            if not isinstance(t, str) or not (k is None or isinstance(k, str)):
                raise TypeError(f"types: {pair!r} must be (str, str or None)")
            tnid = self._ids.lookup(tx, TYPE, t)
            if not tnid:
                continue
            knid = 0 if k is None else self._ids.lookup(tx, STATE_KEY, k)
            if k is not None and not knid:
                continue
            tn.append(tnid)
            kn.append(knid)
        if not tn:
            return empty_entries()
        return frozen(_core.select(entries, tn, kn))

    def _statemap(self, event_id, after, types):
        with self._reading() as tx:
            snap = self._snapshot_of(tx, event_id, after)
            return StateMap(self, self._filter(tx, self._snaps.state(tx, snap), types))

    def state_before(self, event_id, *, types=None):
        """The state before an event (a StateMap)."""
        return self._statemap(event_id, False, types)

    def state_after(self, event_id, *, types=None):
        """The state after an event: before it, plus itself if it is an accepted state event."""
        return self._statemap(event_id, True, types)

    def current_state(self, room_id, *, types=None):
        """The merged state after all forward extremities of a room."""
        with self._reading() as tx:
            room = self._room(tx, room_id)
            ex = self._extremity_nids(tx, room)
            if not ex:
                return StateMap(self, empty_entries())
            snaps = [self._events.get(tx, e).after for e in ex]
            entries = self._merge(tx, room_id, snaps, self.resolver, store=False)
            return StateMap(self, self._filter(tx, entries, types))

    def forward_extremities(self, room_id):
        """Event IDs of a room's forward extremities (events with no stored children)."""
        with self._reading() as tx:
            room = self._room(tx, room_id)
            return self._ids.names(tx, EVENT, sorted(self._extremity_nids(tx, room)))

    def get_state(self, event_id, type, state_key, *, after=False):  # noqa: A002
        """The event ID holding ``(type, state_key)`` at an event, or None."""
        with self._reading() as tx:
            snap = self._snapshot_of(tx, event_id, after)
            tnid = self._ids.lookup(tx, TYPE, type)
            knid = self._ids.lookup(tx, STATE_KEY, state_key)
            if not tnid or not knid:
                return None
            enid = self._snaps.get(tx, snap, tnid, knid)
            return self._ids.name(tx, EVENT, enid) if enid else None

    def state_diff(self, event_a, event_b):
        """From the state after ``event_a`` to the state after ``event_b``."""
        with self._reading() as tx:
            sa = self._snapshot_of(tx, event_a, True)
            sb = self._snapshot_of(tx, event_b, True)
            if sa == sb:
                return StateDiff({}, {})
            _, keys, vals = self._snaps.aligned(tx, [sa, sb])
            changed = vals[:, 0] != vals[:, 1]
            keys, vals = keys[changed], vals[changed]
            names = self._ids.names
            tn = names(tx, TYPE, keys["type"])
            kn = names(tx, STATE_KEY, keys["state_key"])
            added, removed = {}, {}
            for col, out in ((1, added), (0, removed)):
                sel = np.flatnonzero(vals[:, col] != 0)
                evs = names(tx, EVENT, vals[sel, col])
                for i, e in zip(sel.tolist(), evs):
                    out[(tn[i], kn[i])] = e
            return StateDiff(added, removed)

    def members(self, event_id, membership="join", *, after=False):
        """State keys of the ``m.room.member`` entries with that membership at an event."""
        code = MEMBERSHIP_CODE.get(membership)
        if code is None:
            raise ValueError(f"membership must be one of {', '.join(MEMBERSHIP_CODE)}, got {membership!r}")
        with self._reading() as tx:
            snap = self._snapshot_of(tx, event_id, after)
            state = self._snaps.state(tx, snap)
            lo, hi = _core.type_range(state, MEMBER_TYPE_NID)
            sub = state[lo:hi]
            codes = self._events.memberships(tx, sub["event"])
            return self._ids.names(tx, STATE_KEY, sub["state_key"][codes == code])

    def has_event(self, event_id):
        """True when the event is stored (outliers included)."""
        with self._reading() as tx:
            nid = self._ids.lookup(tx, EVENT, event_id)
            return bool(nid) and self._events.get(tx, nid) is not None

    def is_outlier(self, event_id):
        with self._reading() as tx:
            return self._record(tx, event_id)[1].outlier

    def event_depth(self, event_id):
        """The stored depth of an event."""
        with self._reading() as tx:
            return self._record(tx, event_id)[1].depth

    def stats(self):
        """Counts and bytes per structure."""
        with self._reading() as tx:
            psize = self.env.stat()["psize"]
            tables = {}
            for name in _DBS:
                st = tx.txn.stat(self._db[name])
                pages = st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]
                tables[name] = {"entries": st["entries"], "bytes": pages * psize}
            info = self.env.info()
            events = self._meta_count(tx, _COUNT_EVENTS)
            state_events = self._meta_count(tx, _COUNT_STATE)
            state_bytes = sum(tables[n]["bytes"] for n in _STATE_DBS)
            in_use = sum(t["bytes"] for t in tables.values()) + 2 * psize  # + the two meta pages
            mapped = (info["last_pgno"] + 1) * psize
            data = os.path.join(self.path, "data.mdb")
            return {
                "events": events,
                "state_events": state_events,
                "rooms": tables["rooms"]["entries"],
                "blocks": self._ids.peek_next(tx, BLOCK_KIND) - 1,
                "snapshots": self._ids.peek_next(tx, SNAPSHOT_KIND) - 1,
                "block_entries": self._block_entries(tx),
                "tables": tables,
                "state_bytes": state_bytes,
                "bytes_in_use": in_use,
                "free_bytes": max(0, mapped - in_use),
                "file_bytes": os.path.getsize(data) if os.path.exists(data) else 0,
                "bytes_per_event": in_use / events if events else 0.0,
                "bytes_per_state_event": in_use / state_events if state_events else 0.0,
                "state_bytes_per_state_event": state_bytes / state_events if state_events else 0.0,
            }

    def _block_entries(self, tx):
        total = 0
        with tx.txn.cursor(db=self._db["blocks"]) as cur:
            for _, value in cur:
                total += len(value) // 16
        return total

    # for StateMap: strings of NIDs, outside or inside a transaction
    def _state_strings(self, entries):
        """The ``(type, state_key)`` keys and the event IDs of entries, as two lists.

        Answered from the NID caches in one C loop when they hold every string
        (a warm store); otherwise the strings they miss are read into them in
        one C loop per kind first.
        """
        self._check_open()  # cached strings too: a closed store answers nothing
        ids, events = self._ids, self._events
        caches = (ids.pairs, ids.to_str[TYPE], ids.to_str[STATE_KEY], events.to_str)
        keys, values, missing = _names.state_names(entries, *caches)
        if not missing:
            return keys, values
        with self._reading() as tx:
            if not tx.write:  # only committed strings may be cached
                for kind, column in ((TYPE, "type"), (STATE_KEY, "state_key"), (EVENT, "event")):
                    ids.read(tx, kind, np.unique(entries[column]).tolist())
                keys, values, missing = _names.state_names(entries, *caches)
            if missing:  # a write transaction's reads, or caches too small for the state
                at = [i for i, k in enumerate(keys) if k is None]
                if at:
                    sub = entries[at]
                    pairs = zip(ids.names(tx, TYPE, sub["type"]), ids.names(tx, STATE_KEY, sub["state_key"]))
                    for i, pair in zip(at, pairs):
                        keys[i] = pair
                at = [i for i, v in enumerate(values) if v is None]
                if at:
                    for i, event_id in zip(at, ids.names(tx, EVENT, entries["event"][at])):
                        values[i] = event_id
        return keys, values

    def _names(self, kind, nids):
        with self._reading() as tx:
            return self._ids.names(tx, kind, nids)

    def _nids_of_key(self, type_, state_key):
        cache_t = self._ids.to_nid[TYPE].get(type_)
        cache_k = self._ids.to_nid[STATE_KEY].get(state_key)
        if cache_t is not None and cache_k is not None:
            return cache_t, cache_k
        with self._reading() as tx:
            return self._ids.lookup(tx, TYPE, type_), self._ids.lookup(tx, STATE_KEY, state_key)


class Batch:
    """Many writes in one transaction; see :meth:`StateStore.batch`."""

    def __init__(self, store, resolver):
        self._store = store
        self._resolver = resolver
        self._log = []
        self._tx = None

    def _begin(self):
        self._tx = self._store._begin_top()
        self._store._local.tx = self._tx

    def _abort(self):
        if self._tx is not None:
            self._tx.txn.abort()
            self._tx = None
        self._store._local.tx = None

    def _restart(self):
        """The map filled up: start again in a bigger map and replay what succeeded."""
        while True:
            self._abort()
            self._store._grow()
            self._begin()
            try:
                for op in self._log:
                    self._store._write(op)
                return
            except lmdb.MapFullError:
                continue

    def _run(self, op):
        if self._tx is None:
            raise RoomStateError("the batch is finished")
        while True:
            try:
                result = self._store._write(op)
            except lmdb.MapFullError:
                self._restart()
                continue
            self._log.append(op)
            return result

    def _commit(self):
        while True:
            try:
                self._store._commit_top(self._tx)
                break
            except lmdb.MapFullError:
                self._restart()
            except lmdb.Error as exc:
                self._abort()
                raise StorageError(f"the store at {self._store.path!r} could not be written: {exc}") from exc
        self._tx = None
        self._store._local.tx = None

    def add_event(self, event, *, outlier=False, state_before=None, resolver=None):
        resolver = self._resolver if resolver is None else _resolve_resolver(resolver)
        store = self._store
        self._run(lambda tx: store._add_one(tx, event, outlier, state_before, resolver))

    def add_events(self, events, *, resolver=None):
        resolver = self._resolver if resolver is None else _resolve_resolver(resolver)
        store = self._store
        events = list(events)
        return self._run(lambda tx: store._add_all(tx, events, resolver))
