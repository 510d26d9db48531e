"""Event input validation, event records, and the per-event flag column."""
import struct
from collections.abc import Mapping

from .errors import InvalidEventError

MEMBERSHIPS = ("join", "invite", "leave", "ban", "knock")
MEMBERSHIP_CODE = {m: i for i, m in enumerate(MEMBERSHIPS, start=1)}
OTHER_MEMBERSHIP = 7  # a membership string outside the five the spec defines
MEMBERSHIP_MASK = 0x07
HAS_CHILD = 0x08  # a non-outlier event lists this one as a prev

IS_STATE, REJECTED, OUTLIER = 1, 2, 4

MAX_DEPTH = 2**63 - 1
MAX_PREVS = 65535

_REC = struct.Struct("<BBHIIIQQQ")
_U64 = struct.Struct(">Q")
CHUNK = 1024  # events per flag chunk


class Parsed:
    """A validated event: only the fields the engine reads."""

    __slots__ = ("event_id", "room_id", "type", "state_key", "prev_ids", "depth", "rejected", "membership")

    def __init__(self, event_id, room_id, type_, state_key, prev_ids, depth, rejected, membership):
        self.event_id = event_id
        self.room_id = room_id
        self.type = type_
        self.state_key = state_key
        self.prev_ids = prev_ids
        self.depth = depth
        self.rejected = rejected
        self.membership = membership


def _string(ev, field, event_id, required=True):
    if field not in ev:
        if required:
            raise InvalidEventError(field, "missing", event_id)
        return None
    value = ev[field]
    if not isinstance(value, str):
        raise InvalidEventError(field, f"must be a string, got {type(value).__name__}", event_id)
    return value


def parse(ev):
    """Validate an event mapping; raise :class:`InvalidEventError` naming the field."""
    if not isinstance(ev, Mapping):
        raise InvalidEventError("event", f"must be a mapping, got {type(ev).__name__}")
    event_id = _string(ev, "event_id", None)
    if not event_id:
        raise InvalidEventError("event_id", "must not be empty")
    room_id = _string(ev, "room_id", event_id)
    if not room_id:
        raise InvalidEventError("room_id", "must not be empty", event_id)
    type_ = _string(ev, "type", event_id)
    state_key = _string(ev, "state_key", event_id, required=False)

    prevs = ev.get("prev_events", [])
    if not isinstance(prevs, (list, tuple)):
        raise InvalidEventError("prev_events", f"must be a list, got {type(prevs).__name__}", event_id)
    if len(prevs) > MAX_PREVS:
        raise InvalidEventError("prev_events", f"has {len(prevs)} entries, at most {MAX_PREVS}", event_id)
    prev_ids = []
    seen = set()
    for i, p in enumerate(prevs):
        if isinstance(p, (list, tuple)):
            # Room versions 1 and 2: [event_id, {hashes}] pairs.
            if len(p) != 2 or not isinstance(p[0], str):
                raise InvalidEventError(
                    "prev_events", f"entry {i} must be an event ID or an [event_id, hashes] pair", event_id
                )
            p = p[0]
        elif not isinstance(p, str):
            raise InvalidEventError(
                "prev_events", f"entry {i} must be an event ID string, got {type(p).__name__}", event_id
            )
        if not p:
            raise InvalidEventError("prev_events", f"entry {i} is empty", event_id)
        if p == event_id:
            raise InvalidEventError("prev_events", "an event cannot be its own prev", event_id)
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
    return Parsed(event_id, room_id, type_, state_key, prev_ids, depth, rejected, membership)


class Record:
    """A stored event: NIDs of its strings, its depth, and the snapshots around it."""

    __slots__ = ("flags", "membership", "room", "type", "state_key", "depth", "before", "after", "prevs")

    def __init__(self, flags, membership, room, type_, state_key, depth, before, after, prevs):
        self.flags = flags
        self.membership = membership
        self.room = room
        self.type = type_
        self.state_key = state_key
        self.depth = depth
        self.before = before
        self.after = after
        self.prevs = prevs

    @property
    def is_state(self):
        return bool(self.flags & IS_STATE)

    @property
    def rejected(self):
        return bool(self.flags & REJECTED)

    @property
    def outlier(self):
        return bool(self.flags & OUTLIER)

    def pack(self):
        n = len(self.prevs)
        return _REC.pack(
            self.flags, self.membership, n, self.room, self.type, self.state_key, self.depth, self.before, self.after
        ) + struct.pack(f"<{n}Q", *self.prevs)

    @classmethod
    def unpack(cls, raw):
        flags, membership, n, room, type_, skey, depth, before, after = _REC.unpack_from(raw)
        prevs = struct.unpack_from(f"<{n}Q", raw, _REC.size) if n else ()
        return cls(flags, membership, room, type_, skey, depth, before, after, tuple(prevs))


class EventTable:
    """Event records by event NID, and the flag column (membership, has-child)."""

    def __init__(self, events_db, flags_db):
        self.db = events_db
        self.flags_db = flags_db
        self.cache = {}
        self.full_chunks = {}

    def get(self, tx, nid):
        rec = self.cache.get(nid)
        if rec is not None:
            return rec
        if tx.write:
            rec = tx.get("event", nid)
            if rec is not None:
                return rec
        raw = tx.txn.get(_U64.pack(nid), db=self.db)
        if raw is None:
            return None
        rec = Record.unpack(raw)
        # An outlier's record changes when its state becomes known; cache only settled ones.
        if not rec.outlier:
            if tx.write:
                tx.put("event", nid, rec)
            elif len(self.cache) < 1_000_000:
                self.cache[nid] = rec
        return rec

    def put(self, tx, nid, rec):
        tx.txn.put(_U64.pack(nid), rec.pack(), db=self.db)
        tx.put("event", nid, rec)

    # -- flag column -------------------------------------------------------
    def _chunk(self, tx, idx):
        if tx.write:
            chunk = tx.get("flags", idx)
            if chunk is not None:
                return chunk
        else:
            chunk = self.full_chunks.get(idx)
            if chunk is not None:
                return chunk
        raw = tx.txn.get(_U64.pack(idx), db=self.flags_db)
        return bytes(raw) if raw is not None else bytes(CHUNK)

    def flags(self, tx, nid):
        return self._chunk(tx, nid // CHUNK)[nid % CHUNK]

    def set_flags(self, tx, nid, value):
        idx = nid // CHUNK
        table = tx.pending.get("flags")
        chunk = table.get(idx) if table is not None else None
        if chunk is None:
            chunk = bytearray(self._chunk(tx, idx))
            tx.put("flags", idx, chunk)
        chunk[nid % CHUNK] = value

    def memberships(self, tx, nids, next_event_nid):
        """Membership codes of many event NIDs (a uint64 array) as a uint8 array."""
        import numpy as np

        out = np.zeros(len(nids), dtype=np.uint8)
        if not len(nids):
            return out
        idx = nids // CHUNK
        for c in np.unique(idx).tolist():
            chunk = self._chunk(tx, c)
            if not tx.write and (c + 1) * CHUNK <= next_event_nid and c not in self.full_chunks:
                # Every event of this chunk is stored: its membership bytes are final.
                self.full_chunks[c] = bytes(b & MEMBERSHIP_MASK for b in chunk)
            sel = idx == c
            out[sel] = np.frombuffer(chunk, dtype=np.uint8)[(nids[sel] % CHUNK).astype(np.intp)]
        return out & MEMBERSHIP_MASK

    def flush(self, tx):
        """At the outermost commit: write the changed flag chunks."""
        table = tx.pending.get("flags")
        if table:
            for idx, chunk in table.items():
                tx.txn.put(_U64.pack(idx), bytes(chunk), db=self.flags_db)
