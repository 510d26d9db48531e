"""State resolution: the algorithms of room versions 1 (v1), 2–11 (v2) and 12 (v2.1).

Sources (the authority): the "State resolution" section of the Matrix specification's
room version pages — ``/rooms/v1`` for v1; ``/rooms/v2`` … ``/rooms/v11`` for v2 (its
"Definitions" and "Algorithm"); ``/rooms/v12`` for v2.1, which is v2 with the two changes
of MSC4297 ("State Resolution v2.1").  Each step of the algorithm is a function named
after the spec's term; docstrings paraphrase the spec and name the section.

The functions are pure: they read events through ``get_event(event_id) -> dict`` (the
shape :func:`roomstate.matrix.auth.check` reads — ``event_id``, ``room_id``, ``type``,
``state_key``, ``sender``, ``content`` — with ``auth_events`` a list of IDs, ``depth``,
``origin_server_ts`` and ``rejected``) and return new values; each step also takes an
:class:`EventGraph` (``get_event`` with a cache of events and auth event IDs), which
:func:`resolve` makes once per resolution.  The authorization rules are
:mod:`roomstate.matrix.auth`'s, never re-written here.

Where the specification and Synapse (the reference homeserver) read a step differently,
this module follows the specification and says so where the step is implemented:

- *Auth difference* (v2 and v2.1): the full auth chain of a state set is the union of the auth
  chains of its events, and an event's auth chain holds its auth events, recursively —
  not the event itself.  Synapse counts the state set's own events as part of its chain.
- *Algorithm* step 1 (v2): X is the power events of the full conflicted set plus every
  event of their (whole) auth chains that is in the full conflicted set, ordered so that
  each event of X comes after every event of X in its auth chain.  Synapse walks the auth events only through the full conflicted set,
  so it can miss an event of the set reached through an event outside it (in v2.1 the
  conflicted state subgraph closes those gaps: both readings agree there).
- *Power events* are those the spec names (power levels and join rules of any state
  key); Synapse also counts the create event, and only the empty state key.
- *Rejected events* met in the full conflicted set are checked again like any other
  ("Rejected events": they are "handled as usual by the algorithm"); Synapse keeps them
  out of the resolved state.
- v1: when no conflicting "other" event passes the rules in R, none is added (Synapse
  keeps the one of least depth).
"""
from collections import ChainMap
from hashlib import sha1
from heapq import heapify, heappop, heappush
from typing import Callable, Iterable, Mapping, Optional, Sequence

from ..errors import InvalidEventError, MissingEventError
from . import auth as rules
from .versions import RoomVersion, room_version as _room_version

__all__ = [
    "resolve",
    "resolve_v1",
    "resolve_v2",
    "resolve_v1_conflicts",
    "resolve_v2_conflicts",
    "EventGraph",
    "unconflicted_and_conflicted",
    "auth_chain",
    "auth_difference",
    "chain_masks",
    "conflicted_state_subgraph",
    "full_conflicted_set",
    "is_power_event",
    "power_events_and_auth_ancestors",
    "auth_ancestors_in",
    "subgraph_between",
    "reverse_topological_power_ordering",
    "smallest_topological_order",
    "sender_power_level",
    "iterative_auth_checks",
    "mainline",
    "mainline_ordering",
    "order_by_mainline",
    "reapply_unconflicted_state",
]

GetEvent = Callable[[str], dict]

_CREATE_KEY = rules.CREATE_KEY
_PL_KEY = rules.POWER_LEVELS_KEY
#: The mainline position of an event whose power-levels chain never meets the mainline
#: (the spec's "∞", greater than any position).
_NO_POSITION = 1 << 62


def _version(rv) -> RoomVersion:
    return rv if isinstance(rv, RoomVersion) else _room_version(rv)


class EventGraph:
    """``get_event`` with each event fetched once, and each event's auth event IDs (the
    steps read the same events and edges many times in one resolution)."""

    __slots__ = ("_get", "_events", "_auth")

    def __init__(self, get_event: GetEvent):
        self._get = get_event
        self._events: dict = {}
        self._auth: dict = {}

    def __call__(self, event_id):
        ev = self._events.get(event_id)
        if ev is None:
            ev = self._get(event_id)
            if ev is None:
                raise MissingEventError(f"event {event_id!r} is not known", event_id)
            self._events[event_id] = ev
        return ev

    def auth(self, event_id) -> tuple:
        """The IDs of the event's auth events."""
        ids = self._auth.get(event_id)
        if ids is None:
            raw = self(event_id).get("auth_events") or ()
            if raw and type(raw[0]) is not str:
                raw = _auth_ids(self(event_id))
            ids = self._auth[event_id] = tuple(raw)
        return ids


def _graph(get_event) -> EventGraph:
    return get_event if isinstance(get_event, EventGraph) else EventGraph(get_event)


def _auth_ids(ev) -> list:
    """The IDs of an event's auth events (v1–v2 references are ``[id, hashes]`` pairs)."""
    ids = ev.get("auth_events") or ()
    return [a[0] if isinstance(a, (list, tuple)) else a for a in ids]


def _create_of(room_id, get: GetEvent):
    """Room version 12: the create event, named by the room ID (rooms/v12, "Event IDs")."""
    if not isinstance(room_id, str) or not room_id.startswith("!"):
        return None
    try:
        ev = get("$" + room_id[1:])
    except MissingEventError:
        return None
    return ev if ev.get("type") == rules.CREATE and ev.get("state_key") == "" else None


# -- the entry point -----------------------------------------------------------------------

def resolve(
    room_version,
    state_sets: Sequence[Mapping],
    get_event: GetEvent,
    *,
    auth_difference: Optional[Callable[[Sequence[Mapping]], Iterable[str]]] = None,
    conflicted_subgraph: Optional[Callable[[set], Iterable[str]]] = None,
) -> dict:
    """The resolution of ``state_sets`` (mappings ``(type, state_key) -> event_id``) in a
    room of ``room_version`` (an identifier or a :class:`RoomVersion`): a new dict
    ``(type, state_key) -> event_id``.

    The algorithm is the room version's (``RoomVersion.state_res``): "v1", "v2" or "v2.1".
    ``get_event(event_id)`` returns an event dict (module docstring) and raises
    :class:`~roomstate.errors.MissingEventError` for an event it does not know.

    ``auth_difference(state_sets)`` and ``conflicted_subgraph(conflicted_event_ids)``, when
    given, return those sets of event IDs (from an index, say); when None they are computed
    by walking ``auth_events`` through ``get_event`` (:func:`auth_difference`,
    :func:`conflicted_state_subgraph` — the reference an index is tested against).  v1
    uses neither (it orders by ``depth`` and reads only the conflicting events and the
    state's auth events); v2 uses no subgraph.
    """
    rv = _version(room_version)
    if not state_sets:
        return {}
    get = EventGraph(get_event)
    if rv.state_res == "v1":
        return resolve_v1(rv, state_sets, get)
    return resolve_v2(rv, state_sets, get, auth_difference_of=auth_difference,
                      conflicted_subgraph_of=conflicted_subgraph)


# -- v2 and v2.1: definitions -------------------------------------------------------------

def unconflicted_and_conflicted(state_sets: Sequence[Mapping], *, missing_conflicts: bool = True):
    """"Unconflicted state map and conflicted state set" (rooms v2, "Definitions"): a key
    present in every state set with the same event belongs to the unconflicted state map;
    every other value is in the conflicted state set.

    Returns ``(unconflicted, conflicted)``: a dict key -> event ID, and a dict key -> set
    of event IDs.  With ``missing_conflicts=False`` (v1: "a conflict occurs between states
    where those states have different event IDs for the same key") a key missing from some
    sets but with one event in the others is unconflicted.
    """
    if len(state_sets) == 1:
        return dict(state_sets[0]), {}
    # The keys some set does not hold with the first set's event: those of every other
    # set whose event differs, and those of the first set another one lacks.
    first = state_sets[0]
    first_get = first.get
    first_keys = first.keys()
    differ: set = set()
    for s in state_sets[1:]:
        differ.update([k for k, e in s.items() if first_get(k) != e])
        differ |= first_keys - s.keys()
    unconflicted = dict(first)
    conflicted: dict = {}
    for key in differ:
        unconflicted.pop(key, None)
        values = {s[key] for s in state_sets if key in s}
        if len(values) == 1 and not missing_conflicts:
            unconflicted[key] = values.pop()
        else:
            conflicted[key] = values
    return unconflicted, conflicted


def auth_chain(event_ids: Iterable[str], get_event: GetEvent) -> set:
    """"Auth chain" (rooms v2, "Definitions"): the events reached by following
    ``auth_events`` links from ``event_ids``, recursively — without the given events
    themselves unless one is reached from another."""
    g = _graph(get_event)
    seen: set = set()
    stack: list = []
    for eid in event_ids:
        stack.extend(g.auth(eid))
    while stack:
        eid = stack.pop()
        if eid in seen:
            continue
        seen.add(eid)
        stack.extend(a for a in g.auth(eid) if a not in seen)
    return seen


def _postorder(starts: Iterable, g: Optional[EventGraph], within=None, without=(), auth=None) -> list:
    """The events reached from ``starts`` through ``auth_events`` (``starts`` included),
    each after all its auth events (a DFS post-order; with ``within``, the walk stays
    inside that set; it never enters ``without``).  ``auth``: the function giving an
    event's auth events (default ``g.auth``; a store passes one on NIDs)."""
    order = []
    entered: set = set()
    if auth is None:
        assert g is not None
        auth = g.auth
    for start in starts:
        if start in entered:
            continue
        entered.add(start)
        stack = [(start, iter(auth(start)))]
        while stack:
            eid, it = stack[-1]
            for a in it:
                if a not in entered and (within is None or a in within) and a not in without:
                    entered.add(a)
                    stack.append((a, iter(auth(a))))
                    break
            else:
                stack.pop()
                order.append(eid)
    return order


def auth_difference(state_sets: Sequence[Mapping], get_event: GetEvent, *, with_state_events: bool = False) -> set:
    """"Auth difference" (rooms v2, "Definitions"): with C_i the full auth chain of state
    set S_i — the union of the auth chains of its events — the events in some C_i but not
    in all: ∪ C_i − ∩ C_i.

    An event of S_i is in C_i only when it authorises another event of the chain (the
    spec's auth chain of an event does not hold the event itself; Synapse's does).

    Computed in two walks.  Below an event held by every set (unconflicted), every event
    is in every C_i: the first walk marks those.  The second walks down from the other
    state events, stopping at marked events, and gives each event it reaches the bit
    mask of the chains holding it, passed from the events citing it to their auth events
    in topological order.  Every event of every C_i is met by one of the two walks.

    ``with_state_events=True`` counts each S_i in its C_i, as Synapse does (not the spec):
    for a resolution that must agree with Synapse's, give ``resolve`` that difference.
    """
    unconflicted, conflicted = unconflicted_and_conflicted(state_sets)
    return _auth_difference(state_sets, unconflicted, conflicted, _graph(get_event), with_state_events)


def _auth_difference(state_sets, unconflicted: Mapping, conflicted: Mapping, g: EventGraph,
                     with_state_events: bool = False) -> set:
    member: dict = {}  # conflicted event -> mask of the state sets holding it
    for key in conflicted:
        for i, s in enumerate(state_sets):
            eid = s.get(key)
            if eid is not None:
                member[eid] = member.get(eid, 0) | (1 << i)
    full = (1 << len(state_sets)) - 1
    chain, everywhere = chain_masks(g.auth, member, unconflicted.values())
    # An unconflicted event outside ``everywhere`` is in the C_i of the sets whose
    # conflicted events cite it (found by the second walk), and in no other.
    if with_state_events:
        for eid, m in member.items():
            if eid not in everywhere:
                chain[eid] = chain.get(eid, 0) | m
        for eid in unconflicted.values():
            chain[eid] = full
    return {eid for eid, m in chain.items() if m != full}


def chain_masks(auth, member: Mapping, unconflicted_events: Iterable, everywhere=None):
    """The two walks of :func:`auth_difference`, over any event keys (IDs, or a store's
    NIDs): ``auth(e)`` gives an event's auth events; ``member`` maps each event at a
    conflicted key to the bit mask of the state sets holding it; ``unconflicted_events``
    are the events every set holds.

    Returns ``(chain, everywhere)``: ``everywhere``, the auth chains of the unconflicted
    events (in every set's full auth chain); ``chain``, each other event reached from the
    conflicted ones -> the mask of the sets whose full auth chains hold it.  A caller
    that keeps ``everywhere`` itself (any container of those events) passes it, and the
    first walk is skipped.
    """
    if everywhere is None:
        # The auth chains of the unconflicted events, level by level with set operations.
        everywhere = set()
        frontier: set = set()
        for eid in unconflicted_events:
            frontier.update(auth(eid))
        while frontier:
            everywhere |= frontier
            below: set = set()
            for eid in frontier:
                below.update(auth(eid))
            frontier = below - everywhere
    chain: dict = {}
    for eid in reversed(_postorder(member, None, without=everywhere, auth=auth)):  # each before its auth events
        down = chain.get(eid, 0) | member.get(eid, 0)
        for a in auth(eid):
            if a not in everywhere:
                chain[a] = chain.get(a, 0) | down
    return chain, everywhere


def conflicted_state_subgraph(conflicted_ids: Iterable[str], get_event: GetEvent) -> set:
    """"Conflicted state subgraph" (rooms v12, "Definitions"; MSC4297): the events on an
    ``auth_events`` path from one event of the conflicted state set to another, both
    endpoints included.

    One walk down from the conflicted events; an event is in the subgraph when it is
    reached (it descends from a conflicted event) and it reaches a conflicted event.
    """
    return subgraph_between(set(conflicted_ids), _graph(get_event).auth)


def subgraph_between(conflicted: set, auth) -> set:
    """:func:`conflicted_state_subgraph` over any event keys (``auth(e)``: an event's
    auth events)."""
    reaches: set = set()
    for eid in _postorder(conflicted, None, auth=auth):  # auth events first
        if eid in conflicted:
            reaches.add(eid)
            continue
        for a in auth(eid):
            if a in reaches:
                reaches.add(eid)
                break
    return reaches


def full_conflicted_set(conflicted: Mapping, auth_diff: Iterable[str], subgraph: Iterable[str] = ()) -> set:
    """"Full conflicted set": the conflicted state set and the auth difference (rooms v2),
    and in v2.1 the conflicted state subgraph too (rooms v12)."""
    out: set = set()
    for ids in conflicted.values():
        out.update(ids)
    out.update(auth_diff)
    out.update(subgraph)
    return out


def is_power_event(ev) -> bool:
    """"Power events" (rooms v2, "Definitions"): state events of type
    ``m.room.power_levels`` or ``m.room.join_rules``, and ``m.room.member`` events of
    membership leave or ban whose sender is not the state key (kicks and bans)."""
    if "state_key" not in ev:
        return False
    etype = ev.get("type")
    if etype == rules.POWER_LEVELS or etype == rules.JOIN_RULES:
        return True
    if etype == rules.MEMBER:
        content = ev.get("content")
        membership = content.get("membership") if isinstance(content, dict) else None
        return (membership == "leave" or membership == "ban") and ev.get("sender") != ev.get("state_key")
    return False


def power_events_and_auth_ancestors(full: set, get_event: GetEvent, *, walk_within_full: bool = False):
    """Algorithm step 1's set X (rooms v2): the power events of the full conflicted set,
    enlarged with the events of their auth chains that are in the full conflicted set.

    Returns ``(X, before)``: ``before[x]`` is the set of the events of X nearest below
    ``x`` in the auth DAG (every event of X in x's auth chain is one of them or below
    one), which is what the topological ordering must respect.

    With ``walk_within_full`` the walk follows only events of the full conflicted set;
    that finds the same X whenever every auth path between two of its events stays in
    the set, which the conflicted state subgraph ensures in v2.1.
    """
    g = _graph(get_event)
    power = [eid for eid in full if is_power_event(g(eid))]
    return auth_ancestors_in(power, full, g.auth, walk_within_full)


def auth_ancestors_in(power, full: set, auth, walk_within_full: bool = False, without=()):
    """:func:`power_events_and_auth_ancestors` from the power events ``power`` of the
    full conflicted set ``full``, over any event keys (IDs, or a store's NIDs; ``auth(e)``
    gives an event's auth events).  ``without``: events the walk need not enter — a
    set closed under auth events that holds no event of ``full`` (the auth chains of
    the unconflicted state, when none of them is in the full conflicted set)."""
    order = _postorder(power, None, within=full if walk_within_full else None, without=without, auth=auth)
    x_set = set(power)
    x_set.update(e for e in order if e in full)
    below: dict = {}  # event -> the events of X nearest below it
    for eid in order:  # auth events first
        near: set = set()
        for a in auth(eid):
            if a in x_set:
                near.add(a)
            else:
                sub = below.get(a)
                if sub:
                    near |= sub
        below[eid] = near
    return x_set, {x: below[x] for x in x_set}


def sender_power_level(ev, get_event: GetEvent, rv, cache: Optional[dict] = None) -> int:
    """The power level of an event's sender "when looking at their respective
    ``auth_events``" (rooms v2, "Reverse topological power ordering"): the level the
    authorization rules give the sender in the state formed by the event's auth events
    (room version 12: with the create event the room ID names).

    ``cache``: a dict kept across calls, by sender and power-levels and create events.
    """
    rv = _version(rv)
    state = {}
    for a in _auth_ids(ev):
        aev = get_event(a)
        key = (aev.get("type"), aev.get("state_key"))
        if key == _PL_KEY or key == _CREATE_KEY:
            state[key] = aev
    if rv.room_id_from_create and _CREATE_KEY not in state:
        create = ev if ev.get("type") == rules.CREATE else _create_of(ev.get("room_id"), get_event)
        if create is not None:
            state[_CREATE_KEY] = create
    sender = ev.get("sender")
    if cache is None:
        return rules.power_level_of(sender, state, rv)
    pl, create = state.get(_PL_KEY), state.get(_CREATE_KEY)
    memo = (sender, pl["event_id"] if pl is not None else None, create["event_id"] if create is not None else None)
    level = cache.get(memo)
    if level is None:
        level = cache[memo] = rules.power_level_of(sender, state, rv)
    return level


def reverse_topological_power_ordering(events: set, before: Mapping, get_event: GetEvent, rv) -> list:
    """"Reverse topological power ordering" (rooms v2, "Definitions"): the
    lexicographically smallest topological ordering of ``events`` by the auth DAG
    (``before[x]``: the events that must come before x), earliest first, by Kahn's
    algorithm choosing the smallest ready event: greater sender power level first, then
    smaller ``origin_server_ts``, then smaller ``event_id``."""
    rv = _version(rv)
    g = _graph(get_event)
    levels: dict = {}

    def key(eid):
        ev = g(eid)
        return (-sender_power_level(ev, g, rv, levels), ev.get("origin_server_ts", 0), eid)

    return smallest_topological_order(events, before, key, lambda x: x)


def smallest_topological_order(events, before: Mapping, key, event_id) -> list:
    """Kahn's algorithm choosing the smallest ready event by ``key(x)`` (a tuple ending
    with ``x``): the order of :func:`reverse_topological_power_ordering` over any event
    keys (IDs, or a store's NIDs; ``event_id(x)`` names one in the error for a cycle)."""
    waiting: dict = {}
    after: dict = {}
    ready = []
    for x in events:
        deps = before.get(x) or ()
        waiting[x] = len(deps)
        for d in deps:
            after.setdefault(d, []).append(x)
        if not deps:
            ready.append(key(x))
    heapify(ready)
    out = []
    while ready:
        x = heappop(ready)[-1]
        out.append(x)
        for y in after.get(x, ()):
            waiting[y] -= 1
            if waiting[y] == 0:
                heappush(ready, key(y))
    if len(out) != len(events):
        stuck = min(event_id(x) for x in events if waiting[x])
        raise InvalidEventError("auth_events", "the auth events form a cycle", stuck)
    return out


def iterative_auth_checks(rv, state: Mapping, event_ids: Iterable[str], get_event: GetEvent) -> dict:
    """"Iterative auth checks" (rooms v2, "Definitions"): from ``state`` (key -> event
    ID), each event in turn is applied when the authorization rules allow it, and
    ignored otherwise.  A key the rules need that the state lacks is taken from the
    event's own ``auth_events`` unless that auth event was rejected.

    The rules are :func:`roomstate.matrix.auth.check` against the keys of the auth events
    selection (room version 12: and the create event the room ID names).  A rejected
    event is checked again ("Rejected events": handled as usual), except one whose own
    auth events fail the rules on them (it was rejected for its auth chain, and such an
    event "should not appear in the process").
    """
    return dict(_iterative_auth_checks(rv, state, event_ids, get_event))


_ABSENT = object()


class _Layers(ChainMap):
    """A ChainMap whose ``get`` asks each map once (ChainMap's asks twice, through
    ``__contains__`` and ``__getitem__``): the iterative auth checks read the partially
    resolved state this way several times per event."""

    def get(self, key, default=None):
        for m in self.maps:
            v = m.get(key, _ABSENT)
            if v is not _ABSENT:
                return v
        return default


def _iterative_auth_checks(rv, state: Mapping, event_ids: Iterable[str], get_event: GetEvent) -> ChainMap:
    """:func:`iterative_auth_checks` as a ChainMap: what it sets in a new first map over
    ``state``, which is only read."""
    rv = _version(rv)
    g = _graph(get_event)
    resolved: ChainMap = state.new_child() if isinstance(state, _Layers) else _Layers({}, state)  # type: ignore[arg-type]
    create_v12 = None
    for eid in event_ids:
        ev = g(eid)
        if "state_key" not in ev:
            continue
        if rv.room_id_from_create and create_v12 is None and ev.get("type") != rules.CREATE:
            create_v12 = _create_of(ev.get("room_id"), g)
        if ev.get("rejected") and rules.check_auth_events(ev, [g(a) for a in g.auth(eid)], rv,
                                                          create_event=create_v12):
            continue
        by_key = None  # the event's accepted auth events by key, when the state lacks one
        auth_state = {}
        for key in rules.auth_types_for_event(ev, rv):
            have = resolved.get(key)
            if have is not None:
                auth_state[key] = g(have)
                continue
            if by_key is None:
                by_key = {}
                for a in g.auth(eid):
                    aev = g(a)
                    if not aev.get("rejected") and "state_key" in aev:
                        by_key[(aev["type"], aev["state_key"])] = aev
            aev = by_key.get(key)
            if aev is not None:
                auth_state[key] = aev
        if rv.room_id_from_create and _CREATE_KEY not in auth_state:
            have = resolved.get(_CREATE_KEY)
            create = g(have) if have is not None else create_v12
            if create is not None:
                auth_state[_CREATE_KEY] = create
        if rules.check(ev, auth_state, rv) is None:
            resolved[(ev["type"], ev["state_key"])] = eid
    return resolved


def _pl_auth_event(ev, get_event: GetEvent):
    """The ``m.room.power_levels`` event among an event's auth events, or None."""
    for a in _auth_ids(ev):
        aev = get_event(a)
        if aev.get("type") == rules.POWER_LEVELS and aev.get("state_key") == "":
            return a
    return None


def mainline(power_levels_id: Optional[str], get_event: GetEvent) -> list:
    """"Mainline ordering" (rooms v2, "Definitions"): the mainline of P_0 is
    [P_0, P_1, …, P_n], P_{i+1} the power-levels event among the auth events of P_i."""
    out = []
    seen: set = set()
    pl = power_levels_id
    while pl is not None and pl not in seen:
        out.append(pl)
        seen.add(pl)
        pl = _pl_auth_event(get_event(pl), get_event)
    return out


def mainline_ordering(event_ids: Iterable[str], power_levels_id: Optional[str], get_event: GetEvent) -> list:
    """"Mainline ordering based on P" (rooms v2, "Definitions"): the mainline position
    of e is the index i of P_i, the first of e_1, e_2, … (e_{j+1} the power-levels auth
    event of e_j; e itself excluded) in the mainline of P, or ∞ when none is.  Events
    sort by greater position first, then smaller ``origin_server_ts``, then smaller
    ``event_id``."""
    def pl_of(eid):
        return _pl_auth_event(get_event(eid), get_event)

    def ts_and_id(eid):
        return get_event(eid).get("origin_server_ts", 0), eid

    return order_by_mainline(event_ids, power_levels_id, pl_of, ts_and_id)


def order_by_mainline(events: Iterable, power_levels, pl_of, ts_and_id) -> list:
    """:func:`mainline_ordering` over any event keys (IDs, or a store's NIDs): ``pl_of(e)``
    gives the power-levels event among e's auth events (None: none), ``ts_and_id(e)`` its
    ``(origin_server_ts, event_id)``; ``power_levels`` is P (None: no mainline)."""
    events = list(events)
    if not events:
        return []
    position: dict = {}  # the mainline of P: P_i -> i
    pl = power_levels
    while pl is not None and pl not in position:
        position[pl] = len(position)
        pl = pl_of(pl)
    known: dict = {}  # power-levels event -> the mainline position it leads to
    keyed = []
    for e in events:
        path = []
        pl = pl_of(e)
        found = _NO_POSITION
        while pl is not None:
            if pl in position:
                found = position[pl]
                break
            if pl in known:
                found = known[pl]
                break
            path.append(pl)
            pl = pl_of(pl)
            if pl in path:  # a cycle: no position
                break
        for p in path:
            known[p] = found
        keyed.append((-found, *ts_and_id(e), e))
    keyed.sort()
    return [k[-1] for k in keyed]


def reapply_unconflicted_state(resolved: Mapping, unconflicted: Mapping) -> dict:
    """Algorithm step 5 (rooms v2): replace any event of the result with the event of
    the same key of the unconflicted state map, where there is one."""
    out = dict(resolved)
    out.update(unconflicted)
    return out


# -- v2 and v2.1: the algorithm -----------------------------------------------------------

def resolve_v2(rv, state_sets: Sequence[Mapping], get_event: GetEvent, *,
               auth_difference_of=None, conflicted_subgraph_of=None, walk_within_full=None) -> dict:
    """The resolution of ``state_sets`` by state resolution v2 (rooms v2 "Algorithm") or
    v2.1 (rooms v12; MSC4297) as the room version says.

    ``walk_within_full``: how step 1 walks the auth events
    (:func:`power_events_and_auth_ancestors`); None, the default, is the spec's answer
    (through every event in v2; within the full conflicted set in v2.1, the same there).
    """
    unconflicted, conflicted = unconflicted_and_conflicted(state_sets)
    if not conflicted:
        return unconflicted
    g = _graph(get_event)
    if auth_difference_of is None:
        def auth_difference_of(_sets):
            return _auth_difference(state_sets, unconflicted, conflicted, g)
    decided = resolve_v2_conflicts(rv, unconflicted, conflicted, g, auth_difference=auth_difference_of,
                                   conflicted_subgraph=conflicted_subgraph_of, walk_within_full=walk_within_full,
                                   state_sets=state_sets)
    # Step 5: the unconflicted state map over what the resolution decided.
    return reapply_unconflicted_state(decided, unconflicted)


def resolve_v2_conflicts(rv, unconflicted: Mapping, conflicted: Mapping, get_event: GetEvent, *,
                         auth_difference, conflicted_subgraph=None, walk_within_full=None,
                         state_sets=None) -> dict:
    """Steps 1–4 of :func:`resolve_v2` from the unconflicted state map and the conflicted
    state set (:func:`unconflicted_and_conflicted`), for a caller that holds them already
    (a store, which never copies the unconflicted state: ``unconflicted`` is only read
    key by key).

    ``auth_difference(state_sets)`` gives the auth difference (event IDs).  Returns what
    the resolution sets at keys the unconflicted state map does not hold — the resolved
    state is ``unconflicted`` updated with it (step 5); a conflicted key missing from it
    is empty in the resolved state.
    """
    rv = _version(rv)
    v21 = rv.state_res == "v2.1"
    if walk_within_full is None:
        walk_within_full = v21
    g = _graph(get_event)
    diff = auth_difference(state_sets)
    subgraph: Iterable[str] = ()
    if v21:
        conflicted_ids = set()
        for ids in conflicted.values():
            conflicted_ids.update(ids)
        subgraph = (conflicted_state_subgraph(conflicted_ids, g) if conflicted_subgraph is None
                    else conflicted_subgraph(conflicted_ids))
    full = full_conflicted_set(conflicted, diff, subgraph)

    # Step 1: X, the power events and their auth ancestors in the full conflicted set,
    # in the reverse topological power ordering.
    x_set, before = power_events_and_auth_ancestors(full, g, walk_within_full=walk_within_full)
    power_order = reverse_topological_power_ordering(x_set, before, g, rv)
    # Step 2: iterative auth checks from the unconflicted state map (v2) or, in v2.1,
    # from an empty state map (MSC4297, "Modification 1").
    partial = _iterative_auth_checks(rv, {} if v21 else unconflicted, power_order, g)
    # Step 3: the other events, in the mainline ordering based on the partially
    # resolved power levels.
    rest = mainline_ordering([e for e in full if e not in x_set], partial.get(_PL_KEY), g)
    # Step 4: iterative auth checks on the partially resolved state.
    resolved = _iterative_auth_checks(rv, partial, rest, g)
    decided: dict = {}
    for layer in reversed(resolved.maps[:-1]):  # what steps 2 and 4 set, the later last
        decided.update(layer)
    return {k: e for k, e in decided.items() if k not in unconflicted}


# -- v1 -------------------------------------------------------------------------------------

def _v1_order(events: list) -> list:
    """Ascending ``depth``, then descending ``sha1(event_id)`` (rooms v1)."""
    def key(ev):
        return (int(ev.get("depth") or 0), _neg_sha1(ev["event_id"]))
    return sorted(events, key=key)


def _neg_sha1(event_id: str) -> bytes:
    return bytes(255 - b for b in sha1(event_id.encode("utf-8")).digest())


def _allowed_in(ev, r: Mapping, rv, get_event: GetEvent, key=None, eid=None) -> bool:
    """The rules allow ``ev`` in state ``r`` (with ``key`` set to ``eid`` when given)."""
    state = {}
    for k in rules.auth_types_for_event(ev, rv):
        have = eid if k == key else r.get(k)
        if have is not None:
            state[k] = get_event(have)
    return rules.check(ev, state, rv) is None


def resolve_v1(rv, state_sets: Sequence[Mapping], get_event: GetEvent) -> dict:
    """The resolution of ``state_sets`` by the algorithm of room version 1 (rooms v1,
    "State resolution").

    R starts as the union of the states without the conflicting events (a key missing
    from some states is not a conflict).  Conflicts between ``m.room.power_levels``
    events are resolved first, then ``m.room.join_rules``, then ``m.room.member``: the
    events of a key sorted by ascending ``depth`` then descending ``sha1(event_id)``,
    the first added to R, each next one added while the rules allow it in R, stopping
    at the first they do not.  Each key of a pass is resolved against R as the previous
    passes left it (the spec gives no order between keys; this reading depends on
    none).  Every other conflict: the event of highest depth and lowest sha1 that the
    rules allow in R (none when none is allowed).
    """
    unconflicted, conflicted = unconflicted_and_conflicted(state_sets, missing_conflicts=False)
    r = dict(unconflicted)
    if conflicted:
        r.update(resolve_v1_conflicts(rv, unconflicted, conflicted, get_event))
    return r


def resolve_v1_conflicts(rv, unconflicted: Mapping, conflicted: Mapping, get_event: GetEvent) -> dict:
    """:func:`resolve_v1` from the unconflicted state and the conflicts
    (``unconflicted_and_conflicted(..., missing_conflicts=False)``): the event chosen for
    each conflicted key (a key none is allowed for is left out); ``unconflicted`` is
    only read key by key."""
    rv = _version(rv)
    r: ChainMap = _Layers({}, unconflicted)  # type: ignore[arg-type]  # read only: a Mapping serves
    for etype in (rules.POWER_LEVELS, rules.JOIN_RULES, rules.MEMBER):
        keys = sorted(k for k in conflicted if k[0] == etype)
        resolved = {}
        for key in keys:
            events = _v1_order([get_event(e) for e in conflicted[key]])
            chosen = events[0]["event_id"]
            for ev in events[1:]:
                if not _allowed_in(ev, r, rv, get_event, key, chosen):
                    break
                chosen = ev["event_id"]
            resolved[key] = chosen
        r.update(resolved)
    for key in sorted(conflicted):
        if key[0] in (rules.POWER_LEVELS, rules.JOIN_RULES, rules.MEMBER):
            continue
        for ev in reversed(_v1_order([get_event(e) for e in conflicted[key]])):
            if _allowed_in(ev, r, rv, get_event):
                r[key] = ev["event_id"]
                break
    return dict(r.maps[0])
