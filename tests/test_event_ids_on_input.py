"""Events given without ``event_id``: the store computes it as the room version does (the
reference hash, rooms v3 and later), and a room version 12 create event names its room."""
import pytest

import roomstate
from roomstate import InvalidEventError, MissingEventError, workloads
from roomstate.matrix import compute_event_id, compute_room_id

from test_store import dump


@pytest.fixture(params=["lmdb", "memory"])
def store(request, tmp_path):
    path = ":memory:" if request.param == "memory" else tmp_path / "store"
    with roomstate.open(path, resolver="newest_event", check_auth=True) as s:
        yield s


def without_ids(events):
    return [{k: v for k, v in e.items() if k != "event_id"} for e in events]


def rehashed(events, version):
    """A workload's events (random IDs) with every ID their reference hash, references
    (prev and auth events, ``redacts``, v12 room IDs) following."""
    new = {}
    out = []
    for e in events:
        e = dict(e)
        old = e.pop("event_id")
        for field in ("prev_events", "auth_events"):
            e[field] = [new[r] for r in e[field]]
        if "redacts" in e:
            e["redacts"] = new.get(e["redacts"], e["redacts"])
        if "redacts" in e.get("content", {}):
            e["content"] = {**e["content"], "redacts": new.get(e["content"]["redacts"], e["content"]["redacts"])}
        if "room_id" in e and version == "12":
            e["room_id"] = new["room"]
        new[old] = compute_event_id(e, version)
        if version == "12" and e["type"] == "m.room.create":
            new["room"] = "!" + new[old][1:]
        out.append({**e, "event_id": new[old]})
    return out


@pytest.mark.parametrize("version", ["3", "4", "10", "11", "12"])
def test_pdus_without_event_ids_get_their_reference_hashes(store, version):
    events = rehashed(workloads.hq(400, seed=2, room_version=version), version)
    assert store.add_events(without_ids(events)) == len(events)
    last = events[-1]["event_id"]
    assert store.has_event(last)
    with roomstate.open(":memory:", resolver="newest_event", check_auth=True) as given:
        given.add_events(events)
        assert dict(store.state_before(last)) == dict(given.state_before(last))
        assert len(store.state_before(last)) > 10
    assert store.event(last).room_id == events[-1]["room_id"]
    # given again with their IDs: the same events, nothing new
    assert store.add_events(events) == 0


def test_a_version_12_create_event_names_its_room(store):
    events = rehashed(workloads.hq(50, seed=3, room_version="12"), "12")
    create = events[0]
    assert "room_id" not in create
    room_id = compute_room_id(create)
    assert room_id == "!" + compute_event_id(create, "12")[1:]
    store.add_events(without_ids(events))
    assert store.rooms() == [room_id]
    assert store.room_version(room_id) == "12"
    info = store.event(create["event_id"])
    assert info.room_id == room_id and not info.rejected
    assert store.current_state(room_id)[("m.room.create", "")] == create["event_id"]


def test_a_version_12_create_event_with_a_room_id_breaks_the_rules(store):
    create = dict(next(iter(workloads.hq(5, seed=3, room_version="12"))))
    eid = create.pop("event_id")
    store.add_event({**create, "room_id": "!" + eid[1:]})  # rule 1.2: no room_id on a v12 create
    info = store.event(compute_event_id({**create, "room_id": "!" + eid[1:]}, "12"))
    assert info.rejected and info.rejected_reason.startswith("rule 1.2")


def test_versions_1_and_2_carry_their_ids(store):
    events = list(workloads.hq(20, seed=1, room_version="1"))
    store.add_event(events[0])
    before = dump(store)
    with pytest.raises(InvalidEventError, match="event_id"):
        store.add_event(without_ids(events[1:2])[0])
    assert dump(store) == before


def test_without_the_create_event_the_id_cannot_be_computed(store):
    events = rehashed(workloads.hq(20, seed=1, room_version="10"), "10")
    before = dump(store)
    with pytest.raises(MissingEventError, match="create event"):
        store.add_event(without_ids(events[1:2])[0])
    assert dump(store) == before


def test_an_unknown_room_version_is_invalid(store):
    create = without_ids([next(iter(workloads.hq(5, seed=1)))])[0]
    create["content"] = {**create["content"], "room_version": "999"}
    with pytest.raises(InvalidEventError, match="room_version"):
        store.add_event(create)


def test_ids_are_computed_without_check_auth_too(tmp_path):
    events = rehashed(workloads.hq(100, seed=4, room_version="12"), "12")
    with roomstate.open(tmp_path / "s", resolver="newest_event", check_auth=False) as s:
        s.add_events(without_ids(events))
        assert all(s.has_event(e["event_id"]) for e in events)


def test_a_version_12_create_event_with_an_event_id_that_is_no_string_is_invalid(store):
    create = dict(next(iter(workloads.hq(5, seed=3, room_version="12"))))
    create["event_id"] = 5
    with pytest.raises(InvalidEventError, match="event_id"):
        store.add_event(create)
    assert store.rooms() == []
