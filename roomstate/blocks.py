"""State blocks: sorted arrays of packed entries, each stored once.

A block is named by a block NID; its LMDB value is the raw 16-byte entries, so
a read is ``np.frombuffer`` over the LMDB buffer (copied before the read
transaction ends).  A content digest maps identical blocks — from any room —
to the NID already stored.
"""
import hashlib

import numpy as np

from ._core import ENTRY_DTYPE
from . import _core
from .checksum import seal, unseal
from .damage import damaged, stored_nid
from .format import U64
from .txn import BoundedCache, ReadThrough

_U64 = U64  # format.py: big-endian u64 keys and values
BLOCK_KIND = b"b"


def empty_entries():
    return np.empty(0, dtype=ENTRY_DTYPE)


def entries_from(rows):
    """An entry array from ``(type, state_key, event)`` tuples."""
    return np.array(list(rows), dtype=ENTRY_DTYPE)


def frozen(arr):
    arr.flags.writeable = False
    return arr


def decode_block(nid, buf, sums=True):
    """The entries of a stored block: whole entries, sorted by key, each key once (then
    the checksum, with ``sums``: format version 3)."""
    if sums:
        buf = unseal("blocks", nid, _U64.pack(nid), buf)
    if len(buf) % ENTRY_DTYPE.itemsize:
        raise damaged("blocks", nid, f"{len(buf)} bytes are not whole {ENTRY_DTYPE.itemsize}-byte entries")
    arr = np.frombuffer(buf, dtype=ENTRY_DTYPE).copy()
    if not _core.is_sorted_unique(arr):
        raise damaged("blocks", nid, "its entries are not sorted by key with each key once")
    return frozen(arr)


class BlockStore:
    def __init__(self, blocks_db, hashes_db, ids, cache_items=4096):
        self.blocks_db = blocks_db
        self.hashes_db = hashes_db
        self.ids = ids
        self._entries = ReadThrough(BoundedCache(cache_items), "block")
        self.cache = self._entries.cache
        self.sums = True  # values end with a checksum (Tables.set_format)

    def put(self, tx, entries):
        """The NID of a block holding ``entries`` (sorted, key-unique), storing it if new."""
        raw = entries.tobytes()
        digest = hashlib.blake2b(raw, digest_size=16).digest()
        hit = tx.txn.get(digest, None, self.hashes_db)
        if hit is not None:
            return stored_nid("block_hashes", digest, hit)
        nid = self.ids.next_nid(tx, BLOCK_KIND)
        key = _U64.pack(nid)
        if not tx.txn.put(key, seal(key, raw), True, True, True, self.blocks_db):  # NIDs only grow: append
            raise damaged("blocks", nid, "the block NID is not above the stored ones (the counter is behind)")
        tx.txn.put(digest, _U64.pack(nid), True, True, False, self.hashes_db)
        self._entries.keep(tx, nid, frozen(entries.copy()))
        return nid

    def get(self, tx, nid):
        """The entries of block ``nid`` (read-only array)."""
        arr = self._entries.find(tx, nid)
        if arr is not None:
            return arr
        buf = tx.txn.get(_U64.pack(nid), None, self.blocks_db)
        if buf is None:
            raise damaged("blocks", nid, "the block is missing")
        return self._entries.keep(tx, nid, decode_block(nid, buf, self.sums))

    def publish(self, pending):
        """After a commit: move this transaction's blocks into the cache."""
        self._entries.publish(pending)
