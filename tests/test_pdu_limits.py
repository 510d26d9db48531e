"""The PDU format's limits on ``prev_events`` (20) and ``auth_events`` (10), issue 14.

Every room version's PDU format says ``auth_events`` "Must contain less than or equal
to 10 events" and ``prev_events`` "Must contain less than or equal to 20 events".  An
event over a limit is invalid input where the store checks the Matrix rules
(``check_auth=True``): InvalidEventError naming the field and the limit, the store
unchanged, in ``add_event``, ``add_events``, ``validate_event`` and the command line.
With ``check_auth=False`` events are taken as given: only the format's own bounds
(``MAX_PREVS``, ``MAX_AUTH``) apply.
"""
import json

import pytest

import roomstate
from roomstate import InvalidEventError
from roomstate.matrix import validate_event
from roomstate.matrix.pdu import MAX_AUTH_EVENTS, MAX_PREV_EVENTS

from test_cli import one_line_error, run
from test_store import dump

ROOM = "!limits:a.test"
ALICE = "@alice:a.test"
BRANCHES = 21


def _pdu(event_id, type_, prevs, auth, depth, state_key=None, content=None):
    ev = {"event_id": event_id, "room_id": ROOM, "type": type_, "sender": ALICE, "content": content or {},
          "prev_events": list(prevs), "auth_events": list(auth), "origin_server_ts": depth, "depth": depth}
    if state_key is not None:
        ev["state_key"] = state_key
    return ev


def _room():
    """A create event, alice's join, and BRANCHES messages forking from the join."""
    create = _pdu("$create", "m.room.create", [], [], 1, "", {"room_version": "10", "creator": ALICE})
    join = _pdu("$join", "m.room.member", ["$create"], ["$create"], 2, ALICE, {"membership": "join"})
    tips = [_pdu(f"$tip{i}", "m.room.message", ["$join"], ["$create", "$join"], 3) for i in range(BRANCHES)]
    return [create, join, *tips]


def _merge(n_prevs, auth=("$create", "$join"), event_id="$merge"):
    return _pdu(event_id, "m.room.message", [f"$tip{i}" for i in range(n_prevs)], auth, 4)


@pytest.fixture
def store(tmp_path):
    with roomstate.open(tmp_path / "s", resolver="newest_event") as s:
        s.add_events(_room())
        yield s


def test_the_limits_are_the_specifications():
    assert (MAX_PREV_EVENTS, MAX_AUTH_EVENTS) == (20, 10)


@pytest.mark.parametrize("how", ["add_event", "add_events", "batch"])
def test_an_event_with_too_many_prev_events_is_invalid_input(store, how):
    before = dump(store)
    with pytest.raises(InvalidEventError, match="has 21 entries; a Matrix event .PDU. has at most 20") as info:
        if how == "add_event":
            store.add_event(_merge(21))
        elif how == "add_events":
            store.add_events([_merge(20, event_id="$fine"), _merge(21)])
        else:
            with store.batch() as b:
                b.add_event(_merge(21))
    assert (info.value.field, info.value.event_id) == ("prev_events", "$merge")
    assert dump(store) == before  # nothing stored, also not the good event before it
    store.add_event(_merge(MAX_PREV_EVENTS))  # at the limit: stored, its state merged
    assert sorted(store.forward_extremities(ROOM)) == ["$merge", "$tip20"]
    assert not store.event("$merge").rejected


def test_a_prev_listed_twice_counts_twice(store):
    ev = _merge(20)
    ev["prev_events"].append("$tip0")
    with pytest.raises(InvalidEventError, match="has 21 entries"):
        store.add_event(ev)


def test_an_event_with_too_many_auth_events_is_invalid_input(store):
    before = dump(store)
    auth = ["$create", "$join"] + [f"$tip{i}" for i in range(9)]
    with pytest.raises(InvalidEventError, match="has 11 entries; a Matrix event .PDU. has at most 10") as info:
        store.add_event(_merge(1, auth))
    assert info.value.field == "auth_events"
    with pytest.raises(InvalidEventError, match="auth_events"):
        store.add_event(_merge(1, auth), outlier=True)  # outliers are Matrix events too
    assert dump(store) == before
    # Ten is within the format: the authorization rules decide (these are not its auth events).
    store.add_event(_merge(1, auth[:MAX_AUTH_EVENTS]))
    assert store.event("$merge").rejected


def test_without_check_auth_events_are_taken_as_given(tmp_path):
    with roomstate.open(tmp_path / "s", resolver="newest_event", check_auth=False) as s:
        s.add_events(_room())
        s.add_event(_merge(BRANCHES, auth=["$create", "$join"] + [f"$tip{i}" for i in range(12)]))
        assert len(s.event("$merge").prev_events) == BRANCHES
        assert len(s.event("$merge").auth_events) == 14


def test_validate_event_applies_the_limits_to_pdus():
    with pytest.raises(InvalidEventError, match="prev_events"):
        validate_event(_merge(21), "10")
    with pytest.raises(InvalidEventError, match="auth_events"):
        validate_event(_merge(1, [f"$a{i}" for i in range(11)]), "10")
    assert len(validate_event(_merge(20), "10").prev_events) == 20
    assert len(validate_event(_merge(21), "10", auth_data=False).prev_events) == 21  # not a PDU to check


def test_the_command_line_names_the_line_and_keeps_the_lines_before(tmp_path):
    lines = [*_room(), _merge(21)]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(ev) + "\n" for ev in lines))
    db = tmp_path / "db"
    message = one_line_error(run("import", "--db", db, path), 2)
    assert message.startswith(f"{path}:{len(lines)}: ") and "prev_events" in message and "at most 20" in message
    with roomstate.open(db, readonly=True) as s:
        assert s.stats()["events"] == len(lines) - 1
