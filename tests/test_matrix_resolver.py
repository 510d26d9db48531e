"""``resolver="matrix"`` in the store: the state before every merge equals the pure
state resolution of :mod:`roomstate.matrix.stateres` over the states after the prevs,
read back from the store and given the events' full PDUs (the reference)."""
import pytest

import roomstate
from roomstate import workloads
from roomstate.errors import InvalidEventError, MissingEventError
from roomstate.matrix import stateres


def _reference_check(store, pdus):
    by_id = {}
    for ev in pdus:
        eid = ev.get("event_id")
        by_id[eid] = ev
    checked = 0
    for ev in pdus:
        prevs = ev.get("prev_events") or []
        prev_ids = [p[0] if isinstance(p, list) else p for p in prevs]
        if len(set(prev_ids)) < 2:
            continue
        info = store.event(ev["event_id"])
        if info.outlier:
            continue
        sets = [dict(store.state_after(p)) for p in prev_ids]

        def get_event(eid):
            pdu = by_id[eid]
            d = dict(pdu)
            d["rejected"] = store.event(eid).rejected
            return d

        rv = store.room_version(ev["room_id"])
        want = stateres.resolve(rv, sets, get_event)
        got = dict(store.state_before(ev["event_id"]))
        assert got == want, ev["event_id"]
        checked += 1
    return checked


@pytest.mark.parametrize("room_version", ["1", "2", "6", "10", "11", "12"])
def test_busy_room_merges_equal_the_reference(room_version):
    pdus = list(workloads.busy(400, n_senders=40, seed=3, room_version=room_version))
    with roomstate.open(":memory:") as store:
        store.add_events(pdus)
        # busy events carry their IDs in v1-v2 only: take the computed ones.
        pdus = [dict(ev, event_id=ev.get("event_id") or _computed(ev, room_version)) for ev in pdus]
        assert _reference_check(store, pdus) > 50


def _computed(ev, room_version):
    return roomstate.matrix.compute_event_id(ev, room_version)


def test_fork_storm_merge_equals_the_reference():
    pdus = list(workloads.fork_storm(n_branches=6, branch_len=30, n_members=60, seed=1))
    with roomstate.open(":memory:") as store:
        store.add_events(pdus)
        pdus = [dict(ev, event_id=ev.get("event_id") or _computed(ev, "10")) for ev in pdus]
        assert _reference_check(store, pdus) >= 1


def test_resolve_state_of_given_states():
    pdus = list(workloads.busy(300, n_senders=30, seed=5))
    with roomstate.open(":memory:") as store:
        store.add_events(pdus)
        room = pdus[0]["room_id"] if "room_id" in pdus[0] else store.rooms()[0]
        merges = [ev for ev in pdus if len(ev["prev_events"]) >= 3]
        ev = merges[-1]
        sets = [store.state_after(p) for p in ev["prev_events"]]
        eid = ev.get("event_id") or _computed(ev, "10")
        assert store.resolve_state(room, sets) == store.state_before(eid)
        # Plain dicts of strings give the same answer as the store's StateMaps.
        assert store.resolve_state(room, [dict(s) for s in sets]) == store.state_before(eid)
        assert store.resolve_state(room, []) == {}
        one = dict(sets[0])
        assert store.resolve_state(room, [one]) == one
        with pytest.raises(MissingEventError):
            store.resolve_state(room, [{("m.room.topic", ""): "$nope"}])
        key, event_id = next(iter(one.items()))
        with pytest.raises(InvalidEventError, match="not its key"):
            store.resolve_state(room, [{("m.room.topic", "x"): event_id}])
        with pytest.raises(TypeError):
            store.resolve_state(room, one)


def test_matrix_is_the_default():
    assert roomstate.resolvers.resolver_of(None) is roomstate.resolvers.BUILTIN["matrix"]
    with roomstate.open(":memory:") as store:
        assert store.resolver is roomstate.resolvers.BUILTIN["matrix"]


def test_events_without_auth_data_are_refused_with_a_reason():
    events = [
        {"event_id": "$a", "room_id": "!r", "type": "m.room.create", "state_key": "", "content": {}},
        {"event_id": "$b", "room_id": "!r", "type": "m.room.topic", "state_key": "", "prev_events": ["$a"]},
        {"event_id": "$c", "room_id": "!r", "type": "m.room.topic", "state_key": "", "prev_events": ["$a"]},
        {"event_id": "$d", "room_id": "!r", "type": "m.room.message", "prev_events": ["$b", "$c"]},
    ]
    with roomstate.open(":memory:", check_auth=False) as store:
        store.add_events(events[:3])
        with pytest.raises(InvalidEventError, match="stored without its") as info:
            store.add_event(events[3])
        assert info.value.event_id in ("$a", "$b", "$c")
        assert not store.has_event("$d")
        store.add_event(events[3], resolver="newest_event")
        assert store.get_state("$d", "m.room.topic", "") == "$c"


def test_events_with_content_but_no_sender_are_refused():
    """Content makes a record hold auth data; without a sender the rules cannot run."""
    def ev(eid, type_, prevs, state_key=None, **content):
        d = {"event_id": eid, "room_id": "!r", "type": type_, "prev_events": prevs, "content": content}
        if state_key is not None:
            d["state_key"] = state_key
        return d

    events = [ev("$a", "m.room.create", [], "", creator="@x:y"),
              ev("$b", "m.room.member", ["$a"], "@b:y", membership="join"),
              ev("$t", "m.room.topic", ["$a"], "", topic="t"),
              ev("$m", "m.room.message", ["$b", "$t"])]
    with roomstate.open(":memory:", check_auth=False) as store:
        with pytest.raises(InvalidEventError, match="without its sender") as info:
            store.add_events(events)
        assert info.value.field == "sender"
        assert store.rooms() == []  # the whole call was undone
