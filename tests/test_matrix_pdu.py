"""Validation of PDUs and client-format events (roomstate.matrix.pdu)."""
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from matrix_strategies import VERSION_IDS, pdus

from roomstate import InvalidEventError
from roomstate.matrix import VERSIONS, MatrixEvent, compute_event_id, compute_room_id, validate_event

ROOM = "!r:example.org"
REF = "$" + "A" * 43


def pdu(version="10", **changes):
    ev = {
        "type": "m.room.member", "state_key": "@b:example.org", "sender": "@b:example.org",
        "room_id": ROOM, "origin_server_ts": 1000, "depth": 5,
        "content": {"membership": "join", "displayname": "B"},
        "prev_events": [REF], "auth_events": [REF.replace("A", "B"), REF.replace("A", "C")],
        "hashes": {"sha256": "h"}, "signatures": {"example.org": {"ed25519:1": "s"}}, "unsigned": {"age": 3},
    }  # fmt: skip
    if VERSIONS[version].event_format == 1:
        ev["event_id"] = "$ev:example.org"
        ev["prev_events"] = [["$p:example.org", {"sha256": "x"}]]
        ev["auth_events"] = [["$a:example.org", {"sha256": "y"}], ["$c:example.org", {}]]
    ev.update(changes)
    return {k: val for k, val in ev.items() if val is not DROP}


DROP = object()


def bad(field, reason, ev, version="10", **kw):
    with pytest.raises(InvalidEventError, match=reason) as e:
        validate_event(ev, version, **kw)
    assert e.value.field == field, e.value


def create(version, **changes):
    content = {"room_version": version, "creator": "@a:example.org"}
    ev = pdu(version, type="m.room.create", state_key="", sender="@a:example.org", content=content,
             prev_events=[], auth_events=[], depth=1)  # fmt: skip
    if VERSIONS[version].room_id_from_create:
        del ev["room_id"]
    ev.update(changes)
    return ev


# -- well-formed events ------------------------------------------------------------


def test_member_event():
    ev = pdu("10", content={"membership": "join", "join_authorised_via_users_server": "@c:example.org"})
    m = validate_event(ev, "10")
    assert (m.type, m.state_key, m.sender, m.room_id, m.depth, m.origin_server_ts) == (
        "m.room.member", "@b:example.org", "@b:example.org", ROOM, 5, 1000
    )
    assert m.event_id == compute_event_id(ev, "10")
    assert m.prev_events == [REF] and m.auth_events == ev["auth_events"]
    assert m.membership == "join" and m.join_authorised_via_users_server == "@c:example.org"
    assert m.room_version is VERSIONS["10"] and m.rejected is False
    p = m.parsed()
    assert (p.event_id, p.room_id, p.type, p.state_key, p.prev_ids, p.depth, p.membership) == (
        m.event_id, ROOM, "m.room.member", "@b:example.org", [REF], 5, 1
    )


def test_versions_1_and_2_references_are_pairs():
    for v in ("1", "2"):
        m = validate_event(pdu(v), v)
        assert m.event_id == "$ev:example.org"
        assert m.prev_events == ["$p:example.org"] and m.auth_events == ["$a:example.org", "$c:example.org"]


def test_auth_data_of_each_type():
    pl = {"users": {"@a:example.org": 100}, "ban": "50", "notifications": {"room": 20}, "other": 1}
    m = validate_event(pdu("7", type="m.room.power_levels", state_key="", content=pl), "7")
    assert m.power_levels == {"users": {"@a:example.org": 100}, "ban": "50", "notifications": {"room": 20}}
    jr = {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}]}
    assert validate_event(pdu("7", type="m.room.join_rules", state_key="", content=jr), "7").join_rules == {
        "join_rule": "restricted"
    }
    assert validate_event(pdu("8", type="m.room.join_rules", state_key="", content=jr), "8").join_rules == jr
    tpi = {"public_key": "k", "public_keys": [{"public_key": "k2"}], "display_name": "d"}
    m = validate_event(pdu("10", type="m.room.third_party_invite", state_key="tok", content=tpi), "10")
    assert m.third_party_invite_keys == {"public_key": "k", "public_keys": [{"public_key": "k2"}]}
    c = validate_event(create("12", content={"room_version": "12", "additional_creators": ["@z:y"], "type": "x"}))
    assert c.create == {"room_version": "12", "additional_creators": ["@z:y"]}
    inv = {"membership": "invite", "third_party_invite": {"display_name": "d", "signed": {"mxid": "@b:example.org"}}}
    assert validate_event(pdu("10", content=inv), "10").third_party_invite == inv["third_party_invite"]
    msg = validate_event(pdu("10", type="m.room.message", state_key=DROP, content={"membership": "join"}), "10")
    assert msg.membership is None and msg.state_key is None


def test_join_authorised_via_is_read_from_v8():
    ev = pdu("7", content={"membership": "join", "join_authorised_via_users_server": 5})
    assert validate_event(ev, "7").join_authorised_via_users_server is None  # no meaning before v8
    bad("content.join_authorised_via_users_server", "user ID", dict(ev), "8")


def test_redacts_moves_into_content_in_v11():
    top = pdu("10", type="m.room.redaction", state_key=DROP, content={}, redacts=REF)
    assert validate_event(top, "10").redacts == REF
    assert validate_event(top, "11").redacts is None
    inside = pdu("11", type="m.room.redaction", state_key=DROP, content={"redacts": REF})
    assert validate_event(inside, "11").redacts == REF
    bad("content.redacts", "event ID", pdu("11", type="m.room.redaction", content={"redacts": 5}), "11")
    bad("redacts", "event ID", pdu("10", type="m.room.redaction", redacts="nope"), "10")


def test_create_events_name_the_version():
    for v in VERSION_IDS:
        m = validate_event(create(v))
        assert m.room_version is VERSIONS[v]
        if VERSIONS[v].room_id_from_create:
            assert m.room_id == compute_room_id(create(v)) == "!" + m.event_id[1:]
        else:
            assert m.room_id == ROOM
    ev = create("1")
    del ev["content"]["room_version"]
    assert validate_event(ev).room_version is VERSIONS["1"]  # "1" when absent
    assert validate_event(create("9"), "9").room_version is VERSIONS["9"]


def test_prev_events_deduplicated_auth_events_kept():
    m = validate_event(pdu("10", prev_events=[REF, REF], auth_events=[REF, REF]), "10")
    assert m.prev_events == [REF] and m.auth_events == [REF, REF]


def test_given_event_id_is_used():
    assert validate_event(pdu("10", event_id="$given"), "10").event_id == "$given"


def test_client_format_event():
    client = {
        "event_id": "$c", "room_id": ROOM, "type": "m.room.member", "state_key": "@b:x", "sender": "@b:x",
        "origin_server_ts": 5, "content": {"membership": "leave"}, "unsigned": {"age": 1},
    }  # fmt: skip
    m = validate_event(client, "10", auth_data=False)
    assert (m.event_id, m.membership, m.prev_events, m.auth_events, m.depth) == ("$c", "leave", [], [], None)
    bad("depth", "missing", client, "10")  # the rules need what a client-format event lacks
    minimal = validate_event({"event_id": "$m", "room_id": ROOM, "type": "t"}, "3", auth_data=False)
    assert minimal.sender is None and minimal.origin_server_ts is None
    # A v12 create event in client format carries the room_id its event ID implies.
    c12 = {"event_id": "$abc", "room_id": "!abc", "type": "m.room.create", "state_key": "",
           "sender": "@a:x", "content": {"room_version": "12"}}  # fmt: skip
    assert validate_event(c12, auth_data=False).room_id == "!abc"
    del c12["room_id"]
    assert validate_event(c12, auth_data=False).room_id == "!abc"
    bad("room_id", "has no room_id", dict(c12, room_id="!other"), None, auth_data=False)


# -- bad PDUs: each names its field ----------------------------------------------------

BAD = [
    ("sender", "missing", pdu(sender=DROP)),
    ("sender", "must be a string", pdu(sender=5)),
    ("sender", "user ID", pdu(sender="b:example.org")),
    ("type", "missing", pdu(type=DROP)),
    ("type", "must be a string", pdu(type=["m.room.member"])),
    ("state_key", "must be a string", pdu(state_key=5)),
    ("room_id", "missing", pdu(room_id=DROP)),
    ("room_id", "must be a string", pdu(room_id=5)),
    ("room_id", "must not be empty", pdu(room_id="")),
    ("origin_server_ts", "must be an integer", pdu(origin_server_ts="1000")),
    ("origin_server_ts", "must be an integer", pdu(origin_server_ts=True)),
    ("origin_server_ts", "missing", pdu(origin_server_ts=DROP)),
    ("depth", "must be an integer", pdu(depth="5")),
    ("depth", "between", pdu(depth=-1)),
    ("depth", "missing", pdu(depth=DROP)),
    ("content", "missing", pdu(content=DROP)),
    ("content", "must be an object", pdu(content=[])),
    ("content", "must be an object", pdu(content=None)),
    ("content.membership", "must be a string", pdu(content={"membership": 1})),
    ("content.third_party_invite", "must be an object", pdu(content={"membership": "invite", "third_party_invite": 1})),
    ("prev_events", "missing", pdu(prev_events=DROP)),
    ("prev_events", "must be a list", pdu(prev_events="$x")),
    ("prev_events[1]", "event ID", pdu(prev_events=[REF, 5])),
    ("prev_events[0]", "event ID", pdu(prev_events=["x"])),
    ("prev_events[0]", "event ID", pdu(prev_events=[["$p:x", {}]])),
    ("auth_events", "missing", pdu(auth_events=DROP)),
    ("auth_events", "must be a list", pdu(auth_events={"a": 1})),
    ("auth_events[0]", "event ID", pdu(auth_events=[None])),
    ("prev_events[0]", "reference itself", pdu(event_id=REF, prev_events=[REF])),
    ("auth_events[0]", "reference itself", pdu(event_id=REF, prev_events=[], auth_events=[REF])),
    ("event_id", "event ID", pdu(event_id="nope")),
    ("event_id", "event ID", pdu(event_id=5)),
    ("rejected", "boolean", pdu(rejected="yes")),
    ("content.foo.bar", "floats", pdu(content={"membership": "join", "foo": {"bar": 1.5}})),
    ("content.n", "outside", pdu(content={"membership": "join", "n": 2**53})),
    ("depth", "floats", pdu(depth=5.0)),
    ("origin_server_ts", "outside", pdu(origin_server_ts=2**60)),
    ("room_version", "not given", pdu()),
]


@pytest.mark.parametrize("field, reason, ev", BAD, ids=[f"{f}:{r}" for f, r, _ in BAD])
def test_bad_pdu(field, reason, ev):
    bad(field, reason, ev, None if field == "room_version" else "10")


def test_not_a_mapping():
    bad("event", "must be a mapping", [("type", "x")])


@pytest.mark.parametrize(
    "version, field, reason, changes",
    [
        ("1", "event_id", "carry their own", {"event_id": DROP}),
        ("1", "prev_events[0]", "pair", {"prev_events": ["$p:example.org"]}),
        ("2", "auth_events[0][1]", "hashes must be an object", {"auth_events": [["$a:example.org", "h"]]}),
        ("2", "auth_events[0][0]", "event ID", {"auth_events": [[5, {}]]}),
        ("3", "prev_events[0]", "event ID", {"prev_events": [["$p:x", {}]]}),
        ("5", "depth", "between", {"depth": 2**63}),
    ],
)
def test_bad_pdu_by_version(version, field, reason, changes):
    bad(field, reason, pdu(version, **changes), version)


def test_floats_and_big_integers_are_tolerated_before_v6():
    ev = pdu("5", content={"membership": "join", "f": 1.5, "n": 2**60}, depth=2**60)
    assert validate_event(ev, "5").depth == 2**60
    bad("content.f", "floats", pdu("6", content={"membership": "join", "f": 1.5}), "6")
    # unsigned is covered by no hash: a float there is not the event's fault.
    assert validate_event(pdu("6", unsigned={"f": 1.5}), "6")


def test_create_event_faults():
    bad("content.room_version", "unknown room version", create("10", content={"room_version": "99"}), None)
    bad("content.room_version", "unknown room version", create("10", content={"room_version": 10}), None)
    bad("content.room_version", "names room version 10", create("10"), "11")
    bad("state_key", "empty state key", create("10", state_key="x"), None)
    bad("room_id", "has no room_id", create("12", room_id="!r:example.org"), None)
    bad("content.room_version", "unknown room version", create("10"), "13")  # versions.room_version names it


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VERSION_IDS).flatmap(lambda v: st.tuples(st.just(v), pdus(v))))
def test_generated_pdus_validate(args):
    """Every well-typed PDU validates, with the event ID compute_event_id gives."""
    v, ev = args
    ev = dict(ev)
    refs = [r[0] if isinstance(r, list) else r for r in ev["prev_events"] + ev["auth_events"]]
    assume(ev.get("event_id") not in refs)
    if ev["type"] == "m.room.create":
        ev["content"]["room_version"] = v
    content = ev["content"]
    if "state_key" in ev and ev["type"] == "m.room.member":
        for key, kind in (("membership", str), ("join_authorised_via_users_server", str)):
            if key in content and not isinstance(content[key], kind):
                del content[key]
        if "third_party_invite" in content and not isinstance(content["third_party_invite"], dict):
            del content["third_party_invite"]
    if ev["type"] == "m.room.redaction":
        content.pop("redacts", None)
    m = validate_event(ev, v)
    assert isinstance(m, MatrixEvent)
    assert m.event_id == (ev["event_id"] if VERSIONS[v].event_format == 1 else compute_event_id(ev, v))
    assert len(m.prev_events) <= len(ev["prev_events"]) and len(m.auth_events) == len(ev["auth_events"])
