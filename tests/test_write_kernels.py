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
    st.lists(st.lists(st.integers(0, 3), min_size=n, max_size=n), min_size=1, max_size=4),
    st.lists(st.integers(0, 3), min_size=n, max_size=n),
)))
def test_merge_kernels_agree_with_numpy(columns_and_choice):
    columns, choice = columns_and_choice
    n = len(choice)
    vals = np.array(columns, dtype=np.uint64).T.reshape(n, len(columns))
    first = vals[:, 0]
    agree = (vals == first[:, None]).all(axis=1)
    result, got_agree, conflicted = _write.merge_split(vals)
    assert got_agree.tolist() == agree.tolist()
    assert result.tolist() == np.where(agree, first, 0).tolist()
    assert conflicted.tolist() == np.flatnonzero(~agree).tolist()

    keys = np.array([(1 + i, 1, 0) for i in range(n)], dtype=ENTRY_DTYPE)
    resolved = np.where(agree, first, np.array(choice, dtype=np.uint64))
    cost = (vals != resolved[:, None]).sum(axis=0)
    j, delta = _write.merge_delta(keys, vals, resolved)
    assert j == int(np.argmin(cost))
    mask = vals[:, j] != resolved
    if cost[j] == 0:
        assert delta is None
    else:
        expected = keys[mask].copy()
        expected["event"] = resolved[mask]
        assert delta.tolist() == expected.tolist()
