"""State resolution time: ``roomstate.matrix.stateres.resolve`` against Synapse's own
``synapse.state.v2.resolve_events_with_store`` on the same input, both timed in one run.

The input: a room of ``ROOMSTATE_BENCH_STATERES_MEMBERS`` members (default 3000; the state
holds one key more per member), forked into 2 or 10 branches that each change a few keys
concurrently — kicks and bans by moderators, leaves, joins, topics, and on one branch a
power-levels change that demotes a moderator who kicks on another branch — giving
conflicts on tens of keys.  The state sets are the branches' tips.

Both sides walk the auth chains themselves: roomstate with its reference walk (no index:
``resolve`` given no ``auth_difference``), Synapse with an in-memory store whose
``get_auth_chain_difference`` computes each state set's full chain (the way Synapse's
own test store does).  Events are in memory on both sides.  The answers must be equal;
the ratio Synapse / roomstate (medians) is in ``extra_info``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import warnings

import pytest

from roomstate.matrix import auth, compute_event_id, stateres

MEMBERS = int(os.environ.get("ROOMSTATE_BENCH_STATERES_MEMBERS", "3000"))
#: Rounds of changes per branch (each: a kick, a ban, a leave, a join, a topic).
ROUNDS = int(os.environ.get("ROOMSTATE_BENCH_STATERES_ROUNDS", "1"))
ADMIN = "@admin:hs0.test"
MODS = ["@mod1:hs1.test", "@mod2:hs2.test", "@mod3:hs3.test"]


def _user(i: int) -> str:
    return f"@u{i}:hs{i % 7}.test"


class Room:
    """PDUs of a forked room, by event ID, in the shape ``stateres`` reads."""

    def __init__(self, v: str, members: int, branches: int, rounds: int = 1):
        self.v = v
        self.events: dict[str, dict] = {}
        self.ts = 0
        create = {"type": "m.room.create", "state_key": "", "sender": ADMIN, "content": {"room_version": v},
                  "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": 0}
        if int(v) < 11:
            create["content"]["creator"] = ADMIN
        if v != "12":
            create["room_id"] = "!bench:hs0.test"
        create_id = self._store(create)
        self.room_id = create.get("room_id") or "!" + create_id[1:]
        state = {("m.room.create", ""): create_id}
        tip = [create_id, 1]
        self.send(state, tip, "m.room.member", ADMIN, {"membership": "join"}, ADMIN)
        users = {m: 50 for m in MODS}
        if v != "12":
            users[ADMIN] = 100
        self.levels = {"users": users, "users_default": 0, "state_default": 50, "ban": 50, "kick": 50}
        self.send(state, tip, "m.room.power_levels", ADMIN, self.levels, "")
        self.send(state, tip, "m.room.join_rules", ADMIN, {"join_rule": "public"}, "")
        for m in MODS:
            self.send(state, tip, "m.room.member", m, {"membership": "join"}, m)
        for i in range(members):
            self.send(state, tip, "m.room.member", _user(i), {"membership": "join"}, _user(i))
        self.base = dict(state)
        self.state_sets = []
        self.tips = []  # the last event of each branch
        for b in range(branches):
            s, t = dict(state), list(tip)
            mod = MODS[b % len(MODS)]
            for r in range(rounds):
                k = 10 * (b + branches * r)
                self.send(s, t, "m.room.member", mod, {"membership": "leave"}, _user(k + 1))  # a kick
                self.send(s, t, "m.room.member", mod, {"membership": "ban"}, _user(k + 2))
                self.send(s, t, "m.room.member", _user(k + 3), {"membership": "leave"}, _user(k + 3))
                new = f"@new{b}.{r}:hs9.test"
                self.send(s, t, "m.room.member", new, {"membership": "join"}, new)
                self.send(s, t, "m.room.topic", mod, {"topic": f"branch {b} round {r}"}, "")
            if b == 0:  # the admin demotes mod2, who kicks on branch 1
                demoted = {**self.levels, "users": {**users, MODS[1]: 0}}
                self.send(s, t, "m.room.power_levels", ADMIN, demoted, "")
            if b == 1:
                self.send(s, t, "m.room.member", MODS[1], {"membership": "leave"}, _user(5))
            self.state_sets.append(s)
            self.tips.append(t[0])

    def _store(self, pdu: dict) -> str:
        pdu.setdefault("hashes", {"sha256": "aGFzaA"})
        pdu.setdefault("signatures", {})
        eid = compute_event_id(pdu, self.v)
        pdu["event_id"] = eid
        pdu["rejected"] = False
        self.events[eid] = pdu
        return eid

    def send(self, state, tip, etype, sender, content, state_key):
        self.ts += 1
        pdu = {"type": etype, "sender": sender, "content": content, "state_key": state_key,
               "room_id": self.room_id, "prev_events": [tip[0]], "depth": tip[1] + 1, "origin_server_ts": self.ts}
        keys = auth.auth_types_for_event(pdu, self.v)
        pdu["auth_events"] = [state[k] for k in sorted(keys) if k in state]
        checked = {k: self.events[e] for k, e in state.items() if k in keys or k == ("m.room.create", "")}
        assert auth.check(pdu, checked, self.v) is None, (pdu, auth.check(pdu, checked, self.v))
        eid = self._store(pdu)
        state[(etype, state_key)] = eid
        tip[0], tip[1] = eid, tip[1] + 1
        return eid


def _synapse(room: Room):
    """Synapse's resolver over ``room`` (None when matrix-synapse is not installed)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            import synapse.storage  # noqa: F401
            from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
            from synapse.events import make_event_from_dict
            from synapse.state import v2
            from synapse.storage.databases.main.event_federation import StateDifference
    except ImportError:
        return None
    rv = KNOWN_ROOM_VERSIONS[room.v]
    events = {}
    for eid, pdu in room.events.items():
        body = {k: x for k, x in pdu.items() if k not in ("rejected", "event_id")}
        ev = make_event_from_dict(body, rv)
        assert ev.event_id == eid
        events[eid] = ev

    class Store:
        async def get_events(self, event_ids, allow_rejected=False):
            return {e: events[e] for e in event_ids if e in events}

        def _chain(self, ids):
            seen, stack = set(), list(ids)
            while stack:
                e = stack.pop()
                if e not in seen:
                    seen.add(e)
                    stack.extend(events[e].auth_event_ids())
            return seen

        async def get_auth_chain_difference(self, room_id, state_sets, conflicted, additional):
            chains = [self._chain(s) for s in state_sets]
            diff = set.union(*chains) - set.intersection(*chains)
            sub = None
            if conflicted is not None:
                below = self._chain(conflicted)
                sub = {e for e in below if self._chain([e]) & conflicted}
            return StateDifference(auth_difference=diff, conflicted_subgraph=sub)

    class Clock:
        async def sleep(self, duration):
            return None

    def run(state_sets):
        coro = v2.resolve_events_with_store(Clock(), room.room_id, rv, state_sets, None, Store())
        return dict(asyncio.run(coro))

    return run


def _against_synapse(room: Room, ours: dict, info: dict, bench) -> bool:
    """Synapse's resolution of ``room.state_sets``, timed (median of 3 when timing): equal
    to ``ours``, its median and the ratio to ``info["ms_median"]`` put in ``info``.  False
    when matrix-synapse is not installed."""
    synapse = _synapse(room)
    if synapse is None:
        return False
    theirs_seconds = []
    for _ in range(3 if bench.settings.timing else 1):
        start = time.perf_counter()
        theirs = synapse(room.state_sets)
        theirs_seconds.append(time.perf_counter() - start)
    assert ours == theirs
    info["synapse_ms_median"] = statistics.median(theirs_seconds) * 1e3
    info["ratio_synapse_over_roomstate"] = info["synapse_ms_median"] / info["ms_median"]
    return True


@pytest.mark.parametrize("branches", (2, 10), ids=lambda b: f"b{b}")
@pytest.mark.parametrize("v", ("10", "12"), ids=lambda v: f"v{v}")
def test_stateres_against_synapse(benchmark, bench, v, branches):
    room = Room(v, MEMBERS, branches, ROUNDS)
    sets = room.state_sets
    get = room.events.__getitem__
    ours: list[dict] = []
    seconds: list[float] = []

    def run():
        start = time.perf_counter()
        ours.append(stateres.resolve(v, sets, get))
        seconds.append(time.perf_counter() - start)

    rounds = 5 if bench.settings.timing else 1
    benchmark.group = f"stateres members={MEMBERS} branches={branches}"
    benchmark.pedantic(run, rounds=rounds)
    if not ours:  # --benchmark-disable may skip the rounds
        run()
    _, conflicted = stateres.unconflicted_and_conflicted(sets)
    info = {
        "figure": "stateres",
        "room_version": v,
        "branches": branches,
        "state_keys": len(room.base),
        "rounds_per_branch": ROUNDS,
        "conflicted_keys": len(conflicted),
        "ms_median": statistics.median(seconds) * 1e3,
    }
    _against_synapse(room, ours[-1], info, bench)
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("branches", (2, 10), ids=lambda b: f"b{b}")
@pytest.mark.parametrize("v", ("10", "12"), ids=lambda v: f"v{v}")
def test_store_resolve_state_against_synapse(benchmark, bench, v, branches):
    """The store's ``resolve_state`` of the branches' tips (their states as this store
    gives them: ``state_after``), the Matrix resolver on NIDs, against Synapse's
    resolution of the same state sets.  The first call (nothing of the resolution kept
    yet) is timed alone; the rounds after it find the rules' answers kept by the store.
    """
    import roomstate

    room = Room(v, MEMBERS, branches, ROUNDS)
    store = roomstate.open(str(bench.directory / f"resolve-{v}-{branches}"))
    try:
        store.add_events([{k: x for k, x in e.items() if k != "rejected"} for e in room.events.values()])
        sets = [store.state_after(t) for t in room.tips]
        assert [dict(s) for s in sets] == room.state_sets
        start = time.perf_counter()
        first = dict(store.resolve_state(room.room_id, sets))
        first_ms = (time.perf_counter() - start) * 1e3
        seconds: list[float] = []

        def run():
            start = time.perf_counter()
            store.resolve_state(room.room_id, sets)
            seconds.append(time.perf_counter() - start)

        benchmark.group = f"resolve_state members={MEMBERS} branches={branches}"
        benchmark.pedantic(run, rounds=5 if bench.settings.timing else 1)
        if not seconds:
            run()
        assert first == stateres.resolve(v, room.state_sets, room.events.__getitem__)
        info = {
            "figure": "resolve_state",
            "room_version": v,
            "branches": branches,
            "state_keys": len(room.base),
            "rounds_per_branch": ROUNDS,
            "first_call_ms": first_ms,
            "ms_median": statistics.median(seconds) * 1e3,
        }
        if _against_synapse(room, first, info, bench):
            info["ratio_synapse_over_first_call"] = info["synapse_ms_median"] / first_ms
        benchmark.extra_info.update(info)
    finally:
        store.close()
