"""Compacting a store: LMDB's compacting copy, which leaves out free pages.

A copy (:func:`compact_to`) is a consistent snapshot taken in one read transaction, so it
is safe while readers and a writer run: what commits after the snapshot is not in it.

In place (:func:`compact_in_place`), the compacted copy replaces the store's
``data.mdb``.  A process that has the old file open would go on reading it, and a writer
there would commit into a file nobody opens again, losing its writes.  So the store must
be open nowhere else, and stay so until the new file is in place:

* LMDB's lock file (``lock.mdb``) tells: every process with the environment open holds a
  shared ``fcntl`` lock on its first byte.  Taking an exclusive lock on that byte
  succeeds only when no other process holds one, and while it is held a process that
  opens the store waits inside LMDB's open.
* Those waiters have the old lock file open already; its reader table and transaction ID
  describe the old file.  Before the lock is released, the old lock file's magic number
  is cleared and the file unlinked, so a waiter's open fails with an error instead of
  reading the new file through stale lock data.  Opening again works: a new lock file is
  created for the new data file.

POSIX only (``fcntl``).  Every failure leaves the original store as it was; at worst a
``.compact-*`` directory is left inside the store's directory.
"""
import fcntl
import os
import shutil
import tempfile

import lmdb

import roomstate

from .errors import RoomStateError, StorageError, StoreFormatError
from .storage.lmdb import _SharedEnv

DATA, LOCK = "data.mdb", "lock.mdb"
# The lock file starts with LMDB's MDB_txninfo, whose first field is its magic number.
_MAGIC_OFFSET, _MAGIC_SIZE = 0, 4


def data_bytes(path):
    """The size of a store's data file."""
    return os.path.getsize(os.path.join(path, DATA))


def compact_to(path, to):
    """Write a compacted copy of the store at ``path`` into the new directory ``to``;
    returns the data file's bytes ``(before, after)``."""
    if os.path.exists(to) and not (os.path.isdir(to) and not os.listdir(to)):
        raise StorageError(f"{to!r} exists already (the copy goes to a new or empty directory)")
    created = not os.path.exists(to)
    with roomstate.open(path, readonly=True) as store:
        before = data_bytes(path)
        try:
            os.makedirs(to, exist_ok=True)
            _copy(store, to)
        except BaseException:
            if created:
                shutil.rmtree(to, ignore_errors=True)
            raise
    return before, data_bytes(to)


def compact_in_place(path):
    """Replace the store's data file at ``path`` by a compacted copy, when no other process
    (and nothing else in this one) has it open; returns the data file's bytes ``(before, after)``."""
    if not os.path.isfile(os.path.join(path, DATA)):
        raise StoreFormatError(f"no roomstate store at {os.fspath(path)!r}")
    if os.path.realpath(path) in _SharedEnv.registry:
        raise RoomStateError(f"the store at {path!r} is open in this process: close it before compacting it in place")
    with roomstate.open(path) as store:
        # Opened after the store and closed after it: closing any descriptor of the
        # lock file drops every fcntl lock this process holds on it, LMDB's own included.
        try:
            lock_fd = os.open(os.path.join(path, LOCK), os.O_RDWR)
        except OSError as exc:
            raise StorageError(f"cannot open the lock file of {path!r}: {exc.strerror or exc}") from exc
        try:
            _lock_out_others(path, lock_fd)
            with store.backend.write_lock:
                before = data_bytes(path)
                _replace_data(store, path, lock_fd)
        finally:
            store.close()
            os.close(lock_fd)
    return before, data_bytes(path)


def _lock_out_others(path, lock_fd):
    try:
        fcntl.lockf(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
    except OSError:
        raise RoomStateError(
            f"the store at {path!r} is open in another process: compacting it in place would lose what "
            "that process writes; close it first, or compact to a copy with --to"
        ) from None


def _replace_data(store, path, lock_fd):
    tmp = tempfile.mkdtemp(prefix=".compact-", dir=path)
    try:
        _copy(store, tmp)
        with roomstate.open(tmp, readonly=True):
            pass  # the copy is a store of this format
        _rename_durably(os.path.join(tmp, DATA), os.path.join(path, DATA))
        # The old lock file speaks of the old data file: no waiting process may use it.
        os.pwrite(lock_fd, bytes(_MAGIC_SIZE), _MAGIC_OFFSET)
        os.unlink(os.path.join(path, LOCK))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy(store, to):
    """LMDB's compacting copy of ``store`` into the directory ``to``, on disk when it returns."""
    try:
        store.env.copy(to, compact=True)
        fd = os.open(os.path.join(to, DATA), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except lmdb.Error as exc:
        raise StorageError(f"cannot copy the store to {to!r}: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"cannot copy the store to {to!r}: {exc.strerror or exc}") from exc


def _rename_durably(source, target):
    os.replace(source, target)
    fd = os.open(os.path.dirname(target), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
