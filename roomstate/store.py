"""The state store: events in, state out.

A thin facade: each concept lives in its own module, and the store wires them
together over one backend (:mod:`roomstate.storage`).

* :mod:`roomstate.ids`, :mod:`~roomstate.events`, :mod:`~roomstate.blocks`,
  :mod:`~roomstate.snapshots`, :mod:`~roomstate.rooms`: the tables;
* :mod:`roomstate.writer`: the add path; :mod:`roomstate.merger`: forks;
* :mod:`roomstate.reader`: the queries; :mod:`roomstate.transactions`: writes,
  reads, batches and the one retry policy.
"""
import os
import warnings
from contextlib import contextmanager

from .errors import RoomStateError, StoreFormatError
from .format import CHECKSUMS_SINCE, FORMAT_VERSION, READS
from .merger import Merger
from .reader import Reader
from .resolvers import resolver_of
from .storage import MEMORY, open_backend
from . import transactions
from .tables import Tables
from .transactions import Batch, RelaxedGC, Replayable, Transactions
from .writer import Writer


def open(path, *, resolver="matrix", readonly=False, durable=True, map_size=None, check_auth=True):  # noqa: A001
    """Open (or create) the store at ``path`` (``":memory:"``: held in memory); see :class:`StateStore`.

    ``resolver``: the default for merges: ``"matrix"`` (the Matrix specification's
    state resolution, by the room version), ``"newest_event"``, ``"raise_on_conflict"``
    or a callable; ``readonly``: an existing store, no writes; ``durable=False``:
    commits not fsynced; ``map_size``: the LMDB map's initial size in bytes (it grows
    by itself); ``check_auth`` (the default): every event added is checked against the
    Matrix authorization rules of its room version (it must carry ``sender`` and
    ``auth_events``), and one that fails is stored rejected with the rule as its reason;
    ``check_auth=False``: events are taken as given (only ``event_id``, ``room_id`` and
    ``type`` are required; ``rejected`` is the caller's).
    Raises :class:`StoreFormatError` when the path holds no roomstate
    store it can use, :class:`StorageError` when the disk or LMDB fails.
    """
    return StateStore(
        path, resolver=resolver, readonly=readonly, durable=durable, map_size=map_size, check_auth=check_auth
    )


class StateStore:
    """Matrix room state at every event, stored compactly.

    Open with :func:`roomstate.open`.  One writer (thread) at a time; reads
    from any thread, each in its own short read transaction.
    """

    def __init__(self, path, *, resolver="matrix", readonly=False, durable=True, map_size=None, check_auth=True):
        self.path = path if isinstance(path, str) and path == MEMORY else os.fspath(path)
        self.readonly = bool(readonly)
        self.durable = bool(durable)
        self.check_auth = bool(check_auth)
        self.resolver = resolver_of(resolver)
        self._tx = None
        self.backend = open_backend(self.path, readonly=self.readonly, durable=self.durable, map_size=map_size)
        try:
            self._build(self.backend.tables)
            self._check_format()
        except BaseException:
            self._tx.closed = True
            self.backend.close()
            raise

    def _build(self, handles):
        self._tables = t = Tables(handles)
        self._tx = Transactions(self.backend, readonly=self.readonly, flush=t.flush, publish=t.publish)
        self._reader = Reader(self._tx, t)
        self._merger = Merger(t, self._reader, self)
        self._reader.merger = self._merger
        self._writer = Writer(t, self._merger, self.check_auth)

    def _check_format(self):
        tables = self._tables
        with self._tx.reading() as tx:
            version = tables.format_version(tx)
            has_events = tables.has_events(tx)
        if version is None:
            if has_events:
                raise StoreFormatError(f"{self.path!r} has no format version: not a roomstate store")
            if self.readonly:
                raise StoreFormatError(f"{self.path!r} is an empty, uninitialised store")
            self._tx.write(tables.initialise)
        elif version not in READS:
            newer = "a newer" if version > FORMAT_VERSION else "an older"
            raise StoreFormatError(
                f"{self.path!r} holds format version {version}, made by {newer} roomstate; "
                f"this one reads versions {', '.join(map(str, READS))}"
            )
        else:
            with self._tx.reading() as tx:
                tables.check_meta(tx, version)
            if version == FORMAT_VERSION:
                return
            if not self.readonly:
                self._tx.write(tables.upgrade)
            elif version < CHECKSUMS_SINCE:
                # Read as it is, without checksums, until a writer elsewhere upgrades it.
                tables.set_checksums(False)
                self._tx.on_read = tables.refresh_format

    # -- lifecycle -----------------------------------------------------------
    @property
    def env(self):
        """The LMDB environment (LMDB stores only)."""
        return self.backend.env

    def close(self):
        """Close the store; reads and writes afterwards raise."""
        if not self._tx.closed:
            self._tx.closed = True
            self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        tx = getattr(self, "_tx", None)
        if tx is not None and not tx.closed:
            warnings.warn(f"roomstate store {self.path!r} was not closed", ResourceWarning, stacklevel=2)
            self.close()

    # -- writes ----------------------------------------------------------------
    def add_event(self, event, *, outlier=False, state_before=None, resolver=None):
        """Store one event and the state before and after it (one transaction).

        ``outlier=True`` stores it without its state (its prevs may be unknown);
        ``state_before={(type, state_key): event_id}`` gives the state before it;
        ``resolver`` decides the keys its prevs' states disagree on (default: the
        store's).  Adding an event stored already with the same fields does
        nothing.

        Raises :class:`InvalidEventError` (bad input, or the event stored with
        other fields), :class:`MissingEventError` (an unknown prev event or given
        state event), :class:`ConflictError` (the resolver refused),
        :class:`ReadOnlyError`, :class:`StorageError`; the store is then as it was.
        """
        resolver = self.resolver if resolver is None else resolver_of(resolver)
        writer = self._writer
        self._tx.write(lambda tx: writer.add_one(tx, event, outlier, state_before, resolver))

    def add_events(self, events, *, resolver=None, progress=False):
        """Store many events in one transaction; returns how many were new.

        Events stored already (with the same fields) are not counted.  Raises
        what :meth:`add_event` raises, and then stores none of them.
        ``progress=True`` shows a tqdm progress bar on stderr.
        """
        resolver = self.resolver if resolver is None else resolver_of(resolver)
        # A retry after the backend grows reads the events again.
        events = Replayable(events, transactions.REPLAY_LIMIT)
        writer = self._writer

        def run(tx):
            source = iter(events)
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(unit="ev", desc="import", disable=None)
            try:
                return writer.add_all(tx, source, resolver, bar)
            finally:
                if bar is not None:
                    bar.close()

        with RelaxedGC():
            return self._tx.write(run)

    @contextmanager
    def batch(self, *, resolver=None):
        """One write transaction for many ``add_event`` calls.

        Each call inside is atomic on its own (a nested transaction); the
        batch commits when the block exits normally and is discarded when it
        raises.
        """
        self._tx.check_writable()
        if self._tx.current() is not None:
            raise RoomStateError("batches do not nest")
        with self.backend.write_lock:
            b = Batch(self._tx, self._writer, self.resolver if resolver is None else resolver_of(resolver))
            with RelaxedGC():
                b.begin()
                try:
                    yield b
                except BaseException:
                    b.discard()
                    raise
                b.commit()

    # -- reads -----------------------------------------------------------------
    def state_before(self, event_id, *, types=None):
        """The state before an event (a StateMap).

        ``types`` keeps only some keys, as Synapse's ``StateFilter`` does: an
        iterable of ``(type, state_key)`` pairs, a ``state_key`` of None meaning
        every key of that type (``[("m.room.member", None), ("m.room.create", "")]``).
        None keeps every key; a pair the room never had adds nothing.

        Raises :class:`MissingEventError` for an unknown event or an outlier,
        TypeError for ``types`` that are not such pairs.
        """
        return self._reader.state_at(event_id, False, types)

    def state_after(self, event_id, *, types=None):
        """The state after an event: before it, plus itself if it is an accepted state event.

        ``types`` filters as in :meth:`state_before`; raises what it raises.
        """
        return self._reader.state_at(event_id, True, types)

    def current_state(self, room_id, *, types=None):
        """The merged state after all forward extremities of a room.

        ``types`` filters as in :meth:`state_before`.  Raises
        :class:`MissingEventError` for an unknown room and :class:`ConflictError`
        when the extremities disagree and the store's resolver refuses.
        """
        return self._reader.current_state(room_id, types, self.resolver)

    def resolve_state(self, room_id, state_sets, *, resolver=None):
        """The resolution of ``state_sets``: mappings ``(type, state_key) -> event_id`` of
        stored state events of the room (outliers included; StateMaps of this store are
        taken as they are), by ``resolver`` (default: the store's).

        For a caller that holds states of its own (a server answering ``/state_ids``,
        say).  Raises :class:`MissingEventError` for an unknown room or event,
        :class:`InvalidEventError` for an event of another room or at another key, and
        what the resolver raises.
        """
        return self._reader.resolve_state(room_id, state_sets, self.resolver if resolver is None else resolver_of(resolver))

    def state_resets(self, room_id):
        """The state resets of a room: every key where a merge's state (the state before
        an event with several prev events) holds an event that none of the prevs' states
        held there, or nothing where all of them held one — a member's join lost, the
        power levels going back.  A list of :class:`~roomstate.eventinfo.StateReset`, in
        the order the events were stored.

        Read from the stored states (each merge's result against its inputs), so it
        covers every resolver's merges, and an event stored with ``state_before`` that
        differs from its prevs' states too.  Walks the room's events: a read for tools,
        not for a hot path.  Raises :class:`MissingEventError` for an unknown room.
        """
        return self._reader.state_resets(room_id)

    def forward_extremities(self, room_id):
        """Event IDs of a room's forward extremities (events with no stored children).

        Raises :class:`MissingEventError` for an unknown room.
        """
        return self._reader.forward_extremities(room_id)

    def get_state(self, event_id, type, state_key, *, after=False):  # noqa: A002
        """The event ID holding ``(type, state_key)`` before an event (after it: ``after=True``), or None.

        Raises :class:`MissingEventError` for an unknown event or an outlier.
        """
        return self._reader.get_state(event_id, type, state_key, after)

    def state_diff(self, event_a, event_b):
        """From the state after ``event_a`` to the state after ``event_b`` (a StateDiff).

        Raises :class:`MissingEventError` when either is unknown or an outlier.
        """
        return self._reader.state_diff(event_a, event_b)

    def members(self, event_id, membership="join", *, after=False):
        """State keys of the ``m.room.member`` entries with that membership before an event.

        ``after=True``: after it.  ``membership`` is one of join, invite, leave,
        ban, knock (else ValueError).  Raises :class:`MissingEventError` for an
        unknown event or an outlier.
        """
        return self._reader.members(event_id, membership, after)

    def has_event(self, event_id):
        """True when the event is stored (outliers included)."""
        return self._reader.has_event(event_id)

    def is_outlier(self, event_id):
        """True when the event is stored as an outlier (its state is not known).

        Raises :class:`MissingEventError` for an unknown event.
        """
        return self._reader.event_record(event_id).outlier

    def event_depth(self, event_id):
        """The stored depth of an event.

        Raises :class:`MissingEventError` for an unknown event.
        """
        return self._reader.event_record(event_id).depth

    def event(self, event_id):
        """What the store keeps of an event: an :class:`~roomstate.EventInfo`.

        Raises :class:`MissingEventError` for an event not stored (outliers are stored).
        """
        return self._reader.event(event_id)

    def room_version(self, room_id):
        """The room's version: its create event's ``content.room_version``, "1" when it has
        none.  Raises :class:`MissingEventError` for a room not stored (or whose create event
        is not in its state), :class:`RoomStateError` when the create event was stored
        without its content (by a roomstate of format version 1)."""
        return self._reader.room_version(room_id)

    def auth_chain(self, event_ids):
        """Every auth ancestor of the given events, as a set of event IDs (the events
        themselves left out unless one is another's ancestor).

        Events stored without ``auth_events`` have no ancestors.  Raises
        :class:`MissingEventError` when one of ``event_ids`` is not stored.
        """
        return self._reader.auth_chain(event_ids)

    def rooms(self):
        """The IDs of the rooms the store holds events of, sorted."""
        return self._reader.room_ids()

    def room_counts(self):
        """``{room_id: (events, state_events)}`` for every room: one pass over the stored
        events (outliers included), so it takes time in proportion to the store."""
        return self._reader.room_counts()

    def stats(self):
        """Counts and bytes per structure (a dict; ``roomstate stats --json`` prints it)."""
        return self._reader.stats(self.backend)
