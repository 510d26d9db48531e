"""The on-disk format (docs/FORMAT.md), pinned by the committed stores ``tests/data/format-v3``
(what this code writes) and ``tests/data/format-v1``, ``format-v2`` (the older versions it
still reads).

Known answers: the state questions of the events ``tests/data/make_format_store.py``
writes, worked out from the events.  Known bytes: one record of every kind, read
with the ``lmdb`` package directly and decoded here by FORMAT.md's rules (this
file's own varint and struct code, none of roomstate's decoders), so that the
document and the code are checked against each other.  A change to any of these
bytes is a format change: bump ``FORMAT_VERSION`` and commit a new store.

Most tests read the version-1 store: every table of version 1 is unchanged in version 2.
The version-2 store adds the auth sections of event records (``test_auth_sections``); the
version-3 store is the version-2 one with a checksum at the end of every value of the
checked tables (``test_checksums``), and the generator must write it again byte for byte.
"""
import base64
import hashlib
import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import zlib

import lmdb
import pytest

import roomstate
import roomstate.check
from roomstate.format import CHECKED_TABLES, FORMAT_VERSION, TABLES

from test_faults import _poke_format

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
STORE = os.path.join(DATA, "format-v1")
STORE_V2 = os.path.join(DATA, "format-v2")
STORE_V3 = os.path.join(DATA, "format-v3")


def _generator():
    spec = importlib.util.spec_from_file_location("make_format_store", os.path.join(DATA, "make_format_store.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _generator()
hid = gen.hid
ALICE, BOB, CAROL, DAVE, ZOE = gen.ALICE, gen.BOB, gen.CAROL, gen.DAVE, gen.ZOE
USERS = gen.USERS
ROOM_A, ROOM_B = gen.ROOM_A, gen.ROOM_B
MEMBER, TOPIC, NAME = "m.room.member", "m.room.topic", "m.room.name"


def _copy(directory, source=STORE):
    """A copy of a committed store: opening it writes a lock file, and a test may change it."""
    out = directory / "store"
    shutil.copytree(source, out)
    return out


def _tables(path):
    """Every table of the store at ``path`` as ``{name: {key: value}}`` (bytes), read with lmdb alone."""
    env = lmdb.open(str(path), max_dbs=len(TABLES) + 2, readonly=True, lock=False)
    try:
        with env.begin() as txn:
            names = [bytes(k) for k, _ in txn.cursor()]
            out = {"": names}
            for name in names:
                db = env.open_db(name, txn=txn, create=False)
                out[name.decode()] = {bytes(k): bytes(v) for k, v in txn.cursor(db=db)}
    finally:
        env.close()
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    with roomstate.open(_copy(tmp_path_factory.mktemp("store")), readonly=True, resolver="newest_event") as s:
        yield s


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    """The version-1 store's tables (of another copy than ``store``'s: LMDB opens an
    environment once per process)."""
    return _tables(_copy(tmp_path_factory.mktemp("tables")))


@pytest.fixture(scope="module")
def tables_v2(tmp_path_factory):
    return _tables(_copy(tmp_path_factory.mktemp("tables-v2"), STORE_V2))


@pytest.fixture(scope="module")
def tables_v3(tmp_path_factory):
    return _tables(_copy(tmp_path_factory.mktemp("tables-v3"), STORE_V3))


# -- FORMAT.md's encodings, written again here -------------------------------------------------


def be(n):
    """A big-endian u64: every integer key, and every meta and hash-table value."""
    return struct.pack(">Q", n)


def varints(buf, count, pos=0):
    """``count`` LEB128 varints from ``buf`` at ``pos``: ``(values, next position)``."""
    out = []
    for _ in range(count):
        v = shift = 0
        while True:
            b = buf[pos]
            pos += 1
            v |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                break
        out.append(v)
    return out, pos


def unzigzag(z):
    return (z >> 1) ^ -(z & 1)


def decode_record(raw, nid):
    """An event record: the nine header varints, the prevs, the auth section (flag 8,
    HAS_AUTH: version 2), the event ID."""
    (flags, membership, room, type_, skey, depth, before, after, nprev), pos = varints(raw, 9)
    after = before if after == 0 else before + unzigzag(after - 1)
    zs, pos = varints(raw, nprev, pos)
    prevs = [nid - unzigzag(z) for z in zs]
    auth = None
    if flags & 8:
        (length,), pos = varints(raw, 1, pos)
        end = pos + length
        (sender, ts, nauth), p = varints(raw, 3, pos)
        deltas, p = varints(raw, nauth, p)
        nids = []
        for i, d in enumerate(deltas):
            nids.append(nid - unzigzag(d) if i == 0 else nids[-1] + d)
        (extras, reason), p = varints(raw, 2, p)
        assert p == end
        auth = dict(sender=sender, ts=ts, auth_events=nids, extras=extras, reason=reason)
        pos = end
    tail = raw[pos:]
    if flags & 32:  # HASH_ID
        assert len(tail) == 32
        event_id = "$" + base64.urlsafe_b64encode(tail).rstrip(b"=").decode()
    else:
        event_id = tail.decode("utf-8")
    out = dict(flags=flags, membership=membership, room=room, type=type_, state_key=skey, depth=depth,
               before=before, after=after, prevs=prevs, event_id=event_id)
    if auth is not None:
        out["auth"] = auth
    return out


def decode_snapshot(raw):
    kind = raw[0]
    if kind == 1:  # base
        (_, n), pos = varints(raw, 2)
        vals, pos = varints(raw, 2 * n, pos)
        assert pos == len(raw)
        return dict(kind="base", blocks=vals[:n], sizes=vals[n:])
    assert kind == 2  # chain
    (_, hops, weight, parent, n), pos = varints(raw, 5)
    flat, pos = varints(raw, 3 * n, pos)
    assert pos == len(raw)
    return dict(kind="chain", hops=hops, weight=weight, parent=parent,
                delta=[tuple(flat[i:i + 3]) for i in range(0, 3 * n, 3)])


def digest(data, size):
    return hashlib.blake2b(data, digest_size=size).digest()


# Event NIDs, in the order the generator adds the events.
A = {eid: nid for nid, eid in enumerate((ev["event_id"] for ev in gen.room_a()), start=1)}
B_NIDS = {gen.B_CREATE: 51, gen.B_ALICE: 52, gen.B_MESSAGE: 53, gen.B_OUTLIER: 54, gen.B_MISSING: 55, gen.B_GIVEN: 56,
          gen.B_KNOCK: 57, gen.B_CUSTOM: 58}
# Type and state-key NIDs, in the order of first use.
T_CREATE, T_PL, T_JR, T_MEMBER, T_MESSAGE, T_TAG, T_TOPIC, T_NAME = 1, 2, 3, 5, 8, 9, 10, 11
K_EMPTY, K_ALICE, K_BOB, K_CAROL, K_DAVE, K_ZOE, K_LONG, K_USER01, K_ERIN, K_FRANK, K_GINA = (
    1, 2, 3, 4, 5, 6, 7, 8, 38, 39, 40
)


def test_event_nids_are_as_the_tests_assume():
    assert len(A) == 50 and A[hid("create")] == 1 and A[hid("message-1")] == 8 and A[gen.LONG_EVENT] == 12
    assert A[hid("rejected-topic")] == 13 and A[hid("merge")] == 19 and A[hid("user01-join")] == 20
    assert A[hid("message-3")] == 50


# -- (a) known answers ---------------------------------------------------------------------------

EARLY = {
    ("m.room.create", ""): hid("create"),
    (MEMBER, ALICE): hid("alice-join"),
    ("m.room.power_levels", ""): hid("power-levels"),
    ("m.room.join_rules", ""): hid("join-rules"),
}


def test_state_before_and_after_linear_events(store):
    assert dict(store.state_before(hid("create"))) == {}
    assert dict(store.state_after(hid("create"))) == {("m.room.create", ""): hid("create")}
    at_message_1 = {**EARLY, (MEMBER, BOB): hid("bob-join"), (MEMBER, CAROL): hid("carol-join")}
    assert dict(store.state_before(hid("message-1"))) == at_message_1
    assert dict(store.state_after(hid("message-1"))) == at_message_1  # not a state event
    assert dict(store.state_after(hid("carol-leave"))) == {**at_message_1, (MEMBER, CAROL): hid("carol-leave")}
    assert store.get_state(gen.LONG_EVENT, gen.LONG_TYPE, gen.LONG_KEY, after=True) == gen.LONG_EVENT
    assert store.get_state(gen.LONG_EVENT, gen.LONG_TYPE, gen.LONG_KEY) is None


def test_a_rejected_state_event_changes_no_state(store):
    before = dict(store.state_before(hid("rejected-topic")))
    assert dict(store.state_after(hid("rejected-topic"))) == before
    assert (TOPIC, "") not in before and len(before) == 9  # EARLY, bob, carol, dave, zoë, the long key


def test_the_fork_is_merged_by_newest_event(store):
    # topic: topic-a (depth 15) against topic-b (depth 16, below message-b); name: only branch A sets it.
    assert store.event_depth(hid("topic-a")) == 15 and store.event_depth(hid("topic-b")) == 16
    assert store.get_state(hid("name-a"), TOPIC, "", after=True) == hid("topic-a")
    merged = dict(store.state_before(hid("merge")))
    assert merged[(TOPIC, "")] == hid("topic-b")
    assert merged[(NAME, "")] == hid("name-a")
    assert len(merged) == 11
    assert store.event_depth(hid("merge")) == 17


def test_members_by_membership(store):
    assert store.members(hid("bob-invite"), "invite") == []
    assert store.members(hid("bob-invite"), "invite", after=True) == [BOB]
    at = hid("message-2")
    assert store.members(at, "join") == [ALICE, BOB, ZOE]  # in state-key NID order
    assert store.members(at, "invite") == []
    assert store.members(at, "leave") == [CAROL]
    assert store.members(at, "ban") == [DAVE]
    assert store.members(hid("message-3")) == [ALICE, BOB, ZOE] + USERS


def test_current_state_and_extremities(store):
    current = dict(store.current_state(ROOM_A))
    assert len(current) == 11 + 30
    assert current == dict(store.state_before(hid("message-3")))
    assert current[(MEMBER, USERS[-1])] == hid("user30-join")
    assert store.forward_extremities(ROOM_A) == [hid("message-3")]
    # The event after the outlier starts a second extremity of room B: its state is given.
    assert store.forward_extremities(ROOM_B) == [gen.B_MESSAGE, gen.B_CUSTOM]
    assert dict(store.state_before(gen.B_GIVEN)) == gen.GIVEN_STATE
    assert dict(store.state_after(gen.B_MESSAGE)) == gen.GIVEN_STATE
    # Merging the two: frank's and gina's keys are in one state only (conflicted, one candidate each).
    assert dict(store.current_state(ROOM_B)) == {
        **gen.GIVEN_STATE, (MEMBER, gen.FRANK): gen.B_KNOCK, (MEMBER, gen.GINA): gen.B_CUSTOM,
    }
    assert store.members(gen.B_CUSTOM, "knock", after=True) == [gen.FRANK]
    assert store.members(gen.B_CUSTOM, "join", after=True) == [ALICE]  # gina's membership is none of the five


def test_outlier_and_placeholder(store):
    assert store.has_event(gen.B_OUTLIER) and store.is_outlier(gen.B_OUTLIER)
    with pytest.raises(roomstate.MissingEventError):
        store.state_before(gen.B_OUTLIER)
    assert not store.has_event(gen.B_MISSING)  # only named as a prev: a placeholder record


def test_stats_counts(store):
    st = store.stats()
    # 57 events: 50 + 3 + the outlier + the given one + 2 (the placeholder is none); 50 state events:
    # room A's 45 (all but five messages, the rejected one included), room B's create, 3 members, the outlier.
    assert (st["events"], st["state_events"], st["rooms"]) == (57, 50, 2)
    assert (st["blocks"], st["snapshots"], st["block_entries"]) == (1, 50, 30)
    entries = {name: t["entries"] for name, t in st["tables"].items()}
    assert entries == {
        "meta": 9, "ids": 53, "names_r": 2, "names_t": 11, "names_k": 40, "events": 58, "event_ids": 58,
        "flags": 1, "blocks": 1, "block_hashes": 1, "snapshots": 50, "snapshot_hashes": 3, "rooms": 2,
    }


# -- (b) known bytes -------------------------------------------------------------------------------


def test_tables(tables):
    assert tables[""] == sorted(name.encode() for name in TABLES)  # LMDB's main database: the table names
    assert TABLES == ("meta", "ids", "names_r", "names_t", "names_k", "events", "event_ids", "flags",
                      "blocks", "block_hashes", "snapshots", "snapshot_hashes", "rooms")


def test_meta(tables):
    meta = tables["meta"]
    assert meta[b"format"] == bytes.fromhex("0000000000000001") == be(1)
    decoded = {k.decode(): struct.unpack(">Q", v)[0] for k, v in meta.items()}
    assert decoded == {
        "format": 1,
        "count:events": 57,
        "count:state_events": 50,
        "next:r": 3,  # the next NID of each kind: two rooms, ...
        "next:e": 59,  # 58 event NIDs (the placeholder's included)
        "next:t": 12,  # 7 preassigned types + message, org.example.tag, topic, name
        "next:k": 41,  # "", 38 users, the long key
        "next:b": 2,
        "next:s": 51,
    }


def test_id_maps(tables):
    ids, names_r, names_t, names_k = tables["ids"], tables["names_r"], tables["names_t"], tables["names_k"]
    # A short string: the kind byte and its UTF-8 bytes -> big-endian u64 NID; the reverse map by NID.
    assert ids[b"k@alice:example.org"] == bytes.fromhex("0000000000000002")
    assert names_k[bytes.fromhex("0000000000000002")] == b"@alice:example.org"
    assert ids[b"r!format:example.org"] == be(1) and names_r[be(1)] == ROOM_A.encode()
    # Not ASCII: UTF-8 in the key and in the value.
    assert ids[b"k@zo\xc3\xab:example.org"] == be(K_ZOE) and names_k[be(K_ZOE)] == ZOE.encode("utf-8")
    # Longer than 32 bytes: the kind byte, 0xFF and a 16-byte BLAKE2b digest.
    long_key = bytes.fromhex("6bff742752b124dc2086a733cd5a993cf12b")
    assert long_key == b"k\xff" + digest(gen.LONG_KEY.encode(), 16)
    assert ids[long_key] == be(K_LONG) and names_k[be(K_LONG)] == gen.LONG_KEY.encode()
    assert ids[b"r\xff" + digest(ROOM_B.encode(), 16)] == be(2) and names_r[be(2)] == ROOM_B.encode()
    # Preassigned NIDs.
    assert [names_t[be(n)] for n in range(1, 8)] == [
        b"m.room.create", b"m.room.power_levels", b"m.room.join_rules", b"m.room.third_party_invite",
        b"m.room.member", b"m.room.redaction", b"m.room.history_visibility",
    ]
    assert ids[b"k"] == be(K_EMPTY) and names_k[be(K_EMPTY)] == b""
    # Event IDs are not in this map (their reverse map is the event record).
    assert not any(k.startswith(b"e") for k in ids)
    assert {k[:1] for k in ids} == {b"r", b"t", b"k"}


def test_event_id_keys(tables):
    event_ids = tables["event_ids"]
    key = bytes.fromhex("2b573b220153d8eb")
    assert key == digest(hid("create").encode(), 8)
    assert event_ids[key] == b"\x01"  # a varint NID
    assert event_ids[digest(gen.LONG_EVENT.encode(), 8)] == b"\x0c"
    assert all(len(k) == 8 for k in event_ids)  # no 8-byte collision here: no 16-byte key
    assert sorted(varints(v, 1)[0][0] for v in event_ids.values()) == list(range(1, 59))


def test_event_record_with_a_hash_id(tables):
    raw = tables["events"][be(1)]
    assert raw == bytes.fromhex("21 00 01 01 01 01 01 03 00") + hashlib.sha256(b"create").digest()
    assert decode_record(raw, 1) == dict(
        flags=0x21, membership=0, room=1, type=T_CREATE, state_key=K_EMPTY, depth=1, before=1, after=2,
        prevs=[], event_id=hid("create"),
    )  # flags: IS_STATE | HASH_ID; before: EMPTY_SNAPSHOT


def test_event_record_with_a_utf8_id(tables):
    raw = tables["events"][be(12)]
    assert raw == bytes.fromhex("01 00 01 09 07 0c 0b 03 01 02") + gen.LONG_EVENT.encode()
    assert decode_record(raw, 12) == dict(
        flags=1, membership=0, room=1, type=T_TAG, state_key=K_LONG, depth=12, before=11, after=12,
        prevs=[11], event_id=gen.LONG_EVENT,
    )


def test_event_records_of_every_flag(tables):
    events = tables["events"]
    rejected = decode_record(events[be(13)], 13)
    assert events[be(13)][:10] == bytes.fromhex("23 00 01 0a 01 0d 0c 00 01 02")
    assert (rejected["flags"], rejected["before"], rejected["after"]) == (0x23, 12, 12)  # IS_STATE|REJECTED|HASH_ID
    member = decode_record(events[be(10)], 10)
    assert (member["flags"], member["membership"], member["state_key"]) == (0x21, 4, K_DAVE)  # ban
    merge = decode_record(events[be(19)], 19)
    assert events[be(19)][:11] == bytes.fromhex("20 00 01 08 00 11 10 00 02 06 02")
    assert (merge["flags"], merge["depth"], merge["before"], merge["after"]) == (0x20, 17, 16, 16)
    assert merge["prevs"] == [A[hid("name-a")], A[hid("topic-b")]]
    outlier = events[be(54)]
    assert outlier == bytes.fromhex("05 01 02 05 26 01 00 00 01 01") + gen.B_OUTLIER.encode()
    assert decode_record(outlier, 54) == dict(
        flags=5, membership=1, room=2, type=T_MEMBER, state_key=K_ERIN, depth=1, before=0, after=0,
        prevs=[55], event_id=gen.B_OUTLIER,
    )  # IS_STATE | OUTLIER: no state; its prev, 55, is a placeholder
    knock, custom = events[be(57)], events[be(58)]
    assert knock == bytes.fromhex("01 05 02 05 27 03 30 03 01 02") + gen.B_KNOCK.encode()
    assert decode_record(knock, 57) == dict(
        flags=1, membership=5, room=2, type=T_MEMBER, state_key=K_FRANK, depth=3, before=48, after=49,
        prevs=[56], event_id=gen.B_KNOCK,
    )
    assert custom[:10] == bytes.fromhex("01 07 02 05 28 04 31 03 01 02")  # membership 7: OTHER_MEMBERSHIP
    assert decode_record(custom, 58)["state_key"] == K_GINA
    placeholder = events[be(55)]
    assert placeholder == bytes.fromhex("10 00 00 00 00 00 00 00 00") + gen.B_MISSING.encode()
    assert decode_record(placeholder, 55)["flags"] == 16
    assert {decode_record(v, struct.unpack(">Q", k)[0])["event_id"] for k, v in events.items()} == set(A) | set(B_NIDS)


def test_flags_chunk(tables):
    assert list(tables["flags"]) == [be(0)]  # NIDs 0-999: chunk 0
    chunk = tables["flags"][be(0)]
    assert len(chunk) == 1000
    set_bytes = {i: b for i, b in enumerate(chunk) if b}
    assert set_bytes == {
        **{A[hid(f"user{i:02d}-join")]: 1 for i in range(1, 31)},
        2: 1, 5: 2, 6: 1, 7: 1, 9: 3, 10: 4, 11: 1,  # join, invite, join, join, leave, ban, join (zoë)
        52: 1,  # room B's join
        54: 1 | 0x08,  # the outlier: join, and HAS_CHILD (the given event names it as a prev)
        57: 5,  # knock
        58: 7,  # "org.example.custom": OTHER_MEMBERSHIP
    }


BLOCK = [
    (T_CREATE, K_EMPTY, 1), (T_PL, K_EMPTY, 3), (T_JR, K_EMPTY, 4),
    (T_MEMBER, K_ALICE, 2), (T_MEMBER, K_BOB, 6), (T_MEMBER, K_CAROL, 9), (T_MEMBER, K_DAVE, 10),
    (T_MEMBER, K_ZOE, 11),
    *[(T_MEMBER, K_USER01 + i, A[hid(f"user{i + 1:02d}-join")]) for i in range(19)],
    (T_TAG, K_LONG, 12), (T_TOPIC, K_EMPTY, A[hid("topic-b")]), (T_NAME, K_EMPTY, A[hid("name-a")]),
]


def test_block_and_block_hash(tables):
    raw = tables["blocks"][be(1)]
    assert raw[:32] == bytes.fromhex("01000000 01000000 0100000000000000 02000000 01000000 0300000000000000")
    assert len(raw) == 16 * 30
    assert [struct.unpack_from("<IIQ", raw, off) for off in range(0, len(raw), 16)] == BLOCK
    assert tables["block_hashes"] == {bytes.fromhex("76a7347abda23a4bbff206f2e9ba524d"): be(1)}
    assert digest(raw, 16) == bytes.fromhex("76a7347abda23a4bbff206f2e9ba524d")


def test_snapshot_records(tables):
    snaps = tables["snapshots"]
    assert snaps[be(1)] == b"\x01\x00"  # EMPTY_SNAPSHOT: a base of no blocks
    # user19's join is the 33rd link of the chain: a base of one block instead.
    assert snaps[be(35)] == bytes.fromhex("01 01 01 1e")
    assert decode_snapshot(snaps[be(35)]) == dict(kind="base", blocks=[1], sizes=[30])
    assert decode_snapshot(snaps[be(34)])["hops"] == 32
    assert decode_record(tables["events"][be(A[hid("user19-join")])], 0)["after"] == 35
    # A chain link of one state event: kind, hops, weight, parent, count, then (type, state key, event).
    assert snaps[be(2)] == bytes.fromhex("02 01 01 01 01 01 01 01")
    # The merge's link: the delta from branch A's state (the first prev) to the merged state.
    assert snaps[be(16)] == bytes.fromhex("02 0e 0e 0e 01 0a 01 12")
    assert decode_snapshot(snaps[be(16)]) == dict(
        kind="chain", hops=14, weight=14, parent=14, delta=[(T_TOPIC, K_EMPTY, A[hid("topic-b")])]
    )
    assert decode_snapshot(snaps[be(36)]) == dict(
        kind="chain", hops=1, weight=1, parent=35, delta=[(T_MEMBER, K_USER01 + 19, A[hid("user20-join")])]
    )
    # Indexed by a digest of the record: the empty base, every base, merge links; not single events' links.
    assert tables["snapshot_hashes"] == {digest(snaps[be(n)], 16): be(n) for n in (1, 16, 35)}
    assert digest(snaps[be(16)], 16) == bytes.fromhex("cf87975dd6d64c488e643807e283bb66")


def test_rooms(tables):
    rooms = tables["rooms"]
    assert rooms[be(1)] == bytes.fromhex("3200000000000000")  # little-endian u64, unlike meta
    assert rooms[be(2)] == struct.pack("<2Q", 53, 58)
    assert set(rooms) == {be(1), be(2)}


# -- (c) other format versions are refused -----------------------------------------------------------
# (test_faults.py checks the version above this one on a new store; here, the committed store.)


@pytest.mark.parametrize("version, which", [(0, "older"), (4, "newer")])
def test_other_format_versions_are_refused(tmp_path, version, which):
    path = _copy(tmp_path)
    _poke_format(path, version)
    for readonly in (True, False):
        with pytest.raises(roomstate.StoreFormatError, match=f"format version {version}, made by an? {which}"):
            roomstate.open(path, readonly=readonly, check_auth=False)
    _poke_format(path, 1)  # the refusals changed nothing
    with roomstate.open(path, readonly=True) as s:
        assert s.has_event(hid("create"))


def test_a_version_1_store_is_read_and_upgraded_before_a_write(tmp_path):
    path = _copy(tmp_path)
    with roomstate.open(path, readonly=True) as s:
        assert s.state_after(hid("message-3"))[(MEMBER, ALICE)] == hid("alice-join")
    assert _tables(path)["meta"][b"format"] == be(1)  # a read-only open changes nothing
    before = _tables(path)
    with roomstate.open(path, resolver="newest_event", check_auth=False) as s:
        s.add_event(gen._event(hid("after-upgrade"), ROOM_A, "m.room.message", [hid("message-3")],
                               origin_server_ts=1, auth_events=[hid("create")]))
        assert s.state_before(hid("after-upgrade")) == s.state_after(hid("message-3"))
        assert s.state_after(hid("message-3"))[(MEMBER, ALICE)] == hid("alice-join")
    after = _tables(path)
    assert after["meta"][b"format"] == be(3)
    nid = A[hid("message-3")] + 1 + len(B_NIDS)  # the next event NID
    assert decode_record(after["events"][be(nid)], nid)["auth"] == dict(
        sender=K_ALICE, ts=1, auth_events=[A[hid("create")]], extras=0, reason=0
    )
    # Every value stored before the upgrade is there again, with its checksum.
    for name in ("names_r", "names_t", "names_k", "blocks", "snapshots"):
        assert all(after[name][k] == sealed(name, k, v) for k, v in before[name].items()), name
    assert roomstate.check.check(path)["ok"]


def test_a_version_2_store_upgraded_is_the_version_3_store(tmp_path, tables_v3):
    """The upgrade of a writable open gives every value of the version-2 store its checksum:
    the very tables the generator writes in version 3."""
    path = _copy(tmp_path, STORE_V2)
    with roomstate.open(path, readonly=True) as s:  # read as it is, without checksums
        assert s.state_after(hid("message-3"))[(MEMBER, ALICE)] == hid("alice-join")
    assert _tables(path)["meta"][b"format"] == be(2)
    with roomstate.open(path, check_auth=False):
        pass
    assert _tables(path) == tables_v3


def test_a_reader_of_an_older_store_follows_its_upgrade(tmp_path):
    """A store opened read-only in format 2 reads on after another open upgraded it."""
    path = _copy(tmp_path, STORE_V2)
    with roomstate.open(path, readonly=True) as reader:
        assert reader.members(hid("message-2")) == [ALICE, BOB, ZOE]
        subprocess.run([sys.executable, "-c", "import sys, roomstate; roomstate.open(sys.argv[1], check_auth=False).close()",
                        str(path)], check=True, timeout=120)
        assert reader.state_after(hid("message-3"))[(MEMBER, ALICE)] == hid("alice-join")
        assert reader.members(hid("message-3")) == [ALICE, BOB, ZOE] + USERS
        assert reader.rooms() == sorted([ROOM_A, ROOM_B])
        assert reader._tables.checksums  # it reads the checksums now
    assert _tables(path)["meta"][b"format"] == be(3)


def test_a_damaged_format_version_cannot_turn_checks_off(tmp_path):
    """Format 3 read as 2 (a flipped bit) would read checked values as unchecked ones: the
    meta values' shape at open says which it is."""
    path = _copy(tmp_path, STORE_V3)
    _poke_format(path, 2)
    for readonly in (True, False):
        with pytest.raises(roomstate.StoreFormatError, match="a checksum follows from format 3 on"):
            roomstate.open(path, readonly=readonly, check_auth=False)


# -- (d) version 2: auth sections --------------------------------------------------------------------


def test_auth_sections(tables_v2, tables):
    events = tables_v2["events"]
    assert tables_v2["meta"][b"format"] == be(2)
    names_k = {struct.unpack(">Q", k)[0]: v.decode() for k, v in tables_v2["names_k"].items()}
    k_of = {v: k for k, v in names_k.items()}
    # message-1 (NID 8): sender alice (state-key NID 2, as in version 1), a timestamp, auth
    # events create (1), power levels (3), alice's join (2): ascending 1, 2, 3 as
    # zigzag(8 - 1) = 14, then +1, +1; no extras, no rejection reason.
    raw = events[be(8)]
    ts = 1_600_000_000_000 + 7000
    section = bytes([2]) + bytes(_leb128(ts)) + bytes.fromhex("03 0e 01 01 00 00")
    assert raw == bytes.fromhex("28 00 01 08 00 08 08 00 01 02") + bytes([len(section)]) + section + raw[-32:]
    assert decode_record(raw, 8)["auth"] == dict(sender=k_of[ALICE], ts=ts, auth_events=[1, 2, 3], extras=0, reason=0)
    assert k_of[ALICE] == K_ALICE
    assert decode_record(raw, 8)["event_id"] == hid("message-1")
    # Extras: what the rules read of a content, canonical JSON strings of the state-key kind.
    create, pl, rules = (decode_record(events[be(n)], n) for n in (1, 3, 4))
    assert names_k[create["auth"]["extras"]] == '{"room_version":"10"}'
    assert names_k[pl["auth"]["extras"]] == '{"users":{"@alice:example.org":100}}'
    assert names_k[rules["auth"]["extras"]] == '{"join_rule":"invite"}'
    b_create = decode_record(events[be(B_NIDS[gen.B_CREATE])], B_NIDS[gen.B_CREATE])
    assert names_k[b_create["auth"]["extras"]] == '{"room_version":"1"}'
    # Every record of room A has a section; without it, each is its version-1 record, but
    # for the state-key NIDs, which the extras strings moved up.
    v1_names = {struct.unpack(">Q", k)[0]: v.decode() for k, v in tables["names_k"].items()}
    for nid in A.values():
        v2, v1 = decode_record(events[be(nid)], nid), decode_record(tables["events"][be(nid)], nid)
        assert names_k[v2.pop("auth")["sender"]].startswith("@")
        v2["flags"] &= ~8
        if v1["flags"] & 1:  # IS_STATE
            assert names_k[v2["state_key"]] == v1_names[v1["state_key"]]
        del v2["state_key"], v1["state_key"]
        assert v2 == v1
    # The strings of version 1 are all there; the tables that hold no state-key NIDs are unchanged.
    assert set(v1_names.values()) < set(names_k.values())
    for name in ("flags", "rooms", "names_r", "names_t"):
        assert tables_v2[name] == tables[name], name


def _leb128(v):
    out = []
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return out


# -- (e) version 3: checksums ---------------------------------------------------------------------


def sealed(table, key, value):
    """A value as version 3 stores it (FORMAT.md §3): the CRC-32 of key and value appended,
    little-endian; its low 2 bytes only in ``flags``; none in ``meta`` ``format``."""
    crc = zlib.crc32(key + value)
    if table == "flags":
        return value + struct.pack("<H", crc & 0xFFFF)
    if table == "meta" and key == b"format":
        return value
    return value + struct.pack("<I", crc)


def test_checksums(tables_v3, tables_v2):
    assert CHECKED_TABLES == ("meta", "names_r", "names_t", "names_k", "flags", "blocks", "snapshots", "rooms")
    assert tables_v3["meta"][b"format"] == be(3)
    # Known bytes: snapshot 2 (the create event's chain link) and the rooms value of room A.
    assert tables_v3["snapshots"][be(2)] == bytes.fromhex("02 01 01 01 01 01 01 01 8a 99 41 07")
    assert tables_v3["meta"][b"next:s"] == bytes.fromhex("00 00 00 00 00 00 00 33 af 90 b3 e0")
    assert tables_v3["rooms"][be(1)] == bytes.fromhex("32 00 00 00 00 00 00 00 16 0b 28 3c")
    # The residue: the CRC-32 of key, value and checksum together is a constant.
    assert zlib.crc32(be(2) + tables_v3["snapshots"][be(2)]) == 0x2144DF1C
    for name in TABLES:
        if name == "meta":
            expected = {k: sealed(name, k, v if k == b"format" else v) for k, v in tables_v2[name].items()}
            expected[b"format"] = be(3)
        elif name in CHECKED_TABLES:
            expected = {k: sealed(name, k, v) for k, v in tables_v2[name].items()}
        else:
            expected = tables_v2[name]
        assert tables_v3[name] == expected, name


# -- (f) the generator writes the committed store again ---------------------------------------------------


def test_the_generator_writes_the_committed_tables(tmp_path, tables_v3):
    """Table by table, record by record: what today's code writes is format version 3.

    One value more: stores made since the count of state resets exists hold it in
    ``meta`` (``count:state_resets``, 0 here: the store's one merge is no reset); the
    committed store predates it, and reads as a store whose resets are not counted."""
    out = tmp_path / "again"
    assert gen.write(str(out)) < 1 << 20
    again = _tables(out)
    from roomstate.checksum import meta_value
    from roomstate.format import META_COUNT_RESETS

    assert again["meta"].pop(META_COUNT_RESETS) == meta_value(META_COUNT_RESETS, 0)
    for name in TABLES:
        assert again[name] == tables_v3[name], name
