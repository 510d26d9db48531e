"""The store's behaviour: the seed example, bad input, outliers, given state, persistence."""
import pytest

import roomstate
from roomstate import _names
from roomstate import ConflictError, InvalidEventError, MissingEventError, ReadOnlyError, StoreFormatError
from roomstate.ids import STATE_KEY
from roomstate.format import TABLES

ROOM = "!room:example.org"


def ev(eid, type_="m.room.message", state_key=None, prevs=(), room=ROOM, **extra):
    e = {"event_id": eid, "room_id": room, "type": type_, "prev_events": list(prevs)}
    if state_key is not None:
        e["state_key"] = state_key
    e.update(extra)
    return e


def member(eid, user, membership, prevs, **kw):
    return ev(eid, "m.room.member", user, prevs, content={"membership": membership}, **kw)


def dump(store):
    """Every key and value of every table: a store is unchanged when this is."""
    out = {}
    backend = store.backend
    txn = backend.begin_read()
    try:
        for name in TABLES:
            out[name] = [(bytes(k), bytes(v)) for k, v in txn.cursor(db=backend.tables[name])]
    finally:
        txn.abort()
        backend.reader_done()
    return out


SIX = [
    ev("$1", "m.room.create", ""),
    member("$2", "@alice:x", "join", ["$1"]),
    member("$3", "@bob:x", "join", ["$2"]),
    ev("$4", prevs=["$3"]),
    member("$5", "@alice:x", "leave", ["$4"]),
    ev("$6", prevs=["$5"]),
]


def test_seed_example_states_before(store):
    for e in SIX:
        store.add_event(e)
    ids = {
        1: ("m.room.create", ""),
        2: ("m.room.member", "@alice:x"),
        3: ("m.room.member", "@bob:x"),
        5: ("m.room.member", "@alice:x"),
    }

    def st(*nums):
        return {ids[n]: f"${n}" for n in nums}

    assert store.state_before("$3") == st(1, 2)
    assert store.state_before("$4") == st(1, 2, 3)
    assert store.state_before("$5") == st(1, 2, 3)
    # The seed README's table said {1,3,6}; the semantics give {1,3,5}.
    assert store.state_before("$6") == st(1, 3, 5)
    assert store.state_after("$5") == st(1, 3, 5)
    assert store.members("$6") == ["@bob:x"]
    assert store.members("$6", "leave") == ["@alice:x"]
    assert store.members("$5") == ["@alice:x", "@bob:x"]
    assert store.get_state("$6", "m.room.member", "@alice:x") == "$5"
    assert store.get_state("$5", "m.room.member", "@alice:x") == "$2"
    assert store.get_state("$5", "m.room.member", "@alice:x", after=True) == "$5"
    d = store.state_diff("$3", "$6")
    assert d.added == {("m.room.member", "@alice:x"): "$5"}
    assert d.removed == {("m.room.member", "@alice:x"): "$2"}
    assert store.forward_extremities(ROOM) == ["$6"]
    assert store.current_state(ROOM) == st(1, 3, 5)
    assert store.has_event("$4") and not store.has_event("$7")
    assert store.event_depth("$6") == 6


def test_statemap_is_a_readonly_mapping(store):
    for e in SIX:
        store.add_event(e)
    s = store.state_after("$6")
    assert len(s) == 3
    assert ("m.room.create", "") in s
    assert ("m.room.create", "x") not in s
    assert 5 not in s
    with pytest.raises(KeyError):
        s[("nope", "")]
    assert s.entries.dtype == roomstate.ENTRY_DTYPE
    assert list(s.entries["type"]) == sorted(s.entries["type"])
    with pytest.raises(ValueError):
        s.entries["event"][0] = 0
    with pytest.raises(TypeError):
        s[("m.room.create", "")] = "$x"  # type: ignore[index]
    assert s.to_dict() == dict(s.items())


def test_statemap_reads_in_any_order(store):
    """dict(), items(), keys(), values() and lookups in any order or with equal
    (not identical) keys all agree, warm or cold."""
    for e in SIX:
        store.add_event(e)
    want = {("m.room.create", ""): "$1", ("m.room.member", "@alice:x"): "$5", ("m.room.member", "@bob:x"): "$3"}
    for _ in range(2):  # the second round reads from the NID caches
        s = store.state_after("$6")
        assert s[("m.room.member", "@bob:x")] == "$3"  # before the strings are listed
        assert dict(s) == want and s.to_dict() == want
        assert list(s.keys()) == list(want) and list(s.values()) == list(want.values())
        assert list(s.items()) == list(want.items()) and s.event_ids() == list(want.values())
        for key in reversed(list(s)):
            assert s[key] == want[key]
            assert s[(str(key[0]), "".join(key[1]))] == want[key]
        assert s.get(("m.room.topic", "")) is None and s.get(("m.room.create", "")) == "$1"
        assert {k: s[k] for k in s} == want and dict(s) == want
        with pytest.raises(KeyError):
            s[("m.room.member", "@carol:x")]



def test_state_strings_cold_warm_in_a_batch_and_past_the_cache_bounds(tmp_path):
    path = tmp_path / "s"
    with roomstate.open(path, check_auth=False) as s:
        for e in SIX:
            s.add_event(e)
    want = {("m.room.create", ""): "$1", ("m.room.member", "@alice:x"): "$5", ("m.room.member", "@bob:x"): "$3"}
    with roomstate.open(path, check_auth=False) as s:  # a fresh store object: every string read from LMDB
        assert dict(s.state_after("$6")) == want
        assert dict(s.state_after("$6")) == want  # then from the caches
    with roomstate.open(path, check_auth=False) as s:  # caches too small for one state: the slow path
        s._tables.ids.pairs = _names.NameCache(1)
        s._tables.ids.to_str[STATE_KEY] = _names.NameCache(1)
        s._tables.events.to_str = _names.NameCache(1)
        assert dict(s.state_after("$6")) == want and s.state_after("$6").to_dict() == want
    with roomstate.open(path, check_auth=False) as s:
        with s.batch() as b:
            b.add_event(member("$7", "@carol:x", "join", ["$6"]))
            # read in the batch's own transaction: "@carol:x" and "$7" are not committed
            inside = dict(s.state_after("$7"))
        assert inside == {**want, ("m.room.member", "@carol:x"): "$7"}
        assert dict(s.state_after("$7")) == inside


def test_types_filter(store):
    for e in SIX:
        store.add_event(e)
    assert store.state_after("$6", types=[("m.room.member", None)]) == {
        ("m.room.member", "@alice:x"): "$5",
        ("m.room.member", "@bob:x"): "$3",
    }
    assert store.state_after("$6", types=[("m.room.member", "@bob:x"), ("m.room.create", "")]) == {
        ("m.room.member", "@bob:x"): "$3",
        ("m.room.create", ""): "$1",
    }
    assert store.state_after("$6", types=[("m.room.topic", None), ("m.room.member", "@zed:x")]) == {}
    assert store.state_after("$6", types=[]) == {}
    with pytest.raises(TypeError):
        store.state_after("$6", types=["m.room.member"])
    assert store.current_state(ROOM, types=[("m.room.create", None)]) == {("m.room.create", ""): "$1"}


def test_rejected_and_non_state_events_share_a_snapshot(store):
    store.add_event(ev("$1", "m.room.create", ""))
    store.add_event(ev("$2", "m.room.topic", "", ["$1"], rejected=True))
    store.add_event(ev("$3", prevs=["$2"]))
    assert store.state_after("$2") == {("m.room.create", ""): "$1"}
    assert store.state_before("$3") == {("m.room.create", ""): "$1"}
    before = store.stats()["snapshots"]
    store.add_event(ev("$4", prevs=["$3"]))
    assert store.stats()["snapshots"] == before


def test_prev_events_with_hashes_and_given_depth(store):
    store.add_event(ev("$1", "m.room.create", "", depth=10))
    store.add_event(ev("$2", prevs=[["$1", {"sha256": "abc"}]]))
    assert store.event_depth("$2") == 11
    assert store.state_before("$2") == {("m.room.create", ""): "$1"}


def fork(store):
    store.add_event(ev("$1", "m.room.create", ""))
    store.add_event(member("$2", "@a:x", "join", ["$1"]))
    store.add_event(ev("$3", "m.room.topic", "", ["$2"], depth=5))
    store.add_event(ev("$4", "m.room.topic", "", ["$2"], depth=3))


def test_merge_raise_on_conflict_raises_naming_keys(tmp_path):
    with roomstate.open(tmp_path / "s", check_auth=False, resolver="raise_on_conflict") as store:
        fork(store)
        before = dump(store)
        with pytest.raises(ConflictError) as err:
            store.add_event(ev("$5", prevs=["$3", "$4"]))
        assert "m.room.topic" in str(err.value)
        assert err.value.keys == [("m.room.topic", "")]
        assert dump(store) == before
        with pytest.raises(ConflictError):
            store.current_state(ROOM)
        store.add_event(ev("$5", prevs=["$3", "$4"]), resolver="newest_event")
        assert store.get_state("$5", "m.room.topic", "") == "$3"


def test_merge_missing_key_is_conflicted_and_resolver_may_drop(tmp_path):
    seen = {}

    def drop_all(ctx):
        seen["conflicted"] = ctx.conflicted
        seen["unconflicted"] = dict(ctx.unconflicted)
        seen["sets"] = [dict(s) for s in ctx.state_sets]
        seen["room"] = ctx.room_id
        return {}

    with roomstate.open(tmp_path / "s", resolver=drop_all, check_auth=False) as store:
        store.add_event(ev("$1", "m.room.create", ""))
        store.add_event(member("$2", "@a:x", "join", ["$1"]))
        store.add_event(member("$3", "@b:x", "join", ["$1"]))
        store.add_event(ev("$4", prevs=["$2", "$3"]))
        assert seen["conflicted"] == {("m.room.member", "@a:x"): {"$2"}, ("m.room.member", "@b:x"): {"$3"}}
        assert seen["unconflicted"] == {("m.room.create", ""): "$1"}
        assert seen["room"] == ROOM
        assert len(seen["sets"]) == 2
        assert store.state_before("$4") == {("m.room.create", ""): "$1"}
        assert sorted(store.forward_extremities(ROOM)) == ["$4"]


def test_bad_resolver_output_is_refused(tmp_path):
    with roomstate.open(tmp_path / "s", resolver=lambda ctx: {("m.room.topic", ""): "$2"}, check_auth=False) as store:
        fork(store)
        before = dump(store)
        with pytest.raises(InvalidEventError):
            store.add_event(ev("$5", prevs=["$3", "$4"]))
        assert dump(store) == before


BAD = [
    # (an event without "event_id" gets the one its room version computes:
    # tests/test_event_ids_on_input.py)
    ({"event_id": 5, "room_id": ROOM, "type": "t"}, "event_id"),
    ({"event_id": "", "room_id": ROOM, "type": "t"}, "event_id"),
    ({"event_id": "$x", "type": "t"}, "room_id"),
    ({"event_id": "$x", "room_id": None, "type": "t"}, "room_id"),
    ({"event_id": "$x", "room_id": ROOM}, "type"),
    ({"event_id": "$x", "room_id": ROOM, "type": ["t"]}, "type"),
    ({"event_id": "$x", "room_id": ROOM, "type": "t", "state_key": 3}, "state_key"),
    ({"event_id": "$x", "room_id": ROOM, "type": "t", "prev_events": "$1"}, "prev_events"),
    ({"event_id": "$x", "room_id": ROOM, "type": "t", "prev_events": [1]}, "prev_events"),
    ({"event_id": "$x", "room_id": ROOM, "type": "t", "prev_events": [["$1"]]}, "prev_events"),
    ({"event_id": "$x", "room_id": ROOM, "type": "t", "prev_events": ["$x"]}, "prev_events"),
    ({"event_id": "$x", "room_id": ROOM, "type": "t", "depth": "3"}, "depth"),
    ({"event_id": "$x", "room_id": ROOM, "type": "t", "depth": -1}, "depth"),
    ({"event_id": "$x", "room_id": ROOM, "type": "t", "rejected": 1}, "rejected"),
    ({"event_id": "$x", "room_id": ROOM, "type": "m.room.member", "state_key": "@a", "content": []}, "content"),
    (
        {"event_id": "$x", "room_id": ROOM, "type": "m.room.member", "state_key": "@a", "content": {"membership": 1}},
        "content.membership",
    ),
    ({"event_id": "$x", "room_id": "!other:x", "type": "t", "prev_events": ["$1"]}, "prev_events"),
    ({"event_id": "$1", "room_id": ROOM, "type": "m.room.create", "state_key": "x"}, "state_key"),
    ({"event_id": "$1", "room_id": ROOM, "type": "m.room.other", "state_key": ""}, "type"),
    ({"event_id": "$2", "room_id": ROOM, "type": "m.room.message", "prev_events": []}, "prev_events"),
    ({"event_id": "$1", "room_id": "!other:x", "type": "m.room.create", "state_key": ""}, "room_id"),
    ({"event_id": "$2", "room_id": ROOM, "type": "m.room.message", "prev_events": ["$1"], "depth": 99}, "depth"),
    ({"event_id": "$1", "room_id": ROOM, "type": "m.room.create", "state_key": "", "rejected": True}, "rejected"),
    ("not a mapping", "event"),
]


@pytest.mark.parametrize("bad, field", BAD, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD)])
def test_bad_input_names_field_and_changes_nothing(store, bad, field):
    store.add_event(ev("$1", "m.room.create", ""))
    store.add_event(ev("$2", prevs=["$1"]))
    store.add_event(ev("$o", prevs=["$far"], room="!other:x"), outlier=True)
    before = dump(store)
    with pytest.raises(InvalidEventError) as err:
        store.add_event(bad)
    assert err.value.field == field
    assert field in str(err.value)
    assert dump(store) == before
    with pytest.raises(InvalidEventError):
        store.add_events([ev("$ok", prevs=["$2"]), bad])
    assert dump(store) == before
    assert not store.has_event("$ok")


def test_same_event_again_is_a_no_op(store):
    store.add_event(ev("$1", "m.room.create", ""))
    store.add_event(ev("$2", prevs=["$1"], sender="@a", content={"body": "hi"}))
    before = dump(store)
    store.add_event(ev("$2", prevs=["$1"], sender="@a", content={"body": "fields not stored are ignored"}))
    store.add_event(ev("$2", prevs=["$1"], depth=2))
    # The sender is stored (auth data): another one is another event.
    with pytest.raises(roomstate.InvalidEventError, match="sender"):
        store.add_event(ev("$2", prevs=["$1"], sender="@b"))
    assert store.add_events([ev("$1", "m.room.create", ""), ev("$2", prevs=["$1"])]) == 0
    assert dump(store) == before


def test_add_events_counts_what_it_wrote(store):
    store.add_event(ev("$1", "m.room.create", ""))
    # $1 is stored already and $3 repeats itself: two of the four are new.
    events = [ev("$1", "m.room.create", ""), ev("$2", prevs=["$1"]), ev("$3", prevs=["$2"]), ev("$3", prevs=["$2"])]
    assert store.add_events(events) == 2
    assert store.add_events(events) == 0
    with store.batch() as b:
        assert b.add_events([ev("$3", prevs=["$2"]), ev("$4", prevs=["$3"])]) == 1


def test_unknown_prev_and_unknown_reads(store):
    store.add_event(ev("$1", "m.room.create", ""))
    before = dump(store)
    with pytest.raises(MissingEventError) as err:
        store.add_event(ev("$2", prevs=["$nope"]))
    assert err.value.event_id == "$nope"
    assert dump(store) == before
    for call in (
        lambda: store.state_before("$nope"),
        lambda: store.state_after("$nope"),
        lambda: store.get_state("$nope", "m.room.create", ""),
        lambda: store.members("$nope"),
        lambda: store.state_diff("$1", "$nope"),
        lambda: store.current_state("!nope:x"),
        lambda: store.forward_extremities("!nope:x"),
        lambda: store.event_depth("$nope"),
    ):
        with pytest.raises(MissingEventError):
            call()
    with pytest.raises(ValueError):
        store.members("$1", "joined")


def test_outliers_and_given_state(store):
    store.add_event(ev("$1", "m.room.create", ""))
    store.add_event(member("$2", "@a:x", "join", ["$1"]))
    # Auth events of a room joined over federation: their prevs are unknown.
    store.add_event(ev("$pl", "m.room.power_levels", "", ["$far1"]), outlier=True)
    store.add_event(member("$j", "@b:x", "join", ["$far2"]), outlier=True)
    assert store.has_event("$pl") and not store.has_event("$far1")
    with pytest.raises(MissingEventError):
        store.state_before("$pl")
    with pytest.raises(MissingEventError):
        store.add_event(ev("$child", prevs=["$pl"]))  # an outlier's state is unknown
    assert store.forward_extremities(ROOM) == ["$2"]
    # The join event's state is given by the resolving server.
    given = {("m.room.create", ""): "$1", ("m.room.power_levels", ""): "$pl", ("m.room.member", "@a:x"): "$2"}
    store.add_event(member("$j", "@b:x", "join", ["$far2"]), state_before=given)
    assert store.state_before("$j") == given
    assert store.state_after("$j") == {**given, ("m.room.member", "@b:x"): "$j"}
    assert sorted(store.forward_extremities(ROOM)) == ["$2", "$j"]
    assert store.members("$j", after=True) == ["@a:x", "@b:x"]
    store.add_event(ev("$m", prevs=["$j"]))
    assert store.state_before("$m") == store.state_after("$j")
    # The missing prev arrives later: it has a child already, so it is no extremity.
    store.add_event(ev("$far2", prevs=["$2"]))
    assert "$far2" not in store.forward_extremities(ROOM)


def test_given_state_must_name_stored_state_events(store):
    store.add_event(ev("$1", "m.room.create", ""))
    store.add_event(ev("$2", prevs=["$1"]))
    before = dump(store)
    with pytest.raises(MissingEventError):
        store.add_event(ev("$3", prevs=["$x"]), state_before={("m.room.create", ""): "$nope"})
    with pytest.raises(InvalidEventError):
        store.add_event(ev("$3", prevs=["$x"]), state_before={("m.room.topic", ""): "$1"})
    with pytest.raises(InvalidEventError):
        store.add_event(ev("$3", prevs=["$x"]), state_before={("m.room.message", ""): "$2"})
    with pytest.raises(InvalidEventError):
        store.add_event(ev("$3", prevs=["$x"]), state_before=[("m.room.create", "", "$1")])
    assert dump(store) == before


def test_batch_commits_once_and_each_call_is_atomic(store):
    with store.batch() as b:
        b.add_event(ev("$1", "m.room.create", ""))
        with pytest.raises(MissingEventError):
            b.add_event(ev("$2", prevs=["$nope"]))
        b.add_event(ev("$3", prevs=["$1"]))
        assert b.add_events([ev("$4", prevs=["$3"])]) == 1
    assert [store.has_event(e) for e in ("$1", "$2", "$3", "$4")] == [True, False, True, True]
    before = dump(store)
    with pytest.raises(RuntimeError):
        with store.batch() as b:
            b.add_event(ev("$5", prevs=["$4"]))
            raise RuntimeError("abandon the batch")
    assert dump(store) == before


def test_identical_blocks_and_snapshots_are_shared_across_rooms(store):
    for room in ("!a:x", "!b:x"):
        store.add_event(ev("$c" + room, "m.room.create", "", room=room))
    s = store.stats()
    # Two create events give two distinct one-entry states, but the empty state is one snapshot.
    assert s["snapshots"] == 3
    with store.batch() as b:
        b.add_event(ev("$given", prevs=["$x"], room="!a:x"), state_before={("m.room.create", ""): "$c!a:x"})
    assert store.stats()["snapshots"] == 3  # the given state is the create event's state: reused


def test_persistence_and_readonly(tmp_path):
    path = tmp_path / "s"
    with roomstate.open(path, resolver="newest_event", check_auth=False) as store:
        for e in SIX:
            store.add_event(e)
        answers = (dict(store.state_before("$6")), store.members("$6"), store.forward_extremities(ROOM))
    with roomstate.open(path, check_auth=False) as store:
        assert (dict(store.state_before("$6")), store.members("$6"), store.forward_extremities(ROOM)) == answers
    with roomstate.open(path, readonly=True) as ro:
        assert dict(ro.state_before("$6")) == answers[0]
        before = dump(ro)
        with pytest.raises(ReadOnlyError):
            ro.add_event(ev("$7", prevs=["$6"]))
        with pytest.raises(ReadOnlyError):
            ro.add_events([ev("$7", prevs=["$6"])])
        with pytest.raises(ReadOnlyError):
            with ro.batch():
                pass
        assert dump(ro) == before


def test_open_errors(tmp_path):
    with pytest.raises(StoreFormatError):
        roomstate.open(tmp_path / "missing", readonly=True)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "notastore").mkdir()
    (tmp_path / "notastore" / "file.txt").write_text("hello")
    with pytest.raises(StoreFormatError):
        roomstate.open(tmp_path / "notastore", check_auth=False)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StoreFormatError):
        roomstate.open(tmp_path / "afile", check_auth=False)
    with pytest.raises(ValueError):
        roomstate.open(tmp_path / "s", resolver="nope", check_auth=False)


def test_closed_store_refuses(tmp_path):
    store = roomstate.open(tmp_path / "s", check_auth=False)
    store.close()
    store.close()
    with pytest.raises(roomstate.RoomStateError):
        store.has_event("$1")
    with pytest.raises(roomstate.RoomStateError):
        store.add_event(ev("$1", "m.room.create", ""))


def test_map_grows_by_itself(tmp_path):
    with roomstate.open(tmp_path / "s", map_size=64 * 1024, resolver="newest_event", check_auth=False) as store:
        start = store.env.info()["map_size"]
        events = [ev("$0", "m.room.create", "")]
        events += [member(f"${i}", f"@user{i}:example.org", "join", [f"${i - 1}"]) for i in range(1, 3000)]
        assert store.add_events(events) == 3000
        with store.batch() as b:
            for i in range(3000, 4000):
                b.add_event(member(f"${i}", f"@user{i}:example.org", "join", [f"${i - 1}"]))
        assert store.env.info()["map_size"] > start
        assert len(store.state_after("$3999")) == 4000


def test_map_growth_during_a_long_streamed_call(tmp_path, monkeypatch):
    """An iterator's events are kept for a replay only up to REPLAY_LIMIT: past that, a
    full map rolls the call back with a clear error, the map grows, and calling again
    works.  A list is simply read again, however long."""
    from roomstate import transactions

    monkeypatch.setattr(transactions, "REPLAY_LIMIT", 10)
    events = [ev("$0", "m.room.create", "")]
    events += [member(f"${i}", f"@user{i}:example.org", "join", [f"${i - 1}"]) for i in range(1, 3000)]
    with roomstate.open(tmp_path / "s", map_size=64 * 1024, resolver="newest_event", check_auth=False) as store:
        before = dump(store)
        with pytest.raises(roomstate.StorageError, match="call add_events again"):
            store.add_events(iter(events))
        assert dump(store) == before
        assert store.add_events(events) == 3000  # a list: replayed as often as needed
        assert len(store.state_after("$2999")) == 3000
