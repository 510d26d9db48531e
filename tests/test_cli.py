"""The ``roomstate`` command line, driven the way a person drives it: in subprocesses.

Answers are checked against a plain-Python reference (a dict of state per event,
merged with the ``newest_event`` rule), not against the engine's own reads.
"""
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import roomstate
from roomstate import workloads

# The subprocesses must run the same roomstate as this test process.
_PACKAGE_PARENT = str(Path(roomstate.__file__).resolve().parents[1])
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_PACKAGE_PARENT, os.environ.get("PYTHONPATH")])))

N_EVENTS = 3000


def run(*args, input=None, timeout=120, exe=None):
    cmd = [exe] if exe else [sys.executable, "-m", "roomstate"]
    return subprocess.run(
        cmd + [str(a) for a in args], input=input, capture_output=True, text=True, timeout=timeout, env=ENV
    )


def one_line_error(proc, status):
    assert proc.returncode == status, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    return proc.stderr.strip()


def stats_of(db):
    proc = run("stats", "--db", db, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def as_lines(events):
    return [json.dumps(ev, separators=(",", ":")) for ev in events]


# -- the reference ---------------------------------------------------------------------


class Reference:
    """State before and after every event, the obvious way."""

    def __init__(self, events):
        self.events = {}
        self.depth = {}
        self.before = {}
        self.after = {}
        has_child = set()
        for ev in events:
            eid = ev["event_id"]
            prevs = list(dict.fromkeys(p if isinstance(p, str) else p[0] for p in ev.get("prev_events", [])))
            has_child.update(prevs)
            self.events[eid] = ev
            self.depth[eid] = ev.get("depth", 1 + max((self.depth[p] for p in prevs), default=0))
            self.before[eid] = self.merge([self.after[p] for p in prevs])
            after = self.before[eid]
            if "state_key" in ev and not ev.get("rejected", False):
                after = dict(after)
                after[(ev["type"], ev["state_key"])] = eid
            self.after[eid] = after
        self.extremities = [eid for eid in self.events if eid not in has_child]

    def merge(self, states):
        if not states:
            return {}
        if len(states) == 1:
            return states[0]
        merged = {}
        for key in set().union(*states):
            values = [s.get(key) for s in states]
            if values[0] is not None and all(v == values[0] for v in values):
                merged[key] = values[0]
            else:  # conflicted, a key missing from some states included: newest_event
                merged[key] = max({v for v in values if v is not None}, key=lambda e: (self.depth[e], e))
        return merged

    def current(self):
        return self.merge([self.after[e] for e in self.extremities])

    def members(self, state, membership="join"):
        return sorted(
            k for (t, k), e in state.items()
            if t == "m.room.member" and self.events[e].get("content", {}).get("membership") == membership
        )


def entries(state):
    return [{"type": t, "state_key": k, "event_id": e} for (t, k), e in sorted(state.items())]


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def history():
    return list(workloads.hq(N_EVENTS, seed=3))


@pytest.fixture(scope="module")
def reference(history):
    return Reference(history)


@pytest.fixture(scope="module")
def hq_file(history, tmp_path_factory):
    path = tmp_path_factory.mktemp("hq") / "hq.jsonl"
    workloads.write_jsonl(history, path)
    return path


@pytest.fixture(scope="module")
def db(hq_file, tmp_path_factory):
    db = tmp_path_factory.mktemp("db") / "store"
    proc = run("import", "--no-check-auth", hq_file, "--db", db, "--resolver", "newest_event")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal
    assert re.fullmatch(
        rf"imported {N_EVENTS:,} events \({N_EVENTS:,} new, [\d,]+ state events\) in [\d.]+ s, [\d,]+ events/s; "
        rf"store: {N_EVENTS:,} events, [\d,]+ snapshots, [\d.]+ [KMG]?B on disk\n",
        proc.stdout,
    ), proc.stdout
    return db


# -- reads against the reference --------------------------------------------------------


def test_state_matches_the_reference(db, history, reference):
    merges = [ev["event_id"] for ev in history if len(ev["prev_events"]) > 1]
    assert len(merges) > 10
    for eid in (merges[3], merges[-1], history[N_EVENTS // 2]["event_id"], history[-1]["event_id"]):
        proc = run("state", "--db", db, eid)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout) == entries(reference.before[eid])
        proc = run("state", "--db", db, eid, "--after")
        assert json.loads(proc.stdout) == entries(reference.after[eid])


def test_state_filters_by_type_and_key(db, history, reference):
    last = history[-1]["event_id"]
    members = {k: e for k, e in reference.after[last].items() if k[0] == "m.room.member"}
    proc = run("state", "--db", db, last, "--after", "--type", "m.room.member")
    assert json.loads(proc.stdout) == entries(members)
    key = sorted(members)[len(members) // 2]
    proc = run("state", "--db", db, last, "--after", "--type", key[0], "--state-key", key[1])
    assert json.loads(proc.stdout) == entries({key: members[key]})
    proc = run("state", "--db", db, last, "--type", "m.no.such.type")
    assert (proc.returncode, proc.stdout) == (0, "[]\n")


def test_current_diff_and_members(db, history, reference):
    room = history[0]["room_id"]
    proc = run("current", "--db", db, room, "--resolver", "newest_event")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == entries(reference.current())

    a, b = history[N_EVENTS // 3]["event_id"], history[-1]["event_id"]
    proc = run("diff", "--db", db, a, b)
    assert proc.returncode == 0, proc.stderr
    sa, sb = reference.after[a], reference.after[b]
    assert json.loads(proc.stdout) == {
        "added": entries({k: e for k, e in sb.items() if sa.get(k) != e}),
        "removed": entries({k: e for k, e in sa.items() if sb.get(k) != e}),
    }

    proc = run("members", "--db", db, b, "--after")
    assert json.loads(proc.stdout) == reference.members(sb)
    assert len(json.loads(proc.stdout)) > 10
    proc = run("members", "--db", db, b, "--after", "--membership", "leave")
    assert json.loads(proc.stdout) == reference.members(sb, "leave")


def test_stats(db, reference):
    stats = stats_of(db)
    n_state = sum("state_key" in ev for ev in reference.events.values())
    assert stats["events"] == N_EVENTS
    assert stats["state_events"] == n_state
    assert stats["tables"]["events"]["entries"] == N_EVENTS
    assert stats["bytes_per_state_event"] > 0 and stats["file_bytes"] > 0
    proc = run("stats", "--db", db)
    assert proc.returncode == 0
    assert re.search(rf"^events\s+{N_EVENTS:,}$", proc.stdout, re.M)
    assert re.search(rf"^state events\s+{n_state:,}$", proc.stdout, re.M)
    assert "bytes per state event" in proc.stdout


def test_console_script_on_path(db):
    exe = shutil.which("roomstate")
    if exe is None:
        pytest.skip("the roomstate console script is not on PATH")
    proc = run("stats", "--db", db, "--json", exe=exe)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["events"] == N_EVENTS


# -- errors of reads ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (("state", "$nope"), "unknown event '$nope'"),
        (("members", "$nope"), "unknown event '$nope'"),
        (("diff", "$nope", "$nope2"), "unknown event '$nope'"),
        (("current", "!nope:example.org"), "unknown room '!nope:example.org'"),
    ],
)
def test_unknown_event_or_room(db, args, message):
    proc = run(args[0], "--db", db, *args[1:])
    assert message in one_line_error(proc, 1)
    assert proc.stdout == ""


@pytest.mark.parametrize(
    "command", [("stats",), ("state", "$x"), ("current", "!r"), ("members", "$x"), ("rooms",), ("compact",),
                ("compact", "--to", "copy")],
)
def test_missing_db_is_an_error_not_a_new_store(tmp_path, command):
    missing = tmp_path / "no-such-store"
    proc = run(command[0], "--db", missing, *command[1:])
    assert "no roomstate store" in one_line_error(proc, 1)
    assert not missing.exists()


def test_usage_errors(db, hq_file):
    assert run().returncode == 2
    proc = run("state", "--db", db, "$x", "--state-key", "k")
    assert proc.returncode == 2 and "--state-key needs --type" in proc.stderr
    proc = run("import", "--no-check-auth", hq_file.with_name("missing.jsonl"), "--db", db)
    assert "cannot read" in one_line_error(proc, 2)


# -- bad input ---------------------------------------------------------------------------

BAD_LINE = 250


@pytest.mark.parametrize(
    "bad, reason",
    [
        ('{"event_id": "$broken", ', "not valid JSON"),
        ('["a", "list"]', "not a JSON object but an array"),
        ('{"event_id": "$bad", "room_id": "!hq0:example.org"}', "invalid type"),
        ('{"event_id": "$bad", "room_id": "!hq0:example.org", "type": "m.room.message", "prev_events": "$ghost"}',
         "invalid prev_events"),
    ],
)
def test_bad_line_stops_keeps_what_came_before_and_resumes_after_the_fix(tmp_path, bad, reason):
    events = list(workloads.hq(400, seed=5))
    lines = as_lines(events)
    lines.insert(BAD_LINE - 1, bad)
    path = write_lines(tmp_path / "room.jsonl", lines)
    db = tmp_path / "store"
    proc = run("import", "--no-check-auth", path, "--db", db, "--resolver", "newest_event", "--batch", "100")
    message = one_line_error(proc, 2)
    assert message.startswith(f"{path}:{BAD_LINE}: "), message
    assert reason in message
    assert proc.stdout == ""

    assert stats_of(db)["events"] == BAD_LINE - 1
    assert run("state", "--db", db, events[BAD_LINE - 2]["event_id"]).returncode == 0
    assert run("state", "--db", db, events[BAD_LINE - 1]["event_id"]).returncode == 1

    del lines[BAD_LINE - 1]
    write_lines(path, lines)
    proc = run("import", "--no-check-auth", path, "--db", db, "--resolver", "newest_event", "--batch", "100")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"imported 400 events ({400 - (BAD_LINE - 1)} new, ")
    stats = stats_of(db)
    assert stats["events"] == stats["tables"]["events"]["entries"] == 400


def test_a_conflict_names_its_line_and_the_way_out(tmp_path, reference):
    events = list(workloads.hq(N_EVENTS, seed=3))
    first_conflict = next(
        i for i, ev in enumerate(events)
        if len(ev["prev_events"]) > 1 and _conflicted([reference.after[p] for p in ev["prev_events"]])
    )
    path = write_lines(tmp_path / "room.jsonl", as_lines(events))
    db = tmp_path / "store"
    message = one_line_error(run("import", "--no-check-auth", path, "--db", db, "--resolver", "raise_on_conflict"), 2)
    assert message.startswith(f"{path}:{first_conflict + 1}: "), message
    assert "conflicted state key" in message and "--resolver matrix or newest_event" in message
    assert stats_of(db)["events"] == first_conflict


def _conflicted(states):
    keys = set().union(*states)
    return any(len({s.get(k) for s in states}) > 1 for k in keys)


def test_skip_invalid(tmp_path):
    events = list(workloads.hq(500, seed=6))
    lines = as_lines(events)
    lines.insert(9, "not json at all")
    lines.insert(299, json.dumps({"event_id": "$listless", "room_id": events[0]["room_id"],
                                  "type": "m.room.message", "prev_events": "$ghost"}))
    lines.insert(399, "")  # blank lines are not events, nor errors
    path = write_lines(tmp_path / "room.jsonl", lines)
    with path.open("ab") as f:
        f.write(b'{"event_id": "\xff"}\n')  # not UTF-8
    db = tmp_path / "store"
    proc = run("import", "--no-check-auth", path, "--db", db, "--resolver", "newest_event", "--skip-invalid", "--batch", "64")
    assert proc.returncode == 3, proc.stderr  # its own status: lines were skipped
    assert "Traceback" not in proc.stderr
    reported = proc.stderr.splitlines()
    assert reported == [
        f"{path}:10: not valid JSON: Expecting value at column 1 (skipped)",
        f"{path}:300: invalid prev_events (event '$listless'): must be a list, got str (skipped)",
        f"{path}:504: not UTF-8: byte 15 is 0xff (skipped)",
    ]
    assert "500 events (500 new, " in proc.stdout and ", 3 invalid lines skipped)" in proc.stdout
    assert stats_of(db)["events"] == 500

    # Nothing to skip: status 0 even with --skip-invalid, and the plural holds.
    proc = run("import", "--no-check-auth", path.with_name("clean.jsonl"), "--db", db, "--skip-invalid", "--resolver", "newest_event")
    assert proc.returncode == 2  # no such file
    write_lines(path.with_name("clean.jsonl"), as_lines(events[:1]))
    proc = run("import", "--no-check-auth", path.with_name("clean.jsonl"), "--db", db, "--skip-invalid", "--resolver", "newest_event")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("imported 1 event (0 new, 1 state event, 0 invalid lines skipped) ")


def test_gzip_and_stdin(tmp_path):
    events = list(workloads.hq(300, seed=8))
    gz = tmp_path / "room.jsonl.gz"
    workloads.write_jsonl(events, gz)
    for source, stdin, db in ((gz, None, tmp_path / "a"), ("-", gzip.decompress(gz.read_bytes()).decode(), tmp_path / "b")):
        proc = run("import", "--no-check-auth", source, "--db", db, "--resolver", "newest_event", input=stdin)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.startswith("imported 300 events (300 new, ")
    assert run("current", "--db", tmp_path / "a", events[0]["room_id"]).stdout == \
        run("current", "--db", tmp_path / "b", events[0]["room_id"]).stdout


def test_kill_9_in_the_middle_then_rerun(tmp_path):
    n = 60_000
    events = workloads.hq(n, seed=7)
    path = tmp_path / "big.jsonl"
    workloads.write_jsonl(events, path)
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = ["import", str(path), "--db", str(killed), "--resolver", "newest_event", "--batch", "2000"]

    proc = subprocess.Popen([sys.executable, "-m", "roomstate", *args], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        stored = 0
        while stored == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
            try:
                with roomstate.open(killed, readonly=True) as store:
                    stored = store.stats()["events"]
            except roomstate.RoomStateError:
                pass  # not created, or not initialised yet
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    partial = stats_of(killed)["events"]
    assert 0 < partial < n

    rerun = run(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.startswith(f"imported {n:,} events ({n - partial:,} new, ")
    proc = run("import", path, "--db", clean, "--resolver", "newest_event")  # checked, as the killed one
    assert proc.returncode == 0, proc.stderr

    a, b = stats_of(killed), stats_of(clean)
    assert a["events"] == a["tables"]["events"]["entries"] == n
    assert (a["events"], a["state_events"]) == (b["events"], b["state_events"])
    last = rerun_last = None
    for ev in workloads.hq(n, seed=7):
        last = ev
        if rerun_last is None and ev["prev_events"] and len(ev["prev_events"]) > 1 and ev["depth"] > 20_000:
            rerun_last = ev
    for query in (("current", last["room_id"], "--resolver", "newest_event"),
                  ("state", last["event_id"], "--after"),
                  ("state", rerun_last["event_id"]),
                  ("members", last["event_id"], "--after")):
        out_killed = run(query[0], "--db", killed, *query[1:])
        assert out_killed.returncode == 0, out_killed.stderr
        assert out_killed.stdout == run(query[0], "--db", clean, *query[1:]).stdout


# -- terminal and demo ---------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_progress_bar_only_on_a_terminal(tmp_path, hq_file):
    import fcntl
    import pty
    import struct
    import termios

    def stderr_on_a_tty(*extra):
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        proc = subprocess.Popen(
            [sys.executable, "-m", "roomstate", "import", "--no-check-auth", str(hq_file), "--db", str(tmp_path / "s"),
             "--resolver", "newest_event", *extra],
            env=ENV, stdout=subprocess.PIPE, stderr=follower, text=True,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        out, _ = proc.communicate()
        os.close(leader)
        assert proc.returncode == 0
        return out, b"".join(chunks).decode(errors="replace")

    out, err = stderr_on_a_tty()
    assert "ev/s" in err and "import" in err
    assert out.startswith("imported ") and out.count("\n") == 1  # the bar stays off stdout
    out, err = stderr_on_a_tty("--quiet")
    assert err == "" and out.startswith("imported ")


def test_demo(tmp_path):
    proc = run("demo", "--events", "2000", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "2,000 events" in proc.stdout
    assert re.search(r"^imported 2,000 events \(2,000 new, ", proc.stdout, re.M)
    for answer in ("current state of !hq0:example.org: ", "joined members after the last event: ",
                   "diff from event #1,000 to the last event", "bytes per state event"):
        assert answer in proc.stdout

    kept = tmp_path / "demo-store"
    proc = run("demo", "--events", "2000", "--db", kept)
    assert proc.returncode == 0, proc.stderr
    assert stats_of(kept)["events"] == 2000
