"""``resolver="matrix"``: the Matrix specification's state resolution, inside the store.

The algorithms are :mod:`roomstate.matrix.stateres`'s (v1, v2, v2.1 by the room
version); this module gives them the store's events and does on NIDs what would
otherwise read the whole state as strings:

- the merger has already split the keys into agreed and conflicted ones
  (:meth:`roomstate.merger.Merger._merge`), so the unconflicted state map is the
  stored layers plus the agreed rows, read key by key (:class:`_TxState`), never
  copied;
- the auth difference is computed on NIDs from the stored auth events
  (:func:`auth_difference_nids`); the auth chains of the unconflicted events are kept
  from one merge to the next of a room within a write transaction (:class:`AuthClosure`,
  changed by what the unconflicted state gained and lost), so consecutive merges do
  not each walk the whole state's auth chains;
- events are read as the authorization rules read them (the record's fields and
  stored extras) only when a step needs them.

What the resolution decides — the conflicted keys, and keys no prev state held that
an event of the auth difference gained — goes back to the merger as NIDs.
"""
from collections.abc import Mapping

import numpy as np

from . import _core
from .authcheck import AuthChecker
from .blocks import frozen
from .damage import damaged
from .errors import InvalidEventError, MissingEventError
from .events import HAS_AUTH, PLACEHOLDER
from .ids import CREATE_TYPE_NID, EMPTY_STATE_KEY_NID, STATE_KEY, TYPE
from .matrix import stateres
from .matrix.versions import room_version as version_record

__all__ = ["AuthClosure", "MatrixResolution", "auth_difference_nids"]


class _TxState(Mapping):
    """A state as stateres reads it — ``(type, state_key) -> event_id`` — over layers
    of NID entries, in the merge's transaction; only what is looked up is turned into
    strings."""

    __slots__ = ("_ids", "_events", "_tx", "_layers", "_len")

    def __init__(self, ids, events, tx, layers):
        self._ids = ids
        self._events = events
        self._tx = tx
        self._layers = layers
        self._len = None

    def _nid(self, key):
        if not (isinstance(key, tuple) and len(key) == 2):
            return 0
        t, k = key
        if not (isinstance(t, str) and isinstance(k, str)):
            return 0
        ids, tx = self._ids, self._tx
        tnid = ids.lookup(tx, TYPE, t)
        knid = ids.lookup(tx, STATE_KEY, k) if tnid else 0
        if not knid:
            return 0
        return _core.lookup_layers(self._layers, tnid, knid) or 0

    def __getitem__(self, key):
        nid = self._nid(key)
        if not nid:
            raise KeyError(key)
        return self._events.event_id(self._tx, nid)

    def get(self, key, default=None):
        nid = self._nid(key)
        return self._events.event_id(self._tx, nid) if nid else default

    def __contains__(self, key):
        return self._nid(key) != 0

    def _entries(self):
        entries = _core.overlay(self._layers)
        return entries[entries["event"] != 0]

    def __iter__(self):
        ids, tx = self._ids, self._tx
        for t, k, _ in self._entries().tolist():
            yield (ids.name(tx, TYPE, t), ids.name(tx, STATE_KEY, k))

    def __len__(self):
        if self._len is None:
            self._len = len(self._entries())
        return self._len


def auth_difference_nids(auth_of, member, full, unconflicted_nids=(), everywhere=None):
    """The auth difference (rooms v2, "Definitions") on NIDs: the walks of
    :func:`roomstate.matrix.stateres.chain_masks` (shared with the reference
    :func:`~roomstate.matrix.stateres.auth_difference`) over the stored auth events.

    ``auth_of(nid)``: the NIDs of an event's auth events; ``member``: each event at a
    conflicted key -> the bit mask of the state sets holding it; ``full``: the mask of
    every set; ``unconflicted_nids``: the events every set holds, or ``everywhere``:
    their auth chains, already known (an :class:`AuthClosure`'s ``count``).
    """
    chain, _ = stateres.chain_masks(auth_of, member, unconflicted_nids, everywhere)
    return {nid for nid, m in chain.items() if m != full}


class AuthClosure:
    """The auth chains of a state's events, kept by reference counts as the state changes.

    ``count[x]`` is the number of the state's events that cite ``x`` as an auth event,
    plus the number of events in the closure that do; ``x`` is in the closure (some
    event of the state reaches it by auth events) exactly when it has a count.  The
    auth events form a DAG (an event's auth events are stored before it), so counts
    that fall to zero take their events out, and theirs in turn, exactly.

    :meth:`update` moves the closure to another state: its work is what the two
    states' auth chains differ by (plus a diff of the two entry arrays), not the state.

    >>> edges = {1: (), 2: (1,), 3: (1, 2), 4: (1, 3)}
    >>> c = AuthClosure()
    >>> import numpy as np
    >>> from roomstate.blocks import entries_from
    >>> c.update(edges.__getitem__, entries_from([(1, 1, 3)]))
    >>> sorted(c.count)
    [1, 2]
    >>> c.update(edges.__getitem__, entries_from([(1, 1, 4)]))
    >>> sorted(c.count), c.count[1]
    ([1, 2, 3], 3)
    >>> c.update(edges.__getitem__, entries_from([(1, 2, 2)]))
    >>> sorted(c.count)
    [1]
    """

    __slots__ = ("state", "count")

    def __init__(self):
        self.state = None  # the full state (an entry array) the counts are of (None: empty)
        self.count = {}

    def update(self, auth_of, state):
        """Make the closure that of ``state``, a full sorted entry array (no tombstones).
        If reading an auth event fails, the closure is emptied (the next update starts
        from nothing) and the error goes on."""
        try:
            self._move(auth_of, state)
        except BaseException:
            self.state = None
            self.count = {}
            raise

    def _move(self, auth_of, state):
        if self.state is None:
            added, removed = state["event"].tolist(), []
        else:
            a, r = _core.diff(self.state, state)
            added, removed = a["event"].tolist(), r["event"].tolist()
        count = self.count
        stack = []
        for u in added:  # gains first, so that shared ancestors do not leave and come back
            stack.extend(auth_of(u))
        while stack:
            x = stack.pop()
            c = count.get(x, 0)
            count[x] = c + 1
            if not c:
                stack.extend(auth_of(x))
        for u in removed:
            stack.extend(auth_of(u))
        while stack:
            x = stack.pop()
            c = count.get(x, 0) - 1
            if c > 0:
                count[x] = c
            elif c == 0:
                del count[x]
                stack.extend(auth_of(x))
            else:
                raise damaged("events", x, "an auth event's references do not add up (auth events changed)")
        self.state = state


#: How many rooms' auth closures a write transaction keeps (each about the size of the
#: room's state).
CLOSURES = 8


class MatrixResolution:
    """The Matrix resolver as the merger calls it, on one merge in one transaction."""

    def __init__(self, tables):
        self.ids = tables.ids
        self.events = tables.events
        self.checker = AuthChecker(tables)
        self.edges = tables.auth_edges

    def __call__(self, tx, room_id, prefix, al, agree, result, rows):
        """Decide the conflicted ``rows`` of a merge (``al``: a
        :class:`roomstate._core.Aligned`, keys × state sets, event NIDs, 0 absent):
        sets ``result`` for them, and returns the keys the resolution adds that no
        state set held, as ``(type, state_key, event)`` NIDs."""
        ids, events = self.ids, self.events
        keys = al.keys
        graph = _Graph(self, tx)
        rv = self._room_version(tx, room_id, prefix, al, graph)
        k = al.k
        full = (1 << k) - 1
        single = np.zeros(len(keys), dtype=bool)
        if rv.state_res == "v1":
            # v1: a key missing from some states with one event in the others is not a
            # conflict ("different event IDs for the same key").
            for i in rows.tolist():
                present = al.candidates(i)
                if len(present) == 1:
                    single[i] = True
                    result[i] = present[0]
            rows = rows[~single[rows]]
            if not len(rows):
                return []
        base = keys.copy()
        base["event"] = np.where(agree | single, result, 0)
        layers = prefix + [frozen(base)]
        unconflicted = _TxState(ids, events, tx, layers)
        conflicted = {}
        member = {}  # event -> the mask of the state sets holding it (ints of k bits)
        rows_of_key = {}
        tnames = ids.names(tx, TYPE, keys["type"][rows])
        knames = ids.names(tx, STATE_KEY, keys["state_key"][rows])
        for i, key in zip(rows.tolist(), zip(tnames, knames)):
            rows_of_key[key] = i
            cols, vals, rest = al.holders(i)
            held = 0
            for j, nid in zip(cols, vals):
                held |= 1 << j
                if nid:
                    member[nid] = member.get(nid, 0) | (1 << j)
            if rest:  # the states without an entry of their own hold the base event
                member[rest] = member.get(rest, 0) | (full & ~held)
            conflicted[key] = {graph.event_id(n) for n in al.candidates(i)}
        if rv.state_res == "v1":
            decided = stateres.resolve_v1_conflicts(rv, unconflicted, conflicted, graph)
        else:
            def difference(_state_sets):
                closure = self._closure(tx, room_id)
                closure.update(graph.auth_nids, _core.overlay(layers))
                diff = auth_difference_nids(graph.auth_nids, member, full, everywhere=closure.count)
                return {graph.event_id(n) for n in diff}

            decided = stateres.resolve_v2_conflicts(
                rv, unconflicted, conflicted, graph, auth_difference=difference
            )
        extra = []
        for key, eid in decided.items():
            nid = graph.nid(eid)
            i = rows_of_key.pop(key, None)
            if i is not None:
                result[i] = nid
            else:
                tnid = ids.lookup(tx, TYPE, key[0])
                knid = ids.lookup(tx, STATE_KEY, key[1])
                extra.append((tnid, knid, nid))
        for i in rows_of_key.values():  # conflicted keys the resolution left empty
            result[i] = 0
        return extra

    @staticmethod
    def _closure(tx, room_id):
        """The room's :class:`AuthClosure` in this transaction (dropped with the
        transaction's caches when a nested transaction aborts, as NIDs may then be
        given again)."""
        kept = tx.pending.get("auth:closures")
        if kept is None or (room_id not in kept and len(kept) >= CLOSURES):
            kept = tx.pending["auth:closures"] = {}
        c = kept.get(room_id)
        if c is None:
            c = kept[room_id] = AuthClosure()
        return c

    def _room_version(self, tx, room_id, prefix, al, graph):
        """The room version its create event names: the create event every state set holds."""
        i = _core.find(al.keys, CREATE_TYPE_NID, EMPTY_STATE_KEY_NID) if len(al) else -1
        if i >= 0:
            creates = set(al.candidates(i))
            if len(creates) > 1:
                raise InvalidEventError(
                    "prev_events", f"the states to merge in room {room_id!r} hold different create events"
                )
            nid = creates.pop() if creates else 0
        else:
            nid = _core.lookup_layers(prefix, CREATE_TYPE_NID, EMPTY_STATE_KEY_NID) or 0
        if not nid:
            raise MissingEventError(f"the states to merge in room {room_id!r} hold no create event", room_id)
        create = graph.by_nid(nid)
        version = create["content"].get("room_version", "1")
        return version_record(version if isinstance(version, str) else str(version))


class _Graph(stateres.EventGraph):
    """stateres's ``get_event`` over the store's records, with NIDs both ways."""

    __slots__ = ("_res", "_tx", "_nid_of", "_id_of", "_auth_nids")

    def __init__(self, res, tx):
        super().__init__(self._fetch)
        self._res = res
        self._tx = tx
        self._nid_of = {}
        self._id_of = {}
        self._auth_nids = {}

    def event_id(self, nid):
        eid = self._id_of.get(nid)
        if eid is None:
            eid = self._res.events.event_id(self._tx, nid)
            self._id_of[nid] = eid
            self._nid_of[eid] = nid
        return eid

    def nid(self, event_id):
        nid = self._nid_of.get(event_id)
        if nid is None:
            nid = self._res.events.lookup(self._tx, event_id) or 0
            if nid:
                self._nid_of[event_id] = nid
                self._id_of[nid] = event_id
        return nid

    def _record(self, nid):
        rec = self._res.events.get(self._tx, nid)
        if rec is None:
            raise damaged("events", nid, "an event named by a stored state or auth event has no record")
        return rec

    def auth_nids(self, nid):
        a = self._auth_nids.get(nid)
        if a is None:
            tx = self._tx
            edges = self._res.edges
            a = edges.find(tx, nid)
            if a is None:
                rec = self._record(nid)
                _require_auth_data(rec)
                a = edges.keep(tx, nid, rec.auth_events)
            self._auth_nids[nid] = a
        return a

    def by_nid(self, nid):
        return self(self.event_id(nid))

    def _fetch(self, event_id):
        nid = self.nid(event_id)
        if not nid:
            return None
        rec = self._record(nid)
        if rec.flags & PLACEHOLDER:  # a placeholder (a prev named before it was stored): not an event yet
            return None
        _require_auth_data(rec)
        d = self._res.checker.event_dict(self._tx, rec)
        d["auth_events"] = [self.event_id(n) for n in rec.auth_events]
        d["depth"] = rec.depth
        d["origin_server_ts"] = rec.ts
        self._auth_nids[nid] = rec.auth_events
        return d


def _require_auth_data(rec):
    """InvalidEventError unless the record holds what the Matrix resolution reads."""
    field = "auth_events" if not rec.flags & HAS_AUTH else "sender" if not rec.sender else None
    if field is not None:
        raise InvalidEventError(
            field,
            f"the Matrix resolver reads each event's sender and auth events, and this event was stored "
            f"without its {field} (check_auth=False and a simplified event); merge such histories with "
            f"resolver='newest_event' or 'raise_on_conflict'",
            rec.event_id,
        )
