"""``check_auth=True``: every event is checked against the authorization rules of its room
version, and one that fails is stored rejected with the rule it broke."""
import pytest

import roomstate
from roomstate import InvalidEventError, MissingEventError, workloads

from test_store import dump


@pytest.fixture(params=["lmdb", "memory"])
def checked(request, tmp_path):
    path = ":memory:" if request.param == "memory" else tmp_path / "store"
    with roomstate.open(path, resolver="newest_event", check_auth=True) as s:
        yield s


def rejected(store, events):
    return {e["event_id"]: store.event(e["event_id"]).rejected_reason for e in events if store.event(e["event_id"]).rejected}


MAKERS = [
    lambda: workloads.hq(3000, seed=1),
    lambda: workloads.hq(1500, seed=5, room_version="6"),
    lambda: workloads.many_rooms(n_rooms=4, max_members=30, seed=3, room_version="8"),
    lambda: workloads.busy(1500, seed=2),
    lambda: workloads.fork_storm(n_branches=3, branch_len=40, n_members=20, seed=4),
]


@pytest.mark.parametrize("make", MAKERS, ids=["hq-v10", "hq-v6", "many_rooms-v8", "busy", "fork_storm"])
def test_the_store_rejects_exactly_the_events_that_break_the_rules(checked, make):
    events = list(make())
    expected = workloads.expected_rejections(events)
    assert checked.add_events(events) == len(events)
    if make is MAKERS[0]:
        assert expected  # the workload breaks the rules somewhere: the test can fail
    got = rejected(checked, events)
    assert set(got) == set(expected)
    assert all(r.startswith(("rule ", "against the state before the event: rule ")) for r in got.values()), got
    for eid in got:  # a rejected event changes no state
        assert checked.state_after(eid) == checked.state_before(eid)


def room(*, sender="@a:x"):
    create = {"event_id": "$c", "room_id": "!r:x", "type": "m.room.create", "state_key": "", "sender": sender,
              "content": {"room_version": "10", "creator": sender}, "prev_events": [], "auth_events": [],
              "origin_server_ts": 1, "depth": 1}
    join = {"event_id": "$j", "room_id": "!r:x", "type": "m.room.member", "state_key": sender, "sender": sender,
            "content": {"membership": "join"}, "prev_events": ["$c"], "auth_events": ["$c"],
            "origin_server_ts": 2, "depth": 2}
    return create, join


def test_a_rejected_event_is_stored_with_its_reason(checked):
    checked.add_events(room())
    topic = {"event_id": "$t", "room_id": "!r:x", "type": "m.room.topic", "state_key": "", "sender": "@m:x",
             "content": {"topic": "mine"}, "prev_events": ["$j"], "auth_events": ["$c"],
             "origin_server_ts": 3, "depth": 3}
    checked.add_event(topic)
    info = checked.event("$t")
    assert info.rejected and info.rejected_reason.startswith("rule ")
    assert checked.get_state("$t", "m.room.topic", "", after=True) is None
    assert checked.current_state("!r:x").get(("m.room.topic", "")) is None
    checked.add_event(topic)  # the same event again: nothing happens
    ok = {**topic, "event_id": "$t2", "sender": "@a:x", "auth_events": ["$c", "$j"]}
    checked.add_event(ok)
    assert not checked.event("$t2").rejected
    assert checked.get_state("$t2", "m.room.topic", "", after=True) == "$t2"
    assert checked.room_version("!r:x") == "10"


def test_the_state_before_is_checked_too(checked):
    """Auth events that allow the event, while the state before it does not (the sender left)."""
    create, join = room()
    leave = {**join, "event_id": "$leave", "content": {"membership": "leave"}, "prev_events": ["$j"],
             "auth_events": ["$c", "$j"], "depth": 3}
    msg = {"event_id": "$m", "room_id": "!r:x", "type": "m.room.message", "sender": "@a:x", "content": {},
           "prev_events": ["$leave"], "auth_events": ["$c", "$j"], "origin_server_ts": 4, "depth": 4}
    checked.add_events([create, join, leave, msg])
    assert checked.event("$m").rejected_reason.startswith("against the state before the event: rule ")


def test_an_outlier_is_checked_against_its_auth_events(checked):
    create, join = room()
    checked.add_event(create)
    intruder = {"event_id": "$o", "room_id": "!r:x", "type": "m.room.name", "state_key": "", "sender": "@z:x",
                "content": {"name": "n"}, "prev_events": ["$unknown"], "auth_events": ["$c"],
                "origin_server_ts": 5, "depth": 9}
    checked.add_event(intruder, outlier=True)
    assert checked.event("$o").outlier and checked.event("$o").rejected


@pytest.mark.parametrize("field", ["sender", "auth_events"])
def test_events_without_auth_data_are_refused(checked, field):
    create, join = room()
    checked.add_event(create)
    before = dump(checked)
    del join[field]
    with pytest.raises(InvalidEventError, match=field):
        checked.add_event(join)
    assert not checked.has_event("$j")
    assert dump(checked) == before


def test_a_room_without_its_create_event_is_refused(checked):
    msg = {"event_id": "$m", "room_id": "!nowhere:x", "type": "m.room.message", "sender": "@a:x", "content": {},
           "prev_events": [], "auth_events": [], "origin_server_ts": 1, "depth": 1}
    with pytest.raises(MissingEventError, match="create event"):
        checked.add_event(msg)


def test_the_caller_may_still_reject(checked):
    create, join = room()
    checked.add_events([create, {**join, "rejected": True}])
    info = checked.event("$j")
    assert info.rejected and "caller" in info.rejected_reason


def test_without_check_auth_nothing_is_checked(tmp_path):
    with roomstate.open(tmp_path / "s", resolver="newest_event", check_auth=False) as s:
        events = list(workloads.hq(3000, seed=1))
        assert workloads.expected_rejections(events)
        s.add_events(events)
        assert not rejected(s, events)


DIFFERENTIAL = [
    *[(f"hq-v{v}", lambda v=v: workloads.hq(3000, seed=1, room_version=v)) for v in ("1", "3", "6", "8", "10", "11", "12")],
    ("busy-v10", lambda: workloads.busy(1500, seed=2)),
    ("many_rooms-v7", lambda: workloads.many_rooms(n_rooms=6, max_members=40, seed=3, room_version="7")),
    ("fork_storm", lambda: workloads.fork_storm(n_branches=4, branch_len=60, n_members=25, seed=4)),
]


@pytest.mark.parametrize("make", [m for _, m in DIFFERENTIAL], ids=[n for n, _ in DIFFERENTIAL])
def test_the_plain_cases_decide_as_every_rule_does(tmp_path, make):
    """The checker decides messages, own joins and leaves on NIDs (``AuthChecker.plain``);
    with that off, every event goes through every rule: the two agree on every event."""
    events = list(make())
    reasons = []
    for plain in (True, False):
        with roomstate.open(tmp_path / f"s{plain}", resolver="newest_event", check_auth=True) as s:
            s._writer.checker.plain = plain
            s.add_events(events)
            reasons.append([s.event(e["event_id"]).rejected_reason for e in events])
    assert reasons[0] == reasons[1]
    # and both reject exactly what the workload breaks (hq and busy break it somewhere)
    assert {e["event_id"] for e, r in zip(events, reasons[0]) if r} == set(workloads.expected_rejections(events))


@pytest.mark.parametrize("version, refused", [("5", False), ("6", True), ("10", True)])
@pytest.mark.parametrize("where, value", [("content", {"x": 1.5}), ("content", {"n": 2**60}),
                                          ("content", {"deep": [{"f": 0.5}]}), ("origin_server_ts", 2**60)])
def test_floats_and_big_integers_are_invalid_from_room_version_6(tmp_path, version, refused, where, value):
    events = list(workloads.hq(8, seed=1, room_version=version))
    with roomstate.open(tmp_path / "s", resolver="newest_event") as s:
        s.add_events(events)
        before = dump(s)
        last = events[-1]
        msg = {"event_id": "$odd", "room_id": last["room_id"], "type": "m.room.message", "sender": last["sender"],
               "content": {}, "origin_server_ts": 9, "prev_events": [last["event_id"]],
               "auth_events": [events[0]["event_id"]], "depth": 99}
        msg[where] = value if where != "content" else {**msg["content"], **value}
        if refused:
            with pytest.raises(InvalidEventError) as err:
                s.add_event(msg)
            assert err.value.field.startswith(where) and f"room version {version}" in err.value.reason
            assert dump(s) == before
        else:
            s.add_event(msg)  # room versions 1-5 take them (a float is not a level there either)
            assert s.has_event("$odd")


def test_content_nested_past_the_stack_is_invalid_not_a_crash(checked):
    events = list(workloads.hq(6, seed=1))
    checked.add_events(events)
    before = dump(checked)
    deep = cur = {}
    for _ in range(5000):
        cur["a"] = {}
        cur = cur["a"]
    msg = {"event_id": "$deep", "room_id": events[0]["room_id"], "type": "m.room.message",
           "sender": events[0]["sender"], "content": deep, "prev_events": [events[-1]["event_id"]],
           "auth_events": [events[0]["event_id"]], "origin_server_ts": 1, "depth": 9}
    with pytest.raises(InvalidEventError, match="nested too deeply"):
        checked.add_event(msg)
    assert dump(checked) == before
