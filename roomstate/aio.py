"""asyncio access to a state store: the event loop never waits on LMDB.

>>> import asyncio, tempfile
>>> from roomstate import aio
>>> async def main(path):
...     async with aio.open(path, check_auth=False) as st:
...         await st.add_event({"event_id": "$c", "room_id": "!r", "type": "m.room.create", "state_key": ""})
...         return await st.to_dict(await st.state_after("$c"))
>>> with tempfile.TemporaryDirectory() as d:
...     asyncio.run(main(d))
{('m.room.create', ''): '$c'}

How it runs:

* **One writer thread** owns every LMDB write transaction.  Writes are queued
  to it in the order they are awaited and run one after another; each is one
  transaction (``add_events`` and a whole :meth:`AsyncStateStore.batch` too).
* **Reads run in a bounded pool of reader threads**, each call in its own
  short read transaction that ends before the result comes back: no
  transaction is ever held across an ``await``.  The Cython kernels release
  the GIL, so reads on several threads overlap.
* **Cancellation.**  Cancelling a task that awaits a write stops the waiting,
  not the write: a write handed to the writer thread runs to completion —
  committed or, if it fails, rolled back as a whole — and its result or error
  is dropped.  A cancelled read that has not started yet is dropped; one that
  has started finishes in its thread and its result is dropped.  Either way
  LMDB never sees half a transaction.
* **Closing.**  :meth:`AsyncStateStore.aclose` (or leaving ``async with``)
  waits for every write and read already handed over, then closes the store.
  A store dropped without closing warns ``ResourceWarning`` and is closed by
  its writer thread.

This is what :func:`asyncio.wrap_future` does for reads; writes use the same
bridge without propagating cancellation to the thread.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import warnings
from typing import (
    Any,
    Callable,
    Dict,
    Generator,
    Iterable,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
    TypeVar,
    Union,
)

from .errors import RoomStateError
from .eventinfo import EventInfo
from .statemap import StateDiff, StateMap
from .store import StateStore
from .store import open as _open_sync

T = TypeVar("T")
Event = Mapping[str, Any]
Resolver = Union[None, str, Callable[..., Mapping[Tuple[str, str], str]]]
Types = Optional[Iterable[Tuple[str, Optional[str]]]]

__all__ = ["AsyncBatch", "AsyncStateStore", "open"]


def open(  # noqa: A001
    path: Union[str, "os.PathLike[str]"],
    *,
    resolver: Resolver = None,
    readonly: bool = False,
    durable: bool = True,
    reader_threads: Optional[int] = None,
    **options: Any,
) -> "AsyncStateStore":
    """An :class:`AsyncStateStore` for the store at ``path``.

    Takes the options of :func:`roomstate.open`, plus ``reader_threads`` (the
    size of the read pool; default: the number of CPUs, at most 8).  The store
    is opened in the writer thread by ``async with``, by ``await``, or by the
    first call::

        async with roomstate.aio.open(path) as st: ...
        st = await roomstate.aio.open(path)
    """
    return AsyncStateStore(
        path, resolver=resolver, readonly=readonly, durable=durable, reader_threads=reader_threads, **options
    )


def _bridge(cf: "concurrent.futures.Future[T]", loop: asyncio.AbstractEventLoop) -> "asyncio.Future[T]":
    """An asyncio future that completes with ``cf``; cancelling it leaves ``cf`` alone.

    No closure captures ``cf``: a reference cycle per call would leave garbage
    for the cyclic GC, whose full passes then stall the loop.
    """
    fut: asyncio.Future[T] = loop.create_future()
    cf.add_done_callback(functools.partial(_post, loop, fut))
    return fut


def _post(loop: asyncio.AbstractEventLoop, fut: "asyncio.Future[T]", cf: "concurrent.futures.Future[T]") -> None:
    try:
        loop.call_soon_threadsafe(_copy, fut, cf)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def _copy(fut: "asyncio.Future[T]", cf: "concurrent.futures.Future[T]") -> None:
    if fut.done():  # the waiter was cancelled: drop the outcome
        return
    if cf.cancelled():
        fut.cancel()
        return
    exc = cf.exception()
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(cf.result())


def _close_when_idle(
    readers: concurrent.futures.ThreadPoolExecutor, opened: "concurrent.futures.Future[StateStore]"
) -> None:
    """Runs in the writer thread, after every queued write: let reads finish, then close."""
    readers.shutdown(wait=True)
    if opened.done() and not opened.cancelled() and opened.exception() is None:
        opened.result().close()


class AsyncStateStore:
    """A :class:`roomstate.StateStore` behind a writer thread and a reader pool.

    Every read and write of the sync API is a coroutine here.  ``StateMap``
    results carry numeric entries; turning them into strings (iterating,
    ``items()``, ``to_dict()``) does short lookups on the calling thread —
    use :meth:`to_dict` to do that in the reader pool for big states.
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        *,
        resolver: Resolver = None,
        readonly: bool = False,
        durable: bool = True,
        reader_threads: Optional[int] = None,
        **options: Any,
    ) -> None:
        if reader_threads is None:
            reader_threads = max(1, min(8, os.cpu_count() or 1))
        if not isinstance(reader_threads, int) or isinstance(reader_threads, bool) or reader_threads < 1:
            raise ValueError(f"reader_threads must be a positive integer, got {reader_threads!r}")
        self.path = os.fspath(path)
        self.readonly = bool(readonly)
        self.durable = bool(durable)
        self.reader_threads = reader_threads
        self._options: Dict[str, Any] = dict(options, resolver=resolver, readonly=readonly, durable=durable)
        self._writer: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._readers: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._opened: Optional[concurrent.futures.Future[StateStore]] = None
        self._closing: Optional[concurrent.futures.Future[None]] = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------
    def _start(self) -> "concurrent.futures.Future[StateStore]":
        if self._closing is not None or self._closed:
            raise RoomStateError(f"the async store at {self.path!r} is closed")
        if self._opened is None:
            self._writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="roomstate-writer")
            self._readers = concurrent.futures.ThreadPoolExecutor(
                self.reader_threads, thread_name_prefix="roomstate-reader"
            )
            self._opened = self._writer.submit(_open_sync, self.path, **self._options)
        return self._opened

    async def _store(self) -> StateStore:
        opened = self._start()
        if not opened.done():
            try:
                await _bridge(opened, asyncio.get_running_loop())
            except Exception:  # noqa: BLE001 - raised below, after closing
                pass
        exc = opened.exception()
        if exc is not None:
            await self.aclose()
            raise exc
        return opened.result()

    async def _open(self) -> "AsyncStateStore":
        await self._store()
        return self

    def __await__(self) -> Generator[Any, None, "AsyncStateStore"]:
        """``await roomstate.aio.open(path)`` opens the store and gives it back."""
        return self._open().__await__()

    async def __aenter__(self) -> "AsyncStateStore":
        """Open the store (in the writer thread)."""
        return await self._open()

    async def __aexit__(self, *exc: object) -> None:
        """Close the store: :meth:`aclose`."""
        await self.aclose()

    async def aclose(self) -> None:
        """Wait for every write and read already handed over, then close the store.

        Calls made after ``aclose()`` starts raise :class:`RoomStateError`.
        Cancelling ``aclose()`` does not stop the closing.
        """
        if self._closed:
            return
        if self._opened is None:
            self._closed = True
            return
        assert self._writer is not None and self._readers is not None
        if self._closing is None:
            # FIFO with one worker: this runs after every write queued before it.
            self._closing = self._writer.submit(_close_when_idle, self._readers, self._opened)
        if not self._closing.done():
            await _bridge(self._closing, asyncio.get_running_loop())
        self._writer.shutdown(wait=True)  # the thread is idle now: this returns at once
        self._closed = True
        self._closing.result()

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has started (or finished)."""
        return self._closed or self._closing is not None

    @property
    def store(self) -> StateStore:
        """The underlying sync store (opened), for numeric access from threads."""
        if self._opened is None or not self._opened.done() or self._opened.exception() is not None:
            raise RoomStateError("the async store is not open yet")
        return self._opened.result()

    def __del__(self) -> None:
        opened = getattr(self, "_opened", None)
        if opened is None or getattr(self, "_closing", None) is not None or getattr(self, "_closed", True):
            return
        warnings.warn(f"roomstate async store {self.path!r} was not closed", ResourceWarning, stacklevel=2)
        writer, readers = self._writer, self._readers
        assert writer is not None and readers is not None
        try:
            writer.submit(_close_when_idle, readers, opened)
            writer.shutdown(wait=False)
        except RuntimeError:  # interpreter shutdown: the sync store warns on its own
            pass

    # -- running in threads ------------------------------------------------------
    async def _write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        store = await self._store()
        if self._closing is not None:
            raise RoomStateError(f"the async store at {self.path!r} is closed")
        assert self._writer is not None
        cf = self._writer.submit(fn, store, *args, **kwargs)
        try:
            # Cancelling this await never cancels cf: a write runs whole or not at all.
            return await _bridge(cf, asyncio.get_running_loop())
        finally:
            del cf  # else error -> traceback -> this frame -> cf -> error: a cycle per error

    async def _read(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        store = await self._store()
        if self._closing is not None:
            raise RoomStateError(f"the async store at {self.path!r} is closed")
        assert self._readers is not None
        cf = self._readers.submit(fn, store, *args, **kwargs)
        try:
            return await _bridge(cf, asyncio.get_running_loop())
        except asyncio.CancelledError:
            cf.cancel()  # skipped if not started yet; a running read just finishes
            raise
        finally:
            del cf  # else error -> traceback -> this frame -> cf -> error: a cycle per error

    # -- writes ----------------------------------------------------------------------
    async def add_event(
        self,
        event: Event,
        *,
        outlier: bool = False,
        state_before: Optional[Mapping[Tuple[str, str], str]] = None,
        resolver: Resolver = None,
    ) -> None:
        """Store one event (one transaction in the writer thread); see :meth:`roomstate.StateStore.add_event`.

        Errors come back unchanged (:class:`~roomstate.InvalidEventError`,
        :class:`~roomstate.MissingEventError`, :class:`~roomstate.ConflictError`,
        :class:`~roomstate.ReadOnlyError`, :class:`~roomstate.StorageError`), and a
        failed write leaves the store as it was.
        """
        await self._write(
            StateStore.add_event, event, outlier=outlier, state_before=state_before, resolver=resolver
        )

    async def add_events(self, events: Iterable[Event], *, resolver: Resolver = None, progress: bool = False) -> int:
        """Store many events in one transaction; returns how many were new.

        The iterable is consumed in the writer thread.
        """
        return await self._write(StateStore.add_events, events, resolver=resolver, progress=progress)

    def batch(self, *, resolver: Resolver = None) -> "AsyncBatch":
        """Collect writes and run them in one transaction when the block exits::

            async with st.batch() as b:
                b.add_event(ev1)
                b.add_events(more)

        Nothing is written until the block exits; if it raises, or any write
        in it fails, nothing is written at all (the error is raised on exit).
        """
        self._start()
        return AsyncBatch(self, resolver)

    # -- reads -----------------------------------------------------------------------
    async def state_before(self, event_id: str, *, types: Types = None) -> StateMap:
        """:meth:`roomstate.StateStore.state_before` in the reader pool: the state before an event.

        ``types`` filters as there: ``(type, state_key)`` pairs, ``state_key`` None
        for every key of the type.  Raises :class:`~roomstate.MissingEventError` for
        an unknown event or an outlier.
        """
        return await self._read(StateStore.state_before, event_id, types=types)

    async def state_after(self, event_id: str, *, types: Types = None) -> StateMap:
        """:meth:`roomstate.StateStore.state_after` in the reader pool: the state after an event.

        ``types`` filters as in :meth:`state_before`; raises what it raises.
        """
        return await self._read(StateStore.state_after, event_id, types=types)

    async def current_state(self, room_id: str, *, types: Types = None) -> StateMap:
        """:meth:`roomstate.StateStore.current_state` in the reader pool: the state after a room's extremities.

        ``types`` filters as in :meth:`state_before`.  Raises
        :class:`~roomstate.MissingEventError` for an unknown room and
        :class:`~roomstate.ConflictError` when the extremities disagree and the
        resolver refuses.
        """
        return await self._read(StateStore.current_state, room_id, types=types)

    async def forward_extremities(self, room_id: str) -> List[str]:
        """:meth:`roomstate.StateStore.forward_extremities` in the reader pool."""
        return await self._read(StateStore.forward_extremities, room_id)

    async def get_state(self, event_id: str, type: str, state_key: str, *, after: bool = False) -> Optional[str]:  # noqa: A002
        """:meth:`roomstate.StateStore.get_state` in the reader pool: one key's event ID, or None."""
        return await self._read(StateStore.get_state, event_id, type, state_key, after=after)

    async def state_diff(self, event_a: str, event_b: str) -> StateDiff:
        """:meth:`roomstate.StateStore.state_diff` in the reader pool: from the state after a to after b."""
        return await self._read(StateStore.state_diff, event_a, event_b)

    async def members(self, event_id: str, membership: str = "join", *, after: bool = False) -> List[str]:
        """:meth:`roomstate.StateStore.members` in the reader pool: the users with that membership."""
        return await self._read(StateStore.members, event_id, membership, after=after)

    async def has_event(self, event_id: str) -> bool:
        """:meth:`roomstate.StateStore.has_event` in the reader pool: True when the event is stored."""
        return await self._read(StateStore.has_event, event_id)

    async def is_outlier(self, event_id: str) -> bool:
        """:meth:`roomstate.StateStore.is_outlier` in the reader pool: True for an event stored without its state."""
        return await self._read(StateStore.is_outlier, event_id)

    async def event_depth(self, event_id: str) -> int:
        """:meth:`roomstate.StateStore.event_depth` in the reader pool: the stored depth of an event."""
        return await self._read(StateStore.event_depth, event_id)

    async def event(self, event_id: str) -> EventInfo:
        """What the store keeps of an event (:meth:`StateStore.event`)."""
        return await self._read(StateStore.event, event_id)

    async def room_version(self, room_id: str) -> str:
        """The room's version (:meth:`StateStore.room_version`)."""
        return await self._read(StateStore.room_version, room_id)

    async def auth_chain(self, event_ids: Iterable[str]) -> Set[str]:
        """Every auth ancestor of the events (:meth:`StateStore.auth_chain`)."""
        return await self._read(StateStore.auth_chain, list(event_ids))

    async def stats(self) -> Dict[str, Any]:
        """:meth:`roomstate.StateStore.stats` in the reader pool: counts and bytes per structure."""
        return await self._read(StateStore.stats)

    async def to_dict(self, state: StateMap) -> Dict[Tuple[str, str], str]:
        """``state.to_dict()`` computed in the reader pool (strings for every entry)."""
        return await self._read(lambda _store: state.to_dict())


class AsyncBatch:
    """Writes collected for one transaction; see :meth:`AsyncStateStore.batch`."""

    def __init__(self, store: AsyncStateStore, resolver: Resolver) -> None:
        self._store = store
        self._resolver = resolver
        self._ops: List[Tuple[str, Any, Dict[str, Any]]] = []
        self._done = False

    def _check(self) -> None:
        if self._done:
            raise RoomStateError("the batch is finished")

    def add_event(
        self,
        event: Event,
        *,
        outlier: bool = False,
        state_before: Optional[Mapping[Tuple[str, str], str]] = None,
        resolver: Resolver = None,
    ) -> None:
        """Queue one ``add_event`` (runs when the batch exits)."""
        self._check()
        self._ops.append(("one", event, {"outlier": outlier, "state_before": state_before, "resolver": resolver}))

    def add_events(self, events: Iterable[Event], *, resolver: Resolver = None) -> None:
        """Queue many events (the iterable is read now)."""
        self._check()
        self._ops.append(("many", list(events), {"resolver": resolver}))

    def __len__(self) -> int:
        """How many events are queued."""
        return sum(1 if kind == "one" else len(arg) for kind, arg, _ in self._ops)

    async def __aenter__(self) -> "AsyncBatch":
        """Start collecting writes."""
        self._check()
        return self

    async def __aexit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: object) -> None:
        """Run the queued writes in one transaction, unless the block raised."""
        self._done = True
        ops, self._ops = self._ops, []
        if exc_type is None and ops:
            await self._store._write(_run_batch, ops, self._resolver)


def _run_batch(store: StateStore, ops: List[Tuple[str, Any, Dict[str, Any]]], resolver: Resolver) -> None:
    with store.batch(resolver=resolver) as b:
        for kind, arg, kwargs in ops:
            if kind == "one":
                b.add_event(arg, **kwargs)
            else:
                b.add_events(arg, **kwargs)

