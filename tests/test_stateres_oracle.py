"""Differential tests of roomstate.matrix.stateres against Synapse's state resolution.

Synapse is AGPL: it is used here only as an oracle, never by the package.  Hypothesis
builds rooms that fork: a base (create, power levels with moderators, join rules,
members), then 2–4 branches of concurrent membership changes (joins, leaves, kicks,
bans, invites), power-level changes (promotions, demotions of moderators acting on other
branches), join-rule changes and topics, with events that fail the authorization rules
on their branch (rejected, left out of its state); a branch may merge another one on its
way (its state then is Synapse's resolution of the two), and a state set may be stale
for one key (an older event of that key, as a partial /state response gives: the MSC4297
problems).  The tips' states are resolved by ``stateres.resolve`` and by
``synapse.state.v1.resolve_events_with_store`` (room version 1) or
``synapse.state.v2.resolve_events_with_store`` (2–12) with an in-memory store.

Where Synapse reads the spec differently, the spec wins; three readings meet these rooms
(named in the module docstring of ``roomstate.matrix.stateres``):

- "auth difference": Synapse counts a state set's own events in its full auth chain;
- "X walk" (v2): Synapse finds step 1's set X walking auth events only through the full
  conflicted set;
- "v1 no other event allowed": when no conflicting event of an "other" key passes the
  rules, the spec adds none, Synapse keeps the one of least depth.

v2 and v2.1 examples are resolved the spec's way (``resolve``) and under Synapse's two
readings (``resolve_v2`` given Synapse's auth difference and ``walk_within_full``): the
latter must equal Synapse's answer on every example; the spec's must equal it unless one
of the readings changed the input of a step on that example (counted by the reading that
alone gives Synapse's answer).  v1 examples must be equal but for the keys the third
reading drops, where Synapse's answer is checked to be the event of least depth.
"""
import asyncio
import collections
import hashlib
import os
import warnings

import pytest

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(twisted|synapse)\.")
    pytest.importorskip("synapse")
    import synapse.storage  # noqa: F401  (first: the event modules import it circularly)
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
    from synapse.events import make_event_from_dict
    from synapse.state import v1 as synapse_v1, v2 as synapse_v2
    from synapse.storage.databases.main.event_federation import StateDifference

from hypothesis import HealthCheck, given, settings, strategies as st

from roomstate.matrix import auth, room_version, stateres

pytestmark = pytest.mark.oracle

#: Examples per test (more for a long run: ROOMSTATE_ORACLE_EXAMPLES=20000).
EXAMPLES = int(os.environ.get("ROOMSTATE_ORACLE_EXAMPLES", "600"))

VERSIONS = [str(v) for v in range(1, 13)]
ALICE = "@alice:a.test"  # the creator
USERS = [ALICE, "@bob:b.test", "@carol:c.test", "@dave:a.test", "@eve:b.test", "@frank:c.test"]
LEVELS = [0, 0, 25, 50, 50, 75, 100]


class Room:
    """One generated room: every event as a PDU dict (ours) and as Synapse's event."""

    def __init__(self, v):
        self.v = v
        self.rv = KNOWN_ROOM_VERSIONS[v]
        self.room_id = None
        self.pdus = {}
        self.synapse = {}
        self.history = collections.defaultdict(list)  # key -> accepted events of that key
        self.counter = 0
        self.merges = 0  # branches merged on the way
        self.stale = False  # a state set was made stale for one key

    def ref(self, event_id):
        return [event_id, {"sha256": "aGFzaA"}] if self.v in ("1", "2") else event_id

    def add(self, pdu, *, rejected=False):
        self.counter += 1
        pdu.setdefault("hashes", {"sha256": "aGFzaA"})
        pdu.setdefault("signatures", {})
        if self.room_id is not None:
            pdu["room_id"] = self.room_id
        if self.v in ("1", "2"):
            pdu["event_id"] = f"$e{self.counter}:{pdu['sender'].partition(':')[2]}"
        body = {k: x for k, x in pdu.items() if k != "rejected" and (self.v in ("1", "2") or k != "event_id")}
        ev = make_event_from_dict(body, self.rv, rejected_reason="rejected in the test" if rejected else None)
        pdu["event_id"] = ev.event_id
        pdu["rejected"] = rejected
        self.pdus[ev.event_id] = pdu
        self.synapse[ev.event_id] = ev
        if not rejected and "state_key" in pdu:
            self.history[(pdu["type"], pdu["state_key"])].append(ev.event_id)
        return pdu

    def get(self, event_id):
        return self.pdus[event_id]


class Branch:
    def __init__(self, state, tips, depth):
        self.state = dict(state)  # key -> event ID
        self.tips = list(tips)
        self.depth = depth


def _state_dicts(room, state):
    return {k: room.pdus[e] for k, e in state.items()}


def _send(room, branch, draw_ts, etype, sender, content, state_key=None):
    """An event on ``branch``: auth events from its state, checked there; applied when
    the rules allow it, else stored rejected."""
    pdu = {"type": etype, "sender": sender, "content": content,
           "prev_events": [room.ref(t) for t in branch.tips], "depth": branch.depth + 1,
           "origin_server_ts": draw_ts()}
    if state_key is not None:
        pdu["state_key"] = state_key
    pdu["room_id"] = room.room_id
    keys = auth.auth_types_for_event(pdu, room.v)
    pdu["auth_events"] = [room.ref(branch.state[k]) for k in sorted(keys) if k in branch.state]
    state = _state_dicts(room, {k: e for k, e in branch.state.items() if k in keys or k == auth.CREATE_KEY})
    rejected = auth.check(pdu, state, room.v) is not None
    pdu = room.add(pdu, rejected=rejected)
    branch.tips = [pdu["event_id"]]
    branch.depth += 1
    if not rejected and state_key is not None:
        branch.state[(etype, state_key)] = pdu["event_id"]
    return pdu


def _levels_content(room, users, extra=None):
    content = {"users": {u: lv for u, lv in users.items() if not (room.v == "12" and u == ALICE)},
               "state_default": 50, "ban": 50, "kick": 50, "invite": 0, "redact": 50,
               "events_default": 0, "users_default": 0}
    content.update(extra or {})
    return content


def _base(draw, v):
    room = Room(v)
    content = {"room_version": v}
    if int(v) < 11:
        content["creator"] = ALICE
    create = {"type": "m.room.create", "state_key": "", "sender": ALICE, "content": content,
              "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": 0}
    if v != "12":
        create["room_id"] = "!room:a.test"
    create = room.add(create)
    room.room_id = create.get("room_id") or "!" + create["event_id"][1:]
    b = Branch({("m.room.create", ""): create["event_id"]}, [create["event_id"]], 1)
    ts = lambda: 0  # noqa: E731
    _send(room, b, ts, "m.room.member", ALICE, {"membership": "join"}, ALICE)
    levels = {ALICE: 100}
    for u in USERS[1:]:
        levels[u] = draw(st.sampled_from(LEVELS))
    _send(room, b, ts, "m.room.power_levels", ALICE, _levels_content(room, levels), "")
    _send(room, b, ts, "m.room.join_rules", ALICE, {"join_rule": draw(st.sampled_from(["public", "invite"]))}, "")
    for u in USERS[1:]:
        if draw(st.integers(0, 4)):
            _send(room, b, ts, "m.room.member", ALICE, {"membership": "invite"}, u)
            _send(room, b, ts, "m.room.member", u, {"membership": "join"}, u)
    return room, b, levels


def _action(draw, room, branch, levels, draw_ts):
    kind = draw(st.sampled_from(["join", "leave", "kick", "ban", "invite", "pl", "pl", "jr", "topic", "topic", "custom"]))
    sender = draw(st.sampled_from(USERS))
    target = draw(st.sampled_from(USERS))
    if kind == "join":
        _send(room, branch, draw_ts, "m.room.member", target, {"membership": "join"}, target)
    elif kind == "leave":
        _send(room, branch, draw_ts, "m.room.member", target, {"membership": "leave"}, target)
    elif kind in ("kick", "ban", "invite"):
        membership = {"kick": "leave", "ban": "ban", "invite": "invite"}[kind]
        _send(room, branch, draw_ts, "m.room.member", sender, {"membership": membership}, target)
    elif kind == "pl":
        pl_id = branch.state.get(("m.room.power_levels", ""))
        current = dict(room.pdus[pl_id]["content"]["users"]) if pl_id else {}
        if room.v == "12":
            current[ALICE] = 100
        for _ in range(draw(st.integers(1, 2))):
            current[draw(st.sampled_from(USERS))] = draw(st.sampled_from(LEVELS))
        extra = {}
        if draw(st.integers(0, 3)) == 0:
            extra[draw(st.sampled_from(["ban", "kick", "state_default"]))] = draw(st.sampled_from([25, 50, 75]))
        _send(room, branch, draw_ts, "m.room.power_levels", sender, _levels_content(room, current, extra), "")
    elif kind == "jr":
        rules = ["public", "invite"] + (["knock"] if int(room.v) >= 7 else [])
        _send(room, branch, draw_ts, "m.room.join_rules", sender, {"join_rule": draw(st.sampled_from(rules))}, "")
    elif kind == "topic":
        _send(room, branch, draw_ts, "m.room.topic", sender, {"topic": f"t{room.counter}"}, "")
    else:
        _send(room, branch, draw_ts, "org.example.state", sender, {"n": room.counter},
              draw(st.sampled_from(["", sender])))


@st.composite
def forked_rooms(draw):
    v = draw(st.sampled_from(VERSIONS))
    room, base, levels = _base(draw, v)
    draw_ts = lambda: draw(st.integers(1, 40))  # noqa: E731  (ties are wanted)
    n = draw(st.integers(2, 4))
    branches = [Branch(base.state, base.tips, base.depth) for _ in range(n)]
    for _ in range(draw(st.integers(1, 24))):
        i = draw(st.integers(0, n - 1))
        if n > 1 and draw(st.integers(0, 7)) == 0:
            j = draw(st.integers(0, n - 1))
            if j != i and branches[j].tips != branches[i].tips:
                b = branches[i]
                b.state = _synapse_resolve(room, [b.state, branches[j].state])
                b.tips = b.tips + branches[j].tips
                b.depth = max(b.depth, branches[j].depth)
                room.merges += 1
                continue
        _action(draw, room, branches[i], levels, draw_ts)
    state_sets = [dict(b.state) for b in branches]
    if draw(st.integers(0, 3)) == 0:  # one state set stale for one key (a partial /state)
        s = draw(st.sampled_from(state_sets))
        keys = sorted(k for k, e in s.items() if room.history[k].index(e) > 0)
        if keys:
            key = draw(st.sampled_from(keys))
            s[key] = draw(st.sampled_from(room.history[key][: room.history[key].index(s[key])]))
            room.stale = True
    return room, state_sets


# -- Synapse --------------------------------------------------------------------------------

class _Clock:
    async def sleep(self, duration):
        return None


class SynapseStore:
    """What ``synapse.state.v2.resolve_events_with_store`` asks of a store, in memory.

    ``get_auth_chain_difference`` follows Synapse's database: a state set's chain holds
    its own events and their auth events (Synapse's events list the v12 create event
    among them), recursively; the conflicted subgraph is the events both reachable from
    a conflicted event and reaching one (endpoints included)."""

    def __init__(self, room):
        self.room = room

    def _auth(self, eid):
        return self.room.synapse[eid].auth_event_ids()

    def chain_with(self, ids):
        seen, stack = set(), list(ids)
        while stack:
            e = stack.pop()
            if e not in seen:
                seen.add(e)
                stack.extend(self._auth(e))
        return seen

    async def get_events(self, event_ids, allow_rejected=False):
        evs = self.room.synapse
        return {e: evs[e] for e in event_ids if e in evs and (allow_rejected or not evs[e].rejected_reason)}

    def difference(self, state_sets):
        chains = [self.chain_with(s) for s in state_sets]
        return set.union(*chains) - set.intersection(*chains)

    async def get_auth_chain_difference(self, room_id, state_sets, conflicted_state,
                                        additional_backwards_reachable_conflicted_events):
        diff = self.difference(state_sets)
        subgraph = None
        if conflicted_state is not None:
            below = self.chain_with(conflicted_state)
            subgraph = {e for e in below if self.chain_with([e]) & conflicted_state}
        return StateDifference(auth_difference=diff, conflicted_subgraph=subgraph)


def _synapse_resolve(room, state_sets):
    store = SynapseStore(room)
    if room.v == "1":
        async def factory(ids):
            return {e: room.synapse[e] for e in ids if e in room.synapse}
        coro = synapse_v1.resolve_events_with_store(room.room_id, room.rv, state_sets, None, factory)
    else:
        coro = synapse_v2.resolve_events_with_store(_Clock(), room.room_id, room.rv, state_sets, None, store)
    return dict(asyncio.run(coro))


# -- the comparison ------------------------------------------------------------------------

def _readings_differ(room, state_sets):
    """The Synapse readings that change a step's input on this example (v2, v2.1)."""
    out = []
    get = room.get
    _, conflicted = stateres.unconflicted_and_conflicted(state_sets)
    if not conflicted:
        return out
    ours_diff = stateres.auth_difference(state_sets, get)
    their_diff = SynapseStore(room).difference([set(s.values()) for s in state_sets])
    if ours_diff != their_diff:
        out.append("auth difference")
    if room_version(room.v).state_res == "v2":
        full = stateres.full_conflicted_set(conflicted, their_diff)
        if stateres.power_events_and_auth_ancestors(full, get) != \
                stateres.power_events_and_auth_ancestors(full, get, walk_within_full=True):
            out.append("X walk")
    return out


SEEN = collections.Counter()
_V1_AUTH_TYPES = ("m.room.power_levels", "m.room.join_rules", "m.room.member")


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(forked_rooms())
def test_resolve_matches_synapse(case):
    room, state_sets = case
    theirs = _synapse_resolve(room, state_sets)
    ours = stateres.resolve(room.v, state_sets, room.get)
    SEEN[f"v{room.v}"] += 1
    _, conflicted = stateres.unconflicted_and_conflicted(state_sets)
    SEEN["conflicted keys"] += len(conflicted)
    if room.v == "1":
        # v1 "other" conflicts where no event passes the rules in R: the spec adds none,
        # Synapse keeps the event of least depth (the last of the spec's order).
        dropped = [k for k in conflicted if k not in ours and k[0] not in _V1_AUTH_TYPES]
        for k in dropped:
            events = [room.pdus[e] for e in conflicted[k]]
            last = min(events, key=lambda ev: (ev["depth"], -int(hashlib.sha1(ev["event_id"].encode()).hexdigest(), 16)))
            assert theirs.get(k) == last["event_id"], _explain(room, state_sets, ours, theirs)
            SEEN["departure: v1 no other event allowed"] += 1
        assert ours == {k: e for k, e in theirs.items() if k not in dropped}, _explain(room, state_sets, ours, theirs)
        return
    store = SynapseStore(room)
    _check_the_walks(room, state_sets, conflicted, store)
    as_synapse = stateres.resolve_v2(
        room.v, state_sets, room.get,
        auth_difference_of=lambda sets: store.difference([set(s.values()) for s in sets]),
        walk_within_full=True)
    assert as_synapse == theirs, _explain(room, state_sets, as_synapse, theirs)
    if ours != theirs:
        readings = _readings_differ(room, state_sets)
        assert readings, _explain(room, state_sets, ours, theirs)
        # Which reading alone gives Synapse's answer (else both are needed).
        synapse_diff = stateres.resolve_v2(
            room.v, state_sets, room.get,
            auth_difference_of=lambda sets: store.difference([set(s.values()) for s in sets]))
        synapse_walk = stateres.resolve_v2(room.v, state_sets, room.get, walk_within_full=True)
        if synapse_diff == theirs:
            cause = "auth difference"
        elif synapse_walk == theirs:
            cause = "X walk"
        else:
            cause = "auth difference and X walk together"
        SEEN[f"departure: {cause} (v{room.v})"] += 1
    if ours != state_sets[0]:
        SEEN["resolved state differs from the first set"] += 1


def _check_the_walks(room, state_sets, conflicted, store):
    """The walking steps against plain definitions: the auth difference of the spec (each
    C_i the union of the auth chains of S_i's events, from plain walks), the conflicted
    state subgraph, and (v2.1) step 1's walk within the full conflicted set finding what
    the walk through every event finds."""
    chains = [set().union(*(stateres.auth_chain([e], room.get) for e in s.values())) for s in state_sets]
    diff = set.union(*chains) - set.intersection(*chains)
    assert stateres.auth_difference(state_sets, room.get) == diff
    assert stateres.auth_difference(state_sets, room.get, with_state_events=True) == \
        store.difference([set(s.values()) for s in state_sets])
    conflicted_ids = set().union(*conflicted.values()) if conflicted else set()
    subgraph = stateres.conflicted_state_subgraph(conflicted_ids, room.get)
    below = conflicted_ids | stateres.auth_chain(conflicted_ids, room.get)
    assert subgraph == {e for e in below if e in conflicted_ids or stateres.auth_chain([e], room.get) & conflicted_ids}
    if room.v == "12" and conflicted:
        full = stateres.full_conflicted_set(conflicted, diff, subgraph)
        assert stateres.power_events_and_auth_ancestors(full, room.get) == \
            stateres.power_events_and_auth_ancestors(full, room.get, walk_within_full=True)
    SEEN["rejected events in the room"] += sum(1 for p in room.pdus.values() if p["rejected"])
    SEEN["branch merges on the way"] += room.merges
    SEEN["stale state sets"] += room.stale


def _explain(room, state_sets, ours, theirs):
    lines = [f"room version {room.v}"]
    for k in sorted(set(ours) | set(theirs)):
        if ours.get(k) != theirs.get(k):
            lines.append(f"  {k}: roomstate {ours.get(k)}, Synapse {theirs.get(k)}")
    for i, s in enumerate(state_sets):
        lines.append(f"  set {i}: " + ", ".join(f"{k[0][7:]}/{k[1]}={e}" for k, e in sorted(s.items())))
    for e, p in room.pdus.items():
        lines.append(f"  {e} {p['type']} {p.get('state_key')} by {p['sender']} {p['content']} "
                     f"auth={p['auth_events']} ts={p['origin_server_ts']} rejected={p['rejected']}")
    return "\n".join(lines)


def test_examples_were_checked():
    """Run last in the module: say how many generated examples met the oracle."""
    if not SEEN:
        pytest.skip("the Hypothesis test did not run")
    print(f"\nresolved against Synapse: {dict(sorted(SEEN.items()))}")
