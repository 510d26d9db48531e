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
from .authcheck import JOIN_RULES_TYPE_NID, POWER_LEVELS_TYPE_NID, AuthChecker
from .blocks import frozen
from .damage import damaged
from .errors import InvalidEventError, MissingEventError
from .events import HAS_AUTH, IS_STATE, MEMBERSHIPS, PLACEHOLDER, REJECTED
from .ids import CREATE_TYPE_NID, EMPTY_STATE_KEY_NID, MEMBER_TYPE_NID, ROOM, STATE_KEY, TYPE
from .matrix import auth as rules
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
#: The name in ``tx.pending`` of the events the resolution read in the transaction, and
#: how many records it keeps before it starts again.
KEPT_EVENTS = "matrix:events"
KEPT_EVENTS_LIMIT = 1 << 18


class MatrixResolution:
    """The Matrix resolver as the merger calls it, on one merge in one transaction."""

    def __init__(self, tables):
        self.ids = tables.ids
        self.events = tables.events
        self.checker = AuthChecker(tables)
        self.edges = tables.auth_edges
        self._versions = {}  # create event NID -> (its dict as last read, its room version)
        self.tables = tables

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
        member = al.masks(rows.tolist())  # event -> the mask of the state sets holding it
        if rv.state_res != "v1":
            closure = self._closure(tx, room_id)
            try:
                closure.update(graph.auth_nids, _core.overlay(layers))
                diff = auth_difference_nids(graph.auth_nids, member, full, everywhere=closure.count)
                decided = _V2(self, tx, room_id, rv, graph, layers).resolve(set(member), diff, closure.count)
            finally:
                self._done(tx, room_id, closure)
            return self._apply(keys, rows, result, decided)
        # v1 reads the events as strings (its rules are few and its rooms rare).
        unconflicted = _TxState(ids, events, tx, layers)
        conflicted = {}
        tnames = ids.names(tx, TYPE, keys["type"][rows])
        knames = ids.names(tx, STATE_KEY, keys["state_key"][rows])
        for i, key in zip(rows.tolist(), zip(tnames, knames)):
            conflicted[key] = {graph.event_id(n) for n in al.candidates(i)}
        decided = stateres.resolve_v1_conflicts(rv, unconflicted, conflicted, graph)
        decided_nids = {}
        for key, eid in decided.items():
            decided_nids[(ids.lookup(tx, TYPE, key[0]), ids.lookup(tx, STATE_KEY, key[1]))] = graph.nid(eid)
        return self._apply(keys, rows, result, decided_nids)

    @staticmethod
    def _apply(keys, rows, result, decided):
        """Set ``result`` at the conflicted ``rows`` from ``decided`` (``(type, state_key)``
        NIDs -> event NID; a conflicted key missing from it is left empty), and return
        the decided keys no row holds, as ``(type, state_key, event)`` NIDs."""
        types = keys["type"][rows].tolist()
        skeys = keys["state_key"][rows].tolist()
        extra = []
        decided = dict(decided)
        for i, t, sk in zip(rows.tolist(), types, skeys):
            result[i] = decided.pop((t, sk), 0)
        for (tnid, knid), nid in decided.items():
            extra.append((tnid, knid, nid))
        return extra

    def _closure(self, tx, room_id):
        """The room's :class:`AuthClosure`, taken from those the store keeps between
        transactions (of committed states: ``Tables.auth_closures``) so that no other
        transaction or thread moves it meanwhile.  A write transaction keeps it in its
        caches (``tx.pending``), moved by its merges, and gives it back at its commit
        (``Tables.publish``); an abort drops it, as NIDs may then be given again.  A read
        gives it back when done (:meth:`_done`)."""
        shared = self.tables.auth_closures
        if not tx.write:
            c = shared.pop(room_id, None)
            return c if c is not None else AuthClosure()
        kept = tx.pending.get("auth:closures")
        if kept is None or (room_id not in kept and len(kept) >= CLOSURES):
            kept = tx.pending["auth:closures"] = {}
        c = kept.get(room_id)
        if c is None:
            c = shared.pop(room_id, None)
            if c is None:
                c = AuthClosure()
            kept[room_id] = c
        return c

    def _done(self, tx, room_id, closure):
        """A read is done with the room's closure: the store keeps it for the next."""
        if not tx.write:
            kept = self.tables.auth_closures
            if len(kept) >= CLOSURES:
                kept.clear()
            kept[room_id] = closure

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
        rv = self._versions.get(nid)
        if rv is None or rv[0] is not graph.by_nid(nid):
            create = graph.by_nid(nid)
            version = create["content"].get("room_version", "1")
            rv = self._versions[nid] = (create, version_record(version if isinstance(version, str) else str(version)))
        return rv[1]


_PL_PAIR = (POWER_LEVELS_TYPE_NID, EMPTY_STATE_KEY_NID)
_CREATE_PAIR = (CREATE_TYPE_NID, EMPTY_STATE_KEY_NID)
_JOIN_RULES_PAIR = (JOIN_RULES_TYPE_NID, EMPTY_STATE_KEY_NID)
_LEAVE, _BAN = MEMBERSHIPS.index("leave") + 1, MEMBERSHIPS.index("ban") + 1
#: The memberships whose member events select the join rules (join, invite, knock).
_SELECTS_JOIN_RULES = tuple(MEMBERSHIPS.index(m) + 1 for m in ("join", "invite", "knock"))


class _V2:
    """Steps 1–4 of state resolution v2 / v2.1 (rooms v2 "Algorithm"; rooms v12) on NIDs:
    :func:`roomstate.matrix.stateres.resolve_v2_conflicts` step for step — the same
    sets, orderings and tie breaks — with events as their stored records, keys as
    ``(type, state_key)`` NID pairs, and the authorization rules (on event dicts) asked
    only where an answer is not kept.

    ``layers``: the unconflicted state map as NID layers (read key by key, never copied).
    """

    def __init__(self, res, tx, room_id, rv, graph, layers):
        self.res = res
        self.tx = tx
        self.room_id = room_id
        self.rv = rv
        self.g = graph
        self.layers = layers
        self._create_v12 = None
        self._levels = {}
        self._selections = {}
        self._ok = graph._ok

    def _rec(self, nid):
        """The event's record, checked (:meth:`_Graph.record`)."""
        rec = self._ok.get(nid)
        if rec is None:
            rec = self.g.record(nid)
        return rec

    def resolve(self, conflicted, diff, everywhere=None):
        """``conflicted``: the NIDs of the conflicted state set; ``diff``: the auth
        difference's; ``everywhere``: the auth chains of the unconflicted state, when
        known (a container of NIDs).  Returns ``(type, state_key) -> event`` NIDs for
        the keys the unconflicted state map does not hold (step 5 is the caller's)."""
        v21 = self.rv.state_res == "v2.1"
        full = set(conflicted)
        full.update(diff)
        if v21:
            full.update(self.conflicted_state_subgraph(conflicted))
        # Step 1: the power events and their auth ancestors in the full conflicted set.
        x_set, before = self.power_events_and_auth_ancestors(full, v21, everywhere)
        power_order = self.reverse_topological_power_ordering(x_set, before)
        # Step 2: iterative auth checks from the unconflicted state (v2.1: empty).
        layers = None if v21 else self.layers
        over = {}
        self.iterative_auth_checks(layers, over, power_order)
        # Step 3: the others in the mainline ordering of the partially resolved power levels.
        pl = over.get(_PL_PAIR)
        if pl is None and layers is not None:
            pl = _core.lookup_layers(layers, POWER_LEVELS_TYPE_NID, EMPTY_STATE_KEY_NID) or None
        rest = self.mainline_ordering([e for e in full if e not in x_set], pl)
        # Step 4: iterative auth checks over the partially resolved state.
        self.iterative_auth_checks(layers, over, rest)
        unconflicted = self.layers
        return {k: e for k, e in over.items() if not _core.lookup_layers(unconflicted, k[0], k[1])}

    # -- the sets --------------------------------------------------------------------
    def conflicted_state_subgraph(self, conflicted):
        """rooms v12 "Conflicted state subgraph", as :func:`stateres.conflicted_state_subgraph`."""
        return stateres.subgraph_between(conflicted, self.g.auth_nids)

    def is_power_event(self, nid):
        rec = self._rec(nid)
        if not rec.flags & IS_STATE:
            return False
        t = rec.type
        if t == POWER_LEVELS_TYPE_NID or t == JOIN_RULES_TYPE_NID:
            return True
        return t == MEMBER_TYPE_NID and (rec.membership == _LEAVE or rec.membership == _BAN) and rec.sender != rec.state_key

    def power_events_and_auth_ancestors(self, full, within, everywhere=None):
        """Step 1's X and, for each of its events, the events of X nearest below it.

        ``everywhere``: the auth chains of the unconflicted state (closed under auth
        events).  When it holds no event of ``full``, nothing below its events is in
        ``full`` either, so the walk does not enter it (in v2 the walk otherwise goes
        down the power events' whole auth chains, most of the room's history of power)."""
        auth = self.g.auth_nids
        power = [n for n in full if self.is_power_event(n)]
        without = ()
        if everywhere is not None and not within:
            for n in full:  # (not set.isdisjoint: that would iterate over ``everywhere``)
                if n in everywhere:
                    break
            else:
                without = everywhere
        return stateres.auth_ancestors_in(power, full, auth, within, without)

    # -- orderings ---------------------------------------------------------------------
    def _room_create(self, rec):
        """Room version 12: the create event the room ID names (0: none stored)."""
        if self._create_v12 is None:
            g = self.g
            room_id = self.res.ids.name(self.tx, ROOM, rec.room)
            nid = 0
            if isinstance(room_id, str) and room_id.startswith("!"):
                nid = g.nid("$" + room_id[1:])
                if nid:
                    c = g._record(nid)
                    if c.flags & PLACEHOLDER or not (c.type == CREATE_TYPE_NID and c.flags & IS_STATE and c.state_key == EMPTY_STATE_KEY_NID):
                        nid = 0
                    else:
                        _require_auth_data(c)
            self._create_v12 = nid
        return self._create_v12

    def sender_power_level(self, nid):
        """As :func:`stateres.sender_power_level`: the sender's level in the state of the
        event's power-levels and create auth events."""
        g = self.g
        rec = self._rec(nid)
        pl = create = 0
        for a in rec.auth_events:
            arec = self._rec(a)
            if arec.flags & IS_STATE and arec.state_key == EMPTY_STATE_KEY_NID:
                if arec.type == POWER_LEVELS_TYPE_NID:
                    pl = a
                elif arec.type == CREATE_TYPE_NID:
                    create = a
        if self.rv.room_id_from_create and not create:
            if rec.type == CREATE_TYPE_NID and rec.flags & IS_STATE and rec.state_key == EMPTY_STATE_KEY_NID:
                create = nid
            else:
                create = self._room_create(rec)
        memo = (rec.sender, pl, create)
        level = self._levels.get(memo)
        if level is None:
            state = {}
            if pl:
                state[stateres._PL_KEY] = g.by_nid(pl)
            if create:
                state[stateres._CREATE_KEY] = g.by_nid(create)
            sender = self.res.ids.name(self.tx, STATE_KEY, rec.sender)
            level = self._levels[memo] = rules.power_level_of(sender, state, self.rv)
        return level

    def reverse_topological_power_ordering(self, events, before):
        """As :func:`stateres.reverse_topological_power_ordering`: Kahn's algorithm, the
        smallest ready event first by (greater sender level, smaller timestamp, smaller
        event ID)."""
        def key(nid):
            rec = self._rec(nid)
            return (-self.sender_power_level(nid), rec.ts, rec.event_id, nid)

        return stateres.smallest_topological_order(events, before, key, lambda x: self._rec(x).event_id)

    def _pl_auth_event(self, rec):
        g = self.g
        for a in rec.auth_events:
            arec = self._rec(a)
            if arec.type == POWER_LEVELS_TYPE_NID and arec.flags & IS_STATE and arec.state_key == EMPTY_STATE_KEY_NID:
                return a
        return None

    def mainline_ordering(self, nids, pl):
        """As :func:`stateres.mainline_ordering`: greater mainline position first, then
        smaller timestamp, then smaller event ID."""
        def pl_of(nid):
            return self._pl_auth_event(self._rec(nid))

        def ts_and_id(nid):
            rec = self._rec(nid)
            return rec.ts, rec.event_id

        return stateres.order_by_mainline(nids, pl, pl_of, ts_and_id)

    # -- iterative auth checks --------------------------------------------------------
    def selection(self, nid):
        """The auth events selection's keys for the event, as NID pairs (a key whose
        strings have no NID is left out: no state and no event holds it)."""
        sel = self._selections.get(nid)
        if sel is not None:
            return sel
        rec = self._rec(nid)
        if rec.type == CREATE_TYPE_NID:
            sel = ()
        elif rec.type != MEMBER_TYPE_NID or not rec.extras:
            # Read from the record: the content of a member event without extras is its
            # membership alone.
            pairs = [_PL_PAIR, (MEMBER_TYPE_NID, rec.sender)]
            if not self.rv.room_id_from_create:
                pairs.append(_CREATE_PAIR)
            if rec.type == MEMBER_TYPE_NID:
                if rec.state_key != rec.sender:
                    pairs.append((MEMBER_TYPE_NID, rec.state_key))
                if rec.membership in _SELECTS_JOIN_RULES:
                    pairs.append(_JOIN_RULES_PAIR)
            sel = tuple(pairs)
        else:
            ids, tx = self.res.ids, self.tx
            pairs = []
            for t, k in rules.auth_types_for_event(self.g.by_nid(nid), self.rv):
                tnid = ids.lookup(tx, TYPE, t) if isinstance(t, str) else 0
                knid = ids.lookup(tx, STATE_KEY, k) if tnid and isinstance(k, str) else 0
                if knid:
                    pairs.append((tnid, knid))
            sel = tuple(pairs)
        self._selections[nid] = sel
        return sel

    def iterative_auth_checks(self, layers, over, order):
        """As :func:`stateres.iterative_auth_checks`, writing what it sets into ``over``
        (read over ``layers``, None for an empty state)."""
        g, rv, tx = self.g, self.rv, self.tx
        checker = self.res.checker
        memo = checker.memo
        v12 = rv.room_id_from_create
        lookup = _core.lookup_layers
        for nid in order:
            rec = self._rec(nid)
            if not rec.flags & IS_STATE:
                continue
            # Room version 12: the create event the room ID names, looked up at the
            # first event that is not a create event (as stateres does).
            create_v12 = (self._room_create(rec) if v12 and (self._create_v12 is not None or rec.type != CREATE_TYPE_NID)
                          else 0)
            if rec.flags & REJECTED and self._fails_own_auth_events(nid, rec, create_v12):
                continue
            by_key = None
            state = []
            for key in self.selection(nid):
                have = over.get(key)
                if have is None and layers is not None:
                    have = lookup(layers, key[0], key[1]) or None
                if have is not None:
                    state.append(have)
                    continue
                if by_key is None:
                    by_key = {}
                    for a in rec.auth_events:
                        arec = self._rec(a)
                        if not arec.flags & REJECTED and arec.flags & IS_STATE:
                            by_key[(arec.type, arec.state_key)] = a
                a = by_key.get(key)
                if a is not None:
                    state.append(a)
            if v12:
                have = over.get(_CREATE_PAIR)
                if have is None and layers is not None:
                    have = lookup(layers, CREATE_TYPE_NID, EMPTY_STATE_KEY_NID) or None
                create = have if have is not None else create_v12
                if create:
                    state.append(create)
            state.sort()
            key = ("resolve", nid, tuple(state))
            reason = memo.find(tx, key)
            if reason is None and checker.allowed_in_state(tx, rec, self.room_id, state):
                reason = ""  # a plain case, decided on NIDs
            if reason is None:
                auth_state = {}
                for a in state:
                    d = g.by_nid(a)
                    auth_state[(d["type"], d["state_key"])] = d
                reason = memo.keep(tx, key, rules.check(g.by_nid(nid), auth_state, rv) or "")
            if not reason:
                over[(rec.type, rec.state_key)] = nid

    def _fails_own_auth_events(self, nid, rec, create_v12):
        g = self.g
        create = g.by_nid(create_v12) if create_v12 else None
        return bool(rules.check_auth_events(g.by_nid(nid), [g.by_nid(a) for a in rec.auth_events], self.rv,
                                            create_event=create))


class _Graph(stateres.EventGraph):
    """stateres's ``get_event`` over the store's records, with NIDs both ways."""

    __slots__ = ("_res", "_tx", "_nid_of", "_id_of", "_auth_nids", "_recs", "_ok", "_dicts")

    def __init__(self, res, tx):
        super().__init__(self._fetch)
        self._res = res
        self._tx = tx
        self._nid_of = {}
        self._id_of = {}
        self._auth_nids = {}
        self._recs = {}
        # Kept by the transaction across merges (most merges of a room read the same
        # events): the records checked by :meth:`record` and the events as the rules
        # read them.  A write-through cache of the transaction (``tx.pending``), so a
        # nested abort drops it; AuthChecker.forget drops it when a record changes.
        kept = tx.pending.get(KEPT_EVENTS)
        if kept is None or len(kept[0]) > KEPT_EVENTS_LIMIT:
            kept = tx.pending[KEPT_EVENTS] = ({}, {})
        self._ok, self._dicts = kept

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
        rec = self._recs.get(nid)
        if rec is None:
            rec = self._res.events.get(self._tx, nid)
            if rec is None:
                raise damaged("events", nid, "an event named by a stored state or auth event has no record")
            self._recs[nid] = rec
        return rec

    def record(self, nid):
        """The record of a stored event that holds what the resolution reads (else
        InvalidEventError, or MissingEventError for a placeholder)."""
        rec = self._ok.get(nid)
        if rec is None:
            rec = self._record(nid)
            if rec.flags & PLACEHOLDER:
                raise MissingEventError(f"event {rec.event_id!r} is not known", rec.event_id)
            _require_auth_data(rec)
            self._ok[nid] = rec
        return rec

    def by_nid(self, nid):
        """The event of NID ``nid`` as the rules read it."""
        d = self._dicts.get(nid)
        if d is None:
            rec = self.record(nid)
            self._id_of[nid] = rec.event_id
            self._nid_of[rec.event_id] = nid
            d = self._dicts[nid] = self(rec.event_id)
        return d

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
