"""The command line's habits: one-line errors with their exit status, where ``--db`` comes
from, ``rooms``, ``compact``, ``--no-sync``, help and version, UTF-8 output and plurals."""
import json
import os
import re
import resource
import subprocess
import sys
import time
from contextlib import contextmanager

import pytest

import roomstate
from roomstate import cli, workloads
from test_cli import ENV, as_lines, one_line_error, run, stats_of, write_lines

COMMANDS = ("import", "state", "current", "diff", "event", "members", "rooms", "stats", "compact", "demo")


@pytest.fixture(scope="module")
def hq_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("hq") / "hq.jsonl"
    workloads.write_jsonl(workloads.hq(2000, seed=9), path)
    return path


@pytest.fixture(scope="module")
def store(hq_path, tmp_path_factory):
    db = tmp_path_factory.mktemp("store") / "store"
    proc = run("import", hq_path, "--db", db, "--resolver", "newest_event", "--batch", "100")
    assert proc.returncode == 0, proc.stderr
    return db


# -- OS and LMDB failures ------------------------------------------------------------------


@pytest.mark.parametrize("db, why", [("/dev/null/x", "Not a directory"), ("/sys/kernel/x.db", "")])
def test_a_path_that_cannot_hold_a_store_is_one_line_and_status_2(hq_path, db, why):
    if db.startswith("/sys/") and not os.path.isdir("/sys/kernel"):
        pytest.skip("no /sys/kernel here")
    message = one_line_error(run("import", hq_path, "--db", db), 2)
    assert message.startswith(f"roomstate: cannot open the store at '{db}': {why}"), message


def _file_size_limit(limit):
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG, as on a full disk.
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_write_that_fails_midway_is_one_line_and_status_2(tmp_path, hq_path):
    db = tmp_path / "store"
    proc = subprocess.run(
        [sys.executable, "-m", "roomstate", "import", str(hq_path), "--db", str(db), "--resolver", "newest_event",
         "--batch", "100"],
        capture_output=True, text=True, env=ENV, timeout=120, preexec_fn=_file_size_limit(160_000),
    )
    message = one_line_error(proc, 2)
    assert message.startswith(f"roomstate: the store at '{db}' could not be written: "), message
    stored = stats_of(db)["events"]
    assert 0 < stored < 2000 and stored % 100 == 0  # whole batches, the failed one rolled back


@pytest.mark.parametrize("error, status", [
    (roomstate.StorageError("the disk is on fire"), 2),
    (roomstate.StoreFormatError("a store of format version 9"), 1),
    (roomstate.MissingEventError("unknown event '$x'"), 1),
    (roomstate.RoomStateError("digest collision on k key 'x'"), 1),
])
@pytest.mark.parametrize("command", [("stats",), ("rooms",), ("state", "$x"), ("compact",)])
def test_every_roomstate_error_is_one_line(monkeypatch, capsys, tmp_path, error, status, command):
    def fail(*args, **kwargs):
        raise error

    roomstate.open(tmp_path / "x", check_auth=False).close()  # a store there: the error comes from opening it
    monkeypatch.setattr(roomstate, "open", fail)
    assert cli.main([command[0], "--db", str(tmp_path / "x"), *command[1:]]) == status
    out, err = capsys.readouterr()
    assert out == "" and err == f"roomstate: {error}\n"


# -- "new" is what this call wrote ---------------------------------------------------------


def test_two_imports_at_once_share_the_new_events(tmp_path):
    n = 20_000
    path = tmp_path / "big.jsonl"
    workloads.write_jsonl(workloads.hq(n, seed=12), path)
    db = tmp_path / "store"
    args = [sys.executable, "-m", "roomstate", "import", str(path), "--db", str(db),
            "--resolver", "newest_event", "--batch", "250"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    new = [int(re.match(r"imported 20,000 events \(([\d,]+) new, ", out).group(1).replace(",", "")) for out, _ in outs]
    assert sum(new) == n, new
    assert stats_of(db)["events"] == n


# -- usage ---------------------------------------------------------------------------------


def test_a_usage_error_prints_the_usage_of_its_command(store):
    proc = run("state", "--db", store, "$hello", "--state-key", "")
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: roomstate state "), proc.stderr
    assert proc.stderr.rstrip().endswith("roomstate state: error: --state-key needs --type")


def test_version_and_examples_in_every_help():
    for flag in ("-V", "--version"):
        proc = run(flag)
        assert (proc.returncode, proc.stdout) == (0, f"roomstate {roomstate.__version__}\n")
    for command in COMMANDS:
        proc = run(command, "--help")
        assert proc.returncode == 0, proc.stderr
        tail = proc.stdout.split("\nexamples:\n", 1)[1]
        examples = [line for line in tail.splitlines() if line.startswith("  roomstate ")]
        assert examples and all(f"roomstate {command}" in line for line in examples[:1]), proc.stdout
    text = run("import", "--help").stdout
    assert "3 lines skipped with\n--skip-invalid" in text and "4 events not stored" in text


# -- where --db comes from --------------------------------------------------------------------


def test_db_before_the_command_after_it_and_from_the_environment(tmp_path, hq_path):
    stores = {}
    for name, n in (("env", 1), ("global", 2), ("sub", 3)):
        stores[name] = tmp_path / name
        write_lines(tmp_path / f"{name}.jsonl", as_lines(list(workloads.hq(n, seed=1))))
        assert run("import", tmp_path / f"{name}.jsonl", "--db", stores[name]).returncode == 0

    def events(*args, env=None):
        proc = subprocess.run([sys.executable, "-m", "roomstate", *map(str, args)], capture_output=True, text=True,
                              env=dict(ENV, **(env or {})), timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["events"]

    env = {"ROOMSTATE_DB": str(stores["env"])}
    assert events("stats", "--json", env=env) == 1
    assert events("--db", stores["global"], "stats", "--json", env=env) == 2
    assert events("--db", stores["global"], "stats", "--json", "--db", stores["sub"], env=env) == 3
    assert events("--db", stores["global"], "stats", "--json") == 2

    no_env = {k: v for k, v in ENV.items() if k != "ROOMSTATE_DB"}
    proc = subprocess.run([sys.executable, "-m", "roomstate", "stats"], capture_output=True, text=True, env=no_env)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: roomstate stats ") and "--db is required" in proc.stderr


# -- rooms ------------------------------------------------------------------------------------


def test_rooms_lists_every_room_with_its_counts(tmp_path):
    histories = {f"!r{i}:example.org": list(workloads.hq(n, seed=i, room_id=f"!r{i}:example.org"))
                 for i, n in ((1, 300), (2, 40), (3, 1))}
    lines = [line for events in histories.values() for line in as_lines(events)]
    db = tmp_path / "store"
    assert run("import", write_lines(tmp_path / "rooms.jsonl", lines), "--db", db,
               "--resolver", "newest_event").returncode == 0
    expected = [{"room_id": r, "events": len(evs), "state_events": sum("state_key" in e for e in evs)}
                for r, evs in sorted(histories.items())]
    proc = run("rooms", "--db", db, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == expected
    table = run("rooms", "--db", db).stdout.splitlines()
    assert re.fullmatch(r"room\s+events\s+state events", table[0])
    assert [line.split() for line in table[1:]] == [[r["room_id"], f"{r['events']:,}", f"{r['state_events']:,}"]
                                                   for r in expected]


def test_rooms_of_an_empty_store(tmp_path):
    roomstate.open(tmp_path / "empty", check_auth=False).close()
    assert run("rooms", "--db", tmp_path / "empty", "--json").stdout == "[]\n"
    assert run("rooms", "--db", tmp_path / "empty").stdout == ""


# -- --check-auth ------------------------------------------------------------------------------


def test_check_auth_rejects_the_events_that_break_the_rules(tmp_path):
    events = list(workloads.hq(3000, seed=1))
    expected = workloads.expected_rejections(events)
    assert expected
    path = tmp_path / "hq.jsonl"
    workloads.write_jsonl(events, path)
    for flag, want in ((("--no-check-auth",), set()), ((), set(expected)), (("--check-auth",), set(expected))):
        db = tmp_path / f"s{flag}"
        assert cli.main(["import", str(path), "--db", str(db), "--resolver", "newest_event", "--quiet", *flag]) == 0
        with roomstate.open(db, readonly=True) as store:
            assert {e["event_id"] for e in events if store.event(e["event_id"]).rejected} == want


def test_event_prints_what_the_store_keeps_with_the_rejection_reason(tmp_path):
    events = list(workloads.hq(3000, seed=1))
    bad = next(iter(workloads.expected_rejections(events)))
    path = tmp_path / "hq.jsonl"
    workloads.write_jsonl(events, path)
    db = tmp_path / "s"
    assert cli.main(["import", str(path), "--db", str(db), "--resolver", "newest_event", "--quiet", "--check-auth"]) == 0
    proc = run("event", "--db", db, bad)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    given = next(e for e in events if e["event_id"] == bad)
    assert (info["event_id"], info["sender"], info["rejected"]) == (bad, given["sender"], True)
    assert info["rejected_reason"].startswith(("rule ", "against the state before the event: rule "))
    assert sorted(info["auth_events"]) == sorted(given["auth_events"])
    proc = run("event", "--db", db, "$nope")
    assert proc.returncode == 1 and proc.stderr.startswith("roomstate: ") and "\n" == proc.stderr[-1:]


# -- --no-sync ---------------------------------------------------------------------------------


def test_no_sync_opens_the_store_without_durable_commits(monkeypatch, tmp_path, hq_path):
    opened = []
    real_open = roomstate.open

    def recording_open(path, **options):
        opened.append(options.get("durable", True))
        return real_open(path, **options)

    monkeypatch.setattr(roomstate, "open", recording_open)
    for flag, durable in (((), True), (("--no-sync",), False)):
        status = cli.main(["import", str(hq_path), "--db", str(tmp_path / f"s{durable}"), "--resolver",
                           "newest_event", "--quiet", *flag])
        assert status == 0
        assert opened[-1] is durable
    with real_open(tmp_path / "sFalse", readonly=True) as store:
        assert store.stats()["events"] == 2000


# -- compact -----------------------------------------------------------------------------------

QUERIES = (("rooms", "--json"), ("stats", "--json"), ("current", "!hq0:example.org", "--resolver", "newest_event"))


def _answers(db, hq_path):
    events = [json.loads(line) for line in hq_path.read_text().splitlines()]
    answers = []
    for query in QUERIES:
        proc = run(query[0], "--db", db, *query[1:])
        assert proc.returncode == 0, proc.stderr
        answers.append(proc.stdout if query[0] != "stats" else json.loads(proc.stdout)["events"])
    for ev in events[::250]:
        answers.append(run("state", "--db", db, ev["event_id"], "--after").stdout)
    return answers


def _reported_bytes(proc):
    match = re.search(r": ([\d,]+) bytes before, ([\d,]+) after", proc.stdout)
    assert match, proc.stdout
    return tuple(int(g.replace(",", "")) for g in match.groups())


def _copy_of(store, tmp_path, name):
    db = tmp_path / name
    db.mkdir()
    (db / "data.mdb").write_bytes((store / "data.mdb").read_bytes())
    return db


@contextmanager
def _held_open(db, *, readonly):
    """A process that opens the store, says so, and reads from it until its stdin closes."""
    code = (
        "import sys, threading, roomstate\n"
        f"s = roomstate.open(sys.argv[1], readonly={readonly}, check_auth=False)\n"
        "done = threading.Event()\n"
        "threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()\n"
        "print('open', flush=True)\n"
        "while not done.wait(0.01):\n"
        "    s.stats()\n"
        "s.close()\n"
    )
    with subprocess.Popen([sys.executable, "-c", code, str(db)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True, env=ENV) as holder:
        assert holder.stdout.readline() == "open\n"
        yield
        holder.stdin.close()
        assert holder.wait(timeout=30) == 0


def test_compact_to_a_copy_while_a_reader_runs(tmp_path, store, hq_path):
    db = _copy_of(store, tmp_path, "src")
    size = os.path.getsize(db / "data.mdb")
    with _held_open(db, readonly=True):
        proc = run("compact", "--db", db, "--to", tmp_path / "copy")
    assert proc.returncode == 0, proc.stderr
    before, after = _reported_bytes(proc)
    assert (before, after) == (size, os.path.getsize(tmp_path / "copy" / "data.mdb"))
    assert after < before
    assert os.path.getsize(db / "data.mdb") == size  # the source is left as it was
    assert _answers(tmp_path / "copy", hq_path) == _answers(db, hq_path)

    again = run("compact", "--db", db, "--to", tmp_path / "copy")
    assert "exists already" in one_line_error(again, 2)


def test_compact_in_place(tmp_path, store, hq_path):
    db = _copy_of(store, tmp_path, "db")
    expected = _answers(db, hq_path)
    size = os.path.getsize(db / "data.mdb")
    proc = run("compact", "--db", db)
    assert proc.returncode == 0, proc.stderr
    before, after = _reported_bytes(proc)
    assert (before, after) == (size, os.path.getsize(db / "data.mdb")) and after < before
    assert sorted(os.listdir(db)) == ["data.mdb"]  # no temporary left; a new lock file comes with the next open
    assert _answers(db, hq_path) == expected
    # And it takes writes again, as any store.
    more = write_lines(tmp_path / "more.jsonl", as_lines(workloads.hq(100, seed=1, room_id="!more:example.org")))
    assert run("import", more, "--db", db, "--resolver", "newest_event").returncode == 0
    assert stats_of(db)["events"] == 2100


@pytest.mark.parametrize("readonly", [True, False], ids=["reader", "writer"])
def test_compact_in_place_is_refused_while_another_process_has_the_store_open(tmp_path, store, readonly):
    db = _copy_of(store, tmp_path, "db")
    with _held_open(db, readonly=readonly):
        inode = os.stat(db / "data.mdb").st_ino
        message = one_line_error(run("compact", "--db", db), 1)
        assert "is open in another process" in message and "--to" in message
        assert os.stat(db / "data.mdb").st_ino == inode
    assert run("compact", "--db", db).returncode == 0  # once it is closed
    assert os.stat(db / "data.mdb").st_ino != inode


def test_a_process_opening_the_store_during_an_in_place_compaction_waits_then_fails_cleanly(
        monkeypatch, tmp_path, store, hq_path):
    from roomstate import compact

    db = _copy_of(store, tmp_path, "db")
    expected = _answers(db, hq_path)
    real_copy = compact._copy
    waiters = []

    def copy_then_let_a_reader_in(source, to):
        real_copy(source, to)
        waiters.append(subprocess.Popen([sys.executable, "-m", "roomstate", "stats", "--db", str(db), "--json"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV))
        time.sleep(1.0)
        assert waiters[0].poll() is None  # LMDB's open waits on the lock compact holds

    monkeypatch.setattr(compact, "_copy", copy_then_let_a_reader_in)
    compact.compact_in_place(str(db))
    with waiters[0] as waiter:
        out, err = waiter.communicate(timeout=60)
    # It opened the old lock file before the swap: refused, rather than reading the
    # new data file through the old file's reader table.
    assert waiter.returncode == 1 and out == ""
    assert err.startswith(f"roomstate: cannot open the store at '{db}'") and err.count("\n") == 1, err
    assert _answers(db, hq_path) == expected


# -- output ------------------------------------------------------------------------------------


def test_json_output_is_utf8_and_counts_have_plurals(tmp_path):
    key = "@zoë😀:example.org"
    events = [
        {"event_id": "$create", "room_id": "!ü:example.org", "type": "m.room.create", "state_key": "",
         "content": {}},
        {"event_id": "$zoë", "room_id": "!ü:example.org", "type": "m.room.member", "state_key": key,
         "prev_events": ["$create"], "content": {"membership": "join"}},
    ]
    path = write_lines(tmp_path / "room.jsonl", [json.dumps(ev) for ev in events[:1]])
    db = tmp_path / "store"
    proc = run("import", path, "--db", db, "--no-check-auth")
    assert re.match(r"imported 1 event \(1 new, 1 state event\) in [\d.]+ s, [\d,]+ events/s; "
                    r"store: 1 event, 2 snapshots, ", proc.stdout), proc.stdout
    write_lines(path, [json.dumps(ev, ensure_ascii=False) for ev in events])
    proc = run("import", path, "--db", db, "--no-check-auth")
    assert proc.stdout.startswith("imported 2 events (1 new, 2 state events) "), proc.stdout

    out = subprocess.run([sys.executable, "-m", "roomstate", "state", "--db", str(db), "$zoë", "--after"],
                         capture_output=True, env=dict(ENV, PYTHONIOENCODING="ascii"), timeout=60)
    assert out.returncode == 0, out.stderr
    assert key.encode() in out.stdout and b"\\u" not in out.stdout
    assert json.loads(out.stdout.decode())[1] == {"type": "m.room.member", "state_key": key, "event_id": "$zoë"}
    rooms = run("rooms", "--db", db, "--json").stdout
    assert '"!ü:example.org"' in rooms


def test_a_lone_surrogate_is_escaped_not_a_crash(tmp_path):
    db = tmp_path / "store"
    with roomstate.open(db, check_auth=False) as store:
        store.add_events([
            {"event_id": "$c", "room_id": "!r:x", "type": "m.room.create", "state_key": "", "content": {}},
            {"event_id": "$m", "room_id": "!r:x", "type": "m.room.member", "state_key": "@a\ud800:x",
             "prev_events": ["$c"], "content": {"membership": "join"}},
        ])
    proc = run("state", "--db", db, "$m", "--after")
    assert proc.returncode == 0, proc.stderr
    assert '"@a\\ud800:x"' in proc.stdout


def test_interrupt_message_counts_with_separators(tmp_path):
    n = 60_000
    path = tmp_path / "big.jsonl"
    workloads.write_jsonl(workloads.hq(n, seed=7), path)
    with subprocess.Popen([sys.executable, "-m", "roomstate", "import", str(path), "--db", str(tmp_path / "s"),
                           "--resolver", "newest_event", "--batch", "2000"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) as proc:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (tmp_path / "s" / "data.mdb").exists():
            time.sleep(0.02)
        time.sleep(0.3)
        proc.send_signal(2)
        out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the import finished before the interrupt")
    assert proc.returncode == 130, err
    assert re.fullmatch(r"roomstate: interrupted after [\d,]+ events?; the same command resumes the import\n", err)
    count = int(re.search(r"after ([\d,]+)", err).group(1).replace(",", ""))
    assert count < 1000 or "," in err
