"""Faults: kill -9 mid-import, a full disk, a read-only filesystem, foreign and newer stores."""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

import lmdb
import numpy as np
import pytest

import roomstate
from roomstate import workloads
from roomstate.errors import ReadOnlyError, RoomStateError, StoreFormatError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers_proc as hp  # noqa: E402

N, BATCH = 8000, 500
KILLS = 24


def digest(entries):
    return hashlib.blake2b(np.ascontiguousarray(entries).tobytes(), digest_size=16).digest()


class Reference:
    """Histories imported by one uninterrupted process, in the crash loop's order.

    Same events in the same order and the same batches give the same NIDs, so
    states compare as numeric entries.
    """

    def __init__(self, path):
        self.store = roomstate.open(path, resolver="newest_event", durable=False, check_auth=False)
        self.events = {}  # generation -> events
        self.boundary = {}  # (generation, count) -> (current state digest, extremities)
        self.after = {}  # event_id -> state-after digest

    def add_generation(self, g):
        events = list(workloads.hq(N, seed=g, room_id=hp.hq_room(g)))
        self.events[g] = events
        room = hp.hq_room(g)
        self.boundary[(g, 0)] = None
        for i in range(0, N, BATCH):
            self.store.add_events(events[i : i + BATCH])
            self.boundary[(g, i + BATCH)] = (
                digest(self.store.current_state(room).entries),
                self.store.forward_extremities(room),
            )
        return events

    def state_after(self, eid):
        d = self.after.get(eid)
        if d is None:
            d = self.after[eid] = digest(self.store.state_after(eid).entries)
        return d

    def close(self):
        self.store.close()


def check_store(path, ref, generation, committed, full=False):
    """The store after a crash: whole earlier generations, a whole-batch prefix of the
    current one holding at least ``committed`` events, every stored event's prevs
    stored and its state readable and right.  Returns the stored count."""
    with roomstate.open(path, resolver="newest_event", check_auth=False) as store:
        events = ref.events[generation]
        room = hp.hq_room(generation)
        total = store.stats()["events"]
        stored = total - N * generation
        assert stored >= committed, f"lost committed events: {stored} stored, {committed} committed"
        assert stored % BATCH == 0 or stored == N, f"a partial transaction survived: {stored}"
        if stored:
            assert store.has_event(events[stored - 1]["event_id"])
        if stored < N:
            assert not store.has_event(events[stored]["event_id"])
        for g in range(generation):  # earlier generations stay whole
            assert store.current_state(hp.hq_room(g)).entries.tobytes() == ref.store.current_state(
                hp.hq_room(g)
            ).entries.tobytes()
        if not stored:
            return 0
        want_state, want_ex = ref.boundary[(generation, stored)]
        assert digest(store.current_state(room).entries) == want_state
        assert store.forward_extremities(room) == want_ex
        step = 1 if full else 7
        for i, e in enumerate(events[:stored]):
            eid = e["event_id"]
            for p in e["prev_events"]:
                assert store.has_event(p), f"{eid} is stored but its prev {p} is not"
            assert store.get_state(eid, "m.room.create", "") == events[0]["event_id"] or i == 0
            if i % step == 0:
                assert digest(store.state_after(eid).entries) == ref.state_after(eid)
        return stored


def run_child(path, generation, durable, kill_after=None):
    """Start an importing child; kill -9 it ``kill_after`` seconds after it opened the
    store.  Returns (lines it printed, whether it was killed before finishing)."""
    proc = subprocess.Popen(
        [sys.executable, hp.script(), "import", str(path), str(N), str(generation), str(BATCH), "1" if durable else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    opened = threading.Event()

    def pump():
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("open"):
                opened.set()
        opened.set()

    reader = threading.Thread(target=pump)
    reader.start()
    try:
        assert opened.wait(60), "the child never opened the store"
        if kill_after is not None:
            time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join()
        err = proc.stderr.read()
        proc.stderr.close()
        proc.stdout.close()
    if kill_after is None or proc.returncode != -signal.SIGKILL:
        assert proc.returncode == 0, err
    return lines, proc.returncode == -signal.SIGKILL and "done" not in lines


def test_kill_9_crash_loop_loses_nothing_committed(tmp_path):
    """≥ 24 SIGKILLs of an importing child at random moments (alternating durable=True
    and durable=False: a process crash loses nothing committed in either mode).  After
    each: the store opens, holds every batch the child reported committed, no partial
    batch, every stored event's prevs and state; then an uninterrupted run finishes."""
    rng = random.Random(20240601)
    path = tmp_path / "crashed"
    ref = Reference(tmp_path / "ref")
    try:
        generation = 0
        ref.add_generation(0)
        kills = attempts = 0
        stored = 0
        while kills < KILLS:
            attempts += 1
            assert attempts < KILLS * 3, "the child kept finishing before the kill"
            durable = attempts % 2 == 0
            delay = rng.choice([0.0, 0.001, rng.uniform(0, 0.05), rng.uniform(0, 0.4), rng.uniform(0, 0.4)])
            lines, killed = run_child(path, generation, durable, kill_after=delay)
            commits = [int(x.split()[1]) for x in lines if x.startswith("committed")]
            committed = max(commits, default=0)
            kills += killed
            stored = check_store(path, ref, generation, max(committed, stored))
            if stored == N:  # this history is complete: carry on with a new room
                generation += 1
                ref.add_generation(generation)
                stored = 0
        lines, killed = run_child(path, generation, True)
        assert not killed and lines[-1] == "done"
        assert check_store(path, ref, generation, N, full=True) == N
        print(f"\ncrash loop: {kills} kills in {attempts} runs over {generation + 1} histories")
    finally:
        ref.close()


# -- a full disk, a read-only filesystem ----------------------------------------------------------


def _fill_child(args, **kw):
    out = subprocess.run(
        [sys.executable, hp.script(), "fill", *map(str, args)], capture_output=True, text=True, timeout=120, **kw
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check_full_disk_report(r):
    assert r["committed"] > 0 and "error" in r, r
    # The store stays whole and usable:
    assert r["events_after_error"] == r["committed"], r
    assert r["reads_after_error"] and r["state_after_reopen"], r
    assert r["events_after_reopen"] == r["committed"], r
    assert r["write_after"] is True and r["events_at_end"] == r["committed"] + 500, r
    # ... and the error says what happened, as a roomstate error.
    assert r["is_roomstate_error"], f"a full disk raised {r['error_type']}: {r['error']}"


def test_file_size_limit_gives_an_error_and_the_store_survives(tmp_path):
    """RLIMIT_FSIZE (writes past 3 MB fail, as on a full disk): the failing commit
    raises, nothing half-written remains, the store reads and reopens, and writes
    again once there is room."""
    r = _fill_child([tmp_path / "s", 3_000_000, "-"])
    with roomstate.open(tmp_path / "s", check_auth=False) as store:
        assert store.stats()["events"] == r["committed"] + 500
    _check_full_disk_report(r)


def _unshare_works():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _unshare_works(), reason="needs root and mount namespaces (unshare -m)")


@needs_mounts
def test_full_filesystem_gives_an_error_and_the_store_survives(tmp_path):
    """A real ENOSPC: a 4 MiB tmpfs in a private mount namespace, filled by an import."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    script = (
        f"mount -t tmpfs -o size=4m tmpfs {mnt} && "
        f"exec {sys.executable} {hp.script()} fill {mnt}/s 0 {mnt}/filler"
    )
    out = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    _check_full_disk_report(json.loads(out.stdout.strip().splitlines()[-1]))


@needs_mounts
def test_read_only_filesystem(tmp_path):
    """A store on a filesystem remounted read-only: opening it for writing is a clear
    StorageError (an OS error, not a format one) naming the cause; readonly=True opens and reads it."""
    d = tmp_path / "ro"
    with roomstate.open(d / "s", check_auth=False) as store:
        store.add_events([hp.create_event()] + hp.batch_events(0, 5))
    code = (
        "import json, roomstate\n"
        "out = {}\n"
        "try:\n"
        f"    roomstate.open({str(d / 's')!r}, check_auth=False)\n"
        "except Exception as e:\n"
        "    out['rw'] = [type(e).__name__, isinstance(e, roomstate.RoomStateError), str(e)]\n"
        f"with roomstate.open({str(d / 's')!r}, readonly=True) as s:\n"
        "    out['ro'] = [s.has_event('$b0x'), sorted(s.current_state('!batches:test').to_dict().values())]\n"
        "    try:\n"
        "        s.add_event({'event_id': '$z', 'room_id': '!batches:test', 'type': 'x', 'prev_events': ['$b0x']})\n"
        "    except Exception as e:\n"
        "        out['write'] = type(e).__name__\n"
        "print(json.dumps(out))\n"
    )
    script = f"mount --bind {d} {d} && mount -o remount,ro,bind {d} && exec {sys.executable} -c \"$0\""
    out = subprocess.run(["unshare", "-m", "sh", "-c", script, code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    name, is_ours, message = r["rw"]
    assert is_ours and name == "StorageError", r
    assert "Read-only file system" in message
    assert r["ro"][0] is True and len(r["ro"][1]) == 7
    assert r["write"] == "ReadOnlyError"
    with roomstate.open(d / "s", check_auth=False) as store:  # and afterwards, writable again
        store.add_event({"event_id": "$z", "room_id": hp.BATCH_ROOM, "type": "x", "prev_events": ["$b0x"]})


def test_readonly_open_refuses_every_write_and_the_store_stays_usable(tmp_path):
    with roomstate.open(tmp_path, check_auth=False) as store:
        store.add_events([hp.create_event()] + hp.batch_events(0, 3))
        before = store.stats()
    with roomstate.open(tmp_path, readonly=True) as ro:
        extra = {"event_id": "$y", "room_id": hp.BATCH_ROOM, "type": "x", "prev_events": ["$b0x"]}
        with pytest.raises(ReadOnlyError, match="read-only"):
            ro.add_event(extra)
        with pytest.raises(ReadOnlyError):
            ro.add_events([extra])
        with pytest.raises(ReadOnlyError):
            with ro.batch() as b:
                b.add_event(extra)  # pragma: no cover
        assert ro.stats()["events"] == before["events"]
        assert not ro.has_event("$y")
    with roomstate.open(tmp_path, check_auth=False) as store:
        store.add_event(extra)
        assert store.has_event("$y")


def test_readonly_open_of_a_missing_store(tmp_path):
    with pytest.raises(StoreFormatError):
        roomstate.open(tmp_path / "nothing", readonly=True)
    assert not (tmp_path / "nothing").exists()


# -- foreign and newer stores ---------------------------------------------------------------------


def _poke_format(path, version):
    env = lmdb.open(str(path), max_dbs=32)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            assert txn.get(b"format", db=meta) is not None
            txn.put(b"format", struct.pack(">Q", version), db=meta)
    finally:
        env.close()


def test_newer_format_version_is_refused(tmp_path):
    with roomstate.open(tmp_path, check_auth=False) as store:
        store.add_event(hp.create_event())
        version = roomstate.store.FORMAT_VERSION
    _poke_format(tmp_path, version + 1)
    for readonly in (False, True):
        with pytest.raises(StoreFormatError, match="newer"):
            roomstate.open(tmp_path, readonly=readonly, check_auth=False)
    _poke_format(tmp_path, version)  # the refusal changed nothing
    with roomstate.open(tmp_path, check_auth=False) as store:
        assert store.has_event(hp.BATCH_CREATE)


def test_not_a_store(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    with pytest.raises(StoreFormatError):
        roomstate.open(junk, check_auth=False)
    assert sorted(os.listdir(junk)) == ["notes.txt"]  # untouched

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(StoreFormatError):
        roomstate.open(a_file, check_auth=False)

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "data.mdb").write_bytes(os.urandom(64 * 1024))
    with pytest.raises(StoreFormatError):
        roomstate.open(garbage, check_auth=False)
    with pytest.raises(StoreFormatError):
        roomstate.open(garbage, readonly=True)


def test_another_programs_lmdb_environment_is_not_taken_over(tmp_path):
    """An LMDB environment that some other program wrote is not a roomstate store:
    opening it is a StoreFormatError, and it is left as it was."""
    env = lmdb.open(str(tmp_path), max_dbs=4)
    with env.begin(write=True) as txn:
        txn.put(b"their-key", b"their-value")
    env.close()
    try:
        store = roomstate.open(tmp_path, check_auth=False)
    except StoreFormatError:
        pass
    else:
        store.close()
        pytest.fail("roomstate.open initialised another program's LMDB environment as a store")
    env = lmdb.open(str(tmp_path), max_dbs=4, readonly=True)
    with env.begin() as txn:
        assert list(txn.cursor()) == [(b"their-key", b"their-value")]
    env.close()
