"""The damage fuzzer: a damaged store gives a RoomStateError, never a crash or a hang (issue 14).

Each trial copies a small store of three rooms (a linear history, a busy room with
forks and merges, a fork storm), damages the copy, then opens it in a child process
and runs every public read.  Three kinds of damage:

* **truncations** of ``data.mdb`` (what a copy interrupted leaves);
* **value damage** through py-lmdb, in every table: a flipped bit, a value cut short,
  grown, replaced, emptied, or deleted, and a snapshot linked to a newer one (a loop);
* **page flips**: bytes of a B-tree page changed under LMDB.

Asserted for truncations and value damage: no child dies by a signal or hangs, and
every failure is a RoomStateError.  Reported, not asserted: trials where every read
answered, rightly (the damage hit nothing read) or wrongly (a silently wrong answer:
since format 3's value checksums, only damage to a table without them, or a deleted mark
chunk; 4 of 294 value trials of the run README.md cites, 51 before checksums).  Page flips are counted and reported, not asserted:
LMDB trusts its pages, and a damaged one may abort inside it (roomstate check reads in
a child process for that reason).

Seeded and bounded: ``ROOMSTATE_DAMAGE_TRIALS`` (default 48) trials from
``ROOMSTATE_DAMAGE_SEED`` (default 14); a long run, e.g.
``ROOMSTATE_DAMAGE_TRIALS=2000 pytest tests/test_damage.py -s``, prints the tally.
"""
import collections
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import lmdb
import pytest

import roomstate
from roomstate import workloads
from roomstate.format import TABLES

TRIALS = int(os.environ.get("ROOMSTATE_DAMAGE_TRIALS", "48"))
SEED = int(os.environ.get("ROOMSTATE_DAMAGE_SEED", "14"))
CHILD_TIMEOUT = 30

# Every public read, on a sample of events and every room.  Prints one JSON line:
# the calls that answered, and the exceptions of the ones that did not.
CHILD = r"""
import hashlib, json, sys
import roomstate

path, sample = sys.argv[1], json.load(open(sys.argv[2]))
out = {"answered": 0, "errors": {}, "leaks": []}
answers = hashlib.sha256()

def call(name, fn):
    try:
        answer = fn()
        out["answered"] += 1
        if name != "stats":  # its byte counts follow the damage, right or wrong
            answers.update(repr((name, answer)).encode("utf-8", "backslashreplace"))
    except roomstate.RoomStateError as exc:
        kind = type(exc).__name__
        out["errors"][kind] = out["errors"].get(kind, 0) + 1
    except Exception as exc:
        out["leaks"].append(f"{name}: {type(exc).__module__}.{type(exc).__qualname__}: {exc}"[:300])

def reads(store):
    events = sample["events"]
    for i, e in enumerate(events):
        call("state_before", lambda: sorted(store.state_before(e).to_dict().items()))
        call("state_after", lambda: sorted(dict(store.state_after(e)).items()))
        call("state_after types", lambda: sorted(store.state_after(e, types=[("m.room.member", None)]).items()))
        call("get_state", lambda: store.get_state(e, "m.room.power_levels", ""))
        call("members", lambda: sorted(store.members(e)))
        call("event", lambda: store.event(e))
        call("auth_chain", lambda: sorted(store.auth_chain([e])))
        call("has_event", lambda: store.has_event(e))
        call("state_diff", lambda: store.state_diff(events[i - 1], e))
    for r in sample["rooms"]:
        call("current_state", lambda: sorted(store.current_state(r).to_dict().items()))
        call("forward_extremities", lambda: store.forward_extremities(r))
        call("room_version", lambda: store.room_version(r))
    call("rooms", store.rooms)
    call("stats", store.stats)
    call("room_counts", store.room_counts)

try:
    store = roomstate.open(path, readonly=True, resolver="newest_event")
except roomstate.RoomStateError as exc:
    out["open"] = type(exc).__name__
except Exception as exc:
    out["open"] = "leak"
    out["leaks"].append(f"open: {type(exc).__module__}.{type(exc).__qualname__}: {exc}"[:300])
else:
    out["open"] = "ok"
    with store:
        reads(store)
out["digest"] = answers.hexdigest()
print(json.dumps(out), flush=True)
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A store of three rooms, and the sample of events and rooms the children read."""
    root = tmp_path_factory.mktemp("damage-base")
    path = root / "store"
    rooms = {
        "!hq:damage": workloads.hq(500, seed=SEED, room_id="!hq:damage"),
        "busy": workloads.busy(300, n_senders=40, seed=SEED),
        "storm": workloads.fork_storm(4, 25, seed=SEED, n_members=30, tail=3),
    }
    events = []
    with roomstate.open(path, resolver="newest_event", check_auth=False) as store:
        for evs in rooms.values():
            evs = list(evs)
            store.add_events(evs)
            events.extend(e["event_id"] for e in evs)
        room_ids = store.rooms()
        stored = [e for e in events if store.has_event(e) and not store.is_outlier(e)]
    rng = random.Random(SEED)
    sample = {"events": rng.sample(stored, 24), "rooms": room_ids}
    (root / "sample.json").write_text(json.dumps(sample))
    return path, root / "sample.json"


# -- damage ---------------------------------------------------------------------

def _truncate(path, rng):
    data = path / "data.mdb"
    size = data.stat().st_size
    os.truncate(data, rng.randrange(0, size))
    return "truncation"


def _mutated(value, rng):
    """A damaged copy of a stored value (None: delete the key)."""
    v = bytearray(value)
    how = rng.choice(["flip", "flip", "flip", "cut", "grow", "random", "empty", "delete", "zero"])
    if how == "flip" and v:
        i = rng.randrange(len(v))
        v[i] ^= 1 << rng.randrange(8)
    elif how == "cut" and v:
        del v[rng.randrange(len(v)):]
    elif how == "grow":
        v += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 24)))
    elif how == "random":
        v = bytearray(rng.randrange(256) for _ in range(rng.randrange(1, max(2, 2 * len(v)))))
    elif how == "empty":
        v = bytearray()
    elif how == "delete":
        return None, how
    elif how == "zero":
        v = bytearray(len(v))
    return bytes(v), how


def _value_damage(path, rng):
    env = lmdb.open(str(path), max_dbs=len(TABLES) + 2, lock=False, map_size=1 << 30)
    try:
        table = rng.choice(TABLES)
        db = env.open_db(table.encode(), create=False)
        with env.begin(write=True) as txn:
            keys = [bytes(k) for k in txn.cursor(db=db).iternext(keys=True, values=False)]
            if not keys:
                return f"value:{table}:none"
            n = 1 if rng.random() < 0.8 else rng.randrange(2, 6)
            hows = []
            for key in rng.sample(keys, min(n, len(keys))):
                if table == "snapshots" and rng.random() < 0.3:
                    how = _snapshot_loop(txn, db, key, keys, rng)
                else:
                    value, how = _mutated(txn.get(key, db=db), rng)
                    if value is None:
                        txn.delete(key, db=db)
                    else:
                        txn.put(key, value, db=db)
                hows.append(how)
        return f"value:{table}:{'+'.join(sorted(set(hows)))}"
    finally:
        env.close()


def _snapshot_loop(txn, db, key, keys, rng):
    """Point a chain link at itself or at a newer snapshot: a loop through the parents."""
    from roomstate import _core

    raw = bytes(txn.get(key, db=db))
    if not raw or raw[0] != 2:
        return "not-a-link"
    (kind, hops, weight, _parent, n), off = _core.unpack_uvarints(raw, 5)
    nid = int.from_bytes(key, "big")
    newer = [int.from_bytes(k, "big") for k in keys if int.from_bytes(k, "big") >= nid]
    parent = rng.choice(newer)
    txn.put(key, _core.pack_uvarints((kind, hops, weight, parent, n)) + raw[off:], db=db)
    return "loop"


def _page_flip(path, rng):
    data = path / "data.mdb"
    size = data.stat().st_size
    psize = 4096
    pages = size // psize
    with open(data, "r+b") as f:
        for _ in range(rng.randrange(1, 4)):
            page = rng.randrange(2, pages)  # never the meta pages: open checks those
            f.seek(page * psize + rng.randrange(psize))
            f.write(bytes([rng.randrange(256)]) * rng.randrange(1, 17))
    return "page"


def _read_all(path, sample):
    return subprocess.run([sys.executable, "-c", CHILD, str(path), str(sample)], capture_output=True, text=True, timeout=CHILD_TIMEOUT)


def _trial(base, workdir, n):
    path, sample = base
    rng = random.Random(f"{SEED}:{n}")
    kind = rng.choices([_truncate, _value_damage, _page_flip], weights=[1, 6, 1.5])[0]
    copy = workdir / f"t{n}"
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns("lock.mdb"))
    what = kind(copy, rng)
    try:
        proc = _read_all(copy, sample)
    except subprocess.TimeoutExpired:
        shutil.rmtree(copy, ignore_errors=True)
        return n, what, "hang", None, ""
    try:
        if proc.returncode < 0:
            return n, what, f"signal {signal.Signals(-proc.returncode).name}", None, proc.stderr[-400:]
        if proc.returncode != 0:
            return n, what, f"exit {proc.returncode}", None, proc.stderr[-400:]
        return n, what, "ok", json.loads(proc.stdout.strip().splitlines()[-1]), ""
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def test_the_undamaged_store_answers_every_read(base):
    proc = _read_all(*base)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["open"] == "ok" and not out["errors"] and not out["leaks"], out
    assert out["answered"] > 200


def test_damaged_stores_give_errors_not_crashes(base, tmp_path):
    clean = json.loads(_read_all(*base).stdout.strip().splitlines()[-1])["digest"]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda n: _trial(base, tmp_path, n), range(TRIALS)))
    tally = collections.Counter()
    failures = []
    for n, what, status, out, stderr in results:
        kind = what.split(":")[0]
        if status == "ok":
            if out["open"] != "ok":
                outcome = "refused at open"
            elif out["errors"]:
                outcome = "errors"
            else:  # every read answered: rightly (damage nothing read), or wrongly, silently
                outcome = "answered" if out["digest"] == clean else "answered wrongly"
            if out["leaks"]:
                outcome = "leaked"
        else:
            outcome = status
        tally[(kind, outcome)] += 1
        if kind != "page" and (status != "ok" or out["leaks"]):
            failures.append(f"trial {n} ({what}): {status} {stderr} {out['leaks'][:3] if out else ''}")
    report = ", ".join(f"{k}/{o}: {c}" for (k, o), c in sorted(tally.items()))
    print(f"\ndamage trials (seed {SEED}, {TRIALS} trials): {report}")
    assert not failures, "\n".join(failures)
    # The trials did damage every kind, and some value damage was caught by a read.
    kinds = {k for k, _ in tally}
    assert {"truncation", "value"} <= kinds or TRIALS < 20, tally


# -- roomstate check ------------------------------------------------------------------

def test_check_passes_the_undamaged_store(base):
    from roomstate import check

    report = check.check(base[0], timeout=CHILD_TIMEOUT * 4)
    assert report["ok"], report["problems"][:5]
    assert report["checked"]["events"] > 900 and report["checked"]["rooms"] == 3


def test_check_reports_damage_the_reads_find(base, tmp_path):
    """Value damage that made a read fail is found by the check too; page damage that
    kills a reader is a problem in the report, never a crash of the caller."""
    from roomstate import check

    path, sample = base
    found = collections.Counter()
    for n in range(12):
        rng = random.Random(f"check:{SEED}:{n}")
        copy = tmp_path / f"c{n}"
        shutil.copytree(path, copy, ignore=shutil.ignore_patterns("lock.mdb"))
        what = (_page_flip if n % 4 == 3 else _value_damage)(copy, rng)
        report = check.check(copy, timeout=CHILD_TIMEOUT * 4)
        for p in report["problems"]:
            assert set(p) == {"table", "key", "problem"} and p["problem"], p
        if what.startswith("value"):
            reads = json.loads(_read_all(copy, sample).stdout.strip().splitlines()[-1])
            if reads["errors"] or reads["open"] != "ok":
                assert not report["ok"], (what, reads)
        found[(what.split(":")[0], report["ok"])] += 1
    print(f"\ncheck on damaged stores (ok?): {dict(found)}")
    assert any(not ok for _, ok in found), found


def test_the_check_command_reports_each_problem_and_exits_1(base, tmp_path):
    path, _ = base
    proc = subprocess.run([sys.executable, "-m", "roomstate", "check", "--db", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("ok ("), proc
    copy = tmp_path / "copy"
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns("lock.mdb"))
    env = lmdb.open(str(copy), max_dbs=len(TABLES) + 2, lock=False)
    rooms = env.open_db(b"rooms", create=False)
    with env.begin(write=True) as txn:
        txn.put((1).to_bytes(8, "big"), b"\x01" * 7, db=rooms)
    env.close()
    proc = subprocess.run([sys.executable, "-m", "roomstate", "check", "--db", str(copy)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc
    assert "table 'rooms', key 1: its checksum is wrong (the value was changed)" in proc.stdout
    assert proc.stdout.rstrip().endswith("problem(s): the store is damaged")
    proc = subprocess.run([sys.executable, "-m", "roomstate", "check", "--db", str(copy), "--json"], capture_output=True, text=True, timeout=120)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and not report["ok"]
    assert {"table": "rooms", "key": 1, "problem": "its checksum is wrong (the value was changed)"} in report["problems"]
