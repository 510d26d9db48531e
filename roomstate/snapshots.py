"""State snapshots: the full state at a point of a room, as blocks plus deltas.

A snapshot is one of two records:

* a **base**: an ordered list of blocks (later ones override earlier ones),
  kept short by size-tiered compaction — when ``FANOUT`` trailing blocks are of
  the same size tier they are compacted into one block of the next tier, so an
  entry is rewritten about log_FANOUT(N) times over a room's life and a read
  touches at most ``(FANOUT - 1)`` blocks per tier;
* a **chain** link: a parent snapshot plus a small sorted delta (tombstones
  remove keys).  A state event costs one link of one entry.  When a chain
  reaches ``MAX_HOPS`` links or ``MAX_WEIGHT`` delta entries, the next snapshot
  is a base instead: the chain's deltas become one new block on top of the
  parent's blocks, which are shared, never copied.

Nothing here ever copies a whole state because a counter ran out: the only
full-size writes are tier compactions, whose cost is amortised O(log N) per entry.

Chain links made by single state events are unique by construction (they
hold the new event).  Links made by merges and given states, and every base,
are indexed by a digest of their record so identical ones are stored once.
"""
import hashlib


from . import _core
from ._core import ENTRY_DTYPE
from ._write import Components, chain_link
from .blocks import empty_entries, frozen
from .checksum import seal, unseal
from .damage import DECODE_ERRORS, damaged, decode_error, stored_nid
from .format import U64
from .txn import BoundedCache, ReadThrough

SNAPSHOT_KIND = b"s"
EMPTY_SNAPSHOT = 1  # the known empty state (before m.room.create); 0 = unknown

MAX_HOPS = 32
MAX_WEIGHT = 64
FANOUT = 8
TIER_BASE = 32
MAX_BLOCKS = 64
#: Format bounds on a chain, far above the writer's policy (MAX_HOPS, MAX_WEIGHT), which may
#: change: a chain has at most CHAIN_LIMIT links holding MAX_WEIGHT_LIMIT entries in all.
CHAIN_LIMIT = 1 << 16
MAX_WEIGHT_LIMIT = 1 << 32
#: Snapshots' layers a write transaction keeps for repeated reads (``get_many``).
LAYER_SETS = 4096


_U64 = U64  # format.py: big-endian u64 keys and values
_KIND_BASE, _KIND_CHAIN = 1, 2


def tier(size):
    t, bound = 0, TIER_BASE * FANOUT
    while size >= bound:
        t += 1
        bound *= FANOUT
    return t


class SnapshotStore:
    def __init__(self, snapshots_db, hashes_db, blocks, ids, cache_items=50_000, state_cache_items=32):
        self.db = snapshots_db
        self.hashes_db = hashes_db
        self.blocks = blocks
        self.ids = ids
        self._next, self._meta_db = ids.counter(SNAPSHOT_KIND)
        self._parts = ReadThrough(BoundedCache(cache_items), "snap")  # Components by snapshot NID
        # Full states, for reads only: a write transaction keeps none.
        self._states = ReadThrough(BoundedCache(state_cache_items), None)
        self.cache = self._parts.cache
        self.state_cache = self._states.cache
        self.sums = True  # records end with a checksum (Tables.set_format)

    # -- records -----------------------------------------------------------
    def components(self, tx, snap):
        parts = self._parts
        c = parts.find(tx, snap)
        if c is not None:
            return c
        # Walk the chain up to its base, then build every link's components.  The walk is
        # bounded: a link's parent is an older snapshot (a smaller NID) one hop shorter,
        # so a damaged store cannot make it loop, nor run longer than CHAIN_LIMIT links.
        path = []
        cur = snap
        while True:
            if cur != snap:
                c = parts.find(tx, cur)
                if c is not None:
                    break
            key = _U64.pack(cur)
            raw = tx.txn.get(key, None, self.db)
            if raw is None:
                if path:
                    raise damaged("snapshots", path[-1][0], f"its parent snapshot {cur} is missing")
                raise damaged("snapshots", cur, "the snapshot is missing")
            c = self._decode(cur, bytes(unseal("snapshots", cur, key, raw) if self.sums else raw), path)
            if isinstance(c, Components):
                c = parts.keep(tx, cur, c)
                break
            cur = c
        if path:
            link = path[-1]
            if c.hops != link[2] - 1 or c.weight != link[3] - len(link[1]):
                raise damaged("snapshots", link[0], f"its hops and weight do not follow from its parent {cur}'s")
        for nid, delta, hops, weight in reversed(path):
            c = parts.keep(tx, nid, c.link(nid, delta, hops, weight))
        return c

    def _decode(self, nid, raw, path):
        """A snapshot record: the Components of a base, or the parent of a chain link
        (the link appended to ``path``)."""
        try:
            kind = raw[0] if raw else 0
            if kind == _KIND_BASE:
                (_, n), off = _core.unpack_uvarints(raw, 2)
                if n > len(raw):
                    raise ValueError(f"{n} blocks in {len(raw)} bytes")
                vals, end = _core.unpack_uvarints(raw, 2 * n, off)
                if end != len(raw):
                    raise ValueError("bytes after the block list")
                blocks, sizes = tuple(vals[:n]), tuple(vals[n:])
                if 0 in blocks or len(set(blocks)) != n:
                    raise ValueError("a block NID is 0 or listed twice")
                return Components(blocks, sizes, (), (), 0, 0)
            if kind != _KIND_CHAIN:
                raise ValueError(f"unknown record kind {kind}")
            (_, hops, weight, parent, n), off = _core.unpack_uvarints(raw, 5)
            delta = frozen(_core.unpack_entries(raw, n, off))
            if not _core.is_sorted_unique(delta):
                raise ValueError("its delta is not sorted by key with each key once")
        except DECODE_ERRORS as exc:
            raise decode_error("snapshots", nid, exc) from None
        if not 1 <= parent < nid:
            raise damaged("snapshots", nid, f"its parent {parent} is not an older snapshot")
        if path:
            child = path[-1]
            fits = hops == child[2] - 1 and weight == child[3] - len(child[1])
        else:
            fits = 1 <= hops <= CHAIN_LIMIT and len(delta) <= weight <= MAX_WEIGHT_LIMIT
        if not fits or hops < 1 or weight < len(delta):
            raise damaged("snapshots", nid, f"a chain link of {hops} hops and weight {weight} does not fit its chain")
        path.append((nid, delta, hops, weight))
        return parent

    def layers(self, tx, c, start=0, stop=None):
        """The entry arrays of a snapshot's parts ``start`` to ``stop`` (default: the last)."""
        nb = len(c.blocks)
        if stop is None:
            stop = nb + len(c.deltas)
        get = self.blocks.get
        out = [get(tx, b) for b in c.blocks[start:stop]]
        out.extend(c.deltas[max(0, start - nb):max(0, stop - nb)])
        return out

    def _store(self, tx, record, indexed):
        digest = None
        if indexed:
            digest = hashlib.blake2b(record, digest_size=16).digest()
            hit = tx.txn.get(digest, None, self.hashes_db)
            if hit is not None:
                return stored_nid("snapshot_hashes", digest, hit), False
        nid = self._append(tx, record)
        if digest is not None:
            tx.txn.put(digest, _U64.pack(nid), True, True, False, self.hashes_db)
        return nid, True

    def _append(self, tx, record):
        """Store a snapshot record (sealed with its checksum) under the next NID."""
        nid = tx.next_counter(self._next, self._meta_db)  # ids.next_nid(tx, SNAPSHOT_KIND) without a call layer
        key = _U64.pack(nid)
        # NIDs only grow: append.  Positional (dupdata, overwrite, append, db): faster than keywords.
        if not tx.txn.put(key, seal(key, record), True, True, True, self.db):
            raise damaged("snapshots", nid, "the snapshot NID is not above the stored ones (the counter is behind)")
        return nid

    def create_empty(self, tx):
        nid, _ = self._store(tx, _core.pack_uvarints((_KIND_BASE, 0)), True)
        assert nid == EMPTY_SNAPSHOT, nid
        return nid

    # -- writes --------------------------------------------------------------
    def derive(self, tx, parent, delta, indexed=False):
        """The snapshot of ``parent`` overlaid with ``delta`` (sorted, key-unique, tombstones allowed)."""
        if len(delta) == 0:
            return parent
        c = self.components(tx, parent)
        hops = c.hops + 1
        weight = c.weight + len(delta)
        if hops <= MAX_HOPS and weight <= MAX_WEIGHT:
            record = _core.pack_uvarints((_KIND_CHAIN, hops, weight, parent, len(delta))) + _core.pack_entries(delta)
            nid, new = self._store(tx, record, indexed)
            if new:
                self._parts.keep(tx, nid, c.link(nid, frozen(delta.copy()), hops, weight))
            return nid
        # The chain's deltas become one block on top of the parent's.
        flattened = _core.overlay(list(c.deltas) + [delta], keep_tombstones=bool(c.blocks))
        blocks, sizes = list(c.blocks), list(c.sizes)
        if len(flattened):
            blocks.append(self.blocks.put(tx, flattened))
            sizes.append(len(flattened))
        self._compact(tx, blocks, sizes)
        n = len(blocks)
        record = _core.pack_uvarints([_KIND_BASE, n] + blocks + sizes)
        nid, new = self._store(tx, record, True)
        if new:
            self._parts.keep(tx, nid, Components(tuple(blocks), tuple(sizes), (), (), 0, 0))
        return nid

    def derive_state(self, tx, parent, type_nid, state_key_nid, event_nid):
        """``derive`` with the one entry of a state event: its chain link is packed without an entry array."""
        c = self._parts.find(tx, parent)  # usually the snapshot this transaction made last
        if c is None:
            c = self.components(tx, parent)
        hops = c.hops + 1
        weight = c.weight + 1
        if hops > MAX_HOPS or weight > MAX_WEIGHT:
            return self.derive(tx, parent, _core.single(type_nid, state_key_nid, event_nid))
        record, delta = chain_link(_KIND_CHAIN, hops, weight, parent, type_nid, state_key_nid, event_nid)
        nid = self._append(tx, record)  # unique by construction (it holds the event): not indexed
        self._parts.keep(tx, nid, c.link(nid, delta, hops, weight))
        return nid

    def _compact(self, tx, blocks, sizes):
        while len(blocks) >= 2:
            n = len(blocks)
            t = tier(sizes[-1])
            i = n - 1
            while i > 0 and tier(sizes[i - 1]) <= t:
                i -= 1
            if n - i < FANOUT and n <= MAX_BLOCKS:
                return
            if n - i < 2:  # too many blocks of rising tiers: fold the last two
                i = n - 2
            # Tombstones matter only while something older lies below the run.
            compacted = _core.overlay([self.blocks.get(tx, b) for b in blocks[i:]], keep_tombstones=i > 0)
            del blocks[i:], sizes[i:]
            if len(compacted):
                blocks.append(self.blocks.put(tx, compacted))
                sizes.append(len(compacted))

    # -- reads ---------------------------------------------------------------
    def state(self, tx, snap):
        """The full state of a snapshot: a read-only, sorted entry array without tombstones."""
        arr = self._states.find(tx, snap)
        if arr is not None:
            return arr
        c = self.components(tx, snap)
        layers = self.layers(tx, c)
        if not layers:
            arr = frozen(empty_entries())
        elif len(layers) == 1 and not c.deltas:
            arr = layers[0]  # a bottom block holds no tombstones
        else:
            arr = frozen(_core.overlay(layers))
        return self._states.keep(tx, snap, arr)

    def get(self, tx, snap, type_nid, state_key_nid):
        """Event NID of one key, or 0 when the state lacks it."""
        c = self.components(tx, snap)
        return _core.lookup_layers(self.layers(tx, c), type_nid, state_key_nid) or 0

    def get_many(self, tx, snap, keys):
        """Event NIDs of several ``(type, state key)`` NID pairs (0 where the state lacks one).

        A write transaction keeps the snapshots' layers it reads (at most ``LAYER_SETS``,
        then it starts again), each built from its parent's when that is kept: an import
        reads the state before nearly every event this way."""
        if not tx.write:
            return _core.LayerSet(self.layers(tx, self.components(tx, snap))).lookup_pairs(keys)
        kept = tx.pending.get("snap-layers")
        if kept is None or len(kept) >= LAYER_SETS:
            kept = tx.pending["snap-layers"] = {}
        ls = kept.get(snap)
        if ls is None:
            c = self.components(tx, snap)
            parent = kept.get(c.links[-2]) if len(c.links) >= 2 else None
            if parent is not None and len(parent) == len(c.blocks) + len(c.deltas) - 1:
                ls = parent.extended(c.deltas[-1])
            else:
                ls = _core.LayerSet(self.layers(tx, c))
            kept[snap] = ls
        return ls.lookup_pairs(keys)

    def aligned(self, tx, snaps):
        """Line up several snapshots over the keys where they may differ.

        Returns ``(prefix, aligned)``: ``prefix`` the parts all of them share,
        and an :class:`roomstate._core.Aligned` over every key set in any
        non-shared part (its ``value(i, j)``: the event of key ``i`` in snapshot
        ``j``, 0 when absent).  Keys outside it have the same value in every
        snapshot.  The work and memory are proportional to the non-shared parts,
        not to the state nor to keys × snapshots.
        """
        comps = [self.components(tx, s) for s in snaps]
        first = comps[0].ids
        shared = len(first)
        for c in comps[1:]:
            n = min(shared, len(c.ids))
            i = 0
            while i < n and c.ids[i] == first[i]:
                i += 1
            shared = i
        prefix = self.layers(tx, comps[0], 0, shared)
        tails = [self._overlaid(self.layers(tx, c, shared)) for c in comps]
        return prefix, _core.align_sparse(tails, base=prefix)

    @staticmethod
    def _overlaid(layers):
        """Layers overlaid into one sorted array, tombstones kept (a single layer is one already)."""
        if len(layers) == 1:
            return layers[0]
        return _core.overlay(layers, keep_tombstones=True)

    def publish(self, pending):
        """After a commit: move this transaction's snapshot parts into the cache."""
        self._parts.publish(pending)
