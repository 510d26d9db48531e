"""The in-memory backend: ``roomstate.open(":memory:")``.

The same semantics as LMDB — nested write transactions, one writer, readers
that see only committed data — with nothing persisted.  Tables are dicts;
a write transaction keeps its changes in an overlay of its own and applies
them at commit, while no reader is inside (the gate), so every read
transaction sees one committed state.
"""
import threading

from ..errors import RoomStateError
from ..format import TABLES
from .lmdb import Gate
from . import Full

_DELETED = object()


def _key(key):
    return key if type(key) is bytes else bytes(key)


class _Cursor:
    __slots__ = ("_items",)

    def __init__(self, items):
        self._items = items

    def __iter__(self):
        return iter(self._items)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


class MemoryTxn:
    """A transaction over the committed tables (read) or an overlay on them (write)."""

    __slots__ = ("_backend", "_parent", "_changes", "write")

    def __init__(self, backend, write, parent=None):
        self._backend = backend
        self._parent = parent
        self._changes = {} if write else None  # {table: {key: value or _DELETED}}
        self.write = write

    def get(self, key, default=None, db=None):
        key = _key(key)
        t = self
        while t is not None:
            changes = t._changes
            if changes:
                table = changes.get(db)
                if table is not None:
                    value = table.get(key)
                    if value is not None:
                        return default if value is _DELETED else value
            t = t._parent
        return self._backend.data[db].get(key, default)

    def put(self, key, value, dupdata=True, overwrite=True, append=False, db=None):
        if not self.write:
            raise RoomStateError("a read transaction cannot write")
        key = _key(key)
        # ``append`` promises a key above every stored one (LMDB checks it to
        # keep its B-tree packed); a dict needs no order, so only a key that
        # exists already is refused.
        if (not overwrite or append) and self.get(key, None, db) is not None:
            return False
        self._changes.setdefault(db, {})[key] = bytes(value)
        return True

    def delete(self, key, value=b"", db=None):
        key = _key(key)
        if self.get(key, None, db) is None:
            return False
        self._changes.setdefault(db, {})[key] = _DELETED
        return True

    def _merged(self, db):
        merged = dict(self._backend.data[db])
        chain = []
        t = self
        while t is not None:
            chain.append(t)
            t = t._parent
        for t in reversed(chain):
            if t._changes and db in t._changes:
                for k, v in t._changes[db].items():
                    if v is _DELETED:
                        merged.pop(k, None)
                    else:
                        merged[k] = v
        return merged

    def _items(self, db):
        merged = self._merged(db)
        for k in sorted(merged):
            yield k, merged[k]

    def cursor(self, db=None):
        return _Cursor(list(self._items(db)))

    def commit(self):
        if self._parent is not None:
            into = self._parent._changes
            for db, table in self._changes.items():
                into.setdefault(db, {}).update(table)
        elif self._changes:
            self._backend.apply(self._changes)
        self._changes = None

    def abort(self):
        self._changes = None


class MemoryBackend:
    """Every table a dict of bytes to bytes, for this process only."""

    full_errors = (Full,)
    path = ":memory:"

    def __init__(self, readonly=False):
        self.readonly = readonly
        self.tables = {name: name for name in TABLES}  # the handle of a table is its name
        self.data = {name: {} for name in TABLES}
        self.gate = Gate()
        self.write_lock = threading.RLock()

    def close(self):
        self.data = {name: {} for name in TABLES}

    def begin_read(self):
        self.gate.enter()
        return MemoryTxn(self, False)

    def reader_done(self):
        self.gate.leave()

    def begin_write(self, parent=None):
        return MemoryTxn(self, True, parent)

    def commit(self, txn):
        txn.commit()

    def apply(self, changes):
        def run():
            for db, table in changes.items():
                data = self.data[db]
                for k, v in table.items():
                    if v is _DELETED:
                        data.pop(k, None)
                    else:
                        data[k] = v

        self.gate.exclusive(run)

    def storage_error(self, exc):
        return None

    def read_error(self, exc):
        return None

    def grow(self):
        """Memory has no map to grow; never :class:`Full`."""

    def table_stats(self, txn):
        out = {}
        for name in TABLES:
            items = txn._merged(name)
            out[name] = {"entries": len(items), "bytes": sum(len(k) + len(v) for k, v in items.items())}
        return out

    def space(self, tables):
        return {"bytes_in_use": sum(t["bytes"] for t in tables.values()), "free_bytes": 0, "file_bytes": 0}
