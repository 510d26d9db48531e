"""Merging forks: the state before an event with several prevs.

The states after the prevs are lined up over the keys where they may differ
(:meth:`roomstate.snapshots.SnapshotStore.aligned`, a sparse
:class:`roomstate._core.Aligned`: memory linear in the entries the states
differ by, however many states), split into agreed and conflicted keys
(``Aligned.split``), the conflicted ones resolved, and the result stored as a
delta against the closest input (``Aligned.delta``).

A resolver is a :class:`roomstate.resolvers.Resolver`: a string-level
function of a :class:`~roomstate.resolvers.ResolverContext`, and optionally a
NID-level fast path that decides the conflicted rows without strings.
"""
from collections.abc import Mapping

import numpy as np

from . import _core
from .blocks import entries_from, frozen
from ._records import PLACEHOLDER
from .errors import InvalidEventError, MissingEventError
from .ids import EVENT, ROOM, STATE_KEY, TYPE
from .matrixres import MatrixResolution
from .resolvers import ResolverContext
from .statemap import StateMap


def resolver_name(fn):
    """How an error names a resolver: its qualified name, else its repr."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    return repr(name) if isinstance(name, str) else repr(fn)


class _EventsAt:
    """What a NID-level resolver may read of the events: depth and event ID by NID."""

    __slots__ = ("_events", "_tx")

    def __init__(self, events, tx):
        self._events = events
        self._tx = tx

    def depth(self, nid):
        return self._events.get(self._tx, nid).depth

    def event_id(self, nid):
        return self._events.event_id(self._tx, nid)


class Merger:
    def __init__(self, tables, reader, store):
        self.ids = tables.ids
        self.events = tables.events
        self.snaps = tables.snaps
        self.reader = reader
        self.store = store  # what a resolver's context offers
        self.tables = tables
        self._matrix = None  # the Matrix resolution, made when first needed

    def merged_snapshot(self, tx, room_id, snaps, resolver):
        """The snapshot NID of the merged state, stored as a delta against the closest input."""
        snaps = list(dict.fromkeys(snaps))
        if len(snaps) == 1:
            return snaps[0]
        prefix, al, result = self._merge(tx, room_id, snaps, resolver)
        if len(al) == 0:
            return snaps[0]
        resets = al.resets(result)
        if resets:
            self.tables.meta.count_resets(tx, resets)
        j, delta = al.delta(result)
        if delta is None:
            return snaps[j]
        return self.snaps.derive(tx, snaps[j], delta, indexed=True)

    def merged_entries(self, tx, room_id, snaps, resolver):
        """The merged state as a full entry array, nothing stored (a room's current state)."""
        snaps = list(dict.fromkeys(snaps))
        if len(snaps) == 1:
            return self.snaps.state(tx, snaps[0])
        prefix, al, result = self._merge(tx, room_id, snaps, resolver)
        delta = al.keys.copy()
        delta["event"] = result
        return frozen(_core.overlay(prefix + [delta]))

    def resolved_entries(self, tx, room, room_id, state_sets, resolver):
        """The resolution of ``state_sets`` — mappings ``(type, state_key) -> event_id``
        of stored state events of the room (outliers included) — as a full entry array."""
        if isinstance(state_sets, Mapping) or not hasattr(state_sets, "__iter__"):
            raise TypeError("state_sets must be an iterable of mappings (type, state_key) -> event_id")
        arrays = [self._entries_of(tx, room, room_id, s, i) for i, s in enumerate(state_sets)]
        if not arrays:
            return frozen(entries_from(()))
        loaders = [lambda a=a: a for a in arrays]
        al, result = self.decide(tx, room_id, loaders, [], _core.align_sparse(arrays), resolver)
        out = al.keys.copy()
        out["event"] = result
        return frozen(out[result != 0])

    def _entries_of(self, tx, room, room_id, state, i):
        """One state set of :meth:`resolved_entries` as sorted entries, each event checked."""
        if isinstance(state, StateMap) and state._reader is self.reader:
            return state.entries  # a state this store gave: stored entries already
        if not isinstance(state, Mapping):
            raise TypeError(f"state_sets[{i}] is {type(state).__name__}, not a mapping")
        ids, events = self.ids, self.events
        rows = []
        for key, eid in state.items():
            if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
                raise InvalidEventError("state_sets", f"state_sets[{i}] has key {key!r}, not a (type, state_key) pair")
            if not isinstance(eid, str):
                raise InvalidEventError("state_sets", f"state_sets[{i}][{key!r}] is {eid!r}, not an event ID")
            nid = events.lookup(tx, eid)
            rec = events.get(tx, nid) if nid else None
            if rec is None or rec.flags & PLACEHOLDER:
                raise MissingEventError(f"event {eid!r} of state_sets[{i}] is not stored", eid)
            if rec.room != room:
                raise InvalidEventError("state_sets", f"{eid!r} is an event of another room than {room_id!r}", eid)
            tnid = ids.lookup(tx, TYPE, key[0])
            knid = ids.lookup(tx, STATE_KEY, key[1])
            if not rec.is_state or rec.type != tnid or rec.state_key != knid:
                raise InvalidEventError("state_sets", f"state_sets[{i}] holds {eid!r} at {key!r}, not its key", eid)
            rows.append((tnid, knid, nid))
        rows.sort()
        return frozen(entries_from(rows))

    def _merge(self, tx, room_id, snaps, resolver):
        prefix, al = self.snaps.aligned(tx, snaps)
        reader = self.reader
        loaders = [lambda s=s: reader.snapshot_state(s) for s in snaps]
        al, result = self.decide(tx, room_id, loaders, prefix, al, resolver)
        return prefix, al, result

    def decide(self, tx, room_id, loaders, prefix, al, resolver):
        """The merged value of each key of ``al`` (an :class:`~roomstate._core.Aligned`:
        the keys' events in each state, over the layers ``prefix`` every state shares;
        ``loaders``: a function per state giving its entries, for a string-level
        resolver's context).

        Returns ``(al, result)``: a resolver may add keys no state held."""
        result, agree, conflicted_rows = al.split()
        if len(conflicted_rows):
            if resolver.in_store:
                if self._matrix is None:
                    self._matrix = MatrixResolution(self.tables)
                extra = self._matrix(tx, room_id, prefix, al, agree, result, conflicted_rows)
                if extra:
                    al, result = with_keys(prefix, al, result, extra)
            elif resolver.on_nids is not None:
                resolver.on_nids(_EventsAt(self.events, tx), al, conflicted_rows, result)
            else:
                al, result = self._resolve(
                    tx, room_id, loaders, prefix, al, agree, result, conflicted_rows, resolver.on_strings
                )
        return al, result

    def _resolve(self, tx, room_id, loaders, prefix, al, agree, result, rows, resolver):
        """Ask a string-level resolver about the conflicted ``rows``; its answer decides them."""
        ids = self.ids
        keys = al.keys
        agreed = result.copy()  # the agreed rows' events (0 on the conflicted rows)
        ck = keys[rows]
        tnames = ids.names(tx, TYPE, ck["type"])
        knames = ids.names(tx, STATE_KEY, ck["state_key"])
        cands = [al.candidates(i) for i in rows.tolist()]
        uniq = sorted({e for c in cands for e in c})
        enames = dict(zip(uniq, ids.names(tx, EVENT, np.array(uniq, dtype=np.uint64))))
        conflicted = {}
        for key, c in zip(zip(tnames, knames), cands):
            conflicted[key] = {enames[e] for e in c}

        def unconflicted():
            d = keys.copy()
            d["event"] = agreed
            return frozen(_core.overlay(prefix + [d]))

        reader = self.reader
        state_sets = [reader.statemap_of(load) for load in loaders]
        ctx = ResolverContext(room_id, state_sets, conflicted, reader.statemap_of(unconflicted), self.store)
        name = resolver_name(resolver)
        with self.store._tx.resolving(name):
            choice = resolver(ctx)
        if not isinstance(choice, Mapping):
            raise TypeError(f"the resolver {name} returned {type(choice).__name__}, not a mapping")
        room = ids.lookup(tx, ROOM, room_id)
        row_of = {tk: i for i, tk in enumerate(zip(keys["type"].tolist(), keys["state_key"].tolist()))}
        extra = []
        picked = set()
        for key, sid in choice.items():
            if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
                raise InvalidEventError("resolver", f"{name} returned key {key!r}, not a (type, state_key) pair")
            if not isinstance(sid, str):
                raise InvalidEventError("resolver", f"{name} returned {sid!r} for {key!r}, not an event ID")
            tnid = ids.lookup(tx, TYPE, key[0])
            knid = ids.lookup(tx, STATE_KEY, key[1])
            snid = ids.lookup(tx, EVENT, sid)
            srec = self.events.get(tx, snid) if snid else None
            if srec is None or not srec.is_state or srec.type != tnid or srec.state_key != knid:
                raise InvalidEventError(
                    "resolver", f"{name} returned {sid!r} for {key!r}: not a stored state event for that key"
                )
            if srec.room != room:
                raise InvalidEventError("resolver", f"{name} returned {sid!r} for {key!r}: an event of another room")
            i = row_of.get((tnid, knid))
            candidates = conflicted.get(key)
            if candidates is None:
                # Not conflicted: the states agree on it (or none has it, below).
                held = int(agreed[i]) if i is not None else int(_core.lookup_layers(prefix, tnid, knid) or 0)
                candidates = {sid} if held == snid else set() if held else None
            if srec.rejected and not (candidates and sid in candidates):
                # A state given with add_event(state_before=...) may hold a rejected event.
                raise InvalidEventError("resolver", f"{name} returned {sid!r} for {key!r}: a rejected event")
            if candidates is not None and sid not in candidates:
                raise InvalidEventError(
                    "resolver", f"{name} returned {sid!r} for {key!r}, which is not one of the key's candidates "
                    f"(the events the states to resolve hold for it)"
                )
            if i is None:
                extra.append((tnid, knid, snid))
            else:
                result[i] = snid
                picked.add(i)
        # Conflicted keys the resolver left out are dropped.
        for i in rows.tolist():
            if i not in picked:
                result[i] = 0
        if extra:
            return with_keys(prefix, al, result, extra)
        return al, result


def with_keys(prefix, al, result, extra):
    """``al`` and ``result`` with the keys of ``extra`` — ``(type, state_key, event)``
    NIDs, keys no state set held — added in key order."""
    ek = entries_from((t, k, 0) for t, k, _ in extra)
    al, order = al.with_keys(ek, _core.lookup_keys(prefix, ek))
    result = np.concatenate([result, np.array([e for _, _, e in extra], dtype=np.uint64)])
    return al, result[order]
