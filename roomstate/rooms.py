"""Rooms and counters: each room's forward extremities, and the store's counts.

Both are read and changed by almost every event, so a write transaction keeps
them in its dirty tables (``rooms`` and ``meta``, see :mod:`roomstate.txn`)
and writes them once, at its outermost commit.

* ``rooms``: key the room NID (big-endian u64), value the NIDs of its forward
  extremities, little-endian u64 each.
* ``meta``: the format version, the NID counters (``next:<kind>``, kept by
  :meth:`roomstate.txn.Tx.next_counter`) and the event counts; big-endian u64 values.
"""
import numpy as np

from .checksum import meta_value, seal, unseal
from .damage import damaged, meta_u64
from .format import EXTREMITIES_DTYPE, META_COUNT_EVENTS, META_COUNT_RESETS, META_COUNT_STATE, U64


#: A room's extremities are event NIDs, each once; a room has at most this many
#: (each a forward extremity named by none of the others: far above any real room).
MAX_EXTREMITIES = 1 << 20


def decode_extremities(room, raw, sums=True):
    """A ``rooms`` value: distinct nonzero event NIDs, little-endian u64 each (then the
    checksum, with ``sums``: format version 3)."""
    if sums:
        raw = unseal("rooms", room, U64.pack(room), raw)
    if len(raw) % 8 or len(raw) > 8 * MAX_EXTREMITIES:
        raise damaged("rooms", room, f"{len(raw)} bytes are not a list of event NIDs")
    ex = tuple(np.frombuffer(raw, dtype=EXTREMITIES_DTYPE).tolist())
    if 0 in ex or len(set(ex)) != len(ex):
        raise damaged("rooms", room, "an extremity is 0 or listed twice")
    return ex


class RoomTable:
    """Forward extremities by room NID."""

    def __init__(self, db):
        self.db = db
        self.sums = True  # values end with a checksum (Tables.set_format)

    def extremities(self, tx, room):
        """The room's forward extremities (event NIDs, a tuple), this transaction's changes included."""
        ex = tx.get("rooms", room) if tx.write else None
        if ex is None:
            raw = tx.txn.get(U64.pack(room), None, self.db)
            ex = decode_extremities(room, raw, self.sums) if raw is not None else ()
        return tuple(ex)

    def replace_extremities(self, tx, room, removed, added):
        """Take the NIDs ``removed`` out of the room's extremities and put ``added`` (a
        NID, or 0 for none) last.  A write transaction keeps them as an ordered dict
        changed in place, so the work is in ``removed``, not in the extremities (a
        nested transaction's undo log copies it once)."""
        ex = tx.get("rooms", room)
        if ex is None:
            ex = dict.fromkeys(self.extremities(tx, room))
            tx.put("rooms", room, ex)
        else:
            tx.save("rooms", room)  # in a nested transaction: the undo log copies it
        for nid in removed:
            ex.pop(nid, None)
        if added:
            ex[added] = None

    def flush(self, tx):
        rooms = tx.pending.get("rooms")
        if rooms:
            for room, ex in rooms.items():
                key = U64.pack(room)
                value = np.fromiter(ex, dtype=EXTREMITIES_DTYPE, count=len(ex)).tobytes()
                tx.txn.put(key, seal(key, value), True, True, False, self.db)


class MetaTable:
    """The ``meta`` table: the format version, NID counters and event counts."""

    def __init__(self, db):
        self.db = db

    def value(self, tx, key, default=0):
        cur = tx.get("meta", key) if tx.write else None
        if cur is None:
            raw = tx.txn.get(key, None, self.db)
            cur = meta_u64(key, raw) if raw is not None else default
        return cur

    def add(self, tx, key, delta):
        tx.put("meta", key, self.value(tx, key) + delta)

    def count_new(self, tx, n_events, n_state_events):
        """Add to the stored counts of events and of state events."""
        if n_events:
            self.add(tx, META_COUNT_EVENTS, n_events)
        if n_state_events:
            self.add(tx, META_COUNT_STATE, n_state_events)

    def counts(self, tx):
        """``(events, state events)`` stored."""
        return self.value(tx, META_COUNT_EVENTS), self.value(tx, META_COUNT_STATE)

    def count_resets(self, tx, n):
        """Add ``n`` state resets to the count, in a store that keeps it (made since the
        count exists; an older store's count would miss its earlier merges)."""
        cur = self.value(tx, META_COUNT_RESETS, None)
        if cur is not None:
            tx.put("meta", META_COUNT_RESETS, cur + n)

    def resets(self, tx):
        """The state resets counted, or None in a store made before the count existed."""
        return self.value(tx, META_COUNT_RESETS, None)

    def put_now(self, tx, key, value):
        """Write a value straight to the table (the format version, at initialisation)."""
        tx.txn.put(key, meta_value(key, value), True, True, False, self.db)

    def flush(self, tx):
        meta = tx.pending.get("meta")
        if meta:
            for key, value in meta.items():
                tx.txn.put(key, meta_value(key, value), True, True, False, self.db)
