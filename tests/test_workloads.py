"""The workloads are PDUs a homeserver would accept, but for the marked rejections.

Each history is replayed against a plain model written here from the specification
(server-server API "Auth events selection"; the room versions' authorization rules, the
parts the generators exercise): the state before every event is the ``newest_event``
resolution of its prevs' states (what the generators assume), every event's
``auth_events`` are exactly the selection from that state, and every event passes the
rules against it — except the events marked by ``workloads.expected_rejection``, which
must fail them. The same selection is checked against the store's own ``state_before``.
"""

from __future__ import annotations

import tracemalloc
from collections import Counter
from typing import Any

import pytest

import roomstate
from roomstate import workloads

Key = tuple[str, str]
PL, JR, CREATE, MEMBER = "m.room.power_levels", "m.room.join_rules", "m.room.create", "m.room.member"
UNLIMITED = float("inf")


def ref_id(ref: Any) -> str:
    """An event reference: an ID, or an [ID, hashes] pair (room versions 1-2)."""
    return ref[0] if isinstance(ref, list) else ref


def room_of(ev: dict[str, Any]) -> str:
    return ev.get("room_id") or "!" + ev["event_id"][1:]


def newest_event_states(events):
    """(event, state before it) for every event: per key conflicted between the prevs'
    states, the candidate with the largest (depth, event_id); marked rejections change
    no state."""
    depth: dict[str, int] = {}
    after: dict[str, dict[Key, str]] = {}
    for ev in events:
        states = [after[ref_id(p)] for p in ev["prev_events"]]
        if len(states) == 1:
            state = states[0]
        else:
            state = {}
            for key in set().union(*states):
                values = {s.get(key) for s in states} - {None}
                state[key] = max(values, key=lambda e: (depth[e], e))
        yield ev, state
        eid = ev["event_id"]
        depth[eid] = ev["depth"]
        if "state_key" in ev and workloads.expected_rejection(ev) is None:
            state = dict(state)
            state[(ev["type"], ev["state_key"])] = eid
        after[eid] = state


def selection(ev, state, version: str) -> list[str]:
    """The auth events selection from ``state``, in the spec's terms."""
    if ev["type"] == CREATE:
        return []
    keys: list[Key] = [] if version == "12" else [(CREATE, "")]
    keys += [(PL, ""), (MEMBER, ev["sender"])]
    if ev["type"] == MEMBER:
        keys.append((MEMBER, ev["state_key"]))
        if ev["content"]["membership"] in ("join", "invite", "knock"):
            keys.append((JR, ""))
    return list(dict.fromkeys(state[k] for k in keys if k in state))


class Room:
    """What the rules read of one room, from the events seen so far."""

    def __init__(self, create: dict[str, Any]) -> None:
        self.version = create["content"]["room_version"]
        self.creator = create["sender"]
        self.create_id = create["event_id"]

    def check(self, ev, state, by_id) -> str | None:
        """Why ``ev`` fails the authorization rules against ``state``; None if it passes."""
        def content(key):
            eid = state.get(key)
            return by_id[eid]["content"] if eid else None

        def membership(user):
            c = content((MEMBER, user))
            return c["membership"] if c else None

        pl = content((PL, ""))

        def level(user):
            if self.version == "12" and user == self.creator:
                return UNLIMITED
            if pl is None:
                return 100 if user == self.creator else 0
            return pl["users"].get(user, pl["users_default"])

        sender, etype = ev["sender"], ev["type"]
        if etype == CREATE:
            return "prev events on a create event" if ev["prev_events"] else None
        if etype == MEMBER:
            target, m = ev["state_key"], ev["content"]["membership"]
            current, rule = membership(target), (content((JR, "")) or {}).get("join_rule")
            if m == "join":
                if sender != target:
                    return "join for another user"
                if current == "ban":
                    return "banned"
                if [ref_id(p) for p in ev["prev_events"]] == [self.create_id] and sender == self.creator:
                    return None
                if rule == "public" or current in ("invite", "join"):
                    return None
                return "join not allowed by the join rule"
            if membership(sender) != "join" and not (m in ("leave", "knock") and sender == target):
                return "sender not joined"
            if m == "invite":
                if current in ("join", "ban"):
                    return "invite of a joined or banned user"
                return None if level(sender) >= pl["invite"] else "no power to invite"
            if m == "leave":
                if sender == target:
                    return None if current in ("invite", "join", "knock") else "leave from " + str(current)
                if current == "ban" and level(sender) < pl["ban"]:
                    return "no power to unban"
                ok = level(sender) >= pl["kick"] and level(target) < level(sender)
                return None if ok else "no power to kick"
            if m == "ban":
                ok = level(sender) >= pl["ban"] and level(target) < level(sender)
                return None if ok else "no power to ban"
            if m == "knock":
                if rule != "knock" or sender != target or current in ("ban", "invite", "join"):
                    return "knock not allowed"
                return None
            return "unknown membership"
        if membership(sender) != "join":
            return "sender not joined"
        if pl is None:  # state_default is 0 without power levels; the creator has 100
            return None
        is_state = "state_key" in ev
        needed = pl["events"].get(etype, pl["state_default"] if is_state else pl["events_default"])
        if level(sender) < needed:
            return "sender's power level too low"
        if etype == PL:
            old, new, mine = pl["users"], ev["content"]["users"], level(sender)
            for user in set(old) | set(new):
                if old.get(user) == new.get(user):
                    continue
                if user != sender and user in old and old[user] >= mine:
                    return "changes a user at or above the sender's level"
                if user in new and new[user] > mine:
                    return "grants more than the sender's level"
            if self.version == "12" and self.creator in new:
                return "a creator in users"
        return None


def replay(events, version: str = "10") -> Counter:
    """Check every event as the module docstring says; counts of what was seen."""
    seen: Counter = Counter()
    by_id: dict[str, dict[str, Any]] = {}
    rooms: dict[str, Room] = {}
    for ev, state in newest_event_states(events):
        if ev["type"] == CREATE:
            assert ev["content"]["room_version"] == version
            assert ("creator" in ev["content"]) == (version not in ("11", "12"))
            assert ("room_id" in ev) == (version != "12")
            rooms[room_of(ev)] = Room(ev)
        auth = [ref_id(a) for a in ev["auth_events"]]
        for eid in auth + [ref_id(p) for p in ev["prev_events"]]:
            assert room_of(by_id[eid]) == room_of(ev)  # earlier, same room
        assert auth == selection(ev, state, version), ev
        reason = rooms[room_of(ev)].check(ev, state, by_id)
        mark = workloads.expected_rejection(ev)
        if mark is None:
            assert reason is None, (reason, ev)
        else:
            assert reason is not None, (mark, ev)
            seen["rejected " + mark] += 1
        assert isinstance(ev["origin_server_ts"], int) and "rejected" not in ev
        seen[ev["type"] if ev["type"] != MEMBER else ev["content"]["membership"]] += 1
        by_id[ev["event_id"]] = ev
    return seen


GENERATORS = {
    "hq": lambda seed, v: workloads.hq(3000, seed=seed, room_version=v),
    "many_rooms": lambda seed, v: workloads.many_rooms(8, seed=seed, min_members=10, max_members=80,
                                                       room_version=v),
    "fork_storm": lambda seed, v: workloads.fork_storm(4, 150, seed=seed, n_members=60, tail=40,
                                                       room_version=v),
    "busy": lambda seed, v: workloads.busy(3000, n_senders=150, seed=seed, room_version=v),
}


@pytest.mark.parametrize("name", GENERATORS)
def test_deterministic(name):
    make = GENERATORS[name]
    assert list(make(4, "10")) == list(make(4, "10"))
    assert [e["event_id"] for e in make(4, "10")] != [e["event_id"] for e in make(5, "10")]


@pytest.mark.parametrize("version", ["10"])
@pytest.mark.parametrize("name", GENERATORS)
def test_auth_events_and_rules(name, version):
    seen = replay(GENERATORS[name](1, version), version)
    # the people and powers at work: invites, kicks, bans and unbans happen
    assert seen["join"] and seen["leave"] and seen["m.room.message"]
    if name != "busy":
        assert seen["ban"]
    if name in ("hq", "many_rooms"):
        assert seen["invite"]


@pytest.mark.parametrize("version", ["1", "2", "3", "6", "7", "9", "11", "12"])
@pytest.mark.parametrize("name", ["hq", "many_rooms"])
def test_room_versions(name, version):
    events = list(GENERATORS[name](2, version))
    replay(events, version)
    ids = [e["event_id"] for e in events]
    if version in ("1", "2"):
        assert all(i.endswith(":example.org") for i in ids)
        assert all(isinstance(p, list) and "sha256" in p[1] for e in events for p in e["prev_events"])
    else:
        assert all(len(i) == 44 for i in ids)
        assert any(("+" in i or "/" in i) for i in ids) == (version == "3")
    if version == "12":
        create = events[0]
        room_id = "!" + create["event_id"][1:]
        pl = next(e for e in events if e["type"] == PL and e.get("room_id") == room_id)
        assert "room_id" not in create and create["sender"] not in pl["content"]["users"]
    assert workloads.count_stats(events)["rooms"] == len({room_of(e) for e in events})


def test_room_version_12_derives_the_room_id():
    with pytest.raises(ValueError, match="room ID"):
        next(workloads.hq(10, room_id="!x:example.org", room_version="12"))
    with pytest.raises(ValueError, match="unknown room version"):
        next(workloads.busy(10, room_version="13"))


def test_rejections_are_marked_not_flagged():
    events = list(workloads.hq(30_000, seed=0))
    marked = workloads.expected_rejections(events)
    share = len(marked) / len(events)
    assert 0.001 <= share <= 0.003
    assert set(marked.values()) == {
        "sender may not change m.room.power_levels",
        "join by a banned user",
        "sender is not joined",
    }
    assert workloads.count_stats(events)["rejections"] == len(marked)
    # no later event names a rejected one among its auth events
    assert not any(a in marked for e in events for a in e["auth_events"])


@pytest.mark.parametrize("name", GENERATORS)
def test_auth_events_are_the_stores_selection(name):
    """Against the engine: with the marked rejections flagged (today's engine trusts the
    flag), every event's auth events are the selection from ``store.state_before``."""
    events = list(GENERATORS[name](3, "10"))
    marked = workloads.expected_rejections(events)
    with roomstate.open(":memory:", resolver="newest_event", check_auth=False) as store:
        assert store.add_events(dict(e, rejected=True) if e["event_id"] in marked else e
                                for e in events) == len(events)
        for ev in events:
            state = store.state_before(ev["event_id"])
            assert ev["auth_events"] == selection(ev, state, "10")


def test_busy_prev_events():
    stats = workloads.count_stats(workloads.busy(20_000, seed=0))
    counts = stats["prev_counts"]
    assert max(counts) <= 10
    assert sum(n for k, n in counts.items() if 2 <= k <= 10) >= 0.8 * stats["events"]
    assert stats["mean_prevs"] >= 2.5


def test_busy_merges_conflict_and_the_store_takes_it():
    events = list(workloads.busy(4000, n_senders=300, seed=2))
    conflicted_merges = merges = 0
    after: dict[str, dict[Key, str]] = {}
    for ev, state in newest_event_states(events):
        prevs = ev["prev_events"]
        if len(prevs) > 1:
            merges += 1
            states = [after[p] for p in prevs]
            keys = set().union(*states)
            conflicted_merges += any(len({s.get(k) for s in states}) > 1 for k in keys)
        after[ev["event_id"]] = dict(state)
        if "state_key" in ev and workloads.expected_rejection(ev) is None:
            after[ev["event_id"]][(ev["type"], ev["state_key"])] = ev["event_id"]
    assert conflicted_merges > 0.2 * merges
    with roomstate.open(":memory:", resolver="newest_event", check_auth=False) as store:
        assert store.add_events(workloads.busy(4000, n_senders=300, seed=2)) == 4000


@pytest.mark.parametrize(
    ("name", "make", "bound"),
    [
        ("hq", lambda: workloads.hq(100_000), 10_000_000),
        ("busy", lambda: workloads.busy(100_000), 4_000_000),
    ],
    ids=["hq", "busy"],
)
def test_streams_in_bounded_memory(name, make, bound):
    """10^5 events: what is held is the per-user state (hq: ~10^4 users, ~4 MB
    measured), not the events (busy: 1,000 senders, ~1.2 MB)."""
    tracemalloc.start()
    try:
        n = sum(1 for _ in make())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert n == 100_000
    assert peak < bound
