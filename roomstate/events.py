"""Event input validation, event records, and the per-event mark column.

Two kinds of per-event bits, with two names: a record's ``flags`` (``IS_STATE``,
``REJECTED``, ``OUTLIER``, ``PLACEHOLDER``: fixed when the record is written) and
the event's ``marks`` in the mark column (its membership code and ``HAS_CHILD``:
changed after the record, by later events).  The column lives in the LMDB
database named ``flags``.
"""
from collections.abc import Mapping

import numpy as np

from ._core import unpack_uvarints
from ._names import NameCache
from ._parse import MAX_AUTH, MAX_DEPTH, MAX_PREVS, MEMBERSHIP_CODE, MEMBERSHIPS, OTHER_MEMBERSHIP, ParsedEvent, parse_common
from ._records import HAS_AUTH, HASH_ID, IS_STATE, OUTLIER, PLACEHOLDER, REJECTED, Record, event_id_key, published_records
from ._write import uvarint
from .checksum import seal_short, unseal_short
from .damage import DECODE_ERRORS, damaged, decode_error
from .errors import InvalidEventError, RoomStateError
from .format import U64
from .ids import EVENT
from .txn import BoundedCache, ReadThrough

# The bits of an event's marks.
MEMBERSHIP_MASK = 0x07
HAS_CHILD = 0x08  # a non-outlier event lists this one as a prev

_U64 = U64  # format.py: big-endian u64 keys and values
CHUNK = 1000  # events per mark chunk: four chunks fill a 4 KiB page


def _string(ev, field, event_id, required=True):
    if field not in ev:
        if required:
            raise InvalidEventError(field, "missing", event_id)
        return None
    value = ev[field]
    if not isinstance(value, str):
        raise InvalidEventError(field, f"must be a string, got {type(value).__name__}", event_id)
    return str(value)  # a str subclass is stored as the plain string it holds


def parse(ev):
    """Validate an event mapping; raise :class:`InvalidEventError` naming the field."""
    p = parse_common(ev)
    if p is not None:
        return p
    return _parse(ev)


def _parse(ev):
    """The full validation: any shape a mapping may take, with an error for each fault."""
    if type(ev) is not dict and not isinstance(ev, Mapping):
        raise InvalidEventError("event", f"must be a mapping, got {type(ev).__name__}")
    get = ev.get
    event_id = get("event_id")
    if type(event_id) is not str:
        event_id = _string(ev, "event_id", None)
    if not event_id:
        raise InvalidEventError("event_id", "must not be empty")
    room_id = get("room_id")
    if type(room_id) is not str:
        room_id = _string(ev, "room_id", event_id)
    if not room_id:
        raise InvalidEventError("room_id", "must not be empty", event_id)
    type_ = get("type")
    if type(type_) is not str:
        type_ = _string(ev, "type", event_id)
    state_key = get("state_key")
    if state_key is not None or "state_key" in ev:
        if type(state_key) is not str:
            state_key = _string(ev, "state_key", event_id)

    prevs = ev.get("prev_events", [])
    if not isinstance(prevs, (list, tuple)):
        raise InvalidEventError("prev_events", f"must be a list, got {type(prevs).__name__}", event_id)
    if len(prevs) > MAX_PREVS:
        raise InvalidEventError("prev_events", f"has {len(prevs)} entries, at most {MAX_PREVS}", event_id)
    prev_ids = []
    seen = set()
    for i, p in enumerate(prevs):
        p = _reference(p, i, "prev_events", event_id)
        if p not in seen:
            seen.add(p)
            prev_ids.append(p)

    depth = ev.get("depth")
    if depth is not None:
        if isinstance(depth, bool) or not isinstance(depth, int):
            raise InvalidEventError("depth", f"must be an integer, got {type(depth).__name__}", event_id)
        if not 0 <= depth <= MAX_DEPTH:
            raise InvalidEventError("depth", f"must be between 0 and 2**63-1, got {depth}", event_id)

    rejected = ev.get("rejected", False)
    if not isinstance(rejected, bool):
        raise InvalidEventError("rejected", f"must be a boolean, got {type(rejected).__name__}", event_id)

    membership = 0
    if type_ == "m.room.member" and state_key is not None:
        content = ev.get("content")
        if content is not None and not isinstance(content, Mapping):
            raise InvalidEventError("content", f"must be a mapping, got {type(content).__name__}", event_id)
        m = content.get("membership") if content else None
        if m is not None:
            if not isinstance(m, str):
                raise InvalidEventError(
                    "content.membership", f"must be a string, got {type(m).__name__}", event_id
                )
            membership = MEMBERSHIP_CODE.get(m, OTHER_MEMBERSHIP)

    sender = get("sender")
    if sender is not None or "sender" in ev:
        if type(sender) is not str:
            sender = _string(ev, "sender", event_id)
    ts = get("origin_server_ts")
    if ts is not None or "origin_server_ts" in ev:
        if isinstance(ts, bool) or not isinstance(ts, int):
            raise InvalidEventError("origin_server_ts", f"must be an integer, got {type(ts).__name__}", event_id)
        if not 0 <= ts <= MAX_DEPTH:
            raise InvalidEventError("origin_server_ts", f"must be between 0 and 2**63-1, got {ts}", event_id)
        ts = int(ts)
    auth_ids = None
    if "auth_events" in ev:
        auth = ev["auth_events"]
        if not isinstance(auth, (list, tuple)):
            raise InvalidEventError("auth_events", f"must be a list, got {type(auth).__name__}", event_id)
        if len(auth) > MAX_AUTH:
            raise InvalidEventError("auth_events", f"has {len(auth)} entries, at most {MAX_AUTH}", event_id)
        auth_ids = [_reference(a, i, "auth_events", event_id) for i, a in enumerate(auth)]
    return ParsedEvent(
        event_id, room_id, type_, state_key, prev_ids, depth, rejected, membership, sender, ts, auth_ids
    )


def _reference(ref, i, field, event_id):
    """The event ID in entry ``i`` of ``prev_events`` or ``auth_events``: an ID, or in room
    versions 1 and 2 an ``[event_id, hashes]`` pair."""
    if isinstance(ref, (list, tuple)):
        if len(ref) != 2 or not isinstance(ref[0], str):
            raise InvalidEventError(field, f"entry {i} must be an event ID or an [event_id, hashes] pair", event_id)
        ref = ref[0]
    elif not isinstance(ref, str):
        raise InvalidEventError(field, f"entry {i} must be an event ID string, got {type(ref).__name__}", event_id)
    if not ref:
        raise InvalidEventError(field, f"entry {i} is empty", event_id)
    if ref == event_id:
        raise InvalidEventError(field, "an event cannot name itself", event_id)
    return str(ref)


#: Bits a record's flags may hold; a record's membership code fits MEMBERSHIP_MASK.
_KNOWN_FLAGS = IS_STATE | REJECTED | OUTLIER | HAS_AUTH | PLACEHOLDER | HASH_ID


def decode_record(raw, nid):
    """The :class:`Record` stored under ``nid`` in ``events``; :func:`~roomstate.damage.damaged`
    when it cannot be one."""
    try:
        rec = Record.unpack(raw, nid)
    except DECODE_ERRORS as exc:
        raise decode_error("events", nid, exc) from None
    if rec.flags & ~_KNOWN_FLAGS or rec.membership > MEMBERSHIP_MASK or len(rec.prevs) > MAX_PREVS:
        raise damaged("events", nid, "the record holds flags, a membership or a prev count no writer makes")
    if not rec.flags & PLACEHOLDER and not (rec.room and rec.type):
        raise damaged("events", nid, "the record names no room or no type")
    if nid in rec.prevs or nid in rec.auth_events:
        raise damaged("events", nid, "the event names itself as a prev or auth event")
    return rec


def _index_nid(key, val):
    """The NID in an ``event_ids`` value (one varint)."""
    try:
        (nid,), end = unpack_uvarints(val, 1)
    except DECODE_ERRORS as exc:
        raise decode_error("event_ids", key, exc) from None
    if end != len(val) or nid == 0:
        raise damaged("event_ids", key, "the value is not one varint NID")
    return nid


class EventTable:
    """Event records by event NID, the event ID map, and the mark column.

    The forward map keys an event ID by an 8-byte BLAKE2b digest (event IDs
    are 44 bytes in modern rooms; the digest keeps the index small); a hit
    is checked against the ID in the record, and the rare ID whose 8-byte
    digest is taken by another ID is keyed by its 16-byte digest instead.
    """

    def __init__(self, events_db, event_ids_db, marks_db, ids, cache_items=200_000):
        self.db = events_db
        self.ids_db = event_ids_db
        self.marks_db = marks_db
        self.ids = ids
        self._next, self._meta_db = ids.counter(b"e")
        # Settled records (neither outliers nor placeholders) by NID.
        self._records = ReadThrough(BoundedCache(cache_items), "event")
        # Event ID -> NID.  The reverse map NID -> event ID is the record: a write
        # transaction reads it from its pending records, so it has no table of its own.
        self._nids = ReadThrough(BoundedCache(500_000), "enid")
        self._event_ids = ReadThrough(NameCache(500_000), None)
        # Mark chunks: never cached across transactions, since an event named as a
        # prev gets its NID (and a place in a chunk) long before its membership arrives.
        self._chunks = ReadThrough(None, "marks")
        self.cache = self._records.cache
        self.to_nid = self._nids.cache
        self.to_str = self._event_ids.cache
        self.sums = True  # mark chunks end with a checksum (Tables.set_format)

    # -- event IDs ---------------------------------------------------------
    def lookup(self, tx, event_id):
        """The NID of an event ID, or 0 when it has none."""
        nid = self._nids.find(tx, event_id)
        if nid is not None:
            return nid
        for size in (8, 16):
            key = event_id_key(event_id, size)
            val = tx.txn.get(key, None, self.ids_db)
            if val is None:
                return 0
            nid = _index_nid(key, val)
            if self.event_id(tx, nid) == event_id:
                self._keep(tx, event_id, nid)
                return nid
        raise RoomStateError(f"two event IDs share a 16-byte digest with {event_id!r}")

    def lookup_or_assign(self, tx, event_id):
        """``(nid, new)``: the event ID's NID, assigned now when it had none.

        The common case of a bulk import — an ID never seen — costs one LMDB
        put that refuses to overwrite, instead of a get and a put.
        """
        nid = self._nids.find(tx, event_id)
        if nid is not None:
            return nid, False
        key = event_id_key(event_id, 8)
        nid = tx.next_counter(self._next, self._meta_db)  # ids.next_nid(tx, b"e") without a call layer
        # lmdb's put(key, value, dupdata, overwrite, append, db): positional
        # arguments, as on every per-event put, parse faster than keywords.
        if tx.txn.put(key, uvarint(nid), True, False, False, self.ids_db):
            self._nids.keep(tx, event_id, nid)
            return nid, True
        self.ids.unallocate(tx, b"e", nid)
        nid = self.lookup(tx, event_id)
        if nid:
            return nid, False
        return self.assign_new(tx, event_id), True

    def assign(self, tx, event_id):
        nid = self.lookup(tx, event_id)
        if nid:
            return nid
        return self.assign_new(tx, event_id)

    def assign_new(self, tx, event_id):
        """A NID for an event ID that :meth:`lookup` has just not found."""
        key = event_id_key(event_id, 8)
        if tx.txn.get(key, None, self.ids_db) is not None:
            key = event_id_key(event_id, 16)  # its 8-byte digest names another ID
        nid = self.ids.next_nid(tx, b"e")
        tx.txn.put(key, uvarint(nid), True, True, False, self.ids_db)
        self._keep(tx, event_id, nid)
        return nid

    def _keep(self, tx, event_id, nid):
        """Remember a mapping both ways (a write transaction: one way, see ``__init__``)."""
        self._nids.keep(tx, event_id, nid)
        self._event_ids.keep(tx, nid, event_id)

    def event_id(self, tx, nid):
        s = self._event_ids.find(tx, nid)
        if s is not None:
            return s
        rec = self._records.find(tx, nid)
        if rec is not None:
            return rec.event_id
        raw = tx.txn.get(_U64.pack(nid), None, self.db)
        if raw is None:
            raise damaged("events", nid, "an event NID named by another record has no record")
        return self._event_ids.keep(tx, nid, decode_record(raw, nid).event_id)

    def names(self, tx, nids):
        """Event IDs of many NIDs, in order: cached ones at once, the rest in one LMDB call."""
        keys = nids.tolist() if isinstance(nids, np.ndarray) else list(nids)
        out = list(map(self.to_str.get, keys))
        if None in out:
            missing = [i for i, s in enumerate(out) if s is None]
            if tx.write:
                for i in missing:
                    out[i] = self.event_id(tx, keys[i])
                return out
            by_key = self.ids.read(tx, EVENT, sorted(set(keys[i] for i in missing)))
            for i in missing:
                out[i] = by_key[keys[i]]
        return out

    # -- records -----------------------------------------------------------
    def get(self, tx, nid):
        """The record of a stored event, or None (unknown, or only named as a prev)."""
        rec = self._records.find(tx, nid)
        if rec is not None:
            return rec if not rec.flags & PLACEHOLDER else None  # pending records hold placeholders
        raw = tx.txn.get(_U64.pack(nid), None, self.db)
        if raw is None:
            return None
        rec = decode_record(raw, nid)
        if rec.flags & PLACEHOLDER:
            return None
        # An outlier's record changes when its state becomes known; cache only settled ones.
        if not rec.outlier:
            self._records.keep(tx, nid, rec)
        return rec

    def put(self, tx, nid, rec, append=False):
        if not tx.txn.put(_U64.pack(nid), rec.pack(nid), True, True, append, self.db):
            raise damaged("events", nid, "the event NID is not above the stored ones (the counter is behind)")
        self._records.keep(tx, nid, rec)

    def put_placeholder(self, tx, nid, event_id):
        """Keep the ID of an event named as a prev before it is stored."""
        self.put(tx, nid, Record(PLACEHOLDER, 0, 0, 0, 0, 0, 0, 0, (), event_id))

    def publish(self, pending):
        """After a commit: move this transaction's records and event IDs into the caches."""
        new = pending.get(self._records.table)
        if new:
            settled, event_ids = published_records(new)
            self._records.cache.update(settled)
        self._nids.publish(pending)
        if new:
            self._event_ids.cache.update(event_ids)

    # -- mark column -------------------------------------------------------
    def _chunk(self, tx, idx):
        chunk = self._chunks.find(tx, idx)
        if chunk is not None:
            return chunk
        key = _U64.pack(idx)
        raw = tx.txn.get(key, None, self.marks_db)
        if raw is None:
            return bytes(CHUNK)
        if self.sums:
            raw = unseal_short("flags", idx, key, raw)
        if len(raw) != CHUNK:
            raise damaged("flags", idx, f"a mark chunk is {CHUNK} bytes, this one {len(raw)}")
        return bytes(raw)

    def marks(self, tx, nid):
        """The marks of an event NID (membership code and ``HAS_CHILD``)."""
        return self._chunk(tx, nid // CHUNK)[nid % CHUNK]

    def set_marks(self, tx, nid, value):
        idx = nid // CHUNK
        chunk = tx.table("marks").get(idx)
        if chunk is None:
            chunk = bytearray(self._chunk(tx, idx))
            tx.put("marks", idx, chunk)
        elif tx.undo is not None:
            tx.save("marks", idx)
        chunk[nid % CHUNK] = value

    def memberships(self, tx, nids):
        """Membership codes of many event NIDs (a uint64 array) as a uint8 array."""
        if not len(nids):
            return np.zeros(0, dtype=np.uint8)
        idx = nids // CHUNK
        chunks, where = np.unique(idx, return_inverse=True)
        flat = np.frombuffer(b"".join(self._chunk(tx, c) for c in chunks.tolist()), dtype=np.uint8)
        return flat[where * CHUNK + (nids % CHUNK).astype(np.intp)] & MEMBERSHIP_MASK

    def flush(self, tx):
        """At the outermost commit: write the changed mark chunks."""
        table = tx.pending.get("marks")
        if table:
            for idx, chunk in table.items():
                key = _U64.pack(idx)
                tx.txn.put(key, seal_short(key, chunk), True, True, False, self.marks_db)
