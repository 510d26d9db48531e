"""``resolver="matrix"``: the Matrix specification's state resolution, inside the store.

The algorithms are :mod:`roomstate.matrix.stateres`'s (v1, v2, v2.1 by the room
version); this module gives them the store's events and does on NIDs what would
otherwise read the whole state as strings:

- the merger has already split the keys into agreed and conflicted ones
  (:meth:`roomstate.merger.Merger._merge`), so the unconflicted state map is the
  stored layers plus the agreed rows, read key by key (:class:`_TxState`), never
  copied;
- the auth difference is computed on NIDs from the stored auth events
  (:func:`auth_difference_nids`);
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

__all__ = ["MatrixResolution", "auth_difference_nids"]


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


def auth_difference_nids(auth_of, member, full, unconflicted_nids):
    """The auth difference (rooms v2, "Definitions") on NIDs: the walks of
    :func:`roomstate.matrix.stateres.chain_masks` (shared with the reference
    :func:`~roomstate.matrix.stateres.auth_difference`) over the stored auth events.

    ``auth_of(nid)``: the NIDs of an event's auth events; ``member``: each event at a
    conflicted key -> the bit mask of the state sets holding it; ``full``: the mask of
    every set; ``unconflicted_nids``: the events every set holds.
    """
    chain, _ = stateres.chain_masks(auth_of, member, unconflicted_nids)
    return {nid for nid, m in chain.items() if m != full}


class MatrixResolution:
    """The Matrix resolver as the merger calls it, on one merge in one transaction."""

    def __init__(self, tables):
        self.ids = tables.ids
        self.events = tables.events
        self.checker = AuthChecker(tables)
        self.edges = tables.auth_edges

    def __call__(self, tx, room_id, prefix, keys, vals, agree, result, rows):
        """Decide the conflicted ``rows`` of a merge (``vals``: keys × state sets, event
        NIDs, 0 absent): sets ``result`` for them, and returns the keys the resolution
        adds that no state set held, as ``(type, state_key, event)`` NIDs."""
        ids, events = self.ids, self.events
        graph = _Graph(self, tx)
        rv = self._room_version(tx, room_id, prefix, keys, vals, graph)
        k = vals.shape[1]
        single = np.zeros(len(keys), dtype=bool)
        if rv.state_res == "v1":
            # v1: a key missing from some states with one event in the others is not a
            # conflict ("different event IDs for the same key").
            for i in rows.tolist():
                present = set(vals[i].tolist()) - {0}
                if len(present) == 1:
                    single[i] = True
                    result[i] = present.pop()
            rows = rows[~single[rows]]
            if not len(rows):
                return []
        base = keys.copy()
        base["event"] = np.where(agree | single, result, 0)
        layers = prefix + [frozen(base)]
        unconflicted = _TxState(ids, events, tx, layers)
        conflicted = {}
        member = {}
        rows_of_key = {}
        tnames = ids.names(tx, TYPE, keys["type"][rows])
        knames = ids.names(tx, STATE_KEY, keys["state_key"][rows])
        for i, key in zip(rows.tolist(), zip(tnames, knames)):
            rows_of_key[key] = i
            cands = set()
            for j, nid in enumerate(vals[i].tolist()):
                if nid:
                    member[nid] = member.get(nid, 0) | (1 << j)
                    cands.add(nid)
            conflicted[key] = {graph.event_id(n) for n in cands}
        if rv.state_res == "v1":
            decided = stateres.resolve_v1_conflicts(rv, unconflicted, conflicted, graph)
        else:
            def difference(_state_sets):
                state = _core.overlay(layers)
                u = state["event"][state["event"] != 0].tolist()
                diff = auth_difference_nids(graph.auth_nids, member, (1 << k) - 1, u)
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

    def _room_version(self, tx, room_id, prefix, keys, vals, graph):
        """The room version its create event names: the create event every state set holds."""
        i = _core.find(keys, CREATE_TYPE_NID, EMPTY_STATE_KEY_NID) if len(keys) else -1
        if i >= 0:
            creates = set(vals[i].tolist()) - {0}
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
