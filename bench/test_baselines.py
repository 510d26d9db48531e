"""The workload generators and the Synapse/Dendrite baselines, against plain dicts.

Plain tests (no benchmark fixture): they run in CI with ``--benchmark-disable``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from typing import Any

import pytest
from baselines import (
    MAX_STATE_BLOCK_NIDS,
    MAX_STATE_DELTA_HOPS,
    DendriteDesign,
    SynapseDesign,
    resolve_newest,
)

from roomstate import workloads

StateMap = dict[tuple[str, str], str]
EVENT_ID = re.compile(r"^\$[A-Za-z0-9_-]{43}$")


def reference_states(events: Iterable[dict[str, Any]]) -> tuple[dict[str, StateMap], ...]:
    """State before and after every event, the obvious way: a dict per event."""
    depth: dict[str, int] = {}
    before: dict[str, StateMap] = {}
    after: dict[str, StateMap] = {}
    for ev in events:
        states = [after[p] for p in ev["prev_events"]]
        state: StateMap = {}
        for key in set().union(*states) if states else ():
            values = {s.get(key) for s in states}
            if len(values) == 1:
                state[key] = values.pop()
            else:
                state[key] = max(values - {None}, key=lambda e: (depth[e], e))
        eid = ev["event_id"]
        depth[eid] = ev["depth"]
        before[eid] = state
        after[eid] = dict(state)
        if "state_key" in ev and not ev.get("rejected"):
            after[eid][(ev["type"], ev["state_key"])] = eid
    return before, after


def with_rejections(events: Iterable[dict[str, Any]], every: int = 29) -> list[dict[str, Any]]:
    """Mark every ``every``-th state event (after the preamble) as rejected."""
    out = []
    for i, ev in enumerate(events):
        if i > 5 and "state_key" in ev and i % every == 0:
            ev = dict(ev, rejected=True)
        out.append(ev)
    return out


SMALL_WORKLOADS = {
    "hq": lambda: with_rejections(workloads.hq(1200, seed=7)),
    "fork_storm": lambda: list(
        workloads.fork_storm(n_branches=5, branch_len=100, n_members=150, seed=2)
    ),
    "many_rooms": lambda: list(
        workloads.many_rooms(n_rooms=6, min_members=5, max_members=60, seed=3)
    ),
}


# -- workloads -------------------------------------------------------------------------


def test_hq_shape():
    stats = workloads.count_stats(workloads.hq(30_000, seed=0))
    assert stats["events"] == 30_000
    assert 0.40 <= stats["state_fraction"] <= 0.46
    assert stats["member_fraction"] >= 0.95
    assert 1.03 <= stats["mean_prevs"] <= 1.10
    assert stats["max_prevs"] <= 10
    assert 0.20 <= stats["new_member_ratio"] <= 0.30


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: workloads.hq(800, seed=seed),
        lambda seed: workloads.fork_storm(n_branches=3, branch_len=50, n_members=20, seed=seed),
        lambda seed: workloads.many_rooms(n_rooms=4, max_members=30, seed=seed),
    ],
    ids=["hq", "fork_storm", "many_rooms"],
)
def test_deterministic_and_topological(make):
    events = list(make(5))
    assert events == list(make(5))
    assert [e["event_id"] for e in events] != [e["event_id"] for e in make(6)]
    depth: dict[str, int] = {}
    room_of: dict[str, str] = {}
    for ev in events:
        assert EVENT_ID.match(ev["event_id"]) and ev["event_id"] not in depth
        prevs = ev["prev_events"]
        assert len(set(prevs)) == len(prevs)
        for prev in prevs:
            assert room_of[prev] == ev["room_id"]  # yielded before, same room
        assert ev["depth"] == 1 + max((depth[p] for p in prevs), default=0)
        if ev["type"] == "m.room.member":
            assert ev["content"]["membership"] in {"join", "leave", "ban", "invite"}
        depth[ev["event_id"]] = ev["depth"]
        room_of[ev["event_id"]] = ev["room_id"]


def test_fork_storm_merge_is_conflicted():
    events = list(workloads.fork_storm(n_branches=8, branch_len=500, seed=0))
    merge = next(e for e in events if len(e["prev_events"]) > 1)
    assert len(merge["prev_events"]) == 8
    _, after = reference_states(events)
    states = [after[p] for p in merge["prev_events"]]
    keys = set().union(*states)
    conflicted = [k for k in keys if len({s.get(k) for s in states}) > 1]
    assert len(conflicted) > 1000


def test_many_rooms_interleaves():
    events = list(workloads.many_rooms(n_rooms=20, min_members=10, max_members=50, seed=1))
    rooms = [e["room_id"] for e in events]
    assert len(set(rooms)) == 20
    switches = sum(a != b for a, b in zip(rooms, rooms[1:], strict=False))
    assert switches > len(events) / 2


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_jsonl_round_trip(tmp_path, suffix):
    events = list(workloads.hq(300, seed=4))
    path = tmp_path / f"hq{suffix}"
    assert workloads.write_jsonl(iter(events), path) == 300
    assert list(workloads.read_jsonl(path)) == events


# -- baselines -------------------------------------------------------------------------


def test_resolve_newest():
    a = {"k1": "$a", "k2": "$b", "k3": "$c"}
    b = {"k1": "$a", "k2": "$d", "k4": "$e"}
    depths = {"$b": 5, "$d": 5, "$c": 1, "$e": 1}
    merged = resolve_newest([a, b], lambda ids: {i: (depths[i], i) for i in ids})
    assert merged == {"k1": "$a", "k2": "$d", "k3": "$c", "k4": "$e"}


@pytest.mark.parametrize("design", ["synapse", "dendrite"])
@pytest.mark.parametrize("workload", sorted(SMALL_WORKLOADS))
def test_baseline_matches_reference(open_baseline, design, workload):
    events = SMALL_WORKLOADS[workload]()
    before, after = reference_states(events)
    store = open_baseline(design)
    assert store.add_events(iter(events)) == len(events)
    probe_keys = [("m.room.create", ""), ("m.room.topic", ""), ("m.room.member", "@nobody:x")]
    for i, ev in enumerate(events):
        eid = ev["event_id"]
        assert store.state_before(eid) == before[eid], (i, eid)
        assert store.state_after(eid) == after[eid], (i, eid)
        if i % 7 == 0:
            keys = probe_keys + list(itertools.islice(after[eid], 0, None, 11))
            for key in keys:
                assert store.get_state(eid, *key) == before[eid].get(key)
                assert store.get_state(eid, *key, after=True) == after[eid].get(key)
    assert 0 < store.state_bytes() < store.disk_bytes()


def test_synapse_delta_chains_are_bounded(open_baseline):
    store = open_baseline("synapse")
    store.add_events(SMALL_WORKLOADS["fork_storm"]())
    db = store._db
    (groups,) = db.execute("SELECT count(*) FROM state_groups").fetchone()
    (edges,) = db.execute("SELECT count(*) FROM state_group_edges").fetchone()
    full_copies = groups - edges
    assert full_copies >= 2  # the empty first group, then at least one hop-limit copy
    longest = max(
        db.execute(store._SQL_HOPS, (g,)).fetchone()[0]
        for (g,) in db.execute("SELECT id FROM state_groups")
    )
    assert longest == MAX_STATE_DELTA_HOPS


def test_dendrite_snapshots_are_bounded(open_baseline):
    events = SMALL_WORKLOADS["fork_storm"]()
    store = open_baseline("dendrite")
    store.add_events(events)
    db = store._db
    rows = db.execute("SELECT state_block_nids FROM roomserver_state_snapshots")
    sizes = [len(blob) // 8 for (blob,) in rows]
    assert max(sizes) == MAX_STATE_BLOCK_NIDS
    merge = next(e for e in events if len(e["prev_events"]) > 1)
    (snapshot,) = db.execute(
        "SELECT state_snapshot_nid FROM roomserver_events WHERE event_id = ?",
        (merge["event_id"],),
    ).fetchone()
    assert len(store._snapshot_blocks(snapshot)) == 1  # a merge copies the full state


@pytest.mark.parametrize("design", ["synapse", "dendrite"])
def test_failed_batch_rolls_back(open_baseline, design):
    events = list(workloads.hq(200, seed=9))
    store = open_baseline(design)
    store.add_events(events[:100])
    size = store.table_bytes()
    orphan = dict(events[150], prev_events=["$" + "A" * 43])
    with pytest.raises(KeyError):
        store.add_events(events[100:120] + [orphan])
    assert store.table_bytes() == size
    with pytest.raises(KeyError):
        store.state_after(events[110]["event_id"])
    store.add_event(events[0])  # already stored: nothing happens
    assert store.add_events(events[100:]) == 100
    _, after = reference_states(events)
    last = events[-1]["event_id"]
    assert store.state_after(last) == after[last]


@pytest.mark.parametrize("design", [SynapseDesign, DendriteDesign])
def test_reopen(tmp_path, design):
    events = list(workloads.hq(150, seed=11))
    path = tmp_path / "store.db"
    with design(path) as store:
        store.add_events(events[:80])
    with design(path) as store:
        store.add_events(events[80:])
        _, after = reference_states(events)
        last = events[-1]["event_id"]
        assert store.state_after(last) == after[last]
