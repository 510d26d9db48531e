"""``roomstate import`` on the input shapes people have: JSON lines, a JSON array, JSON
objects one after another (Synapse's ``admin_cmd export-data``), gzip whatever the name,
and events out of order.  Answers are checked against the plain-Python reference."""
import gzip
import io
import json
import random
import subprocess
import sys

import pytest

from roomstate import inputs, workloads
from test_cli import ENV, Reference, as_lines, entries, one_line_error, run, stats_of, write_lines

N = 1500


@pytest.fixture(scope="module")
def history():
    return list(workloads.hq(N, seed=11))


@pytest.fixture(scope="module")
def reference(history):
    return Reference(history)


def imported(path, db, *extra, input=None):
    proc = run("import", "--no-check-auth", path, "--db", db, "--resolver", "newest_event", *extra, input=input)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"imported {N:,} events ({N:,} new, "), proc.stdout
    return proc


def assert_answers(db, history, reference):
    room, last = history[0]["room_id"], history[-1]["event_id"]
    proc = run("current", "--db", db, room, "--resolver", "newest_event")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == entries(reference.current())
    merge = [ev["event_id"] for ev in history if len(ev["prev_events"]) > 1][-1]
    for eid in (merge, last, history[N // 2]["event_id"]):
        assert json.loads(run("state", "--db", db, eid, "--after").stdout) == entries(reference.after[eid])
    assert stats_of(db)["events"] == N


# -- shapes -------------------------------------------------------------------------------


def _array_one_line(events):
    return json.dumps(events)


def _array_pretty(events):
    return json.dumps(events, indent=2) + "\n"


def _concatenated(events):
    # What synapse.app.admin_cmd export-data writes: json.dump per event, nothing between.
    out = io.StringIO()
    for ev in events:
        json.dump(ev, out)
    return out.getvalue()


def _concatenated_pretty(events):
    return "\n".join(json.dumps(ev, indent=2) for ev in events)


SHAPES = {
    "array": _array_one_line,
    "array_pretty": _array_pretty,
    "concatenated": _concatenated,
    "concatenated_pretty": _concatenated_pretty,
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_every_shape_imports_to_the_same_answers(tmp_path, history, reference, shape, compressed):
    data = SHAPES[shape](history).encode()
    path = tmp_path / "events.json"  # no .gz in the name: gzip is told by its magic bytes
    path.write_bytes(gzip.compress(data) if compressed else data)
    imported(path, tmp_path / "store")
    assert_answers(tmp_path / "store", history, reference)


def test_gzip_on_stdin_and_a_gz_name_that_is_not_gzip(tmp_path, history):
    data = "".join(line + "\n" for line in as_lines(history)).encode()
    proc = subprocess.run(
        [sys.executable, "-m", "roomstate", "import", "--no-check-auth", "-", "--db", str(tmp_path / "a"), "--resolver", "newest_event"],
        input=gzip.compress(data), capture_output=True, env=ENV, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"imported {N:,} events ({N:,} new, ".encode())
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_bytes(data)
    imported(plain, tmp_path / "b")
    room = history[0]["room_id"]
    assert run("current", "--db", tmp_path / "a", room).stdout == run("current", "--db", tmp_path / "b", room).stdout


def test_an_array_element_that_is_no_event_is_named_by_line_and_index(tmp_path, history):
    bad = {k: v for k, v in history[29].items() if k != "type"}
    bad["event_id"] = "$typeless"
    events = history[:30] + [bad] + history[30:40]
    text = json.dumps(events, indent=1)
    line = [i for i, t in enumerate(text.splitlines(), 1) if t == " {"][30]  # where element 30 starts
    path = tmp_path / "events.json"
    path.write_text(text)
    proc = run("import", "--no-check-auth", path, "--db", tmp_path / "store", "--resolver", "newest_event")
    message = one_line_error(proc, 2)
    assert message.startswith(f"{path}:{line}: array element 30: invalid type (event '$typeless')"), message
    assert stats_of(tmp_path / "store")["events"] == 30  # what came before is kept

    proc = run("import", "--no-check-auth", path, "--db", tmp_path / "store", "--resolver", "newest_event", "--skip-invalid")
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr == f"{path}:{line}: array element 30: invalid type (event '$typeless'): missing (skipped)\n"
    assert stats_of(tmp_path / "store")["events"] == 40


_CREATE = '{"event_id": "$a", "room_id": "!r:x", "type": "m.room.create", "state_key": "", "content": {}'


@pytest.mark.parametrize(
    "text, line, reason",
    [
        ('[{"event_id": "$a"},\n {"event_id": oops}]', 2, "not valid JSON"),
        ('[{"event_id": "$a"}\n {"event_id": "$b"}]', 2, "expected ',' or ']'"),
        ('[{"event_id": "$a"},\n', 2, "not closed"),
        ('[]\n[]', 2, "after the end of the top-level array"),
        ('{"event_id": "$a",\n "x": 1}\n{"event_id": \n\n nope}', 5, "not valid JSON"),
    ],
)
def test_broken_json_in_the_streamed_shapes_names_its_line(tmp_path, text, line, reason):
    path = tmp_path / "broken.json"
    path.write_text(text.replace('{"event_id": "$a"', _CREATE))
    proc = run("import", "--no-check-auth", path, "--db", tmp_path / "store", "--skip-invalid")
    message = one_line_error(proc, 2)  # no line boundary to go on from, even when skipping
    assert message.startswith(f"{path}:{line}: "), message
    assert reason in message


def test_the_streamed_shapes_read_a_window_not_the_whole_file():
    events = list(workloads.hq(30_000, seed=2))
    data = _concatenated(events).encode()
    assert len(data) > 8 * inputs.CHUNK and b"\n" not in data
    f = io.BytesIO(data)
    values = inputs.read_values(f)
    first = [next(values) for _ in range(3)]
    assert [v[2] for v in first] == events[:3] and [v[0] for v in first] == [1, 1, 1]
    assert [v[1] for v in first] == ["object 0", "object 1", "object 2"]
    assert f.tell() <= 2 * inputs.CHUNK  # a window, not a json.load of 8+ MB
    rest = list(values)
    assert len(rest) == len(events) - 3 and rest[-1][2] == events[-1]

    array = io.BytesIO(_array_pretty(events).encode())
    values = inputs.read_values(array)
    line, index, value = next(values)
    assert (line, index, value) == (2, "array element 0", events[0]) and array.tell() <= 2 * inputs.CHUNK
    *_, (line, index, value) = values
    assert index == f"array element {len(events) - 1}" and value == events[-1]


# -- order ------------------------------------------------------------------------------


def test_newest_first_imports(tmp_path, history, reference):
    path = write_lines(tmp_path / "newest-first.jsonl", as_lines(reversed(history)))
    proc = imported(path, tmp_path / "store", "--batch", "200")
    assert proc.stderr == ""
    assert_answers(tmp_path / "store", history, reference)


def test_shuffled_within_windows_imports(tmp_path, history, reference):
    rng = random.Random(4)
    shuffled = []
    for i in range(0, N, 97):
        window = history[i:i + 97]
        rng.shuffle(window)
        shuffled += window
    path = tmp_path / "shuffled.json"
    path.write_text(json.dumps(shuffled))
    imported(path, tmp_path / "store", "--batch", "64")
    assert_answers(tmp_path / "store", history, reference)


def test_more_held_events_than_allowed_is_a_clear_error(tmp_path, history):
    path = write_lines(tmp_path / "newest-first.jsonl", as_lines(reversed(history)))
    proc = run("import", "--no-check-auth", path, "--db", tmp_path / "store", "--resolver", "newest_event", "--max-held", "100")
    message = one_line_error(proc, 2)
    assert message.startswith(f"{path}:101: more than 100 events wait for prev events"), message
    assert "--max-held" in message
    assert stats_of(tmp_path / "store")["events"] == 0

    proc = run("import", "--no-check-auth", path, "--db", tmp_path / "store", "--resolver", "newest_event", "--max-held", "0")
    assert one_line_error(proc, 2).startswith(f"{path}:1: more than 0 events wait")


def test_events_whose_prevs_never_arrive_are_reported_with_them(tmp_path, history):
    lost = {"event_id": "$lost", "room_id": history[0]["room_id"], "type": "m.room.message",
            "prev_events": [history[5]["event_id"], "$never", "$nor_this"], "content": {}}
    child = {"event_id": "$child", "room_id": history[0]["room_id"], "type": "m.room.message",
             "prev_events": ["$lost"], "content": {}}
    lines = as_lines(history)
    lines.insert(10, json.dumps(lost))
    lines.insert(700, json.dumps(child))
    path = write_lines(tmp_path / "room.jsonl", lines)
    proc = run("import", "--no-check-auth", path, "--db", tmp_path / "store", "--resolver", "newest_event", "--batch", "100")
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.splitlines() == [
        f"{path}:11: '$lost' not stored: prev event(s) '$never', '$nor_this' never arrived",
        f"{path}:701: '$child' not stored: prev event(s) '$lost' never arrived",
    ]
    assert ", 2 events never stored: prev events missing)" in proc.stdout
    assert stats_of(tmp_path / "store")["events"] == N


def test_events_never_stored_on_one_line_are_told_apart_by_their_index(tmp_path, history):
    room = history[0]["room_id"]
    lost = [{"event_id": f"$lost{i}", "room_id": room, "type": "m.room.message", "prev_events": [f"$gone{i}"],
             "content": {}} for i in range(3)]
    path = tmp_path / "export"
    path.write_text(_concatenated(history[:50] + lost[:2] + history[50:60] + lost[2:]))
    proc = run("import", "--no-check-auth", path, "--db", tmp_path / "store", "--resolver", "newest_event")
    assert proc.returncode == 4, proc.stderr
    assert proc.stderr.splitlines() == [
        f"{path}:1: object 50: '$lost0' not stored: prev event(s) '$gone0' never arrived",
        f"{path}:1: object 51: '$lost1' not stored: prev event(s) '$gone1' never arrived",
        f"{path}:1: object 62: '$lost2' not stored: prev event(s) '$gone2' never arrived",
    ]
    assert stats_of(tmp_path / "store")["events"] == 60


_DEEP = "[" * 100_000 + "]" * 100_000
_DIGITS = "9" * 5_000


@pytest.mark.parametrize(
    "bad, reason",
    [(_DEEP, "JSON nested too deeply"), (_DIGITS, "an integer of more than 4,300 digits")],
    ids=["deep", "digits"],
)
@pytest.mark.parametrize("shape", ["lines", "array"])
def test_json_python_will_not_make_is_one_line_and_keeps_what_came_before(tmp_path, bad, reason, shape):
    """A value nested deeper than Python's stack or an integer of thousands of digits is
    JSON, but json.loads refuses it (RecursionError, ValueError): one line naming it, exit
    2, and the events before it stored (issue 14)."""
    good = [
        {"event_id": "$a", "room_id": "!r:x", "type": "m.room.create", "state_key": "", "content": {}},
        {"event_id": "$b", "room_id": "!r:x", "type": "m.room.message", "prev_events": ["$a"]},
    ]
    third = '{"event_id": "$c", "room_id": "!r:x", "type": "m.room.message", "prev_events": ["$b"], "depth": %s}' % bad
    if shape == "lines":
        text = "".join(json.dumps(e) + "\n" for e in good) + third + "\n"
        path = tmp_path / "in.jsonl"
    else:
        text = "[\n" + "".join(json.dumps(e) + ",\n" for e in good) + third + "\n]\n"
        path = tmp_path / "in.json"
    path.write_text(text)
    db = tmp_path / "store"
    message = one_line_error(run("import", path, "--db", db, "--no-check-auth"), 2)
    assert message == f"{path}:{3 if shape == 'lines' else 4}: not accepted: {reason}", message
    proc = run("event", "--db", db, "$b")
    assert proc.returncode == 0 and '"$b"' in proc.stdout, proc.stderr
