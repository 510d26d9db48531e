"""Model-based tests: random room histories against a dict-per-event reference."""
import random
import shutil
import tempfile

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import roomstate
from roomstate import snapshots

from reference import Reference

TYPES = ["m.room.member", "m.room.member", "m.room.member", "m.room.topic", "m.room.power_levels", "x.custom"]
KEYS = ["", "@a:x", "@b:x", "@c:x", "@d:x", "@e:x", "@f:x"]
MEMBERSHIPS = ["join", "join", "leave", "invite", "ban", "knock"]
ROOMS = ["!one:x", "!two:x"]


def check_event(store, ref, eid):
    if ref.events[eid]["outlier"]:
        with pytest.raises(roomstate.MissingEventError):
            store.state_before(eid)
        return
    before, after = ref.before[eid], ref.after[eid]
    assert dict(store.state_before(eid)) == before
    assert dict(store.state_after(eid)) == after
    assert len(store.state_after(eid).entries) == len(after)
    for (t, k), e in list(after.items())[:3]:
        assert store.get_state(eid, t, k, after=True) == e
    assert store.get_state(eid, "m.room.member", "@nobody:x") is None
    for m in ("join", "leave"):
        assert sorted(store.members(eid, m)) == ref.members(eid, m)
        assert sorted(store.members(eid, m, after=True)) == ref.members(eid, m, after=True)
    assert dict(store.state_after(eid, types=[("m.room.member", None)])) == {
        k: v for k, v in after.items() if k[0] == "m.room.member"
    }
    assert dict(store.state_before(eid, types=[("m.room.topic", ""), ("m.room.member", "@a:x")])) == {
        k: v for k, v in before.items() if k in {("m.room.topic", ""), ("m.room.member", "@a:x")}
    }


class StoreMachine(RuleBasedStateMachine):
    # The built-in resolver: merges resolve on NIDs, without strings.
    RESOLVER = "newest_event"
    MEMORY = False  # True: the ":memory:" backend (reopening keeps the same store)

    def __init__(self):
        super().__init__()
        self.saved = (snapshots.MAX_HOPS, snapshots.MAX_WEIGHT, snapshots.FANOUT, snapshots.TIER_BASE)
        snapshots.MAX_HOPS, snapshots.MAX_WEIGHT, snapshots.FANOUT, snapshots.TIER_BASE = 3, 5, 2, 2
        self.dir = tempfile.mkdtemp()
        self.store = roomstate.open(":memory:" if self.MEMORY else self.dir + "/s", resolver=self.RESOLVER, check_auth=False)
        self.ref = Reference()
        self.n = 0
        self.last = None
        self.settled = {r: [] for r in ROOMS}  # non-outlier events per room
        self.outliers = []

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir)
        snapshots.MAX_HOPS, snapshots.MAX_WEIGHT, snapshots.FANOUT, snapshots.TIER_BASE = self.saved

    def new_event(self, rng, room, prevs):
        self.n += 1
        ev = {"event_id": f"$e{self.n}", "room_id": room, "prev_events": prevs}
        if rng.random() < 0.6:
            t = rng.choice(TYPES)
            ev["type"] = t
            ev["state_key"] = rng.choice(KEYS) if t != "m.room.topic" else ""
            if t == "m.room.member":
                ev["content"] = {"membership": rng.choice(MEMBERSHIPS)}
            if rng.random() < 0.08:
                ev["rejected"] = True
        else:
            ev["type"] = "m.room.message"
        if rng.random() < 0.1:
            ev["depth"] = rng.randrange(1, 50)
        return ev

    def pick_prevs(self, rng, room, k):
        pool = self.settled[room]
        if not pool:
            return []
        recent = pool[-8:]
        return rng.sample(recent, min(k, len(recent)))

    def event_again(self, eid):
        """The input of an event the reference holds, to add it again."""
        info = self.ref.events[eid]
        ev = {"event_id": eid, "room_id": info["room"], "type": info["type"], "prev_events": info["prevs"]}
        if info["state_key"] is not None:
            ev["state_key"] = info["state_key"]
        if info["membership"] is not None:
            ev["content"] = {"membership": info["membership"]}
        if info["rejected"]:
            ev["rejected"] = True
        return ev

    def stored_state_events(self, room):
        return [
            e
            for e, info in self.ref.events.items()
            if info["room"] == room and info["state_key"] is not None
        ]

    def add(self, ev, **kw):
        self.store.add_event(ev, **kw)
        self.ref.add(ev, outlier=kw.get("outlier", False), state_before=kw.get("state_before"))
        self.last = ev["event_id"]
        if not kw.get("outlier"):
            self.settled[ev["room_id"]].append(ev["event_id"])
            if ev["event_id"] in self.outliers:
                self.outliers.remove(ev["event_id"])
        else:
            self.outliers.append(ev["event_id"])

    @rule(seed=st.integers(0, 2**32), room=st.sampled_from(ROOMS), k=st.sampled_from([1, 1, 1, 1, 2, 3, 5]))
    def add_event(self, seed, room, k):
        rng = random.Random(seed)
        self.add(self.new_event(rng, room, self.pick_prevs(rng, room, k)))

    @rule(seed=st.integers(0, 2**32), room=st.sampled_from(ROOMS), n=st.integers(2, 30))
    def fork_and_merge(self, seed, room, n):
        rng = random.Random(seed)
        if not self.settled[room]:
            return
        base = self.settled[room][-1]
        heads = [base] * rng.randint(2, 4)
        evs = []
        for _ in range(n):
            b = rng.randrange(len(heads))
            ev = self.new_event(rng, room, [heads[b]])
            heads[b] = ev["event_id"]
            evs.append(ev)
        evs.append(self.new_event(rng, room, list(dict.fromkeys(heads))))
        with self.store.batch() as batch:
            for ev in evs:
                batch.add_event(ev)
        for ev in evs:
            self.ref.add(ev)
            self.settled[room].append(ev["event_id"])
        self.last = evs[-1]["event_id"]

    @rule(seed=st.integers(0, 2**32), room=st.sampled_from(ROOMS))
    def add_outlier(self, seed, room):
        rng = random.Random(seed)
        ev = self.new_event(rng, room, self.pick_prevs(rng, room, 1) + [f"$unknown{self.n}"])
        ev.setdefault("state_key", "@o:x")
        ev["type"] = "m.room.member" if ev["type"] == "m.room.message" else ev["type"]
        self.add(ev, outlier=True)

    def random_given_state(self, rng, room):
        state = {}
        for e in self.stored_state_events(room):
            info = self.ref.events[e]
            if rng.random() < 0.5:
                state[(info["type"], info["state_key"])] = e
        return state

    @rule(seed=st.integers(0, 2**32), room=st.sampled_from(ROOMS))
    def add_with_given_state(self, seed, room):
        rng = random.Random(seed)
        prevs = self.pick_prevs(rng, room, rng.randint(0, 2))
        if rng.random() < 0.5:
            prevs.append(f"$missing{self.n}")
        ev = self.new_event(rng, room, prevs)
        self.add(ev, state_before=self.random_given_state(rng, room))

    @rule(seed=st.integers(0, 2**32))
    def settle_outlier(self, seed):
        if not self.outliers:
            return
        rng = random.Random(seed)
        eid = rng.choice(self.outliers)
        info = self.ref.events[eid]
        ev = self.event_again(eid)
        ev["depth"] = info["depth"]
        self.add(ev, state_before=self.random_given_state(rng, info["room"]))

    @rule(seed=st.integers(0, 2**32))
    def readd_is_noop(self, seed):
        events = [e for r in ROOMS for e in self.settled[r]]
        if not events:
            return
        eid = random.Random(seed).choice(events)
        ev = self.event_again(eid)
        before = self.store.stats()
        self.store.add_event(ev)
        after = self.store.stats()
        assert before["tables"] == after["tables"]

    @rule()
    def reopen(self):
        if self.MEMORY:
            return  # nothing persists: a store in memory is never reopened
        self.store.close()
        self.store = roomstate.open(self.dir + "/s", resolver=self.RESOLVER, check_auth=False)

    @invariant()
    def agrees(self):
        if self.last is not None:
            check_event(self.store, self.ref, self.last)
        for room in ROOMS:
            if self.settled[room] or any(i["room"] == room for i in self.ref.events.values()):
                assert sorted(self.store.forward_extremities(room)) == self.ref.extremities(room)
                assert dict(self.store.current_state(room)) == self.ref.current(room)
        settled = [e for r in ROOMS for e in self.settled[r]]
        if len(settled) >= 2:
            rng = random.Random(len(settled))
            a, b = rng.choice(settled), rng.choice(settled)
            d = self.store.state_diff(a, b)
            assert (d.added, d.removed) == self.ref.diff(a, b)
            check_event(self.store, self.ref, rng.choice(settled))


StoreMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestStoreMachine = StoreMachine.TestCase


class CallableResolverMachine(StoreMachine):
    """The same rule through the generic path: a resolver callable that sees strings,
    StateMaps of the prev states and the unconflicted state."""

    RESOLVER = staticmethod(lambda ctx: roomstate.newest_event(ctx))


CallableResolverMachine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestCallableResolverMachine = CallableResolverMachine.TestCase


class MemoryStoreMachine(StoreMachine):
    """The same model on the ":memory:" backend."""

    MEMORY = True


MemoryStoreMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestMemoryStoreMachine = MemoryStoreMachine.TestCase


@pytest.mark.parametrize("backend", ["lmdb", "memory"])
@pytest.mark.parametrize("tiny", [False, True])
def test_long_history_every_event(tmp_path, monkeypatch, tiny, backend):
    """A few thousand events with forks: every event's state matches, through real tier merges."""
    if tiny:
        monkeypatch.setattr(snapshots, "MAX_HOPS", 4)
        monkeypatch.setattr(snapshots, "MAX_WEIGHT", 8)
        monkeypatch.setattr(snapshots, "FANOUT", 3)
        monkeypatch.setattr(snapshots, "TIER_BASE", 4)
    rng = random.Random(7)
    ref = Reference()
    events = []
    heads = []
    n = 0
    members = [f"@u{i}:x" for i in range(400)]
    while n < 4000:
        n += 1
        if not heads:
            ev = {"event_id": "$0", "room_id": "!r", "type": "m.room.create", "state_key": ""}
            heads = ["$0"]
        else:
            r = rng.random()
            if r < 0.03 and len(heads) == 1:
                heads = heads * rng.randint(2, 4)  # fork
            b = rng.randrange(len(heads))
            prevs = [heads[b]]
            if len(heads) > 1 and rng.random() < 0.25:
                prevs = list(dict.fromkeys(heads))  # merge
            ev = {"event_id": f"${n}", "room_id": "!r", "prev_events": prevs}
            if rng.random() < 0.45:
                ev.update(type="m.room.member", state_key=rng.choice(members),
                          content={"membership": rng.choice(MEMBERSHIPS)})
            else:
                ev["type"] = "m.room.message"
            if len(prevs) > 1:
                heads = [ev["event_id"]]
            else:
                heads[b] = ev["event_id"]
        events.append(ev)
        ref.add(ev)
    with roomstate.open(":memory:" if backend == "memory" else tmp_path / "s", resolver="newest_event", check_auth=False) as store:
        assert store.add_events(events[:2000]) == 2000
        assert store.add_events(iter(events[2000:])) == 2000
        for ev in events:
            eid = ev["event_id"]
            assert store.state_after(eid).entries.shape[0] == len(ref.after[eid])
        for ev in events[::37]:
            check_event(store, ref, ev["event_id"])
        assert dict(store.current_state("!r")) == ref.current("!r")
        assert sorted(store.forward_extremities("!r")) == ref.extremities("!r")
        assert store.stats()["blocks"] > 0
