"""Numeric IDs (NIDs) for every string the engine handles.

Four kinds of string — rooms, events, event types, state keys — each get
their own NID sequence, starting at 1; 0 never names a string.  The forward
map keys a string by its UTF-8 bytes when they are short and by a 16-byte
BLAKE2b digest when they are long (LMDB keys are limited to 511 bytes, and
event IDs of modern room versions are 44 bytes of base64).  UTF-8 never holds
the byte 0xFF, so a digest key cannot collide with a plain one; a digest hit
is checked against the stored string.
"""
import hashlib

import numpy as np

from ._names import NameCache, fetch_names
from .checksum import seal, unseal
from .damage import DECODE_ERRORS, damaged, decode_error, meta_u64, stored_nid
from .errors import RoomStateError
from .format import U64
from .txn import BoundedCache, ReadThrough

ROOM, EVENT, TYPE, STATE_KEY = b"r", b"e", b"t", b"k"
_OWN_KINDS = (ROOM, TYPE, STATE_KEY)  # event IDs live in the EventTable
_KIND_NAMES = {ROOM: "room", TYPE: "type", STATE_KEY: "state key"}
_TABLES = {ROOM: "names_r", TYPE: "names_t", STATE_KEY: "names_k"}


def _some(nids, n=5):
    shown = ", ".join(map(str, nids[:n]))
    return shown + (f" and {len(nids) - n} more" if len(nids) > n else "")

#: Type NIDs preassigned as in Dendrite, and the empty state key.
PREASSIGNED_TYPES = (
    "m.room.create",
    "m.room.power_levels",
    "m.room.join_rules",
    "m.room.third_party_invite",
    "m.room.member",
    "m.room.redaction",
    "m.room.history_visibility",
)
CREATE_TYPE_NID = 1
MEMBER_TYPE_NID = 5
EMPTY_STATE_KEY_NID = 1

_SHORT = 32
_NEXT = {k: b"next:" + k for k in (b"r", b"e", b"t", b"k", b"b", b"s")}
_U64 = U64  # format.py: big-endian u64 keys and values


def encode(s):
    # surrogatepass: Python strings may hold lone surrogates; keep them exact.
    return s.encode("utf-8", "surrogatepass")


def decode(b):
    return bytes(b).decode("utf-8", "surrogatepass")


def string_key(kind, raw):
    """The forward-map key of a string's UTF-8 bytes: the kind byte, then the bytes
    themselves when short, else 0xFF and a 16-byte digest.

    >>> string_key(ROOM, b"!a:x")
    b'r!a:x'
    >>> key = string_key(EVENT, b"$" + b"x" * 43)
    >>> key[:2], len(key)
    (b'e\\xff', 18)
    """
    if len(raw) <= _SHORT:
        return kind + raw
    return kind + b"\xff" + hashlib.blake2b(raw, digest_size=16).digest()


class IdMaps:
    """String ↔ NID maps: ``ids`` (forward, all kinds) and one reverse database per kind.

    Separate reverse databases keep each kind's NIDs appended at the end of
    its own B-tree, so its pages fill up instead of splitting in half.

    Event IDs are the exception: their reverse map is the event record itself
    (see :class:`roomstate.events.EventTable`), to which the EVENT kind is
    delegated.
    """

    def __init__(self, ids_db, names_db, meta_db, cache_limit=1_000_000):
        self.ids_db = ids_db
        self.names_db = names_db
        self.meta_db = meta_db
        self.events = None  # the EventTable, set by the store
        # One read-through cache per kind and direction; the pending tables are
        # "nid:r" (string -> NID), "str:r" (NID -> string) and so on.
        self._nids = {k: ReadThrough(BoundedCache(cache_limit), "nid:" + k.decode()) for k in _OWN_KINDS}
        self._strs = {k: ReadThrough(NameCache(cache_limit), "str:" + k.decode()) for k in _OWN_KINDS}
        self.to_nid = {k: rt.cache for k, rt in self._nids.items()}
        self.to_str = {k: rt.cache for k, rt in self._strs.items()}
        # (type, state_key) tuples by ``type NID << 32 | state key NID``, for StateMap
        self.pairs = NameCache(cache_limit)
        self.sums = True  # the names tables' values end with a checksum (Tables.set_format)

    # -- reads -------------------------------------------------------------
    def lookup(self, tx, kind, s):
        """The NID of ``s``, or 0 when it has none."""
        if kind == EVENT:
            return self.events.lookup(tx, s)
        nid = self._nids[kind].find(tx, s)
        if nid is not None:
            return nid
        raw = encode(s)
        key = string_key(kind, raw)
        val = tx.txn.get(key, None, self.ids_db)
        if val is None:
            return 0
        nid = stored_nid("ids", key, val)
        if len(raw) > _SHORT:
            name_key = _U64.pack(nid)
            stored = tx.txn.get(name_key, None, self.names_db[kind])
            if stored is not None and self.sums:
                stored = unseal(_TABLES[kind], nid, name_key, stored)
            if stored is None or bytes(stored) != raw:
                raise RoomStateError(f"digest collision on {kind.decode()} key {s!r}")
        self._keep(tx, kind, s, nid)
        return nid

    def name(self, tx, kind, nid):
        if kind == EVENT:
            return self.events.event_id(tx, nid)
        s = self._strs[kind].find(tx, nid)
        if s is not None:
            return s
        key = _U64.pack(nid)
        raw = tx.txn.get(key, None, self.names_db[kind])
        if raw is None:
            raise damaged(_TABLES[kind], nid, f"a {_KIND_NAMES[kind]} NID named by a record has no string")
        if self.sums:
            raw = unseal(_TABLES[kind], nid, key, raw)
        try:
            s = decode(raw)
        except UnicodeDecodeError as exc:
            raise decode_error(_TABLES[kind], nid, exc) from None
        self._keep(tx, kind, s, nid)
        return s

    def names(self, tx, kind, nids):
        """Strings of many NIDs (any iterable of ints), in order."""
        if kind == EVENT:
            return self.events.names(tx, nids)
        keys = nids.tolist() if isinstance(nids, np.ndarray) else list(nids)
        out = list(map(self.to_str[kind].get, keys))
        if None in out:
            by_key = self.read(tx, kind, sorted(set(k for k, s in zip(keys, out) if s is None)))
            out = [s if s is not None else by_key[k] for k, s in zip(keys, out)]
        return out

    def read(self, tx, kind, nids):
        """``{nid: string}`` of the NIDs (distinct, >= 1) that the kind's cache lacks, read
        from LMDB in one C loop; a read transaction caches them too (committed strings)."""
        if kind == EVENT:
            cache, db, records, what = self.events.to_str, self.events.db, True, "an event NID has no record"
            checked = None
        else:
            cache, db, records = self.to_str[kind], self.names_db[kind], False
            checked = _TABLES[kind] if self.sums else None
            what = f"a {_KIND_NAMES[kind]} NID has no string"
        absent = cache.absent(nids)
        table = "events" if kind == EVENT else _TABLES[kind]
        try:
            found = fetch_names(tx.txn, db, absent, records, checked)
        except DECODE_ERRORS as exc:
            raise damaged(table, None, f"a value read for NIDs {_some(absent)} cannot be decoded ({exc})") from None
        if None in found:
            missing = [n for n, f in zip(absent, found) if f is None]
            raise damaged(table, missing[0], f"{what} ({len(missing)} of them)")
        if not tx.write:
            cache.put_many(absent, found)
        return dict(zip(absent, found))

    # -- writes ------------------------------------------------------------
    def assign(self, tx, kind, s):
        """The NID of ``s``, assigning the next free one when it has none."""
        if kind == EVENT:
            return self.events.assign(tx, s)
        nid = self.lookup(tx, kind, s)
        if nid:
            return nid
        nid = self.next_nid(tx, kind)
        raw = encode(s)
        tx.txn.put(string_key(kind, raw), _U64.pack(nid), True, True, False, self.ids_db)
        name_key = _U64.pack(nid)
        tx.txn.put(name_key, seal(name_key, raw), True, True, False, self.names_db[kind])
        self._keep(tx, kind, s, nid)
        return nid

    def counter(self, kind):
        """``(name, db)`` of the meta counter behind :meth:`next_nid` for ``kind``, for
        the paths that allocate a NID per event (``tx.next_counter(name, db)``)."""
        return _NEXT.get(kind) or b"next:" + kind, self.meta_db

    def next_nid(self, tx, kind):
        """Allocate a NID of ``kind`` (also used for blocks and snapshots)."""
        return tx.next_counter(*self.counter(kind))

    def unallocate(self, tx, kind, nid):
        """Give back the NID :meth:`next_nid` just returned."""
        name = b"next:" + kind
        assert tx.get("meta", name) == nid + 1
        tx.put("meta", name, nid)

    def peek_next(self, tx, kind):
        name = b"next:" + kind
        cur = tx.get("meta", name) if tx.write else None
        if cur is None:
            raw = tx.txn.get(name, None, self.meta_db)
            cur = meta_u64(name, raw) if raw is not None else 1
        return cur

    def _keep(self, tx, kind, s, nid):
        """Remember a mapping both ways."""
        self._nids[kind].keep(tx, s, nid)
        self._strs[kind].keep(tx, nid, s)

    def publish(self, pending):
        """After a commit: move this transaction's new mappings into the caches."""
        for kind in _OWN_KINDS:
            self._nids[kind].publish(pending)
            self._strs[kind].publish(pending)

    def initialise(self, tx):
        """Preassign the well-known type NIDs and the empty state key."""
        for expected, name in enumerate(PREASSIGNED_TYPES, start=1):
            nid = self.assign(tx, TYPE, name)
            assert nid == expected, (name, nid)
        assert self.assign(tx, STATE_KEY, "") == EMPTY_STATE_KEY_NID
