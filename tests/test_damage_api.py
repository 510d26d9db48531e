"""Regression tests of issue 14 at the API: StateMap internals, resolvers that misbehave,
reads racing close(), and damaged values read through every decoder."""
import threading

import lmdb
import numpy as np
import pytest

import roomstate
from roomstate import InvalidEventError, RoomStateError, StoreFormatError, _core
from roomstate.checksum import seal, seal_short
from roomstate.format import CHECKED_TABLES
from roomstate.statemap import StateMap

from test_store import ROOM, dump, ev, fork, member


# -- StateMap: no Python code can break the C level's assumptions ------------------

def test_statemap_internals_cannot_be_set(store):
    store.add_event(ev("$1", "m.room.create", ""))
    store.add_event(member("$2", "@a:x", "join", ["$1"]))
    state = store.state_after("$2")
    assert dict(state)  # the strings listed
    for name, value in (("_values", []), ("_keys", []), ("_entries", np.empty(0)), ("_reader", None), ("_loader", None)):
        with pytest.raises(AttributeError):
            setattr(state, name, value)
    assert state[("m.room.member", "@a:x")] == "$2"
    assert state.to_dict() == {("m.room.create", ""): "$1", ("m.room.member", "@a:x"): "$2"}


def test_statemap_refuses_strings_that_do_not_match_its_entries(store):
    store.add_event(ev("$1", "m.room.create", ""))
    entries = store.state_after("$1").entries

    class Liar:
        def state_strings(self, entries):
            return [], []  # one string short of every entry

        def key_nids(self, type_, state_key):
            return 1, 1

        def event_ids(self, nids):
            return ["$1"]

    state = StateMap(Liar(), entries)
    with pytest.raises(TypeError, match="one key and one event ID per entry"):
        list(state)
    assert state[("m.room.create", "")] == "$1"  # found by binary search, no list read


# -- resolvers ------------------------------------------------------------------------

def _resolver_test(tmp_path, resolver, match, setup=None):
    with roomstate.open(tmp_path / "s", resolver=resolver, check_auth=False) as store:
        fork(store)
        if setup is not None:
            setup(store)
        before = dump(store)
        with pytest.raises(InvalidEventError, match=match) as info:
            store.add_event(ev("$5", prevs=["$3", "$4"]))
        assert dump(store) == before
    return str(info.value)


def test_a_resolver_answer_of_another_room_is_refused(tmp_path):
    def other_room(store):
        store.add_event(ev("$o1", "m.room.create", "", room="!other:x"))
        store.add_event(ev("$o2", "m.room.topic", "", ["$o1"], room="!other:x"))

    def pick_other(ctx):
        return {("m.room.topic", ""): "$o2"}

    message = _resolver_test(tmp_path, pick_other, "an event of another room", other_room)
    assert "pick_other" in message and "('m.room.topic', '')" in message


def test_a_rejected_resolver_answer_is_refused(tmp_path):
    def rejected(store):
        store.add_event(ev("$r", "m.room.topic", "", ["$2"], rejected=True))

    def pick_rejected(ctx):
        return {("m.room.topic", ""): "$r"}

    message = _resolver_test(tmp_path, pick_rejected, "a rejected event", rejected)
    assert "pick_rejected" in message


def test_a_resolver_answer_that_is_no_candidate_is_refused(tmp_path):
    def topic_elsewhere(store):
        store.add_event(ev("$t", "m.room.topic", "", ["$2"]))

    def pick_stranger(ctx):
        assert ctx.conflicted[("m.room.topic", "")] == {"$3", "$4"}
        return {("m.room.topic", ""): "$t"}

    _resolver_test(tmp_path, pick_stranger, "pick_stranger.*not one of the key's candidates", topic_elsewhere)


def test_a_resolver_may_not_change_an_unconflicted_key(tmp_path):
    def other_member(store):
        store.add_event(member("$m", "@a:x", "leave", ["$2"]))

    def change_member(ctx):
        return {("m.room.topic", ""): "$3", ("m.room.member", "@a:x"): "$m"}

    _resolver_test(tmp_path, change_member, "not one of the key's candidates", other_member)


def test_a_resolver_that_writes_is_told_so(tmp_path):
    def writing(ctx):
        ctx.store.add_event(ev("$sneaky", "m.room.topic", "", ["$2"]))
        return {("m.room.topic", ""): "$3"}

    with roomstate.open(tmp_path / "s", resolver=writing, check_auth=False) as store:
        fork(store)
        before = dump(store)
        with pytest.raises(RoomStateError) as info:
            store.add_event(ev("$5", prevs=["$3", "$4"]))
        message = str(info.value)
        assert "writing" in message and "tried to write to the store while resolving" in message
        assert "damaged" not in message
        assert dump(store) == before
        assert not store.has_event("$sneaky")
        store.add_event(ev("$5", prevs=["$3", "$4"]), resolver="newest_event")  # the store works on


def test_good_resolver_answers_still_count(tmp_path):
    with roomstate.open(tmp_path / "s", resolver=lambda ctx: {("m.room.topic", ""): "$4"}, check_auth=False) as store:
        fork(store)
        store.add_event(ev("$5", prevs=["$3", "$4"]))
        assert store.get_state("$5", "m.room.topic", "") == "$4"


def _members_chain(store, n):
    """A create event and ``n`` joins in a line; the last event's ID."""
    store.add_event(ev("$1", "m.room.create", ""))
    prev = "$1"
    for i in range(n):
        store.add_event(member(f"$m{i}", f"@u{i}:x", "join", [prev]))
        prev = f"$m{i}"
    return prev


# -- close() while other threads read -------------------------------------------------

def test_reads_racing_close_get_the_store_is_closed(tmp_path):
    path = tmp_path / "s"
    with roomstate.open(path, check_auth=False) as store:
        prev = _members_chain(store, 200)
    for _ in range(5):
        store = roomstate.open(path, readonly=True)
        errors, start = [], threading.Barrier(5)

        def read():
            start.wait()
            try:
                for _ in range(2000):
                    # Past every cache: new read transactions, cold lookups.
                    store.state_after(prev).to_dict()
                    store.members(prev)
                    store.stats()
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=read) for _ in range(4)]
        for t in threads:
            t.start()
        start.wait()
        store.close()
        for t in threads:
            t.join()
        assert errors, "the readers finished before close()"
        for exc in errors:
            assert isinstance(exc, RoomStateError) and str(exc) == "the store is closed", repr(exc)


# -- damaged values, one decoder at a time ----------------------------------------------

def _sealed(table, key, body):
    """A value of ``table`` as format 3 stores it: ``body`` and its checksum."""
    if table == "meta" and key != b"format" or table in CHECKED_TABLES and table != "meta":
        return (seal_short if table == "flags" else seal)(key, body)
    return body


def _damage(path, table, key, value, sealed=True):
    """Store ``value`` under ``key`` (None: delete it).  ``sealed``: with a right checksum,
    so that the decoder's own checks behind the checksum are what is tested."""
    env = lmdb.open(str(path), max_dbs=20, lock=False)
    db = env.open_db(table.encode(), create=False)
    with env.begin(write=True) as txn:
        if value is None:
            txn.delete(key, db=db)
        else:
            txn.put(key, _sealed(table, key, value) if sealed else value, db=db)
    env.close()


def _u64(n):
    return n.to_bytes(8, "big")


@pytest.fixture
def chain_store(tmp_path):
    path = tmp_path / "s"
    with roomstate.open(path, check_auth=False) as store:
        _members_chain(store, 10)
        snaps = store.stats()["snapshots"]
    return path, snaps


def _raw(path, table, key, body=True):
    """A stored value; ``body``: without its checksum."""
    env = lmdb.open(str(path), max_dbs=20, lock=False, readonly=True)
    db = env.open_db(table.encode(), create=False)
    with env.begin() as txn:
        raw = bytes(txn.get(key, db=db))
    env.close()
    if body and len(_sealed(table, key, b"")):
        raw = raw[:-len(_sealed(table, key, b""))]
    return raw


def test_a_snapshot_loop_is_an_error_not_a_hang(chain_store):
    path, last = chain_store
    raw = _raw(path, "snapshots", _u64(last))
    (kind, hops, weight, parent, n), off = _core.unpack_uvarints(raw, 5)
    assert kind == 2
    _damage(path, "snapshots", _u64(last), _core.pack_uvarints((kind, hops, weight, last, n)) + raw[off:])
    with roomstate.open(path, readonly=True) as store:
        with pytest.raises(StoreFormatError, match=rf"the store is damaged: table 'snapshots', key {last}: its parent {last} is not an older snapshot"):
            store.state_after("$m9")


def test_a_snapshot_chain_with_wrong_hops_is_refused(chain_store):
    path, last = chain_store
    raw = _raw(path, "snapshots", _u64(last))
    (kind, hops, weight, parent, n), off = _core.unpack_uvarints(raw, 5)
    _damage(path, "snapshots", _u64(last), _core.pack_uvarints((kind, hops + 5, weight, parent, n)) + raw[off:])
    with roomstate.open(path, readonly=True) as store:
        with pytest.raises(StoreFormatError, match="table 'snapshots'"):
            store.state_after("$m9")


@pytest.mark.parametrize(
    "table, key, value, read, match",
    [
        ("meta", b"count:events", b"\x01\x02", "open", "table 'meta', key b'count:events': a format-3 meta value is 8 bytes"),
        ("rooms", _u64(1), b"\x01" * 7, "current_state", "table 'rooms', key 1: 7 bytes"),
        ("rooms", _u64(1), (999).to_bytes(8, "little"), "current_state", "table 'rooms', key 1: its forward extremity 999 has no record"),
        ("events", _u64(11), b"\xff" * 5, "event", "table 'events', key 11: cannot be decoded"),
        ("events", _u64(11), None, "event_ids", "table 'events', key 11"),
        ("names_k", _u64(3), b"\xff\xfe", "state", "table 'names_k'"),
        ("names_r", _u64(1), b"\xc3", "rooms", "table 'names_r'"),
        ("flags", _u64(0), b"\x01\x02", "members", "table 'flags', key 0: a mark chunk is 1000 bytes"),
    ],
)
def test_damaged_values_name_their_table_and_key(chain_store, table, key, value, read, match):
    path, _ = chain_store
    _damage(path, table, key, value)
    _read_fails(path, read, match)


def _read_fails(path, read, match):
    """The read ``read`` of the store at ``path`` (or its open: meta values are checked
    there) raises StoreFormatError matching ``match``."""
    with pytest.raises(StoreFormatError, match=match):
        with roomstate.open(path, readonly=True) as store:
            calls = {
                "stats": store.stats,
                "current_state": lambda: store.current_state(ROOM),
                "event": lambda: store.event("$m9"),
                "event_ids": lambda: store.state_after("$m9").to_dict(),
                "state": lambda: store.state_after("$m9").to_dict(),
                "state_cold": lambda: dict(store.state_after("$m9")),
                "rooms": store.rooms,
                "members": lambda: store.members("$m9"),
                "open": lambda: None,
            }
            calls[read]()


@pytest.mark.parametrize(
    "table, key, read",
    [
        ("meta", b"next:s", "open"),
        ("meta", b"count:events", "open"),
        ("names_r", _u64(1), "rooms"),
        ("names_k", _u64(3), "state"),
        ("names_t", _u64(5), "state"),
        ("flags", _u64(0), "members"),
        ("blocks", "every", "state"),
        ("snapshots", None, "state"),
        ("rooms", _u64(1), "current_state"),
    ],
)
def test_a_flipped_bit_in_a_checked_value_is_a_checksum_error(tiny_tiers, tmp_path, table, key, read):
    """Format 3: a value of CHECKED_TABLES changed in one bit (still decodable, most of
    them: a silently wrong answer before) fails its checksum, naming table and key."""
    path = tmp_path / "s"
    with roomstate.open(path, check_auth=False) as store:
        _members_chain(store, 30)
        assert store.stats()["blocks"] >= 1
        if key is None:  # the snapshot of the state after $m9
            with store._tx.reading() as tx:
                events = store._tables.events
                key = _u64(events.get(tx, events.lookup(tx, "$m9")).after)
        keys = [_u64(n) for n in range(1, store.stats()["blocks"] + 1)] if key == "every" else [key]
    for k in keys:
        raw = _raw(path, table, k, body=False)
        flipped = bytearray(raw)
        flipped[len(raw) // 3] ^= 0x04
        _damage(path, table, k, bytes(flipped), sealed=False)
    shown = repr(key) if table == "meta" else r"\d+" if key == "every" else int.from_bytes(key, "big")
    _read_fails(path, read, rf"table '{table}', key {shown}: its checksum is wrong")


def test_a_block_out_of_order_is_refused(tmp_path, tiny_tiers):
    path = tmp_path / "s"
    with roomstate.open(path, check_auth=False) as store:
        prev = _members_chain(store, 30)
        blocks = store.stats()["blocks"]
    assert blocks >= 1
    for nid in range(1, blocks + 1):  # every block the state may read
        raw = _raw(path, "blocks", _u64(nid))
        if len(raw) >= 32:
            _damage(path, "blocks", _u64(nid), raw[16:32] + raw[:16] + raw[32:])
    with roomstate.open(path, readonly=True) as store:
        with pytest.raises(StoreFormatError, match=r"table 'blocks', key \d+: its entries are not sorted"):
            store.state_after(prev).to_dict()
