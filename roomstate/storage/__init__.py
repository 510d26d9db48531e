"""The storage seam: what the engine's tables see of a backend.

A backend holds the tables named in :data:`roomstate.format.TABLES` and hands
out transactions.  The tables reach storage only through a transaction's
methods, the subset of py-lmdb's ``Transaction`` API that the engine uses, so
that the LMDB backend costs no wrapper on the hot path:

* ``get(key, default=None, db=None)`` -> a buffer (``bytes`` or a read-only
  memoryview valid until the transaction ends) or ``default``;
* ``put(key, value, dupdata=True, overwrite=True, append=False, db=None)`` ->
  False when ``overwrite`` is off and the key exists, or when ``append`` is on
  and the key is not above every stored one;
* ``cursor(db=None)`` -> an iterable of ``(key, value)`` in key order (also a
  context manager); ``commit()`` and ``abort()`` on write transactions.

``db`` is one of the backend's ``tables`` handles.  Keys are bytes compared as
bytes: integer keys are big-endian so that byte order is numeric order.

A backend also provides (see :class:`roomstate.storage.lmdb.LmdbBackend`):
``begin_read()`` (ended by ``txn.abort()`` then ``reader_done()``), ``begin_write(parent=None)`` (a nested
transaction when ``parent`` is given), ``grow()`` after :class:`Full`,
``write_lock``, ``table_stats(txn)``, ``space()``, ``initialised`` and
``close()``, and ``storage_error(exc)`` / ``read_error(exc)``: the RoomStateError for
one of the backend's own exceptions raised by a write / a read (None for any other).  Every failure of the medium is a :class:`StorageError`; a full
medium is :class:`Full`, which the store answers with ``grow()`` and one retry
policy (:func:`roomstate.transactions.until_it_fits`).
"""
import os

from ..errors import StorageError


class Full(StorageError):
    """The backend has no room for this transaction: grow it and run the transaction again."""


MEMORY = ":memory:"


def open_backend(path, *, readonly=False, durable=True, map_size=None):
    """The backend for ``path``: ``":memory:"`` holds a store in memory, anything else is an LMDB directory."""
    if isinstance(path, str) and path == MEMORY:
        from .memory import MemoryBackend

        return MemoryBackend(readonly=readonly)
    from .lmdb import LmdbBackend

    return LmdbBackend(os.fspath(path), readonly=readonly, durable=durable, map_size=map_size)
