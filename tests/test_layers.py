"""The modules under the facade, each tested alone."""
import numpy as np
import pytest

import roomstate
from roomstate import _core, resolvers
from roomstate._core import ENTRY_DTYPE
from roomstate.ids import ROOM
from roomstate.storage import Full
from roomstate.transactions import Replayable, until_it_fits


class _Backend:
    full_errors = (Full,)

    def __init__(self):
        self.grown = 0

    def grow(self):
        self.grown += 1


def test_until_it_fits_rolls_back_grows_and_tries_again():
    backend, calls, rolled_back = _Backend(), [], []

    def attempt():
        calls.append(1)
        if len(calls) < 3:
            raise Full("no room")
        return "done"

    assert until_it_fits(backend, attempt, on_full=lambda: rolled_back.append(1)) == "done"
    assert len(calls) == 3 and backend.grown == 2 and len(rolled_back) == 2


def test_until_it_fits_lets_other_errors_through():
    backend = _Backend()
    with pytest.raises(KeyError):
        until_it_fits(backend, lambda: {}["x"])
    assert backend.grown == 0


def test_a_sequence_is_replayed_whole_and_an_iterator_up_to_its_limit():
    seq = Replayable([1, 2, 3], limit=1)
    assert list(seq) == [1, 2, 3] and list(seq) == [1, 2, 3]
    short = Replayable(iter([1, 2]), limit=5)
    assert list(short) == [1, 2] and list(short) == [1, 2]
    long = Replayable(iter(range(10)), limit=3)
    assert list(long) == list(range(10))
    with pytest.raises(roomstate.StorageError, match="too many to replay"):
        iter(long)


def test_resolvers_by_name_by_function_and_any_callable():
    newest = resolvers.resolver_of("newest_event")
    assert newest.on_nids is resolvers.newest_event_on_nids
    assert resolvers.resolver_of(roomstate.newest_event) is newest  # the function keeps its fast path
    assert resolvers.resolver_of(None) is resolvers.BUILTIN["matrix"]
    mine = resolvers.resolver_of(lambda ctx: {})
    assert mine.on_nids is None
    with pytest.raises(ValueError, match="unknown resolver"):
        resolvers.resolver_of("nope")
    with pytest.raises(TypeError):
        resolvers.resolver_of(3)


def test_newest_event_on_nids_picks_depth_then_event_id():
    class Events:
        depths = {10: 5, 11: 7, 12: 7, 13: 1}
        ids = {10: "$a", 11: "$b", 12: "$c", 13: "$d"}

        def depth(self, nid):
            return self.depths[nid]

        def event_id(self, nid):
            return self.ids[nid]

    keys = np.array([(1, 1, 0), (1, 2, 0), (1, 3, 0)], dtype=ENTRY_DTYPE)
    # Rows: [10, 13], [11, 12], [0 (no entry), 13].
    aligned = _core.Aligned(keys, [0, 0, 0], [0, 2, 4, 5], [0, 1, 0, 1, 1], [10, 13, 11, 12, 13], 2)
    result = np.zeros(3, dtype=np.uint64)
    resolvers.newest_event_on_nids(Events(), aligned, np.array([0, 1, 2]), result)
    assert result.tolist() == [10, 12, 13]  # deeper wins; a tie goes to the larger event ID


def _write(store, fn):
    return store._tx.write(fn)


def test_writer_steps_on_a_store_in_memory():
    with roomstate.open(":memory:", check_auth=False) as store:
        store.add_event({"event_id": "$c", "room_id": "!r", "type": "m.room.create", "state_key": ""})
        writer, tables = store._writer, store._tables

        def step(tx):
            room = tables.ids.lookup(tx, ROOM, "!r")
            nids, recs, depth, missing, unsettled = writer.prevs(tx, "$x", room, ["$c", "$gone"])
            assert recs[0] is not None and recs[1] is None and missing and not unsettled
            assert depth == recs[0].depth and nids[1] == 0
            with pytest.raises(roomstate.MissingEventError, match="not stored"):
                writer.place_missing_prevs(tx, "$x", ["$c", "$gone"], nids, recs, allowed=False)
            (cnid,) = tables.rooms.extremities(tx, room)
            writer.extremities(tx, room, 99, [cnid], has_child=False)
            assert tables.rooms.extremities(tx, room) == (99,)
            raise KeyError("roll back")

        with pytest.raises(KeyError):
            _write(store, step)
        assert store.forward_extremities("!r") == ["$c"]  # the step was rolled back
