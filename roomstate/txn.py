"""Transactions with layered pending caches.

Every write runs in one LMDB write transaction (a nested one per call inside a
batch).  Values that are read often and changed by writes — NID counters, the
per-event flag column, room extremities — are kept in ``pending`` dicts while
the transaction runs and written to LMDB once, at the outermost commit.  Caches
of immutable records (IDs, blocks, snapshots) are filled in ``pending`` too and
published to the process-wide caches only after the commit, so an aborted
transaction never leaves a NID it did not commit in a cache.
"""


class Tx:
    __slots__ = ("txn", "write", "parent", "pending")

    def __init__(self, txn, write, parent=None):
        self.txn = txn
        self.write = write
        self.parent = parent
        self.pending = {}

    def get(self, name, key, default=None):
        """The pending value of ``key`` in table ``name`` along the chain of transactions."""
        tx = self
        while tx is not None:
            table = tx.pending.get(name)
            if table is not None and key in table:
                return table[key]
            tx = tx.parent
        return default

    def has(self, name, key):
        tx = self
        while tx is not None:
            table = tx.pending.get(name)
            if table is not None and key in table:
                return True
            tx = tx.parent
        return False

    def put(self, name, key, value):
        table = self.pending.get(name)
        if table is None:
            table = self.pending[name] = {}
        table[key] = value

    def merge_into_parent(self):
        parent = self.parent
        for name, table in self.pending.items():
            dest = parent.pending.get(name)
            if dest is None:
                parent.pending[name] = table
            else:
                dest.update(table)
        self.pending = {}


class BoundedCache(dict):
    """A dict that forgets its oldest half when it holds more than ``limit`` items."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    def publish(self, items):
        self.update(items)
        if len(self) > self.limit:
            drop = len(self) - self.limit // 2
            for key in list(self.keys())[:drop]:
                del self[key]
