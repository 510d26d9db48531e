"""State blocks: sorted arrays of packed entries, each stored once.

A block is named by a block NID; its LMDB value is the raw 16-byte entries, so
a read is ``np.frombuffer`` over the LMDB buffer (copied before the read
transaction ends).  A content digest maps identical blocks — from any room —
to the NID already stored.
"""
import hashlib
import struct

import numpy as np

from ._core import ENTRY_DTYPE
from .errors import RoomStateError
from .txn import BoundedCache

_U64 = struct.Struct(">Q")
BLOCK_KIND = b"b"


def empty_entries():
    return np.empty(0, dtype=ENTRY_DTYPE)


def entries_from(rows):
    """An entry array from ``(type, state_key, event)`` tuples."""
    return np.array(list(rows), dtype=ENTRY_DTYPE)


def frozen(arr):
    arr.flags.writeable = False
    return arr


class BlockStore:
    def __init__(self, blocks_db, hashes_db, ids, cache_items=4096):
        self.blocks_db = blocks_db
        self.hashes_db = hashes_db
        self.ids = ids
        self.cache = BoundedCache(cache_items)

    def put(self, tx, entries):
        """The NID of a block holding ``entries`` (sorted, key-unique), storing it if new."""
        raw = entries.tobytes()
        digest = hashlib.blake2b(raw, digest_size=16).digest()
        hit = tx.txn.get(digest, db=self.hashes_db)
        if hit is not None:
            return _U64.unpack(hit)[0]
        nid = self.ids.next_nid(tx, BLOCK_KIND)
        if not tx.txn.put(_U64.pack(nid), raw, db=self.blocks_db, append=True):  # NIDs only grow
            raise RoomStateError(f"block NID {nid} is not above the stored ones: the store is damaged")
        tx.txn.put(digest, _U64.pack(nid), db=self.hashes_db)
        tx.put("block", nid, frozen(entries.copy()))
        return nid

    def get(self, tx, nid):
        """The entries of block ``nid`` (read-only array)."""
        arr = self.cache.get(nid)
        if arr is not None:
            return arr
        if tx.write:
            arr = tx.get("block", nid)
            if arr is not None:
                return arr
        buf = tx.txn.get(_U64.pack(nid), db=self.blocks_db)
        if buf is None:
            raise KeyError(f"block {nid} is missing: the store is damaged")
        arr = frozen(np.frombuffer(buf, dtype=ENTRY_DTYPE).copy())
        if tx.write:
            tx.put("block", nid, arr)
        else:
            self.cache[nid] = arr
            if len(self.cache) > self.cache.limit:
                self.cache.publish({})
        return arr

    def publish(self, pending):
        new = pending.get("block")
        if new:
            self.cache.publish(new)
