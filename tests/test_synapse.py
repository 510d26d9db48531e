"""``roomstate synapse import|verify|report`` against a real Synapse homeserver.

A module fixture starts Synapse (``tests/synapse_server.py``: a generated config, SQLite
or a PostgreSQL server of the test's own, on 127.0.0.1), registers users with the
shared-secret admin API and lets them act through the client-server API: in one room
one at a time (no event there has two prev events), in another all at once, so that the
room forks as real ones do (events with several prev events).  Synapse is stopped, then
the commands read its database: it must be byte for byte the same afterwards.

Forks merge by the Matrix state resolution (the default): the forked room must agree
with Synapse on every event.  Imported with ``newest_event`` it may not, and the lines
``verify`` writes for its disagreements are checked for their shape.

Synapse is AGPL: it runs as a separate process here; roomstate never imports it.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest

import roomstate
from roomstate.synapse import load, source as synapse_source, verify as synapse_verify

import synapse_server

pytestmark = [
    pytest.mark.oracle,
    pytest.mark.skipif(importlib.util.find_spec("synapse") is None, reason="Synapse (the oracle extra) is not installed"),
]

#: Users and steps per user: about 100 events in the sequential room, 250-300 in the forked one.
SEQUENTIAL = dict(users=4, steps=25)
FORKED = dict(users=6, steps=40)
#: Room version of the test rooms; Synapse's default, 12, has a room of its own
#: (test_room_version_12).
ROOM_VERSION = "10"


class Played:
    """A Synapse database that the users acted in, and what they did."""

    def __init__(self, source, rooms, hash_fn, tmp, late=None, export=None):
        self.source = source
        self.sequential, self.forked = rooms
        self.late = late  # a room whose history the exported user joined late
        self.export = export  # what admin_cmd export-data wrote for that user
        self.hash = hash_fn
        self.tmp = tmp
        self.hash_before = hash_fn()


def _play_both(hs):
    seq, _ = synapse_server.play(hs, seed=1, concurrent=False, room_version=ROOM_VERSION, **SEQUENTIAL)
    forked, _ = synapse_server.play(hs, seed=2, concurrent=True, room_version=ROOM_VERSION, **FORKED)
    return seq, forked


def _sqlite_hash(path):
    """The database file's bytes and its write-ahead log's.  A missing log counts as an
    empty one: a reader of a WAL database whose writer has gone creates the empty -wal
    and -shm files that SQLite coordinates readers and writers with, and no more."""
    def digest():
        h = hashlib.sha256()
        for suffix in ("", "-wal", "-journal"):
            h.update(suffix.encode() + b"\0")
            if os.path.exists(path + suffix):
                with open(path + suffix, "rb") as f:
                    h.update(f.read())
        return h.hexdigest()

    return digest


def _late_room(hs):
    """A room that hides its history from those who join later, and one who does."""
    admin, late = hs.register("lateadmin", admin=True), hs.register("latecomer")
    room = admin.create_room(preset="public_chat", room_version=ROOM_VERSION, initial_state=[
        {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}])
    for i in range(5):
        admin.send(room, f"before {i}")
    admin.set_state(room, "m.room.topic", "", {"topic": "early"})
    late.join(room)
    late.send(room, "hello")
    admin.set_state(room, "m.room.topic", "", {"topic": "late"})
    late.set_state(room, "m.room.member", late.user_id, {"membership": "join", "displayname": "Late"})
    admin.send(room, "welcome")
    return room, late.user_id


@pytest.fixture(scope="module")
def sqlite_synapse(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("synapse-sqlite")
    hs = synapse_server.Homeserver(str(tmp / "hs")).start()
    try:
        rooms = _play_both(hs)
        late, user = _late_room(hs)
        # Read while Synapse runs (its SQLite is in WAL mode: a reader blocks no writer).
        live = run_cli("synapse", "import", hs.source, "--db", str(tmp / "live-store"))
        hs.request("GET", "/_matrix/client/versions")  # still answering
    finally:
        hs.stop()
    export = tmp / "export"
    subprocess.run([sys.executable, "-m", "synapse.app.admin_cmd", "-c", hs.config_path, "export-data", user,
                    "--output-directory", str(export)], check=True, capture_output=True, cwd=hs.dir, timeout=300)
    played = Played(hs.source, rooms, _sqlite_hash(hs.source), tmp, late, export)
    played.live = live
    return played


@pytest.fixture(scope="module")
def postgres_synapse(tmp_path_factory):
    why = synapse_server.postgres_available()
    if why is not None:
        pytest.skip(why)
    for module in ("psycopg", "psycopg2"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (the oracle extra)")
    tmp = tmp_path_factory.mktemp("synapse-postgres")
    pg = synapse_server.Postgres().start()
    try:
        url = pg.create_database("synapse")
        hs = synapse_server.Homeserver(str(tmp / "hs"), postgres_url=url).start()
        try:
            rooms = _play_both(hs)
        finally:
            hs.stop()
        yield Played(url, rooms, lambda: _pg_dump_hash(pg), tmp)
    finally:
        pg.stop()


def _pg_dump_hash(pg):
    out = subprocess.run(["pg_dump", "-h", "127.0.0.1", "-p", str(pg.port), "-U", pg.user, "--no-owner", "synapse"],
                         check=True, capture_output=True).stdout
    # pg_dump fences its output with \restrict and \unrestrict lines of a random key.
    lines = [line for line in out.splitlines() if not line.startswith((b"\\restrict ", b"\\unrestrict "))]
    return hashlib.sha256(b"\n".join(lines)).hexdigest()


@pytest.fixture(params=["sqlite", "postgres"])
def played(request):
    return request.getfixturevalue(f"{request.param}_synapse")


def run_cli(*args, check=None):
    proc = subprocess.run([sys.executable, "-m", "roomstate", *args], capture_output=True, text=True, timeout=600)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def _count(played, sql, params=()):
    with synapse_source.open_source(played.source) as src:
        return src.query(sql, params)


def _imported(played, name, *extra):
    db = str(played.tmp / name)
    if not os.path.exists(db):
        run_cli("synapse", "import", played.source, "--db", db, *extra, check=0)
    return db


def _lines(stdout):
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


# -- import ------------------------------------------------------------------------------


def test_import_stores_every_event_and_leaves_the_database_as_it_was(played):
    db = str(played.tmp / "import-test")
    proc = run_cli("synapse", "import", played.source, "--db", db, check=0)
    (n_events,), = _count(played, "SELECT COUNT(*) FROM events")
    assert f": {n_events:,} events ({n_events:,} new, 0 stored before;" in proc.stdout
    assert "rejected: Synapse 0, roomstate 0, 0 differ" in proc.stdout
    with roomstate.open(db, readonly=True) as store:
        assert {played.sequential, played.forked} <= set(store.rooms())
        assert store.stats()["events"] == n_events
        # Synapse's forward extremities are the store's (no event was left out).
        for room in (played.sequential, played.forked):
            rows = _count(played, "SELECT event_id FROM event_forward_extremities WHERE room_id = ?", (room,))
            assert sorted(store.forward_extremities(room)) == sorted(r[0] for r in rows)
    # Again: every event is stored already (what resuming an interrupted import does).
    again = run_cli("synapse", "import", played.source, "--db", db, check=0)
    assert f"(0 new, {n_events:,} stored before;" in again.stdout
    assert played.hash() == played.hash_before


def test_the_forked_room_forked(played):
    """The concurrent users made events with several prev events; the sequential room has none."""
    def most_prevs(room):
        rows = _count(played, "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM event_edges ed JOIN events e "
                              "ON e.event_id = ed.event_id WHERE e.room_id = ? GROUP BY ed.event_id) t", (room,))
        return rows[0][0]

    assert most_prevs(played.sequential) == 1
    assert most_prevs(played.forked) >= 2
    types = {t for (t,) in _count(played, "SELECT DISTINCT type FROM events WHERE room_id = ?", (played.forked,))}
    assert {"m.room.member", "m.room.power_levels", "m.room.topic", "org.example.status", "m.room.message"} <= types
    members = {m for (m,) in _count(played, "SELECT DISTINCT membership FROM room_memberships WHERE room_id = ?",
                                     (played.forked,))}
    assert {"join", "leave", "ban"} <= members


def test_small_pages_import_the_same(played):
    """Pages of 7 events: ties of depth across page boundaries, events held for later pages."""
    db = str(played.tmp / "pages-7")
    run_cli("synapse", "import", played.source, "--db", db, "--batch", "7", "--room", played.forked, check=0)
    ref = _imported(played, "store")
    with roomstate.open(db, readonly=True) as small, roomstate.open(ref, readonly=True) as whole:
        assert small.room_counts()[played.forked] == whole.room_counts()[played.forked]
        assert sorted(small.forward_extremities(played.forked)) == sorted(whole.forward_extremities(played.forked))


def test_import_while_synapse_runs(sqlite_synapse):
    played = sqlite_synapse
    assert played.live.returncode == 0, played.live.stderr
    proc = run_cli("synapse", "verify", played.source, "--db", str(played.tmp / "live-store"),
                   "--room", played.sequential, check=0)
    assert ": 0 disagreements" in proc.stderr


def test_an_interrupted_import_resumes(sqlite_synapse, tmp_path):
    """Interrupted after two pages: those are committed, and the same import goes on from them."""
    played = sqlite_synapse
    db = str(tmp_path / "store")
    pages = []

    def interrupt(n):
        pages.append(n)
        if len(pages) == 2:
            raise KeyboardInterrupt

    with synapse_source.open_source(played.source) as src, \
            roomstate.open(db, resolver="newest_event", check_auth=True) as store:
        with pytest.raises(KeyboardInterrupt):
            load.Loader(src, store, batch=20, on_progress=interrupt).load([played.forked])
        assert store.stats()["events"] == 40
    (n,), = _count(played, "SELECT COUNT(*) FROM events WHERE room_id = ?", (played.forked,))
    proc = run_cli("synapse", "import", played.source, "--db", db, "--room", played.forked, check=0)
    assert f"({n - 40:,} new, 40 stored before;" in proc.stdout


def test_the_source_cannot_write(played):
    with synapse_source.open_source(played.source) as src:
        with pytest.raises(synapse_source.SourceError, match="read-only|readonly"):
            src.query("CREATE TABLE roomstate_was_here (x INTEGER)")
    assert played.hash() == played.hash_before


# -- verify ------------------------------------------------------------------------------


def test_verify_sequential_room_has_no_disagreement(played):
    db = _imported(played, "store")
    proc = run_cli("synapse", "verify", played.source, "--db", db, "--room", played.sequential, check=0)
    assert proc.stdout == ""
    (n,), = _count(played, "SELECT COUNT(*) FROM events WHERE room_id = ?", (played.sequential,))
    assert proc.stderr.startswith(f"verified {n:,} events of 1 room against ")
    assert ": 0 disagreements" in proc.stderr
    assert played.hash() == played.hash_before


def test_verify_forked_room_reports_well_formed_disagreements(played, record_property):
    db = _imported(played, "store-newest", "--resolver", "newest_event")
    proc = run_cli("synapse", "verify", played.source, "--db", db)
    assert proc.returncode in (0, 5), proc.stderr
    lines = _lines(proc.stdout)
    assert (proc.returncode == 5) == bool(lines)
    events = {e for (e,) in _count(played, "SELECT event_id FROM events")}
    for d in lines:
        assert d["kind"] in ("state", "rejection", "missing")
        assert d["room_id"] == played.forked  # the sequential rooms agree
        assert d["event_id"] in events
        if d["kind"] == "state":
            assert set(d) == {"kind", "room_id", "event_id", "type", "state_key", "synapse", "roomstate",
                              "roomstate_rejected_synapse_event", "synapse_rejected_roomstate_event"}
            assert d["synapse"] != d["roomstate"]
            assert {d["synapse"], d["roomstate"]} - {None} <= events
    assert f": {len(lines):,} disagreement" in proc.stderr
    record_property("forked_room_disagreements", len(lines))
    print(f"forked room: {len(lines)} disagreements (newest_event at forks): {proc.stderr.strip()}")
    assert played.hash() == played.hash_before


def test_forked_room_agrees_with_the_matrix_resolver(played):
    assert load.default_resolver() == "matrix"
    db = _imported(played, "store")  # the default: matrix
    proc = run_cli("synapse", "verify", played.source, "--db", db)
    assert proc.stdout == "" and proc.returncode == 0, proc.stdout[:2000] + proc.stderr


def test_verify_finds_a_state_reset(sqlite_synapse, tmp_path):
    """Synapse's state changed under the store (a copy of the database, one state row
    pointed at another event): verify names the events and the key."""
    played = sqlite_synapse
    db = _imported(played, "store")
    copy = str(tmp_path / "copy.db")
    shutil.copyfile(played.source, copy)
    with sqlite3.connect(copy) as conn:
        group, key_type, state_key, was = conn.execute(
            "SELECT s.state_group, s.type, s.state_key, s.event_id FROM state_groups_state s "
            "JOIN state_groups g ON g.id = s.state_group WHERE s.room_id = ? AND s.type = 'm.room.name' "
            "ORDER BY s.state_group LIMIT 1", (played.sequential,)).fetchone()
        (other,), = conn.execute("SELECT event_id FROM events WHERE room_id = ? AND type = 'm.room.create'",
                                 (played.sequential,)).fetchall()
        conn.execute("UPDATE state_groups_state SET event_id = ? WHERE state_group = ? AND type = ? AND state_key = ?",
                     (other, group, key_type, state_key))
    proc = run_cli("synapse", "verify", copy, "--db", db, "--room", played.sequential, check=5)
    lines = _lines(proc.stdout)
    assert lines and all(d["kind"] == "state" and d["type"] == "m.room.name" for d in lines)
    assert {d["synapse"] for d in lines} == {other}
    assert was in {d["roomstate"] for d in lines}


def test_outliers_and_given_state(sqlite_synapse, tmp_path):
    """A copy in which a state event is an outlier (as after a join over federation): it
    is stored as one, the event after it with Synapse's state given, and the rest agrees."""
    played = sqlite_synapse
    copy = str(tmp_path / "outlier.db")
    shutil.copyfile(played.source, copy)
    with sqlite3.connect(copy) as conn:
        (eid,), = conn.execute(
            "SELECT event_id FROM events WHERE room_id = ? AND type = 'm.room.topic' ORDER BY stream_ordering LIMIT 1",
            (played.sequential,)).fetchall()
        conn.execute("UPDATE events SET outlier = 1 WHERE event_id = ?", (eid,))
        conn.execute("DELETE FROM event_to_state_groups WHERE event_id = ?", (eid,))
    db = str(tmp_path / "store")
    proc = run_cli("synapse", "import", copy, "--db", db, "--room", played.sequential, check=0)
    assert "1 outlier, 1 with Synapse's state given" in proc.stdout
    with roomstate.open(db, readonly=True) as store:
        assert store.is_outlier(eid)
    proc = run_cli("synapse", "verify", copy, "--db", db, "--room", played.sequential, check=0)
    assert "0 disagreements; not compared: 1 outlier" in proc.stderr


def test_verifier_api_matches_the_command(sqlite_synapse):
    played = sqlite_synapse
    db = _imported(played, "store")
    with synapse_source.open_source(played.source) as src, roomstate.open(db, readonly=True) as store:
        v = synapse_verify.Verifier(src, store, batch=5)
        found = list(v.verify([played.sequential]))
        assert found == [] and v.summary.events > 0 and v.summary.rooms == 1
        # The state before the first event after the create event is the create event alone.
        rows = next(src.events(played.sequential, 2))
        group = src.state_groups([rows[1].event_id])[rows[1].event_id]
        assert src.state_before(rows[1], group) == {("m.room.create", ""): rows[0].event_id}


# -- report ------------------------------------------------------------------------------


def test_report(played):
    db = _imported(played, "store")
    report = json.loads(run_cli("synapse", "report", played.source, "--db", db, "--json", check=0).stdout)
    assert {r["room_id"] for r in report["rooms"]} == {played.sequential, played.forked} | ({played.late} - {None})
    for r in report["rooms"]:
        (n,), = _count(played, "SELECT COUNT(*) FROM state_groups_state WHERE room_id = ?", (r["room_id"],))
        assert r["synapse"]["state_groups_state"]["rows"] == n
        (n,), = _count(played, "SELECT COUNT(*) FROM event_to_state_groups t JOIN events e USING (event_id) "
                               "WHERE e.room_id = ?", (r["room_id"],))
        assert r["synapse"]["event_to_state_groups"]["rows"] == n
        assert r["synapse"]["bytes"] > 0 and 0 < r["roomstate"]["state_bytes"] <= r["roomstate"]["bytes"]
    total = report["total"]
    assert total["synapse"]["bytes"] == sum(r["synapse"]["bytes"] for r in report["rooms"])
    assert total["ratio"] == pytest.approx(total["synapse"]["bytes"] / total["roomstate"]["bytes"])
    assert ("dbstat" if played.source.endswith(".db") else "pg_total_relation_size") in report["synapse_bytes_method"]
    table = run_cli("synapse", "report", played.source, "--db", db, check=0).stdout
    assert table.splitlines()[4].split()[:2] == ["room", "events"]
    assert any(line.startswith("total ") for line in table.splitlines())
    assert played.hash() == played.hash_before


# -- errors ------------------------------------------------------------------------------


def test_not_a_synapse_database(tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE events (x)")
    proc = run_cli("synapse", "import", str(other), "--db", str(tmp_path / "s"), check=2)
    assert "not a Synapse database" in proc.stderr
    assert not (tmp_path / "s").exists()
    proc = run_cli("synapse", "verify", str(tmp_path / "missing.db"), "--db", str(tmp_path / "s"), check=2)
    assert "no such file" in proc.stderr


def test_unknown_room(sqlite_synapse, tmp_path):
    proc = run_cli("synapse", "import", sqlite_synapse.source, "--db", str(tmp_path / "s"), "--room", "!nope:x", check=1)
    assert "has no room '!nope:x'" in proc.stderr


# -- admin_cmd export-data -----------------------------------------------------------------


def test_import_of_an_export(sqlite_synapse, tmp_path):
    """``roomstate import`` of what ``admin_cmd export-data`` wrote for a user who joined a
    room late: the first event they saw is stored with the exported state, the state's
    events as outliers, and the state after every exported event is Synapse's."""
    played = sqlite_synapse
    room_dir = played.export / "rooms" / played.late
    assert (room_dir / "events").is_file() and any((room_dir / "state").iterdir())
    db = str(tmp_path / "store")
    proc = run_cli("import", str(played.export), "--db", db, "--resolver", "newest_event", check=0)
    assert ", 1 with the exported state given, 0 refused)" in proc.stdout
    with synapse_source.open_source(played.source) as src, roomstate.open(db, readonly=True) as store:
        exported = [ev for rows in src.events(played.late) for ev in rows if store.has_event(ev.event_id)
                    and not store.is_outlier(ev.event_id)]
        assert len(exported) >= 5  # the join, the member's own events and those after
        groups = src.state_groups([r.event_id for r in exported])
        for row in exported:
            assert store.state_after(row.event_id).to_dict() == src.group_state(groups[row.event_id]), row.event_id
        assert store.room_version(played.late) == ROOM_VERSION
    # Again: nothing new.
    again = run_cli("import", str(played.export), "--db", db, "--resolver", "newest_event", check=0)
    assert "(0 new," in again.stdout
    bad = run_cli("import", str(played.export), str(tmp_path), "--db", db, check=2)
    assert "not a directory that Synapse's export-data wrote" in bad.stderr


# -- room version 12 ---------------------------------------------------------------------


def _store_takes_a_v12_create():
    """Whether the store stores a room version 12 create event (no room_id, by the
    specification) as accepted with check_auth: Synapse's default room version."""
    from roomstate.matrix import compute_event_id

    ev = {"type": "m.room.create", "state_key": "", "sender": "@a:test.local", "content": {"room_version": "12"},
          "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": 0}
    ev["event_id"] = compute_event_id(ev, "12")
    try:
        with roomstate.open(":memory:", check_auth=True) as store:
            store.add_event(ev)
            return not store.event(ev["event_id"]).rejected
    except roomstate.InvalidEventError:
        return False


def test_room_version_12(tmp_path):
    if not _store_takes_a_v12_create():
        pytest.skip("the store does not yet take a room version 12 create event with check_auth "
                    "(without room_id it is refused, with one rule 1.2 rejects it)")
    hs = synapse_server.Homeserver(str(tmp_path / "hs")).start()
    try:
        # Users acting at once: the room forks, and merges by state resolution v2.1.
        room, _ = synapse_server.play(hs, seed=12, concurrent=True, room_version="12", users=4, steps=15)
    finally:
        hs.stop()
    db = str(tmp_path / "store")
    run_cli("synapse", "import", hs.source, "--db", db, check=0)
    proc = run_cli("synapse", "verify", hs.source, "--db", db, "--room", room, check=0)
    assert ": 0 disagreements" in proc.stderr
    with sqlite3.connect(f"file:{hs.source}?mode=ro", uri=True) as conn:
        (merges,), = conn.execute(
            "SELECT COUNT(*) FROM (SELECT ed.event_id FROM event_edges ed JOIN events e ON e.event_id = ed.event_id "
            "WHERE e.room_id = ? GROUP BY ed.event_id HAVING COUNT(*) > 1)", (room,)).fetchall()
    assert merges > 0  # the room forked: v2.1 resolved its merges
    with roomstate.open(db, readonly=True) as store:
        assert room.startswith("!") and ":" not in room  # the create event's ID, with "!" for "$"
        assert store.room_version(room) == "12"


# -- a larger room, on demand ------------------------------------------------------------------


@pytest.mark.synapse_big
@pytest.mark.skipif(not os.environ.get("ROOMSTATE_SYNAPSE_BIG"), reason="the larger room: ROOMSTATE_SYNAPSE_BIG=1")
def test_larger_forked_room(tmp_path):
    """About 4,000 events from 12 concurrent users: import, verify and report, timed
    (the figures of bench/RESULTS.md)."""
    import time

    hs = synapse_server.Homeserver(str(tmp_path / "hs")).start()
    start = time.perf_counter()
    try:
        room, activity = synapse_server.play(hs, seed=7, concurrent=True, room_version=ROOM_VERSION, users=12, steps=300)
    finally:
        hs.stop()
    played_s = time.perf_counter() - start
    db = str(tmp_path / "store")
    before = _sqlite_hash(hs.source)()
    start = time.perf_counter()
    imported = run_cli("synapse", "import", hs.source, "--db", db, check=0)
    import_s = time.perf_counter() - start
    start = time.perf_counter()
    verified = run_cli("synapse", "verify", hs.source, "--db", db)
    verify_s = time.perf_counter() - start
    assert verified.returncode == 0, verified.stdout[:2000] + verified.stderr
    report = run_cli("synapse", "report", hs.source, "--db", db, check=0).stdout
    assert _sqlite_hash(hs.source)() == before
    print(f"\nplayed {activity.done} actions ({activity.refused} refused) in {played_s:.1f} s")
    print(f"import: {import_s:.1f} s: {imported.stdout.strip()}")
    print(f"verify: {verify_s:.1f} s: {verified.stderr.strip()}")
    print(report)
