"""The storage seam, tested on each backend directly: the transaction interface the
tables use (get, put, cursor, nested transactions, commit/abort) behaves the same."""
import pytest

import roomstate
from roomstate.format import TABLES
from roomstate.storage import open_backend


@pytest.fixture(params=["lmdb", "memory"])
def backend(request, tmp_path):
    b = open_backend(":memory:" if request.param == "memory" else str(tmp_path / "s"))
    yield b
    b.close()


def committed(backend, key, db="meta"):
    txn = backend.begin_read()
    try:
        value = txn.get(key, None, backend.tables[db])
        return None if value is None else bytes(value)
    finally:
        txn.abort()
        backend.reader_done()


def test_every_table_is_there(backend):
    assert set(backend.tables) == set(TABLES)


def test_put_get_and_what_a_reader_sees(backend):
    db = backend.tables["meta"]
    w = backend.begin_write()
    assert w.put(b"k", b"v1", True, True, False, db)
    assert bytes(w.get(b"k", None, db)) == b"v1"
    assert committed(backend, b"k") is None  # not committed yet
    backend.commit(w)
    assert committed(backend, b"k") == b"v1"


def test_overwrite_off_and_append_refuse_an_existing_key(backend):
    db = backend.tables["blocks"]
    w = backend.begin_write()
    assert w.put(b"\x01", b"a", True, True, True, db)
    assert not w.put(b"\x01", b"b", True, False, False, db)
    assert not w.put(b"\x01", b"b", True, True, True, db)
    assert bytes(w.get(b"\x01", None, db)) == b"a"
    w.abort()


def test_nested_transactions_commit_into_and_abort_out_of_the_parent(backend):
    db = backend.tables["meta"]
    top = backend.begin_write()
    top.put(b"a", b"1", True, True, False, db)
    child = backend.begin_write(parent=top)
    child.put(b"b", b"2", True, True, False, db)
    assert bytes(child.get(b"a", None, db)) == b"1"
    child.abort()
    assert top.get(b"b", None, db) is None
    child = backend.begin_write(parent=top)
    child.put(b"c", b"3", True, True, False, db)
    child.commit()
    assert bytes(top.get(b"c", None, db)) == b"3"
    backend.commit(top)
    assert committed(backend, b"a") == b"1" and committed(backend, b"c") == b"3"
    assert committed(backend, b"b") is None


def test_cursor_lists_keys_in_byte_order(backend):
    db = backend.tables["rooms"]
    w = backend.begin_write()
    for k in (b"\x00\x02", b"\x00\x01", b"\x01\x00", b"\x00\xff"):
        w.put(k, k, True, True, False, db)
    with w.cursor(db=db) as cur:
        assert [bytes(k) for k, _ in cur] == [b"\x00\x01", b"\x00\x02", b"\x00\xff", b"\x01\x00"]
    w.abort()


def test_a_store_in_memory_is_its_own_and_persists_nothing():
    ev = {"event_id": "$c", "room_id": "!r", "type": "m.room.create", "state_key": ""}
    with roomstate.open(":memory:", check_auth=False) as a, roomstate.open(":memory:", check_auth=False) as b:
        a.add_event(ev)
        assert a.has_event("$c") and not b.has_event("$c")
        stats = a.stats()
        assert stats["events"] == 1 and stats["file_bytes"] == 0 and stats["bytes_in_use"] > 0
    with roomstate.open(":memory:", check_auth=False) as c:
        assert not c.has_event("$c")


def test_a_failed_call_leaves_a_store_in_memory_as_it_was():
    with roomstate.open(":memory:", check_auth=False) as store:
        store.add_event({"event_id": "$c", "room_id": "!r", "type": "m.room.create", "state_key": ""})
        before = store.stats()
        with pytest.raises(roomstate.MissingEventError):
            store.add_events([
                {"event_id": "$m", "room_id": "!r", "type": "m.room.message", "prev_events": ["$c"]},
                {"event_id": "$x", "room_id": "!r", "type": "m.room.message", "prev_events": ["$nope"]},
            ])
        assert store.stats() == before and not store.has_event("$m")


@pytest.mark.parametrize("path", ["/dev/null/x", "/proc/roomstate-no-such/x"])
def test_an_unusable_path_is_a_storage_error(path):
    with pytest.raises(roomstate.StorageError, match="cannot open the store"):
        roomstate.open(path, check_auth=False)


def test_the_async_api_on_a_store_in_memory():
    import asyncio

    from roomstate import aio

    async def main():
        async with aio.open(":memory:", resolver="newest_event", check_auth=False) as st:
            await st.add_event({"event_id": "$c", "room_id": "!r", "type": "m.room.create", "state_key": ""})
            await st.add_events([
                {"event_id": "$a", "room_id": "!r", "type": "m.room.member", "state_key": "@a:x",
                 "content": {"membership": "join"}, "prev_events": ["$c"]},
            ])
            assert await st.members("$a", after=True) == ["@a:x"]
            assert dict(await st.current_state("!r")) == {("m.room.create", ""): "$c", ("m.room.member", "@a:x"): "$a"}

    asyncio.run(main())
