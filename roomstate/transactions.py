"""Transactions of a store: the thread's write transaction, reads, batches, and
the one retry policy for a medium that fills up.

Every write runs in one backend write transaction (a nested one per call
inside a batch or another write).  When the backend is full, the whole
attempt is rolled back, the backend grows, and the attempt runs again
(:func:`until_it_fits`): a single call's closure is simply run again; a
batch replays the calls that had succeeded; ``add_events`` replays the events
it has read (:class:`Replayable`).
"""
import gc
import itertools
import threading
from collections.abc import Sequence
from contextlib import contextmanager

from .damage import DECODE_ERRORS, PREFIX
from .errors import MissingEventError, ReadOnlyError, RoomStateError, StorageError, StoreFormatError
from .resolvers import resolver_of
from .txn import ReadTx, Tx

#: Events of one streamed ``add_events`` call kept for a replay after the map grows.
REPLAY_LIMIT = 100_000


def until_it_fits(backend, attempt, on_full=None):
    """Run ``attempt()`` until the backend has room: after :class:`~roomstate.storage.Full`,
    ``on_full()`` (to roll back), grow the backend, try again."""
    while True:
        try:
            return attempt()
        except backend.full_errors:
            if on_full is not None:
                on_full()
            backend.grow()


class RelaxedGC:
    """Collect young objects less often during bulk writes.

    A bulk write makes a great many small containers (records, cache
    entries) and no reference cycles; the default first-generation threshold
    has the collector rescan them every 700 allocations, about a sixth of the
    import time.  The previous thresholds come back when the write ends.
    """

    depth = 0
    saved = None
    lock = threading.Lock()

    def __enter__(self):
        with self.lock:
            cls = type(self)
            if cls.depth == 0:
                cls.saved = gc.get_threshold()
                gc.set_threshold(max(cls.saved[0], 100_000), *cls.saved[1:])
            cls.depth += 1

    def __exit__(self, *exc):
        with self.lock:
            cls = type(self)
            cls.depth -= 1
            if cls.depth == 0:
                gc.set_threshold(*cls.saved)


class Replayable:
    """The events of one ``add_events`` call, readable again after a rollback.

    A sequence is simply read again; an iterator's events are kept as they
    are read, up to ``limit`` of them (a long call's memory must not grow
    with it), past which a second attempt raises :class:`StorageError`.
    """

    def __init__(self, events, limit):
        if isinstance(events, Sequence):
            self.items, self.source, self.limit = events, iter(()), 0
        else:
            self.items, self.source, self.limit = [], iter(events), limit
        self.overflowed = False
        self.attempts = 0

    def __iter__(self):
        self.attempts += 1
        if self.attempts > 1 and self.overflowed:
            raise StorageError(
                f"the store's map filled up after more than {self.limit:,} events of this add_events "
                "call, too many to replay; the call was rolled back and the map has grown: "
                "call add_events again with the same events"
            )
        return itertools.chain(self.items, self._remembering())

    def _remembering(self):
        items = self.items
        for item in self.source:
            if not self.overflowed:
                if len(items) < self.limit:
                    items.append(item)
                else:
                    self.overflowed = True
                    items.clear()
            yield item


class _Reading:
    __slots__ = ("transactions", "tx", "own")

    def __init__(self, transactions):
        self.transactions = transactions

    def __enter__(self):
        t = self.transactions
        tx = getattr(t.local, "tx", None)
        if tx is not None:
            self.own = False
            self.tx = tx
            return tx
        t.check_open()
        self.own = True
        self.tx = ReadTx(t.begin_read, t.backend.reader_done)
        return self.tx

    def __exit__(self, exc_type, exc, tb):
        t = self.transactions
        if self.own:
            try:
                self.tx.close()
            except Exception as close_exc:  # noqa: BLE001 - the read's own error, if any, comes first
                if exc is None:
                    raise read_error(t, close_exc) from close_exc
        if exc is not None and not isinstance(exc, RoomStateError):
            error = read_error(t, exc)
            if error is not exc:
                raise error from exc
        return False


#: What a read of damaged data may still raise from deep inside (a kernel's invariant,
#: numpy): reported as damage, not as a bug of the caller.  TypeError is left alone: it
#: is what a read raises for arguments of the wrong type.
_DAMAGE_ERRORS = tuple(e for e in DECODE_ERRORS if e is not TypeError)


def read_error(transactions, exc):
    """The RoomStateError for an exception raised while reading, or ``exc`` itself."""
    if isinstance(exc, RoomStateError):
        return exc
    if transactions.closed:
        return RoomStateError("the store is closed")
    error = transactions.backend.read_error(exc)
    if error is not None:
        return error
    if isinstance(exc, _DAMAGE_ERRORS) and not isinstance(exc, MissingEventError):
        return StoreFormatError(f"{PREFIX}reading it raised {type(exc).__name__}: {exc}")
    return exc


class Transactions:
    """The write transaction of each thread, and read transactions begun only when needed.

    ``flush(tx)`` writes a transaction's dirty tables before its outermost
    commit; ``publish(pending)`` moves what it cached into the process-wide
    caches after it.
    """

    def __init__(self, backend, *, readonly, flush, publish):
        self.backend = backend
        self.readonly = readonly
        self.closed = False  # set by the store's close()
        self.flush = flush
        self.publish = publish
        self.local = threading.local()
        # Called with each new read transaction until it returns True (a store opened
        # read-only in an older format: Tables.refresh_format).
        self.on_read = None

    def check_open(self):
        if self.closed:
            raise RoomStateError("the store is closed")

    @contextmanager
    def resolving(self, name):
        """While a resolver runs: this thread's writes are refused, naming it."""
        local = self.local
        outer = getattr(local, "resolving", None)
        local.resolving = name
        try:
            yield
        finally:
            local.resolving = outer

    def current(self):
        """The thread's write transaction, or None."""
        return getattr(self.local, "tx", None)

    def reading(self):
        """A context giving the thread's write transaction, or a lazy read transaction."""
        return _Reading(self)

    def begin_read(self):
        self.check_open()
        try:
            txn = self.backend.begin_read()
            if self.on_read is not None and self.on_read(txn):
                self.on_read = None
            return txn
        except Exception as exc:  # noqa: BLE001 - translated, or raised as it is
            error = read_error(self, exc)
            if error is exc:
                raise
            raise error from exc

    def check_writable(self):
        self.check_open()
        resolving = getattr(self.local, "resolving", None)
        if resolving is not None:
            raise RoomStateError(
                f"the resolver {resolving} tried to write to the store while resolving a merge "
                "(a resolver may read the store, never add events to it); the call was rolled back"
            )
        if self.readonly:
            raise ReadOnlyError(f"the store at {self.backend.path!r} is open read-only")

    # -- top-level transactions ------------------------------------------------
    def begin_top(self):
        tx = Tx(self.backend.begin_write(), True)
        self.local.tx = tx
        return tx

    def commit_top(self, tx):
        self.flush(tx)
        self.backend.commit(tx.txn)
        self.publish(tx.pending)

    def abort_top(self, tx):
        tx.txn.abort()
        self.local.tx = None

    def storage_error(self, exc):
        """The exception to raise for ``exc``, raised by a failed write."""
        return self.backend.storage_error(exc) or exc

    # -- writes ----------------------------------------------------------------
    def write(self, fn):
        """Run ``fn(tx)`` in one write transaction (nested inside an outer one)."""
        self.check_writable()
        outer = self.current()
        if outer is not None:
            return self._nested(outer, fn)
        with self.backend.write_lock:
            return until_it_fits(self.backend, lambda: self._top(fn))

    def _nested(self, outer, fn):
        if not outer.write:
            raise RoomStateError("cannot write inside a read")
        child = Tx(self.backend.begin_write(parent=outer.txn), True, parent=outer)
        self.local.tx = child
        try:
            result = fn(child)
        except BaseException:
            child.txn.abort()
            child.rollback()
            raise
        finally:
            self.local.tx = outer
        child.txn.commit()
        outer.last = child.last
        return result

    def _top(self, fn):
        tx = self.begin_top()
        try:
            result = fn(tx)
            self.commit_top(tx)
            return result
        except BaseException as exc:
            tx.txn.abort()
            error = self.storage_error(exc)
            if error is not exc:
                raise error from exc
            raise
        finally:
            self.local.tx = None


class Batch:
    """Many writes in one transaction; see :meth:`StateStore.batch`.

    Each call runs in a nested transaction and is kept in a log; when the
    backend fills up, the batch starts again in a bigger one and replays the
    log (:func:`until_it_fits`).
    """

    def __init__(self, transactions, writer, resolver):
        self._t = transactions
        self._writer = writer
        self._resolver = resolver
        self._log = []
        self._tx = None
        self._finished = False

    def begin(self):
        self._tx = self._t.begin_top()

    def abort(self):
        if self._tx is not None:
            self._t.abort_top(self._tx)
            self._tx = None

    def discard(self):
        """The batch's block raised: nothing of it is committed, and it takes no more calls."""
        self.abort()
        self._finished = True

    def _resume(self):
        """After a rollback for space: a new transaction with every logged call replayed."""
        if self._tx is None:
            self.begin()
            for op in self._log:
                self._t.write(op)

    def _run(self, op):
        if self._finished:
            raise RoomStateError("the batch is finished")

        def attempt():
            self._resume()
            return self._t.write(op)

        result = until_it_fits(self._t.backend, attempt, on_full=self.abort)
        self._log.append(op)
        return result

    def commit(self):
        def attempt():
            self._resume()
            self._t.commit_top(self._tx)

        try:
            until_it_fits(self._t.backend, attempt, on_full=self.abort)
        except BaseException as exc:
            self.abort()
            error = self._t.storage_error(exc)
            if error is not exc:
                raise error from exc
            raise
        finally:
            self._finished = True
            self._tx = None
            self._t.local.tx = None

    def add_event(self, event, *, outlier=False, state_before=None, resolver=None):
        resolver = self._resolver if resolver is None else resolver_of(resolver)
        writer = self._writer
        self._run(lambda tx: writer.add_one(tx, event, outlier, state_before, resolver))

    def add_events(self, events, *, resolver=None):
        resolver = self._resolver if resolver is None else resolver_of(resolver)
        writer = self._writer
        events = list(events)
        return self._run(lambda tx: writer.add_all(tx, events, resolver))
