# cython: language_level=3
"""Transactions with pending tables.

Every write runs in one LMDB write transaction (a nested one per call inside a
batch).  Two kinds of pending table ride along with it:

* **write-through caches** (IDs, event records, snapshot parts, blocks): what
  this transaction wrote or read, already in LMDB; published to the
  process-wide caches after the outermost commit, so an aborted transaction
  never leaves a NID it did not commit in a cache;
* **dirty tables** (``DIRTY``: NID counters and counts, room extremities, the
  per-event mark column): values read and changed by almost every event,
  written to LMDB once, at the outermost commit.

Every table reads through its caches the same way, with :class:`ReadThrough`:
the process cache of committed values, then this transaction's pending table,
then LMDB (the table's own decoding), remembering what LMDB gave.

A nested transaction shares its parent's tables.  It keeps an undo log of the
dirty entries it changes; when it aborts, the log restores them and the
write-through caches are dropped (they refill from LMDB, which the abort
rolled back).

A Cython module proper: ``Tx`` is a C class, since nearly every step of adding
an event reads or writes its tables.
"""


cimport cython

from .damage import meta_u64
from .format import U64

DIRTY = frozenset(("meta", "rooms", "marks"))
_U64 = U64  # format.py: big-endian u64 keys and values
_MISSING = object()


cdef class Tx:
    """A write transaction: the LMDB transaction and the pending tables riding along."""

    # Attributes: txn.pxd.

    def __init__(self, txn, write, Tx parent=None):
        self.txn = txn
        self.write = write
        self.parent = parent
        self.pending = parent.pending if parent is not None else {}
        self.undo = {} if parent is not None else None
        self.last = parent.last if parent is not None else None

    def table(self, name):
        cdef dict t = self.pending.get(name)
        if t is None:
            t = self.pending[name] = {}
        return t

    def get(self, name, key, default=None):
        cdef dict t = self.pending.get(name)
        if t is None:
            return default
        return t.get(key, default)

    def put(self, name, key, value):
        cdef dict t = self.pending.get(name)
        if t is None:
            t = self.pending[name] = {}
        if self.undo is not None and name in DIRTY:
            self.save(name, key)
        t[key] = value

    def next_counter(self, name, db):
        """The value of the counter ``name`` of the meta table (1 when unset), then incremented."""
        cdef dict meta = self.pending.get("meta")
        if meta is None:
            meta = self.pending["meta"] = {}
        cur = meta.get(name)
        if cur is None:
            raw = self.txn.get(name, None, db)
            cur = meta_u64(name, raw) if raw is not None else 1
        if self.undo is not None:
            self.save("meta", name)
        meta[name] = cur + 1
        return cur

    def trim(self):
        """Drop the write-through caches (they refill from LMDB on demand)."""
        pending = self.pending
        for name in list(pending):
            if name not in DIRTY:
                del pending[name]

    def save(self, name, key):
        """Before a nested transaction changes a dirty entry: remember its value."""
        undo = self.undo
        if undo is None or (name, key) in undo:
            return
        old = self.pending.get(name, {}).get(key, _MISSING)
        # Values changed in place (bytearrays; a room's extremities, a dict) are copied.
        undo[(name, key)] = bytes(old) if isinstance(old, bytearray) else dict(old) if isinstance(old, dict) else old

    def rollback(self):
        """After a nested transaction aborted: restore the parent's tables."""
        self.parent.last = None
        self.trim()
        pending = self.pending
        for (name, key), old in self.undo.items():
            t = pending.setdefault(name, {})
            if old is _MISSING:
                t.pop(key, None)
            else:
                t[key] = bytearray(old) if isinstance(old, bytes) else old
        self.undo = {}


class BoundedCache(dict):
    """A dict that forgets its oldest half when it holds more than ``limit`` items.

    >>> c = BoundedCache(4)
    >>> c.update({n: str(n) for n in range(1, 6)})
    >>> sorted(c)
    [4, 5]
    """

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    def update(self, items):
        """Add every item of a mapping, then :meth:`trim`."""
        dict.update(self, items)
        if len(self) > self.limit:
            self.trim()

    def trim(self):
        """Forget the oldest items, down to half the limit."""
        drop = len(self) - self.limit // 2
        pop = self.pop
        for key in list(self.keys())[:drop]:
            pop(key, None)  # another thread may be trimming too


cdef class ReadThrough:
    """One table's read-through cache: committed values in a process cache, then
    this transaction's pending table; the table itself reads LMDB on a miss.

    ``cache`` is a :class:`BoundedCache` or a :class:`roomstate._core.NameCache`
    (or None: nothing is cached across transactions); ``table`` names the
    pending table in ``tx.pending`` (or None: a write transaction keeps
    nothing).  Values read in a write transaction stay in its pending table
    until :meth:`publish` after the commit, so an aborted transaction never
    leaves a value in the process cache.

    >>> blocks = ReadThrough(BoundedCache(10), "block")
    >>> tx = Tx(None, True)
    >>> blocks.find(tx, 7) is None
    True
    >>> blocks.keep(tx, 7, "entries")
    'entries'
    >>> blocks.find(tx, 7), len(blocks.cache)
    ('entries', 0)
    >>> blocks.publish(tx.pending)
    >>> blocks.cache
    {7: 'entries'}
    """

    def __init__(self, cache, table):
        self.cache = cache
        self.table = table

    cpdef find(self, tx, key):
        """The value of ``key`` cached or pending in ``tx``; None when neither holds it."""
        cdef object v = None
        cdef object cache = self.cache
        cdef object t
        if cache is not None:
            if isinstance(cache, dict):
                v = (<dict>cache).get(key)
            else:
                v = cache.get(key)
            if v is not None:
                return v
        if self.table is None:
            return None
        if isinstance(tx, Tx):
            if not (<Tx>tx).write:
                return None
            t = (<Tx>tx).pending.get(self.table)
        elif tx.write:
            t = tx.pending.get(self.table)
        else:
            return None
        if t is None:
            return None
        return (<dict?>t).get(key)

    cpdef keep(self, tx, key, value):
        """Remember a value read from LMDB (or just written): in the pending table of a
        write transaction, in the process cache otherwise.  Returns ``value``."""
        cdef object cache
        cdef dict pending
        if tx.write:
            if self.table is not None:
                pending = tx.pending
                t = pending.get(self.table)
                if t is None:
                    t = pending[self.table] = {}
                (<dict?>t)[key] = value
        else:
            cache = self.cache
            if cache is not None:
                cache[key] = value
                if len(cache) > cache.limit:
                    cache.trim()
        return value

    def publish(self, pending):
        """After the outermost commit: move the pending table's values into the cache."""
        new = pending.get(self.table)
        if new:
            self.cache.update(new)


class ReadTx:
    """A read transaction begun only when a read misses every cache.

    Cached records are committed and immutable, so answering from them and
    from a transaction begun later is as consistent as one transaction.

    ``pending`` holds what a read keeps for the rest of its transaction (the Matrix
    resolution's events and auth closures): its own dict, never another read's or
    another store's.
    """

    __slots__ = ("_begin", "_end", "_txn", "pending")
    write = False
    parent = None
    undo = None
    last = None

    def __init__(self, begin, end):
        self._begin = begin
        self._end = end
        self._txn = None
        self.pending = {}

    @property
    def txn(self):
        txn = self._txn
        if txn is None:
            txn = self._txn = self._begin()
        return txn

    def get(self, name, key, default=None):
        return default

    def close(self):
        if self._txn is not None:
            txn, self._txn = self._txn, None
            txn.abort()
            self._end()
