"""Write ``tests/data/format-v3/``: a small store of on-disk format version 3.

``tests/test_format.py`` reads the committed copy back with known answers and
known bytes (docs/FORMAT.md describes every table).  The events are written by
hand to reach every record kind: both event-ID encodings (HASH_ID and UTF-8),
short and long (digest-keyed) strings, a non-ASCII string, every membership
code and one outside them, a rejected event, a fork merged with
``newest_event``, an outlier with a placeholder prev and a child (HAS_CHILD),
and a chain of more than ``MAX_HOPS`` state events, so that a base snapshot
with a block exists.

Version 2 added the auth section of event records: the events of room A carry
``origin_server_ts`` and some of them ``auth_events``; every event has a sender.
Version 3 added value checksums; the events are the same as for version 2, so every
value of ``format-v3`` is its ``format-v2`` value, with its checksum where it has one.

Deterministic: the same events in the same transactions give the same tables
(``test_the_generator_writes_the_committed_tables`` checks it).  The committed
``format-v1`` was written by this script's version-1 form (in the history, up to
commit c605b8d), ``format-v2`` by its version-2 form (up to commit 2c7ced9); they are
not regenerated: the tests read them as the older stores.  A format change copies
this script to write ``format-v4``.  To write a store
elsewhere, from the checkout (so that its build is imported, not an installed roomstate):

    PYTHONPATH=. python tests/data/make_format_store.py OUT_DIR
"""
import base64
import hashlib
import os
import sys

import roomstate

ROOM_A = "!format:example.org"
ROOM_B = "!a-second-room-with-a-long-room-id:example.org"  # 46 bytes: a digest key
ALICE, BOB, CAROL, DAVE, ERIN, FRANK, GINA = (
    f"@{n}:example.org" for n in ("alice", "bob", "carol", "dave", "erin", "frank", "gina")
)
ZOE = "@zoë:example.org"  # not ASCII
LONG_TYPE = "org.example.tag"
LONG_KEY = "a-state-key-longer-than-thirty-two-bytes"  # 40 bytes: a digest key
LONG_EVENT = "$a-long-event-id-of-room-version-1:example.org"  # > 32 bytes, not a hash ID
USERS = [f"@user{i:02d}:example.org" for i in range(1, 31)]


def hid(label):
    """A room version 4+ event ID ("$" + unpadded base64url of 32 bytes): stored as its 32 bytes."""
    return "$" + base64.urlsafe_b64encode(hashlib.sha256(label.encode()).digest()).rstrip(b"=").decode()


def _event(event_id, room_id, type_, prev, sender=ALICE, state_key=None, content=None, **extra):
    ev = {
        "event_id": event_id,
        "room_id": room_id,
        "type": type_,
        "sender": sender,
        "prev_events": list(prev),
        "content": content or {},
    }
    if state_key is not None:
        ev["state_key"] = state_key
    ev.update(extra)
    return ev


def _member(event_id, room_id, user, membership, prev, sender=None):
    return _event(event_id, room_id, "m.room.member", prev, sender or user, user, {"membership": membership})


def room_a():
    """The first room: linear history, a rejected event, a fork and its merge, then 30 joins.

    Each event has an ``origin_server_ts`` a second after the one before; some list
    their ``auth_events``."""
    evs = []

    def add(ev, auth=None):
        ev["origin_server_ts"] = 1_600_000_000_000 + 1000 * len(evs)
        if auth is not None:
            ev["auth_events"] = [hid(a) for a in auth]
        evs.append(ev)
        return ev["event_id"]

    last = add(_event(hid("create"), ROOM_A, "m.room.create", [], state_key="", content={"room_version": "10"}))
    last = add(_member(hid("alice-join"), ROOM_A, ALICE, "join", [last]), auth=["create"])
    last = add(_event(hid("power-levels"), ROOM_A, "m.room.power_levels", [last], state_key="",
                      content={"users": {ALICE: 100}}))
    last = add(_event(hid("join-rules"), ROOM_A, "m.room.join_rules", [last], state_key="",
                      content={"join_rule": "invite"}))
    last = add(_member(hid("bob-invite"), ROOM_A, BOB, "invite", [last], sender=ALICE))
    last = add(_member(hid("bob-join"), ROOM_A, BOB, "join", [last]),
               auth=["create", "power-levels", "join-rules", "bob-invite"])
    last = add(_member(hid("carol-join"), ROOM_A, CAROL, "join", [last]))
    last = add(_event(hid("message-1"), ROOM_A, "m.room.message", [last], content={"body": "hello"}),
               auth=["create", "power-levels", "alice-join"])
    last = add(_member(hid("carol-leave"), ROOM_A, CAROL, "leave", [last]))
    last = add(_member(hid("dave-ban"), ROOM_A, DAVE, "ban", [last], sender=ALICE))
    last = add(_member(hid("zoe-join"), ROOM_A, ZOE, "join", [last]))
    last = add(_event(LONG_EVENT, ROOM_A, LONG_TYPE, [last], state_key=LONG_KEY))
    last = add(_event(hid("rejected-topic"), ROOM_A, "m.room.topic", [last], sender=DAVE, state_key="",
                      content={"topic": "banned"}, rejected=True))
    fork = add(_event(hid("message-2"), ROOM_A, "m.room.message", [last], content={"body": "fork"}))
    # Branch A sets the topic, then the name; branch B is one event deeper at its topic.
    a = add(_event(hid("topic-a"), ROOM_A, "m.room.topic", [fork], state_key="", content={"topic": "A"}))
    a = add(_event(hid("name-a"), ROOM_A, "m.room.name", [a], state_key="", content={"name": "A"}))
    b = add(_event(hid("message-b"), ROOM_A, "m.room.message", [fork], sender=BOB, content={"body": "b"}))
    b = add(_event(hid("topic-b"), ROOM_A, "m.room.topic", [b], sender=BOB, state_key="", content={"topic": "B"}))
    last = add(_event(hid("merge"), ROOM_A, "m.room.message", [a, b], content={"body": "merged"}))
    for i, user in enumerate(USERS, start=1):
        last = add(_member(hid(f"user{i:02d}-join"), ROOM_A, user, "join", [last]))
    add(_event(hid("message-3"), ROOM_A, "m.room.message", [last], content={"body": "bye"}))
    return evs


B_CREATE = "$b-create:example.org"
B_ALICE = "$b-alice-join:example.org"
B_MESSAGE = "$b-message:example.org"
B_OUTLIER = "$b-outlier:example.org"
B_MISSING = "$b-missing-prev:example.org"
B_GIVEN = "$b-given:example.org"


def room_b():
    """The second room (room version 1 style IDs): three events, in their own transaction."""
    return [
        _event(B_CREATE, ROOM_B, "m.room.create", [], state_key="", content={"room_version": "1"}),
        _member(B_ALICE, ROOM_B, ALICE, "join", [B_CREATE]),
        _event(B_MESSAGE, ROOM_B, "m.room.message", [B_ALICE], content={"body": "hi"}),
    ]


def outlier():
    """An outlier of room B whose prev is unknown (it gets a placeholder record)."""
    return _member(B_OUTLIER, ROOM_B, ERIN, "join", [B_MISSING])


def given():
    """An event of room B after the outlier, with the state before it given (the outlier gets HAS_CHILD)."""
    return _event(B_GIVEN, ROOM_B, "m.room.message", [B_OUTLIER], sender=ERIN, content={"body": "given"})


GIVEN_STATE = {("m.room.create", ""): B_CREATE, ("m.room.member", ALICE): B_ALICE}
B_KNOCK = "$b-knock:example.org"
B_CUSTOM = "$b-custom-membership:example.org"


def later():
    """Room B after the given event: a knock and a membership the specification does not define."""
    return [
        _member(B_KNOCK, ROOM_B, FRANK, "knock", [B_GIVEN]),
        _member(B_CUSTOM, ROOM_B, GINA, "org.example.custom", [B_KNOCK]),
    ]


def write(out):
    """Write the store at ``out`` (its data.mdb replaced), in six transactions; its size in bytes."""
    os.makedirs(out, exist_ok=True)
    for name in ("data.mdb", "lock.mdb"):
        if os.path.exists(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    with roomstate.open(out, durable=True, resolver="newest_event", check_auth=False) as store:  # 1: initialise
        store.add_events(room_a())  # 2
        store.add_events(room_b())  # 3
        store.add_event(outlier(), outlier=True)  # 4
        store.add_event(given(), state_before=GIVEN_STATE)  # 5
        store.add_events(later())  # 6
    os.remove(os.path.join(out, "lock.mdb"))  # per machine, never committed
    return os.path.getsize(os.path.join(out, "data.mdb"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    print(f"{sys.argv[1]}: {write(sys.argv[1])} bytes")
