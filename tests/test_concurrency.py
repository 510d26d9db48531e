"""Many readers (threads and processes) and one writer; two writer processes; map growth."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time

import roomstate
from roomstate import workloads

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers_proc as hp  # noqa: E402

TINY_MAP = 1 << 16  # 64 KiB: the map must grow many times


def spawn(*args, **kwargs):
    return subprocess.Popen(
        [sys.executable, hp.script(), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def finish(proc, timeout=120):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err}"
    return out


def finish_all(procs, timeout=120):
    """Wait for every child (closing its pipes) before judging any of them."""
    results = []
    for proc in procs:
        try:
            results.append(proc.communicate(timeout=timeout))
        except subprocess.TimeoutExpired:
            proc.kill()
            results.append(proc.communicate())
    for proc, (_, err) in zip(procs, results):
        assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err}"
    return [out for out, _ in results]


def run_threads(targets):
    errors = []

    def wrap(fn):
        def body():
            try:
                fn()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        return body

    threads = [threading.Thread(target=wrap(fn)) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_reader_threads_see_only_whole_batches_while_the_map_grows(tmp_path):
    """A writer thread commits batches (a marker last); reader threads check in one
    read transaction that a marker means its whole batch, while a 64 KiB map grows."""
    size, n_batches = 20, 60
    done = threading.Event()
    seen = []
    with roomstate.open(tmp_path, map_size=TINY_MAP, check_auth=False) as store:
        start_map = store.env.info()["map_size"]
        store.add_event(hp.create_event())

        def writer():
            try:
                for n in range(n_batches):
                    events = hp.batch_events(n, size)
                    if n % 2:
                        store.add_events(events)
                    else:
                        with store.batch() as b:
                            for e in events:
                                b.add_event(e)
            finally:
                done.set()

        def reader():
            checks, last = 0, 0
            while not done.is_set() or checks < 3:
                m = hp.check_batches(store.current_state(hp.BATCH_ROOM).to_dict(), size)
                assert m >= last
                last = m
                ex = store.forward_extremities(hp.BATCH_ROOM)
                assert len(ex) == 1 and (ex[0] == hp.BATCH_CREATE or ex[0].endswith("x")), ex
                if m:
                    hp.check_batches(store.state_after(f"$b{m - 1}x").to_dict(), size)
                checks += 1
                # Four readers spinning on cached answers hold the GIL between the
                # switch intervals, and every LMDB call of the writer waits for it
                # again: without a pause the writer crawled (minutes, seen on base too).
                time.sleep(0.001)
            seen.append(checks)

        run_threads([writer] + [reader] * 4)
        assert hp.check_batches(store.current_state(hp.BATCH_ROOM).to_dict(), size) == n_batches
        grown = store.env.info()["map_size"]
    assert grown >= 8 * start_map, (start_map, grown)
    assert min(seen) >= 3


def test_reader_threads_share_caches_safely(tmp_path):
    """Reads on many threads, with the GIL switching as often as it can, raise nothing
    and agree with single-threaded reads (the store's caches are shared)."""
    events = list(workloads.hq(20_000, seed=4))
    ids = [e["event_id"] for e in events]
    with roomstate.open(tmp_path, resolver="newest_event", durable=False, check_auth=False) as store:
        store.add_events(events)
        probe = ids[::500]
        want = {e: bytes(store.state_after(e).entries.tobytes()) for e in probe}

        def reader(seed):
            def body():
                rng = random.Random(seed)
                for _ in range(5000):
                    eid = rng.choice(ids)
                    store.state_after(eid)
                    if eid in want:
                        assert store.state_after(eid).entries.tobytes() == want[eid]
                for eid in probe:
                    assert store.state_after(eid).entries.tobytes() == want[eid]

            return body

        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            run_threads([reader(k) for k in range(8)])
        finally:
            sys.setswitchinterval(old)


def test_reader_processes_see_only_whole_batches_while_the_map_grows(tmp_path):
    """Two readonly reader processes (64 KiB maps too) check the batch invariant
    while this process commits batches: they never see a partial batch, and they
    follow the map as the writer grows it (MapResizedError is handled)."""
    size, n_batches = 20, 150
    path = tmp_path / "store"
    stop = tmp_path / "stop"
    with roomstate.open(path, map_size=TINY_MAP, check_auth=False) as store:
        store.add_event(hp.create_event())
        readers = [spawn("reader", path, stop, TINY_MAP, size) for _ in range(2)]
        try:
            time.sleep(0.3)  # let them open
            for n in range(n_batches):
                store.add_events(hp.batch_events(n, size))
                if n % 10 == 0:
                    time.sleep(0.01)
            final_map = store.env.info()["map_size"]
        finally:
            stop.write_text("stop")
            results = [json.loads(out.strip().splitlines()[-1]) for out in finish_all(readers)]
    for r in results:
        assert r["errors"] == [], r
        assert r["checks"] >= 10, r
        assert r["distinct"] >= 3, r  # it saw the store move on
        assert r["last"] == n_batches or r["last"] > 0
        assert r["map_size"] > TINY_MAP * 2, r  # it adopted the grown map
    assert final_map > TINY_MAP * 8


def test_two_writer_processes_serialise_without_corruption(tmp_path):
    """Two processes import into one store at once (different rooms, and the same
    history twice): LMDB serialises their write transactions; the result equals a
    store built by one process."""
    path = tmp_path / "shared"
    n = 4000
    with roomstate.open(path, map_size=TINY_MAP, check_auth=False):
        pass  # created once, so that neither child races to initialise it
    procs = [
        spawn("import", path, n, 1, 250, 1, TINY_MAP),
        spawn("import", path, n, 1, 250, 1, TINY_MAP),  # the same history: every add is a no-op or the first
        spawn("batches", path, 0, 60, 20),
    ]
    outs = finish_all(procs)
    assert all(o.strip().endswith("done") for o in outs)

    events = list(workloads.hq(n, seed=1, room_id=hp.hq_room(1)))
    room = events[0]["room_id"]
    with roomstate.open(tmp_path / "ref", resolver="newest_event", durable=False, check_auth=False) as ref:
        ref.add_events(events)
        with roomstate.open(path, resolver="newest_event", check_auth=False) as store:
            assert store.stats()["events"] == n + 1 + 60 * 21
            assert store.forward_extremities(room) == ref.forward_extremities(room)
            assert store.current_state(room).to_dict() == ref.current_state(room).to_dict()
            for e in events[::97]:
                eid = e["event_id"]
                assert store.state_after(eid).to_dict() == ref.state_after(eid).to_dict()
                assert store.members(eid) == ref.members(eid)
            assert hp.check_batches(store.current_state(hp.BATCH_ROOM).to_dict(), 20) == 60


def test_a_second_writer_waits_for_the_first(tmp_path):
    """While another process holds a write transaction, a write here blocks until
    it commits, then succeeds on top of it."""
    path = tmp_path / "store"
    with roomstate.open(path, check_auth=False) as store:
        store.add_event(hp.create_event())
        holder = spawn("hold", path, 1.5)
        try:
            assert holder.stdout.readline().strip() == "holding"
            t0 = time.monotonic()
            store.add_event(
                {"event_id": "$second", "room_id": hp.BATCH_ROOM, "type": "m.room.message", "prev_events": ["$held"]}
            )
            waited = time.monotonic() - t0
        finally:
            out = finish(holder)
        assert "released" in out
        assert waited > 0.8, f"the second writer did not wait ({waited:.2f}s)"
        assert store.forward_extremities(hp.BATCH_ROOM) == ["$second"]
        assert store.state_before("$second").to_dict() == {("m.room.create", ""): hp.BATCH_CREATE}


def test_membership_caches_stay_right_after_later_writes(tmp_path):
    """A read may cache per-event membership bytes; a later write must not leave them
    stale.  Here an outlier names ``$late`` as a prev (so ``$late`` gets its NID
    early), a read fills the cache for that NID's chunk, then ``$late`` arrives as a
    join: the same store object must list its user as joined, as a fresh one does."""
    room = "!r:test"

    def e(eid, prevs, **kw):
        return dict({"event_id": eid, "room_id": room, "type": "m.room.message", "prev_events": prevs}, **kw)

    def member(eid, prevs, user):
        return e(eid, prevs, type="m.room.member", state_key=user, content={"membership": "join"})

    with roomstate.open(tmp_path / "s", check_auth=False) as store:
        store.add_event(e("$c", [], type="m.room.create", state_key=""))
        store.add_event(member("$a", ["$c"], "@alice"))
        store.add_event(e("$o", ["$late"]), outlier=True)
        prev = "$a"
        for i in range(1100):  # past the first 1024-event chunk of the flag column
            store.add_event(e(f"$m{i}", [prev]))
            prev = f"$m{i}"
        assert store.members(prev) == ["@alice"]
        store.add_event(member("$late", [prev], "@bob"))
        with_cache = store.members("$late", after=True)
    with roomstate.open(tmp_path / "s", readonly=True) as fresh:
        assert fresh.members("$late", after=True) == ["@alice", "@bob"]
    assert with_cache == ["@alice", "@bob"]
