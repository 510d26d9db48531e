"""The Cython kernels against plain-Python references."""
import base64
import struct

import lmdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roomstate import _core, _names, _records
from roomstate._parse import parse_common
from roomstate._core import ENTRY_DTYPE

E = ENTRY_DTYPE
keys = st.tuples(st.integers(1, 6), st.integers(1, 6))
rows = st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(0, 9)), max_size=40)
big_rows = st.lists(
    st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1)), max_size=30
)


def arr(rows):
    return np.array(list(rows), dtype=E)


def ref_unique(rows, drop_tombstones=False):
    d = {}
    for t, k, e in rows:
        d[(t, k)] = e
    return [(t, k, e) for (t, k), e in sorted(d.items()) if not (drop_tombstones and e == 0)]


def ref_overlay(layers, keep_tombstones=False):
    d = {}
    for layer in layers:
        for t, k, e in layer:
            d[(t, k)] = e
    return [(t, k, e) for (t, k), e in sorted(d.items()) if keep_tombstones or e != 0]


def as_list(a):
    return [tuple(int(x) for x in r) for r in a.tolist()]


def test_empty_inputs():
    empty = arr([])
    assert len(_core.sort_unique(empty)) == 0
    assert len(_core.overlay([])) == 0
    assert len(_core.overlay([empty, empty])) == 0
    k, v = _core.align([empty, empty])
    assert k.shape == (0,) and v.shape == (0, 2)
    a, r = _core.diff(empty, empty)
    assert len(a) == len(r) == 0
    assert _core.find(empty, 1, 1) == -1
    assert _core.lookup_layers([], 1, 1) is None
    assert _core.lookup_layers([empty], 1, 1) is None
    assert len(_core.lookup_keys([empty], empty)) == 0
    assert len(_core.select(empty, [1], [0])) == 0
    assert _core.type_range(empty, 5) == (0, 0)
    assert _core.is_sorted_unique(empty)


def test_one_entry():
    one = arr([(5, 3, 9)])
    assert as_list(_core.sort_unique(one)) == [(5, 3, 9)]
    assert _core.find(one, 5, 3) == 0
    assert _core.find(one, 5, 4) == -1
    assert as_list(_core.select(one, [5], [0])) == [(5, 3, 9)]
    assert _core.lookup_layers([one], 5, 3) == 9


def test_duplicates_and_tombstones():
    a = arr([(2, 1, 5), (1, 1, 1), (2, 1, 0), (2, 1, 7), (3, 3, 0)])
    assert as_list(_core.sort_unique(a)) == [(1, 1, 1), (2, 1, 7), (3, 3, 0)]
    assert as_list(_core.sort_unique(a, drop_tombstones=True)) == [(1, 1, 1), (2, 1, 7)]
    base = arr([(1, 1, 1), (2, 1, 7)])
    tomb = arr([(2, 1, 0)])
    assert as_list(_core.overlay([base, tomb])) == [(1, 1, 1)]
    assert as_list(_core.overlay([base, tomb], keep_tombstones=True)) == [(1, 1, 1), (2, 1, 0)]
    assert _core.lookup_layers([base, tomb], 2, 1) == 0
    assert _core.lookup_keys([base, tomb], arr([(1, 1, 0), (2, 1, 0), (9, 9, 0)])).tolist() == [1, 0, 0]


def test_wrong_inputs_raise_cleanly():
    with pytest.raises(TypeError):
        _core.sort_unique(np.zeros(3, dtype=np.uint64))
    with pytest.raises(TypeError):
        _core.overlay([[1, 2, 3]])
    with pytest.raises(ValueError):
        _core.sort_unique(np.zeros((2, 2), dtype=E))
    with pytest.raises(ValueError):
        _core.select(arr([(1, 1, 1)]), [1, 2], [0])


@given(rows, st.booleans())
def test_sort_unique(rows, drop):
    assert as_list(_core.sort_unique(arr(rows), drop_tombstones=drop)) == ref_unique(rows, drop)


@given(big_rows)
def test_sort_unique_huge_nids(rows):
    out = _core.sort_unique(arr(rows))
    assert as_list(out) == ref_unique(rows)
    assert _core.is_sorted_unique(out)


@given(st.lists(rows, max_size=7), st.booleans())
def test_overlay(layers, keep):
    sorted_layers = [arr(ref_unique(layer)) for layer in layers]
    assert as_list(_core.overlay(sorted_layers, keep_tombstones=keep)) == ref_overlay(
        [ref_unique(layer) for layer in layers], keep
    )


@given(st.lists(rows, min_size=1, max_size=5))
def test_align(states):
    states = [ref_unique(s) for s in states]
    k, v = _core.align([arr(s) for s in states], missing=2**64 - 1)
    dicts = [{(t, kk): e for t, kk, e in s} for s in states]
    expect_keys = sorted(set().union(*dicts))
    assert [(int(r[0]), int(r[1])) for r in k.tolist()] == expect_keys
    for i, key in enumerate(expect_keys):
        assert [int(x) for x in v[i]] == [d.get(key, 2**64 - 1) for d in dicts]



@given(st.lists(rows, max_size=5), st.lists(rows, max_size=4))
def test_align_fills_gaps_from_the_base(states, base):
    """With ``base``, a key a state lacks takes its value in the overlaid base layers."""
    states = [ref_unique(s, drop_tombstones=False) for s in states]
    base = [ref_unique(layer) for layer in base]
    k, v = _core.align([arr(s) for s in states], base=[arr(layer) for layer in base])
    under = {(t, kk): e for t, kk, e in ref_overlay(base, keep_tombstones=True)}
    dicts = [{(t, kk): e for t, kk, e in s} for s in states]
    expect_keys = sorted(set().union(*dicts))
    assert [(int(r[0]), int(r[1])) for r in k.tolist()] == expect_keys
    assert v.shape == (len(expect_keys), len(states))
    for i, key in enumerate(expect_keys):
        assert [int(x) for x in v[i]] == [d.get(key, under.get(key, 0)) for d in dicts]

@given(rows, rows)
def test_diff(a, b):
    a, b = ref_unique(a, True), ref_unique(b, True)
    added, removed = _core.diff(arr(a), arr(b))
    da, db = {(t, k): e for t, k, e in a}, {(t, k): e for t, k, e in b}
    assert as_list(added) == sorted((t, k, e) for (t, k), e in db.items() if da.get((t, k)) != e)
    assert as_list(removed) == sorted((t, k, e) for (t, k), e in da.items() if db.get((t, k)) != e)


@given(rows, keys)
def test_find_and_lookup(rows, key):
    s = ref_unique(rows)
    a = arr(s)
    idx = _core.find(a, *key)
    expect = [i for i, (t, k, _) in enumerate(s) if (t, k) == key]
    assert idx == (expect[0] if expect else -1)


@given(st.lists(rows, max_size=5), st.lists(keys, max_size=10))
def test_lookup_layers_and_keys(layers, ks):
    layers = [ref_unique(layer) for layer in layers]
    arrays = [arr(layer) for layer in layers]
    merged = {}
    for layer in layers:
        for t, k, e in layer:
            merged[(t, k)] = e
    for key in ks:
        assert _core.lookup_layers(arrays, *key) == merged.get(key)
    q = arr(sorted({(t, k, 0) for t, k in ks}))
    got = _core.lookup_keys(arrays, q).tolist()
    assert got == [merged.get((int(t), int(k)), 0) for t, k, _ in q.tolist()]


@given(rows, st.lists(st.tuples(st.integers(1, 7), st.integers(0, 7)), max_size=5))
def test_select_and_type_range(rows, filt):
    s = ref_unique(rows)
    a = arr(s)
    got = as_list(_core.select(a, [t for t, _ in filt], [k for _, k in filt]))
    want = [r for r in s if any(r[0] == t and (k == 0 or r[1] == k) for t, k in filt)]
    assert got == want
    for t in range(1, 8):
        lo, hi = _core.type_range(a, t)
        assert [r for r in s if r[0] == t] == s[lo:hi]


def test_type_range_at_the_top_of_the_nid_space():
    a = arr([(2**32 - 1, 2**32 - 1, 1), (2**32 - 1, 0, 2)])
    a = _core.sort_unique(a)
    assert _core.type_range(a, 2**32 - 1) == (0, 2)
    assert len(_core.select(a, [2**32 - 1], [0])) == 2


@settings(max_examples=50)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=20))
def test_varints_round_trip(values):
    packed = _core.pack_uvarints(values)
    assert _core.unpack_uvarints(packed, len(values)) == (values, len(packed))


@given(big_rows)
def test_entry_varints_round_trip(rows):
    a = arr(rows)
    assert as_list(_core.unpack_entries(_core.pack_entries(a), len(a))) == as_list(a)


def test_truncated_varints_raise():
    with pytest.raises(ValueError):
        _core.unpack_uvarints(b"\x80", 1)
    with pytest.raises(ValueError):
        _core.unpack_entries(b"\x01\x02", 1)
    with pytest.raises(ValueError):
        _core.unpack_uvarints(b"\xff" * 11, 1)


def test_read_only_buffers_work_without_copies():
    raw = arr([(1, 1, 1), (5, 2, 3)]).tobytes()
    view = np.frombuffer(raw, dtype=E)
    assert not view.flags.writeable
    assert _core.find(view, 5, 2) == 1
    assert as_list(_core.overlay([view])) == [(1, 1, 1), (5, 2, 3)]


U64 = st.integers(0, 2**64 - 1)


@given(U64, st.lists(U64, min_size=8, max_size=8), st.lists(U64, max_size=20), st.binary(max_size=50))
def test_event_records_round_trip(nid, head, prevs, tail):
    flags, membership, room, type_, skey, depth, before, after = head
    raw = _records.pack_record(nid, flags, membership, room, type_, skey, depth, before, after, tuple(prevs), tail)
    *fields, off = _records.unpack_record(raw, nid)
    assert fields == [flags, membership, room, type_, skey, depth, before, after, tuple(prevs)]
    assert raw[off:] == tail
    with pytest.raises(ValueError):
        _records.unpack_record(raw[: min(off, 3)] if off > 3 else b"\x80", nid)


@given(
    st.integers(1, 2**63),
    st.lists(st.integers(1, 2**63), max_size=20),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.sets(st.integers(1, 2**63), max_size=12),
    st.integers(0, 2**64 - 1),
    st.text(min_size=1, max_size=50),
    st.integers(0, 2**64 - 1),
)
def test_auth_sections_round_trip(nid, prevs, sender, ts, auth, extras, event_id, reason):
    auth = tuple(sorted(auth))
    tail = event_id.encode("utf-8", "surrogatepass")
    flags = _records.HAS_AUTH | _records.IS_STATE
    raw = _records.pack_record(nid, flags, 1, 2, 3, 4, 5, 6, 6, tuple(prevs), tail, sender, ts, auth, extras, reason)
    *fields, off = _records.unpack_record(raw, nid)
    assert fields == [flags, 1, 2, 3, 4, 5, 6, 6, tuple(prevs)]
    assert raw[off:] == tail  # the event ID after the auth section
    assert _records.unpack_auth(raw, nid) == (sender, ts, auth, extras, reason)
    rec = _records.Record.unpack(raw, nid)
    assert (rec.sender, rec.ts, rec.auth_events, rec.extras, rec.reason) == (sender, ts, auth, extras, reason)
    assert rec.pack(nid) == raw
    for cut in range(off - 1, max(off - 8, 0), -1):  # cut inside the auth section
        with pytest.raises(ValueError):
            _records.unpack_auth(raw[:cut], nid)


def test_auth_events_must_ascend():
    with pytest.raises(ValueError, match="ascending"):
        _records.pack_record(9, _records.HAS_AUTH, 0, 1, 1, 0, 1, 1, 1, (), b"$e", 1, 1, (5, 3), 0)
    plain = _records.pack_record(9, 0, 0, 1, 1, 0, 1, 1, 1, (), b"$e")
    assert _records.unpack_auth(plain, 9) is None


@given(st.binary(min_size=32, max_size=32))
def test_event_ids_pack_to_32_bytes(raw):
    import base64

    eid = "$" + base64.urlsafe_b64encode(raw).decode()[:43]
    assert _records.pack_event_id(eid) == raw
    assert _records.unpack_event_id(raw) == eid


@given(st.text(max_size=60))
def test_other_event_ids_are_left_alone(eid):
    packed = _records.pack_event_id(eid)
    if packed is not None:
        assert _records.unpack_event_id(packed) == eid


@given(st.lists(st.tuples(U64, st.lists(U64, max_size=3), st.text(min_size=1, max_size=50)), max_size=10))
def test_fetch_names_decodes_event_records(records_env, rows):
    from roomstate.events import Record

    env, db = records_env
    with env.begin(write=True) as txn:
        for i, (nid, prevs, eid) in enumerate(rows):
            txn.put(struct.pack(">Q", i + 1), Record(1, 0, 1, 1, 1, 1, 1, 1, tuple(prevs), eid).pack(nid), db=db)
        assert _names.fetch_names(txn, db, range(1, len(rows) + 1), records=True) == [eid for _, _, eid in rows]
        txn.abort()


@pytest.fixture(scope="module")
def records_env(tmp_path_factory):
    env = lmdb.open(str(tmp_path_factory.mktemp("records")), max_dbs=1)
    yield env, env.open_db(b"records")
    env.close()


_ids = st.text(max_size=6) | st.sampled_from(["$a", "$b", "$c"])
_junk = st.none() | st.integers(-2, 2**64) | st.booleans() | st.text(max_size=4) | st.lists(st.text(max_size=3), max_size=2)
_event = st.fixed_dictionaries(
    {"event_id": _ids, "room_id": _ids | _junk, "type": st.sampled_from(["m.room.member", "m.room.topic", "x"]) | _junk},
    optional={
        "state_key": _ids | _junk,
        "prev_events": st.lists(_ids | _junk, max_size=12) | _junk,
        "depth": _junk,
        "rejected": _junk,
        "content": st.fixed_dictionaries({}, optional={"membership": st.sampled_from(["join", "leave", "zzz"]) | _junk})
        | _junk,
    },
)


def _fields(p):
    return (p.event_id, p.room_id, p.type, p.state_key, p.prev_ids, p.depth, p.rejected, p.membership)


@settings(max_examples=400)
@given(_event)
def test_the_fast_parse_path_agrees_with_the_full_validation(ev):
    """parse_common takes only what it is sure of (None sends the rest to the full
    validation, which names the field of any error), and agrees with it."""
    from roomstate.errors import InvalidEventError
    from roomstate.events import _parse

    fast = parse_common(ev)
    try:
        slow = _parse(ev)
    except InvalidEventError:
        assert fast is None
    else:
        if fast is not None:
            assert _fields(fast) == _fields(slow)


@settings(max_examples=200)
@given(
    st.integers(1, 40),
    st.lists(st.tuples(st.sampled_from(["set", "get", "clear"]), st.integers(1, 2**64 - 1) | st.integers(1, 60)),
             max_size=300),
)
def test_name_cache_is_a_bounded_map(limit, ops):
    cache = _names.NameCache(limit)
    model = {}
    for i, (op, key) in enumerate(ops):
        if op == "set":
            if key not in model and len(model) >= limit:
                model.clear()  # full: the cache empties before it takes a new key
            cache[key] = model[key] = f"v{i}"
        elif op == "clear":
            cache.clear()
            model.clear()
        assert cache.get(key) == model.get(key)
        assert (key in cache) == (key in model)
        assert len(cache) == len(model) <= limit
    for key, value in model.items():
        assert cache[key] == value


def test_name_cache_rejects_what_it_cannot_hold():
    cache = _names.NameCache(4)
    with pytest.raises(ValueError):
        cache[0] = "x"
    with pytest.raises(OverflowError):
        cache[-1] = "x"
    with pytest.raises(KeyError):
        cache[7]
    assert cache.get(7, "d") == "d" and 0 not in cache and "7" not in cache and 2**64 not in cache
    with pytest.raises(ValueError):
        _names.NameCache(0)
    cache.update({1: "a", 2: "b"})
    cache.publish({3: "c"})
    assert [cache[k] for k in (1, 2, 3)] == ["a", "b", "c"] and cache.limit == 4


@given(rows, st.sets(st.integers(1, 6)), st.sets(st.integers(1, 6)), st.sets(st.integers(0, 9)))
def test_state_names_fills_what_the_caches_hold(rows, known_types, known_keys, known_events):
    a = arr(rows)
    pairs, types, skeys, events = (_names.NameCache(100) for _ in range(4))
    for t in known_types:
        types[t] = f"t{t}"
    for k in known_keys:
        skeys[k] = f"k{k}"
    for e in known_events - {0}:
        events[e] = f"${e}"
    keys, values, missing = _names.state_names(a, pairs, types, skeys, events)
    want_keys = [(f"t{t}", f"k{k}") if t in known_types and k in known_keys else None for t, k, _ in rows]
    want_values = [f"${e}" if e in known_events and e else None for _, _, e in rows]
    assert keys == want_keys and values == want_values
    assert missing == want_keys.count(None) + want_values.count(None)
    # key tuples are shared: a second read returns the same objects
    again = _names.state_names(a, pairs, types, skeys, events)[0]
    assert all(x is y for x, y in zip(again, keys) if x is not None)


def test_fetch_names_reads_names_and_event_ids(tmp_path):
    key = struct.Struct(">Q").pack
    v4 = "$" + base64.urlsafe_b64encode(bytes(range(32))).decode().rstrip("=")
    env = lmdb.open(str(tmp_path / "db"), max_dbs=2)
    try:
        names, records = env.open_db(b"names"), env.open_db(b"records")
        with env.begin(write=True) as txn:
            txn.put(key(1), "é".encode(), db=names)
            txn.put(key(3), "\ud800".encode("utf-8", "surrogatepass"), db=names)  # kept exact
            txn.put(key(2), _records.Record(0, 0, 1, 1, 0, 1, 0, 0, (), "$plain:x").pack(2), db=records)
            txn.put(key(5), _records.Record(0, 0, 1, 1, 0, 2, 0, 0, (2,), v4).pack(5), db=records)
        with env.begin(buffers=True) as txn:
            assert _names.fetch_names(txn, names, [3, 1, 2]) == ["\ud800", "é", None]
            assert _names.fetch_names(txn, records, [5, 2, 4], records=True) == [v4, "$plain:x", None]
            assert _names.fetch_names(txn, names, []) == []
    finally:
        env.close()


def test_name_cache_absent_and_put_many():
    cache = _names.NameCache(10)
    cache.put_many([5, 1, 9], ["e", "a", "i"])
    assert cache.absent([1, 2, 5, 7, 9]) == [2, 7]
    assert [cache[k] for k in (1, 5, 9)] == ["a", "e", "i"]
