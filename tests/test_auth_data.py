"""Auth data kept with each event (format version 2): sender, origin_server_ts, auth
events; read back by ``event()`` and walked by ``auth_chain()``, on both backends."""
import pytest

import roomstate
from roomstate import EventInfo, InvalidEventError, MissingEventError

from roomstate.ids import STATE_KEY

from test_store import dump, ev, member

from test_store import ROOM
A, B = "@a:x", "@b:x"


def pdu(eid, type_="m.room.message", state_key=None, prevs=(), auth=(), sender=A, ts=1000, **extra):
    return ev(eid, type_, state_key, prevs, sender=sender, origin_server_ts=ts, auth_events=list(auth), **extra)


def room(store):
    store.add_events([
        pdu("$create", "m.room.create", "", ts=1, content={"room_version": "10"}),
        pdu("$a-join", "m.room.member", A, ["$create"], ["$create"], ts=2, content={"membership": "join"}),
        pdu("$pl", "m.room.power_levels", "", ["$a-join"], ["$create", "$a-join"], ts=3),
        pdu("$b-invite", "m.room.member", B, ["$pl"], ["$create", "$pl", "$a-join"], ts=4,
            content={"membership": "invite"}),
        pdu("$b-join", "m.room.member", B, ["$b-invite"], ["$create", "$pl", "$b-invite"], sender=B, ts=5,
            content={"membership": "join"}),
        pdu("$msg", prevs=["$b-join"], auth=["$pl", "$b-join", "$create", "$pl"], sender=B, ts=6),
    ])


def test_event_info(store):
    room(store)
    info = store.event("$msg")
    assert isinstance(info, EventInfo)
    assert info == EventInfo(
        event_id="$msg", room_id=ROOM, type="m.room.message", state_key=None, sender=B, origin_server_ts=6,
        depth=6, prev_events=["$b-join"], auth_events=["$create", "$pl", "$b-join"], membership=None,
        outlier=False, rejected=False, rejected_reason=None,
    )  # auth events in NID order, the repeated $pl once
    join = store.event("$b-join")
    assert (join.state_key, join.membership, join.sender, join.auth_events) == (B, "join", B, ["$create", "$pl", "$b-invite"])
    assert store.event("$create").auth_events == []
    with pytest.raises(MissingEventError):
        store.event("$nope")


def test_events_without_auth_data_read_as_none(store):
    store.add_event(ev("$1", "m.room.create", ""))
    store.add_event(member("$2", "@m:x", "org.example.other", ["$1"], rejected=True))
    info = store.event("$2")
    assert (info.sender, info.origin_server_ts, info.auth_events) == (None, None, None)
    assert info.membership == ""  # a membership outside the five: only that it is one is kept
    assert info.rejected and "caller" in info.rejected_reason
    assert store.auth_chain(["$2"]) == set()


def test_auth_chain(store):
    room(store)
    assert store.auth_chain(["$msg"]) == {"$create", "$pl", "$b-join", "$b-invite", "$a-join"}
    assert store.auth_chain(["$a-join"]) == {"$create"}
    assert store.auth_chain(["$create"]) == set()
    assert store.auth_chain(["$a-join", "$pl"]) == {"$create", "$a-join"}  # an event another one names
    with pytest.raises(MissingEventError):
        store.auth_chain(["$msg", "$nope"])
    with pytest.raises(TypeError):
        store.auth_chain("$msg")


def test_auth_events_must_be_stored_and_of_the_room(store):
    room(store)
    before = dump(store)
    with pytest.raises(MissingEventError, match="auth event '\\$nope'"):
        store.add_event(pdu("$x", prevs=["$msg"], auth=["$create", "$nope"]))
    store.add_event(pdu("$other-create", "m.room.create", "", room="!other:x"))
    before = dump(store)
    with pytest.raises(InvalidEventError, match="another room"):
        store.add_event(pdu("$y", prevs=["$msg"], auth=["$other-create"]))
    assert dump(store) == before


@pytest.mark.parametrize("field, value, reason", [
    ("sender", 5, "sender"),
    ("origin_server_ts", "now", "origin_server_ts"),
    ("origin_server_ts", -1, "origin_server_ts"),
    ("origin_server_ts", True, "origin_server_ts"),
    ("auth_events", "$create", "auth_events"),
    ("auth_events", [5], "auth_events"),
    ("auth_events", [""], "auth_events"),
    ("auth_events", ["$z"], "auth_events"),  # itself
    ("auth_events", ["$create"] * 65, "auth_events"),
])
def test_bad_auth_fields(store, field, value, reason):
    room(store)
    before = dump(store)
    e = pdu("$z", prevs=["$msg"], auth=["$create"])
    e[field] = value
    with pytest.raises(InvalidEventError, match=reason):
        store.add_event(e)
    assert dump(store) == before


def test_room_version_1_references_are_pairs(store):
    store.add_event(pdu("$c:x", "m.room.create", "", content={}))
    store.add_event(pdu("$j:x", "m.room.member", A, prevs=[["$c:x", {"sha256": "h"}]],
                        auth=[["$c:x", {"sha256": "h"}]], content={"membership": "join"}))
    assert store.event("$j:x").auth_events == ["$c:x"]


def test_the_same_event_again_with_other_auth_data_is_refused(store):
    room(store)
    again = pdu("$msg", prevs=["$b-join"], auth=["$pl", "$b-join", "$create"], sender=B, ts=6)
    store.add_event(again)  # the same: nothing happens
    for field, value in (("sender", A), ("origin_server_ts", 7), ("auth_events", ["$create", "$b-join"])):
        with pytest.raises(InvalidEventError, match=field):
            store.add_event({**again, field: value})


def test_async_reads(tmp_path):
    import asyncio

    async def main():
        async with roomstate.aio.open(str(tmp_path / "s"), check_auth=False) as st:
            await st.add_events([pdu("$create", "m.room.create", "", ts=1),
                                 pdu("$m", prevs=["$create"], auth=["$create"], ts=2)])
            assert (await st.event("$m")).auth_events == ["$create"]
            assert await st.auth_chain(iter(["$m"])) == {"$create"}

    asyncio.run(main())


def test_room_version_and_the_extras_kept(store):
    room(store)  # its create event names room version 10
    assert store.room_version(ROOM) == "10"
    store.add_event(pdu("$v1-create", "m.room.create", "", room="!v1:x", content={"creator": A}))
    assert store.room_version("!v1:x") == "1"  # none named: version 1
    with pytest.raises(MissingEventError):
        store.room_version("!nope:x")
    # What the rules read of a content is kept (state-key strings of canonical JSON); the rest not.
    tables, reader = store._tables, store._reader
    with reader.reading() as tx:
        def extras(eid):
            rec = reader.record(tx, eid)[1]
            return tables.ids.name(tx, STATE_KEY, rec.extras) if rec.extras else None

        assert extras("$create") == '{"room_version":"10"}'
        assert extras("$pl") == "{}"  # a power-levels content is kept whole, an empty one too
        assert extras("$b-join") is None  # a plain join: the membership is in the record
        assert extras("$msg") is None


def test_extras_of_each_kind(store):
    store.add_events([
        pdu("$c", "m.room.create", "", content={"room_version": "9", "m.federate": False, "extra": [1, "x"]}),
        pdu("$pl", "m.room.power_levels", "", ["$c"], ["$c"], content={"users": {A: 100}, "ban": 50}),
        pdu("$jr", "m.room.join_rules", "", ["$pl"], ["$c"], content={"join_rule": "restricted", "allow": [], "x": 1}),
        pdu("$j", "m.room.member", B, ["$jr"], ["$c"], sender=B,
            content={"membership": "join", "join_authorised_via_users_server": A, "displayname": "b"}),
        pdu("$r", "m.room.redaction", None, ["$j"], ["$c"], redacts="$j", content={"reason": "x"}),
    ])
    tables, reader = store._tables, store._reader
    with reader.reading() as tx:
        got = {eid: tables.ids.name(tx, STATE_KEY, reader.record(tx, eid)[1].extras) for eid in ("$c", "$pl", "$jr", "$j", "$r")}
    assert got == {
        "$c": '{"extra":[1,"x"],"m.federate":false,"room_version":"9"}',
        "$pl": '{"ban":50,"users":{"@a:x":100}}',
        "$jr": '{"allow":[],"join_rule":"restricted"}',
        "$j": '{"join_authorised_via_users_server":"@a:x"}',
        "$r": '{"redacts":"$j"}',
    }
    assert store.room_version(ROOM) == "9"


@pytest.mark.parametrize("content, reason", [
    ({"x": float("nan")}, "canonical JSON"),
    ({1: "not a string key"}, "canonical JSON"),
    ({"\udfff": 1}, "canonical JSON"),  # a lone surrogate: no UTF-8
    ({"users": {"@a:x": "\ud800"}}, "canonical JSON"),
    ("not a mapping", "must be a mapping"),
])
def test_extras_that_cannot_be_kept_are_refused(store, content, reason):
    store.add_event(pdu("$c", "m.room.create", "", content={"room_version": "10"}))
    before = dump(store)
    with pytest.raises(InvalidEventError, match=reason) as caught:
        store.add_event(pdu("$pl", "m.room.power_levels", "", ["$c"], ["$c"], content=content))
    assert caught.value.field == "content"
    str(caught.value).encode("utf-8")  # the message prints anywhere: no lone surrogate in it
    assert dump(store) == before


def test_the_same_event_again_with_other_rule_content_is_refused(store):
    store.add_event(pdu("$c", "m.room.create", "", content={"room_version": "10"}))
    store.add_event(pdu("$pl", "m.room.power_levels", "", ["$c"], ["$c"], content={"users": {A: 100}}))
    store.add_event(pdu("$pl", "m.room.power_levels", "", ["$c"], ["$c"], content={"users": {A: 100}}))
    with pytest.raises(InvalidEventError, match="content"):
        store.add_event(pdu("$pl", "m.room.power_levels", "", ["$c"], ["$c"], content={"users": {A: 50}}))


def test_damaged_extras_are_a_store_format_error(tmp_path):
    import lmdb
    import struct

    path = tmp_path / "s"
    with roomstate.open(path, check_auth=False) as s:
        s.add_event(pdu("$c", "m.room.create", "", content={"room_version": "10"}))
        with s._reader.reading() as tx:
            nid = s._reader.record(tx, "$c")[1].extras
    env = lmdb.open(str(path), max_dbs=20)
    with env.begin(write=True) as txn:
        txn.put(struct.pack(">Q", nid), b"not json", db=env.open_db(b"names_k", txn=txn))
    env.close()
    with roomstate.open(path, readonly=True) as s:
        with pytest.raises(roomstate.StoreFormatError, match="damaged"):
            s.room_version(ROOM)
