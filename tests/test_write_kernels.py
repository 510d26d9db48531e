"""The write-path kernels (roomstate._write, roomstate._records) against the general functions and numpy."""
import base64
import hashlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomstate import _core, _records, _write
from roomstate._core import ENTRY_DTYPE

_event_ids = st.text(max_size=200) | st.builds(
    lambda b: "$" + base64.urlsafe_b64encode(b).decode().rstrip("="), st.binary(min_size=32, max_size=32)
)


@pytest.mark.parametrize("length", [0, 1, 63, 64, 127, 128, 129, 255, 256, 257, 1000, 4096])
@pytest.mark.parametrize("size", [8, 16, 64])
def test_event_id_key_at_blake2b_block_edges(length, size):
    """BLAKE2b works in 128-byte blocks, the last one padded: IDs around each edge."""
    for event_id in "a" * length, "é" * (length // 2) + "x" * (length % 2):
        raw = event_id.encode("utf-8")
        assert _records.event_id_key(event_id, size) == hashlib.blake2b(raw, digest_size=size).digest()


@given(_event_ids, st.integers(1, 64))
def test_event_id_key_is_hashlib_blake2b(event_id, size):
    raw = event_id.encode("utf-8", "surrogatepass")
    assert _records.event_id_key(event_id, size) == hashlib.blake2b(raw, digest_size=size).digest()


@given(st.integers(0, 2**64 - 1))
def test_uvarint_is_pack_uvarints_of_one(value):
    assert _write.uvarint(value) == _core.pack_uvarints((value,))


@given(
    _event_ids,
    st.lists(st.integers(0, 2**40), min_size=8, max_size=8),
    st.lists(st.integers(1, 2**40), max_size=40),
)
def test_a_record_packs_its_id_in_the_tail(event_id, fields, prevs):
    from roomstate.events import HASH_ID, Record

    nid = max(prevs, default=0) + 1
    packed = _records.pack_event_id(event_id)
    flag, tail = (HASH_ID, packed) if packed is not None else (0, event_id.encode("utf-8", "surrogatepass"))
    flags, *rest = fields
    flags &= ~HASH_ID
    raw = Record(flags, *rest, tuple(prevs), event_id).pack(nid)
    assert raw == _records.pack_record(nid, flags | flag, *rest, tuple(prevs), tail)
    back = Record.unpack(raw, nid)
    assert (back.flags, back.prevs, back.event_id) == (flags, tuple(prevs), event_id)


@given(st.lists(st.integers(0, 2**62), min_size=4, max_size=4), st.integers(0, 2**32 - 1),
       st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1))
def test_chain_link_is_the_general_chain_record(head, type_nid, state_key_nid, event_nid):
    record, delta = _write.chain_link(*head, type_nid, state_key_nid, event_nid)
    expected = _core.single(type_nid, state_key_nid, event_nid)
    assert record == _core.pack_uvarints((*head, 1)) + _core.pack_entries(expected)
    assert delta.dtype == ENTRY_DTYPE and delta.tolist() == expected.tolist()
    assert not delta.flags.writeable


@given(st.integers(0, 12).flatmap(lambda n: st.tuples(
    st.lists(st.lists(st.integers(0, 3), min_size=n, max_size=n), min_size=1, max_size=40),
    st.lists(st.integers(0, 3), min_size=n, max_size=n),
    st.lists(st.integers(0, 3), min_size=n, max_size=n),
)))
def test_merge_steps_agree_with_numpy(columns_choice_base):
    """Aligned.split and Aligned.delta on sparse columns against the same steps in numpy
    over the dense keys × states table (a value 3 in a column: no entry, the base event)."""
    columns, choice, under = columns_choice_base
    n = len(choice)
    base_layer = np.array([(1 + i, 1, v) for i, v in enumerate(under) if v], dtype=ENTRY_DTYPE)
    states = [np.array([(1 + i, 1, v) for i, v in enumerate(col) if v != 3], dtype=ENTRY_DTYPE)
              for col in columns]
    al = _core.align_sparse(states, base=[base_layer])
    present = [i for i in range(n) if any(col[i] != 3 for col in columns)]
    assert al.keys["type"].tolist() == [1 + i for i in present]
    vals = np.array([[col[i] if col[i] != 3 else under[i] for col in columns] for i in present],
                    dtype=np.uint64).reshape(len(present), len(columns))
    assert al.dense().tolist() == vals.tolist()
    assert [al.column(j).tolist() for j in range(len(columns))] == vals.T.tolist()
    assert [al.row(i) for i in range(len(present))] == vals.tolist()
    assert [al.candidates(i) for i in range(len(present))] == [sorted(set(r) - {0}) for r in vals.tolist()]
    masks: dict = {}
    for r in vals.tolist():
        for j, v in enumerate(r):
            if v:
                masks[v] = masks.get(v, 0) | (1 << j)
    assert al.masks(range(len(present))) == masks

    first = vals[:, 0]
    agree = (vals == first[:, None]).all(axis=1)
    result, got_agree, conflicted = al.split()
    assert got_agree.tolist() == agree.tolist()
    assert result.tolist() == np.where(agree, first, 0).tolist()
    assert conflicted.tolist() == np.flatnonzero(~agree).tolist()

    keys = al.keys
    resolved = np.where(agree, first, np.array([choice[i] for i in present], dtype=np.uint64))
    cost = (vals != resolved[:, None]).sum(axis=0)
    j, delta = al.delta(resolved)
    assert j == int(np.argmin(cost))
    mask = vals[:, j] != resolved
    if cost[j] == 0:
        assert delta is None
    else:
        expected = keys[mask].copy()
        expected["event"] = resolved[mask]
        assert delta.tolist() == expected.tolist()


def test_aligned_is_read_only_and_checked():
    al = _core.align_sparse([np.array([(1, 1, 5)], dtype=ENTRY_DTYPE), np.array([], dtype=ENTRY_DTYPE)])
    for name in ("keys", "base", "ptr", "cols", "vals"):
        with pytest.raises(AttributeError):
            setattr(al, name, np.zeros(1))
        with pytest.raises(ValueError):
            getattr(al, name)[...] = 0
    with pytest.raises(IndexError):
        al.value(0, 2)
    with pytest.raises(IndexError):
        al.row(1)
    with pytest.raises(ValueError, match="ascending"):
        _core.Aligned(al.keys, [0], [0, 2], [1, 0], [5, 6], 2)
    with pytest.raises(ValueError, match="entries"):
        _core.Aligned(al.keys, [0], [0, 2], [0, 1], [5, 6], 1)
    with pytest.raises(ValueError, match="ptr"):
        _core.Aligned(al.keys, [0], [1, 1], [0], [5], 2)


def test_align_is_linear_in_the_states():
    """10^5 states, one entry each: the sparse table holds 10^5 entries (a dense one
    would be 10^10 cells), and the merge steps run on it."""
    k = 100_000
    states = [np.array([(2, 1 + j, 10 + j)], dtype=ENTRY_DTYPE) for j in range(k)]
    al = _core.align_sparse(states, base=[np.array([(1, 1, 7)], dtype=ENTRY_DTYPE)])
    assert len(al) == k and len(al.vals) == k and al.k == k
    assert al.masks([0, k - 1]) == {10: 1, 10 + k - 1: 1 << (k - 1)}  # masks wider than 64 bits
    result, agree, conflicted = al.split()
    assert len(conflicted) == k and not agree.any()
    result[:] = al.vals
    j, delta = al.delta(result)
    assert j == 0 and len(delta) == k - 1
