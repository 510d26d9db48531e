"""Fuzzing: junk events, random arrays into the Cython kernels, strings and sizes at the edges.

Every case must end in a right answer or a clean exception — never a crash, a
memory error or an exception of the wrong kind.  Run these also against a debug
build of the extension (bounds checks on)::

    ROOMSTATE_DEBUG=1 python setup.py build_ext --inplace
    pytest tests/test_fuzz.py
"""
from __future__ import annotations

import os
import enum
import string
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import roomstate
from roomstate import _core, _records
from roomstate.errors import RoomStateError

# When an example fails, Hypothesis's report imports a module that warns (in this
# environment); with filterwarnings=error that would hide the failure behind an INTERNALERROR.
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")

E = _core.ENTRY_DTYPE
U32, U64 = 2**32 - 1, 2**64 - 1
FUZZ = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CLEAN = (TypeError, ValueError, OverflowError, IndexError, KeyError)

# -- strings and junk -----------------------------------------------------------------------------

SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udc80b", "\ud83d"])


class Str(str):
    """A str subclass: still a string."""


class Depth(enum.IntEnum):
    SEVEN = 7


edge_text = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=30),
    st.sampled_from(["", "\x00", "a\x00b", "é", "日本語", "🙂" * 3, "$" + "A" * 43, "$" + "A" * 42 + "B", " "]),
    SURROGATES,
    st.builds(lambda n: "x" * n, st.sampled_from([31, 32, 33, 511, 512, 65536])),
)
junk = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(),
        edge_text,
        st.binary(max_size=16),
        st.builds(Str, edge_text),
        st.just(Depth.SEVEN),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.tuples(inner, inner),
        st.dictionaries(edge_text, inner, max_size=3),
        st.sets(st.integers(0, 3), max_size=3),
    ),
    max_leaves=6,
)

HASHABLE = st.one_of(
    st.none(), st.booleans(), st.integers(), edge_text, st.binary(max_size=8), st.tuples(edge_text, edge_text),
    st.tuples(st.sampled_from(["m.room.member", "m.room.topic"]), st.one_of(st.none(), st.integers())),
)
ROOM = "!fuzz:test"
SEED_IDS = ["$create", "$alice", "$msg", "$topic"]
MEMBER_TYPES = ["m.room.member", "m.room.message", "m.room.create", "m.room.power_levels", "m.room.topic"]

event_ids = st.one_of(st.sampled_from(SEED_IDS + ["$new1", "$new2", "$x" + "y" * 40]), edge_text, st.builds(Str, edge_text))
prev_entry = st.one_of(
    st.sampled_from(SEED_IDS),
    event_ids,
    st.tuples(st.sampled_from(SEED_IDS), st.dictionaries(st.text(max_size=3), st.text(max_size=3))).map(list),
    junk,
)
FIELDS = {
    "event_id": event_ids,
    "room_id": st.one_of(st.just(ROOM), st.just("!other:test"), junk),
    "type": st.one_of(st.sampled_from(MEMBER_TYPES), edge_text, junk),
    "state_key": st.one_of(st.sampled_from(["", "@alice:test", "@bob:test"]), edge_text, junk),
    "prev_events": st.one_of(
        st.lists(prev_entry, max_size=4), st.lists(st.sampled_from(SEED_IDS), min_size=1, max_size=20), junk
    ),
    "depth": st.one_of(
        st.integers(min_value=-5, max_value=2**64), st.sampled_from([0, 2**63 - 1, 2**63, True]), junk
    ),
    "rejected": st.one_of(st.booleans(), junk),
    "content": st.one_of(
        st.fixed_dictionaries({"membership": st.one_of(st.sampled_from(["join", "leave", "ban", "knock", "invite", "weird"]), junk)}),
        junk,
    ),
}


@st.composite
def events(draw):
    """A plausible event with up to two fields missing or junk (or, rarely, pure junk)."""
    ev = {
        "event_id": draw(st.one_of(st.sampled_from(SEED_IDS + ["$new1", "$new2"]), edge_text)),
        "room_id": draw(st.sampled_from([ROOM, ROOM, "!other:test"])),
        "type": draw(st.sampled_from(MEMBER_TYPES)),
        "prev_events": draw(st.lists(st.sampled_from(SEED_IDS + ["$unknown"]), max_size=20)),
    }
    if draw(st.booleans()):
        ev["state_key"] = draw(st.one_of(st.sampled_from(["", "@alice:test", "@bob:test"]), edge_text))
    if draw(st.booleans()):
        ev["content"] = {"membership": draw(st.sampled_from(["join", "leave", "ban", "knock", "invite", "weird"]))}
    if draw(st.integers(0, 3)) == 0:
        ev["depth"] = draw(st.integers(0, 50))
    if draw(st.integers(0, 5)) == 0:
        ev["rejected"] = True
    for field in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=2, unique=True)):
        if draw(st.integers(0, 3)) == 0:
            ev.pop(field, None)
        else:
            ev[field] = draw(FIELDS[field])
    kind = draw(st.sampled_from(["dict"] * 8 + ["proxy", "junk"]))
    if kind == "proxy":
        return types.MappingProxyType(ev)
    if kind == "junk":
        return draw(junk)
    return ev


given_states = st.one_of(
    st.none(),
    st.just({("m.room.create", ""): "$create", ("m.room.member", "@alice:test"): "$alice"}),
    st.dictionaries(st.tuples(st.sampled_from(MEMBER_TYPES), st.sampled_from(["", "@alice:test"])), st.sampled_from(SEED_IDS), max_size=3),
    st.dictionaries(HASHABLE, junk, max_size=3),
    junk,
)


def seed_room(store):
    store.add_event({"event_id": "$create", "room_id": ROOM, "type": "m.room.create", "state_key": ""})
    store.add_event(
        {
            "event_id": "$alice",
            "room_id": ROOM,
            "type": "m.room.member",
            "state_key": "@alice:test",
            "content": {"membership": "join"},
            "prev_events": ["$create"],
        }
    )
    store.add_event({"event_id": "$msg", "room_id": ROOM, "type": "m.room.message", "prev_events": ["$alice"]})
    store.add_event({"event_id": "$topic", "room_id": ROOM, "type": "m.room.topic", "state_key": "", "prev_events": ["$alice"]})


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory):
    with roomstate.open(tmp_path_factory.mktemp("fuzz"), durable=False, resolver="newest_event", check_auth=False) as store:
        seed_room(store)
        yield store


def observe(store, eid):
    s = store.stats()
    seen = {
        "events": s["events"],
        "state_events": s["state_events"],
        "entries": {name: t["entries"] for name, t in s["tables"].items()},
        "extremities": store.forward_extremities(ROOM),
        "current": store.current_state(ROOM).entries.tobytes(),
    }
    if isinstance(eid, str):
        seen["has"] = store.has_event(eid)
    return seen


@FUZZ
@given(ev=events(), outlier=st.booleans(), state_before=given_states)
def test_junk_events_are_stored_or_refused_cleanly(fuzz_store, ev, outlier, state_before):
    store = fuzz_store
    eid = ev.get("event_id") if isinstance(ev, (dict, types.MappingProxyType)) else None
    before = observe(store, eid)
    try:
        store.add_event(ev, outlier=outlier, state_before=state_before)
    except RoomStateError as exc:
        event(f"refused: {type(exc).__name__} {getattr(exc, 'field', '')}")
        # A failed add leaves the store exactly as it was.
        assert observe(store, eid) == before
        return
    event("stored")
    assert isinstance(eid, str) and store.has_event(eid)
    if not store.is_outlier(eid):
        after = store.state_after(eid)
        assert after.to_dict() == dict(after.items())
    # Adding it again changes nothing.
    again = observe(store, eid)
    try:
        store.add_event(ev, outlier=outlier, state_before=state_before)
    except RoomStateError:
        pass  # e.g. an outlier re-added with state is still refused the same way
    assert observe(store, eid)["entries"] == again["entries"]


@FUZZ
@given(batch=st.lists(events(), min_size=1, max_size=5))
def test_a_failing_add_events_leaves_nothing_behind(fuzz_store, batch):
    store = fuzz_store
    before = observe(store, None)
    try:
        store.add_events(batch)
    except RoomStateError:
        assert observe(store, None) == before


def test_str_subclasses_are_strings(tmp_path):
    """JSON decoders and frameworks may hand over str subclasses: still valid strings."""
    with roomstate.open(tmp_path, check_auth=False) as store:
        store.add_event({"event_id": Str("$c"), "room_id": Str(ROOM), "type": Str("m.room.create"), "state_key": Str("")})
        v4 = Str("$" + "A" * 42 + "E")  # a room v4+ event ID, packed to 32 bytes
        store.add_event({"event_id": v4, "room_id": ROOM, "type": "m.room.message", "prev_events": [Str("$c")]})
        assert store.forward_extremities(ROOM) == [v4]


# -- strings at the edges, many prevs, big states ---------------------------------------------------

EDGE_STRINGS = [
    "",
    "\x00",
    "nul\x00inside",
    "é日本語🙂",
    "\u202eright-to-left",
    "\ud800",
    "lone\udfffsurrogate",
    "x" * 32,
    "x" * 33,
    "y" * 65536,
    "$" + "A" * 43,  # looks like a v4 event ID but is not canonical (trailing bits set)
    "$" + "A" * 42 + "E",  # canonical v4 event ID
    " ",
]


def test_strings_at_the_edges_round_trip(tmp_path):
    with roomstate.open(tmp_path, check_auth=False) as store:
        room = "!edge\x00é\ud800:" + "r" * 600
        prev = "$create" + "🙂"
        store.add_event({"event_id": prev, "room_id": room, "type": "m.room.create", "state_key": ""})
        expect = {("m.room.create", ""): prev}
        for i, s in enumerate(EDGE_STRINGS):
            for j, (etype, key) in enumerate([("m.room.member", s), (s or "t", s), (s or "t2", "")]):
                # event IDs at the edges too; the canonical v4 ID is used as it is
                eid = s if (j == 0 and s == "$" + "A" * 42 + "E") else f"{s}#{i}.{j}"
                ev = {
                    "event_id": eid,
                    "room_id": room,
                    "type": etype,
                    "state_key": key,
                    "prev_events": [prev],
                    "content": {"membership": "join"},
                }
                store.add_event(ev)
                expect[(etype, key)] = eid
                prev = eid
        after = store.state_after(prev)
        assert after.to_dict() == expect
        for key, eid in expect.items():
            assert store.get_state(prev, *key, after=True) == eid
            assert after[key] == eid
        assert sorted(store.members(prev, after=True)) == sorted(k for (t, k) in expect if t == "m.room.member")
        assert store.forward_extremities(room) == [prev]
        assert store.current_state(room).to_dict() == expect
        big = ("y" * 65536, "y" * 65536)
        state = store.state_after(prev, types=[("m.room.member", None), big])
        assert set(state.keys()) == {k for k in expect if k[0] == "m.room.member"} | {big}
    with roomstate.open(tmp_path, readonly=True) as store:  # and from disk, cold
        assert store.state_after(prev).to_dict() == expect


def test_strings_that_are_not_strings_are_refused(tmp_path):
    with roomstate.open(tmp_path, check_auth=False) as store:
        for field in ("event_id", "room_id", "type", "state_key"):
            for bad in (b"bytes", 5, None, ["x"], 1.5):
                ev = {"event_id": "$e", "room_id": ROOM, "type": "m.room.create", "state_key": ""}
                ev[field] = bad
                with pytest.raises(roomstate.InvalidEventError) as info:
                    store.add_event(ev)
                assert info.value.field == field
        assert store.stats()["events"] == 0


def test_twenty_prev_events(tmp_path):
    """A fork of 20 branches, each changing shared and own keys, merged by one event
    with 20 prev events: newest_event picks per key, as a dict reference does."""
    with roomstate.open(tmp_path, resolver="newest_event", check_auth=False) as store:
        store.add_event({"event_id": "$c", "room_id": ROOM, "type": "m.room.create", "state_key": ""})
        base = {("m.room.create", ""): "$c"}
        heads, states, depth = [], [], {"$c": 1}
        for b in range(20):
            prev, state = "$c", dict(base)
            for k in range(b % 4 + 1):
                eid = f"$b{b}e{k}"
                key = ("m.room.topic", "") if k == 0 else ("m.room.member", f"@u{b}.{k}:test")
                store.add_event(
                    {"event_id": eid, "room_id": ROOM, "type": key[0], "state_key": key[1], "prev_events": [prev],
                     "content": {"membership": "join"}}
                )
                depth[eid] = depth[prev] + 1
                state[key] = eid
                prev = eid
            heads.append(prev)
            states.append(state)
        store.add_event({"event_id": "$merge", "room_id": ROOM, "type": "m.room.message", "prev_events": heads})
        want = {}
        for key in set().union(*states):
            values = {s.get(key) for s in states}
            want[key] = values.pop() if len(values) == 1 else max(values - {None}, key=lambda e: (depth[e], e))
        assert store.state_before("$merge").to_dict() == want
        assert store.forward_extremities(ROOM) == ["$merge"]
        with pytest.raises(roomstate.InvalidEventError):
            store.add_event({"event_id": "$merge", "room_id": ROOM, "type": "m.room.message", "prev_events": heads[:-1]})


def test_a_state_of_100k_keys(tmp_path):
    """10^5 member events in a line, then an event given that whole state: reads,
    filters, diffs and members at that size."""
    n = 100_000
    room = "!big:test"
    events = [{"event_id": "$c", "room_id": room, "type": "m.room.create", "state_key": ""}]
    prev = "$c"
    for i in range(n):
        e = {"event_id": f"$m{i}", "room_id": room, "type": "m.room.member", "state_key": f"@u{i}:test",
             "content": {"membership": "leave" if i % 10 == 0 else "join"}, "prev_events": [prev]}
        events.append(e)
        prev = e["event_id"]
    with roomstate.open(tmp_path, durable=False, check_auth=False) as store:
        store.add_events(events)
        state = store.state_after(prev)
        assert len(state) == n + 1
        d = state.to_dict()
        assert d[("m.room.member", "@u77777:test")] == "$m77777"
        assert store.get_state(prev, "m.room.member", f"@u{n - 1}:test", after=True) == prev
        assert store.get_state(prev, "m.room.member", f"@u{n - 1}:test") is None
        assert len(store.members(prev, after=True)) == n - n // 10
        assert len(store.members(prev, "leave", after=True)) == n // 10
        diff = store.state_diff("$m50000", prev)
        assert len(diff.added) == n - 50001 and diff.removed == {}
        sub = store.state_after(prev, types=[("m.room.member", f"@u{i}:test") for i in range(0, n, 1000)])
        assert len(sub) == 100
        # The same state given explicitly (the event's own prevs unknown).
        store.add_event({"event_id": "$given", "room_id": room, "type": "m.room.message", "prev_events": ["$elsewhere"]}, state_before=d)
        assert store.state_before("$given") == state
        assert store.stats()["events"] == n + 2


# -- the Cython kernels against pure-Python references --------------------------------------------

small = st.integers(0, 6)
nid32 = st.one_of(small, st.integers(0, U32), st.sampled_from([0, 1, 2**31, U32 - 1, U32]))
nid64 = st.one_of(small, st.integers(0, U64), st.sampled_from([0, 1, 2**63 - 1, 2**63, U64]))
rows = st.lists(st.tuples(nid32, nid32, nid64), max_size=40)


def arr(rs):
    return np.array(rs, dtype=E) if rs else np.empty(0, dtype=E)


@st.composite
def layouts(draw, rs):
    """The same entries as a plain, read-only, strided or record array."""
    a = arr(rs)
    kind = draw(st.sampled_from(["plain", "readonly", "strided", "record"]))
    if kind == "readonly":
        return np.frombuffer(a.tobytes(), dtype=E)
    if kind == "strided":
        return np.repeat(a, 2)[::2]
    if kind == "record":
        return a.view(np.recarray)
    return a


def key(r):
    return (r[0], r[1])


def ref_sort_unique(rs, drop=False):
    last = {}
    for r in rs:
        last[key(r)] = r
    return [last[k] for k in sorted(last) if not (drop and last[k][2] == 0)]


def ref_overlay(layers, keep=False):
    d = {}
    for layer in layers:
        for r in layer:
            d[key(r)] = r
    return [d[k] for k in sorted(d) if keep or d[k][2] != 0]


def as_rows(a):
    return [tuple(int(x) for x in r) for r in a.tolist()]


sorted_rows = rows.map(ref_sort_unique)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), rs=rows, drop=st.booleans())
def test_sort_unique(data, rs, drop):
    a = data.draw(layouts(rs))
    out = _core.sort_unique(a, drop)
    assert out.dtype == E
    assert as_rows(out) == ref_sort_unique(rs, drop)
    assert _core.is_sorted_unique(out)
    assert _core.is_sorted_unique(a) == (rs == ref_sort_unique(rs))


@settings(max_examples=300, deadline=None)
@given(layers=st.lists(sorted_rows, max_size=6), keep=st.booleans())
def test_overlay(layers, keep):
    out = _core.overlay([arr(layer) for layer in layers], keep)
    assert as_rows(out) == ref_overlay(layers, keep)


@settings(max_examples=200, deadline=None)
@given(layers=st.lists(rows, max_size=5), keep=st.booleans())
def test_overlay_of_unsorted_layers_is_safe(layers, keep):
    """Unsorted or duplicated layers break the contract: any answer, but no crash."""
    out = _core.overlay([arr(layer) for layer in layers], keep)
    assert len(out) <= sum(map(len, layers))


@settings(max_examples=300, deadline=None)
@given(states=st.lists(sorted_rows, max_size=5), missing=nid64)
def test_align(states, missing):
    keys, values = _core.align([arr(s) for s in states], missing)
    union = sorted({key(r) for s in states for r in s})
    assert [(t, k) for t, k, _ in as_rows(keys)] == union
    assert values.shape == (len(union), len(states))
    maps = [{key(r): r[2] for r in s} for s in states]
    for i, kk in enumerate(union):
        assert [int(v) for v in values[i]] == [m.get(kk, missing) for m in maps]


@settings(max_examples=200, deadline=None)
@given(states=st.lists(rows, max_size=4))
def test_align_of_unsorted_states_is_safe(states):
    keys, values = _core.align([arr(s) for s in states])
    assert len(keys) <= sum(map(len, states)) and values.shape[0] == len(keys)


@settings(max_examples=300, deadline=None)
@given(a=sorted_rows, b=sorted_rows)
def test_diff(a, b):
    added, removed = _core.diff(arr(a), arr(b))
    ma, mb = {key(r): r for r in a}, {key(r): r for r in b}
    assert as_rows(added) == [mb[k] for k in sorted(mb) if ma.get(k) != mb[k]]
    assert as_rows(removed) == [ma[k] for k in sorted(ma) if mb.get(k) != ma[k]]


@settings(max_examples=200, deadline=None)
@given(a=rows, b=rows)
def test_diff_of_unsorted_states_is_safe(a, b):
    added, removed = _core.diff(arr(a), arr(b))
    assert len(added) <= len(b) and len(removed) <= len(a)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), rs=sorted_rows, t=nid32, k=nid32)
def test_find_and_type_range(data, rs, t, k):
    a = data.draw(layouts(rs))
    if rs and data.draw(st.booleans()):
        t, k = key(data.draw(st.sampled_from(rs)))
    keys = [key(r) for r in rs]
    assert _core.find(a, t, k) == (keys.index((t, k)) if (t, k) in keys else -1)
    lo, hi = _core.type_range(a, t)
    idx = [i for i, r in enumerate(rs) if r[0] == t]
    assert (lo, hi) == ((idx[0], idx[-1] + 1) if idx else (lo, lo))
    assert 0 <= lo <= len(rs)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), layers=st.lists(sorted_rows, max_size=5), t=nid32, k=nid32)
def test_lookup_layers(data, layers, t, k):
    everything = [r for layer in layers for r in layer]
    if everything and data.draw(st.booleans()):
        t, k = key(data.draw(st.sampled_from(everything)))
    want = None  # absent from every layer
    for layer in layers:
        for r in layer:
            if key(r) == (t, k):
                want = r[2]
    assert _core.lookup_layers([arr(layer) for layer in layers], t, k) == want


@settings(max_examples=300, deadline=None)
@given(layers=st.lists(sorted_rows, max_size=5), probe=rows)
def test_lookup_keys(layers, probe):
    d = {}
    for layer in layers:
        for r in layer:
            d[key(r)] = r[2]
    probe_keys = probe + [r for layer in layers for r in layer][:10]
    out = _core.lookup_keys([arr(layer) for layer in layers], arr(probe_keys))
    assert [int(v) for v in out] == [d.get(key(r), 0) for r in probe_keys]


@settings(max_examples=300, deadline=None)
@given(rs=sorted_rows, pairs=st.lists(st.tuples(nid32, nid32), max_size=6))
def test_select(rs, pairs):
    tn = [p[0] for p in pairs]
    kn = [p[1] for p in pairs]
    out = _core.select(arr(rs), tn, kn)
    want = [r for r in rs if any(r[0] == t and (k == 0 or r[1] == k) for t, k in pairs)]
    assert as_rows(out) == want


@settings(max_examples=200, deadline=None)
@given(values=st.lists(nid64, max_size=20), rs=rows, raw=st.binary(max_size=64), count=st.integers(-3, 50),
       offset=st.integers(-3, 70))
def test_varints(values, rs, raw, count, offset):
    packed = _core.pack_uvarints(values)
    assert _core.unpack_uvarints(packed, len(values)) == (values, len(packed))
    blob = _core.pack_entries(arr(rs))
    assert as_rows(_core.unpack_entries(blob, len(rs))) == rs
    # Junk bytes: values or a clean ValueError, never a read past the buffer.
    for fn in (_core.unpack_uvarints, _core.unpack_entries):
        try:
            fn(raw, count, offset)
        except ValueError:
            pass


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(min_size=32, max_size=32), s=st.one_of(edge_text, st.text(string.ascii_letters + string.digits + "-_", min_size=43, max_size=43).map(lambda x: "$" + x)))
def test_event_id_packing(raw, s):
    eid = _records.unpack_event_id(raw)
    assert len(eid) == 44 and _records.pack_event_id(eid) == raw
    packed = _records.pack_event_id(s)
    assert packed is None or (len(packed) == 32 and _records.unpack_event_id(packed) == s)


# -- wrong inputs: a clean exception ----------------------------------------------------------------

GOOD = arr([(1, 1, 1), (2, 1, 5)])
WRONG = [
    None,
    5,
    "entries",
    b"\x00" * 16,
    [(1, 1, 1)],
    np.zeros(3, dtype=np.float64),
    np.zeros(3, dtype=np.uint64),
    np.zeros(48, dtype=np.uint8),
    np.zeros((2, 2), dtype=E),
    np.zeros((), dtype=E),
    np.zeros(2, dtype=[("type", ">u4"), ("state_key", ">u4"), ("event", ">u8")]),
    np.zeros(2, dtype=[("state_key", "<u4"), ("type", "<u4"), ("event", "<u8")]),
    np.zeros(2, dtype=[("type", "<u8"), ("state_key", "<u8"), ("event", "<u8")]),
    np.zeros(2, dtype=object),
]
KERNELS = {
    "sort_unique": lambda x: _core.sort_unique(x),
    "is_sorted_unique": lambda x: _core.is_sorted_unique(x),
    "overlay": lambda x: _core.overlay([GOOD, x]),
    "align": lambda x: _core.align([x, GOOD]),
    "diff-a": lambda x: _core.diff(x, GOOD),
    "diff-b": lambda x: _core.diff(GOOD, x),
    "find": lambda x: _core.find(x, 1, 1),
    "lookup_layers": lambda x: _core.lookup_layers([GOOD, x], 1, 1),
    "lookup_keys-layers": lambda x: _core.lookup_keys([x], GOOD),
    "lookup_keys-keys": lambda x: _core.lookup_keys([GOOD], x),
    "select": lambda x: _core.select(x, [1], [0]),
    "type_range": lambda x: _core.type_range(x, 1),
    "pack_entries": lambda x: _core.pack_entries(x),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("bad", range(len(WRONG)))
def test_wrong_inputs_raise_cleanly(name, bad):
    with pytest.raises(CLEAN):
        KERNELS[name](WRONG[bad])


@pytest.mark.parametrize(
    "call",
    [
        lambda: _core.overlay(None),
        lambda: _core.overlay(5),
        lambda: _core.overlay([None]),
        lambda: _core.overlay([GOOD, [(1, 1, 1)]]),
        lambda: _core.find(GOOD, U32 + 1, 1),
        lambda: _core.find(GOOD, -1, 1),
        lambda: _core.type_range(GOOD, 2**40),
        lambda: _core.lookup_layers([GOOD], 1, -1),
        lambda: _core.select(GOOD, [1, 2], [0]),
        lambda: _core.select(GOOD, [U32 + 1], [0]),
        lambda: _core.select(GOOD, [-1], [0]),
        lambda: _core.select(GOOD, np.zeros((2, 2), dtype=np.uint32), [0, 0]),
        lambda: _core.align([GOOD], -1),
        lambda: _core.pack_uvarints([-1]),
        lambda: _core.pack_uvarints([U64 + 1]),
        lambda: _core.pack_uvarints([1.5]),
        lambda: _core.pack_uvarints(["1"]),
        lambda: _core.unpack_uvarints("text", 1),
        lambda: _core.unpack_entries(b"\x01\x01", 2**62),
        lambda: _records.unpack_event_id(b"short"),
        lambda: _core.single(-1, 0, 0),
        lambda: _core.single(0, 0, U64 + 1),
    ],
)
def test_out_of_range_scalars_raise_cleanly(call):
    with pytest.raises(CLEAN + (MemoryError,)):
        call()


def test_huge_nids_keep_their_order_and_values():
    rs = [(U32, U32, U64), (U32, 0, 2**63), (0, U32, 1), (2**31, 2**31, 2**63 - 1)]
    a = _core.sort_unique(arr(rs))
    assert as_rows(a) == sorted(rs)
    for t, k, e in rs:
        assert _core.lookup_layers([a], t, k) == e
        assert int(_core.lookup_keys([a], arr([(t, k, 0)]))[0]) == e
        assert a[_core.find(a, t, k)]["event"] == e
    assert as_rows(_core.unpack_entries(_core.pack_entries(a), len(a))) == sorted(rs)


def test_kernels_accept_big_inputs():
    rng = np.random.default_rng(0)
    n = 200_000
    a = np.empty(n, dtype=E)
    a["type"] = rng.integers(0, 50, n)
    a["state_key"] = rng.integers(0, 2**32, n, dtype=np.uint64)
    a["event"] = rng.integers(1, 2**64 - 1, n, dtype=np.uint64)
    s = _core.sort_unique(a)
    assert _core.is_sorted_unique(s)
    assert len(s) == len(np.unique(a["type"].astype(np.uint64) << np.uint64(32) | a["state_key"]))
    layers = [s[i::7].copy() for i in range(7)]
    assert np.array_equal(_core.overlay(layers), s)
    ks, vs = _core.align(layers)
    assert len(ks) == len(s) and vs.shape == (len(s), 7)


def test_debug_build_when_asked_for():
    """ROOMSTATE_DEBUG=1 in the environment of a test run means the kernels under test
    were built with bounds checks on (CI's fuzz pass sets it)."""
    if os.environ.get("ROOMSTATE_DEBUG", "0") not in ("", "0"):
        assert _core.DEBUG_BUILD
