"""Child processes for the concurrency and fault tests, and what they share.

Run as a script: ``python helpers_proc.py MODE ARGS...``.  Every mode prints
one line per step and flushes, so that the parent knows what was committed
before it kills the child.

Modes:

* ``import PATH N SEED BATCH DURABLE [MAP_SIZE]`` — import ``workloads.hq(N, seed)``
  (room :func:`hq_room`) with ``add_events`` in batches; prints ``open``, then ``committed K`` after each
  commit (K = events of the history stored so far), then ``done``.
* ``batches PATH FIRST COUNT SIZE`` — append marker batches (see :func:`batch_events`).
* ``reader PATH STOPFILE MAP_SIZE`` — open ``readonly=True`` and check the batch
  invariant until STOPFILE exists; prints a JSON summary.
* ``hold PATH SECONDS`` — hold a write transaction open (a batch) for SECONDS.
* ``fill PATH LIMIT FILLER`` — import until the disk is full (``RLIMIT_FSIZE=LIMIT``
  or a small filesystem) and report the error and what works after; prints JSON.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict, Iterator, List, Tuple

BATCH_ROOM = "!batches:test"
BATCH_CREATE = "$batches-create"


def batch_events(n: int, size: int) -> List[Dict[str, Any]]:
    """Batch ``n``: ``size`` member joins then a marker state event, in a chain.

    Batch ``n`` follows the marker of batch ``n - 1`` (or the create event), so
    a store that committed batches 0..n-1 whole has exactly one forward
    extremity, the marker of batch n-1.
    """
    prev = f"$b{n - 1}x" if n > 0 else BATCH_CREATE
    out = []
    for j in range(size):
        eid = f"$b{n}m{j}"
        out.append(
            {
                "event_id": eid,
                "room_id": BATCH_ROOM,
                "type": "m.room.member",
                "state_key": f"@b{n}u{j}:test",
                "content": {"membership": "join"},
                "prev_events": [prev],
            }
        )
        prev = eid
    out.append({"event_id": f"$b{n}x", "room_id": BATCH_ROOM, "type": "x.marker", "state_key": str(n), "prev_events": [prev]})
    return out


def create_event() -> Dict[str, Any]:
    return {"event_id": BATCH_CREATE, "room_id": BATCH_ROOM, "type": "m.room.create", "state_key": ""}


def check_batches(state: Dict[Tuple[str, str], str], size: int) -> int:
    """Raise AssertionError unless ``state`` holds exactly whole batches 0..m-1; returns m."""
    markers = sorted(int(k) for (t, k) in state if t == "x.marker")
    m = len(markers)
    assert markers == list(range(m)), f"markers not contiguous: {markers[:5]}..{markers[-5:]}"
    members = {k for (t, k) in state if t == "m.room.member"}
    expected = {f"@b{n}u{j}:test" for n in range(m) for j in range(size)}
    assert members == expected, f"partial batch visible: {len(members)} members for {m} whole batches"
    assert state.get(("m.room.create", "")) == BATCH_CREATE
    return m


def hq_room(seed: int) -> str:
    return f"!hq{seed}:crash.test"


def _import(path: str, n: int, seed: int, batch: int, durable: bool, map_size: int | None) -> None:
    import roomstate
    from roomstate import workloads

    events = list(workloads.hq(n, seed=seed, room_id=hq_room(seed)))
    with roomstate.open(path, resolver="newest_event", durable=durable, map_size=map_size, check_auth=False) as store:
        print("open", flush=True)
        for i in range(0, n, batch):
            store.add_events(events[i : i + batch])
            print(f"committed {min(n, i + batch)}", flush=True)
    print("done", flush=True)


def _batches(path: str, first: int, count: int, size: int) -> None:
    import roomstate

    with roomstate.open(path, check_auth=False) as store:
        if not store.has_event(BATCH_CREATE):
            store.add_event(create_event())
        for n in range(first, first + count):
            store.add_events(batch_events(n, size))
            print(f"committed {n}", flush=True)
    print("done", flush=True)


def _reader(path: str, stopfile: str, map_size: int | None, size: int) -> None:
    import roomstate

    checks = 0
    seen_batches = set()
    errors: List[str] = []
    while not os.path.exists(path + "/data.mdb"):
        time.sleep(0.01)
    with roomstate.open(path, readonly=True, map_size=map_size) as store:
        last = 0
        while not os.path.exists(stopfile) or checks < 5:
            try:
                if not store.has_event(BATCH_CREATE):
                    time.sleep(0.005)
                    continue
                state = store.current_state(BATCH_ROOM).to_dict()
                ex = store.forward_extremities(BATCH_ROOM)
                m = check_batches(state, size)
                assert m >= last, f"went back from {m} to {last} batches"
                last = m
                assert len(ex) == 1 and (ex[0] == BATCH_CREATE or ex[0].endswith("x")), ex
                if m:
                    # The state after a committed marker holds its whole batch.
                    mk = f"$b{m - 1}x"
                    after = store.state_after(mk).to_dict()
                    check_batches(after, size)
                seen_batches.add(m)
                checks += 1
            except AssertionError as exc:
                errors.append(str(exc))
                break
        info = store.env.info()
    print(json.dumps({"checks": checks, "distinct": len(seen_batches), "last": last, "errors": errors, "map_size": info["map_size"]}), flush=True)


def _hold(path: str, seconds: float) -> None:
    import roomstate

    with roomstate.open(path, check_auth=False) as store:
        with store.batch() as b:
            b.add_event(
                {"event_id": "$held", "room_id": BATCH_ROOM, "type": "m.room.message", "prev_events": [BATCH_CREATE]}
            )
            print("holding", flush=True)
            time.sleep(seconds)
        print("released", flush=True)


def _fill(path: str, limit: int, filler: str) -> None:
    """Import until the disk is full, then check the store: it reads, it reopens,
    and it writes again once there is room.

    ``limit`` > 0 sets RLIMIT_FSIZE (a file-size cap: writes past it fail);
    otherwise the filesystem itself must be small, and ``filler`` (a file
    written first) is deleted to make room afterwards.
    """
    import resource
    import signal

    import roomstate
    from roomstate import workloads

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write() instead of a signal
    events = list(workloads.hq(30000, seed=7))
    out: Dict[str, Any] = {"committed": 0}
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    if filler != "-":
        with open(filler, "wb") as f:
            f.write(bytes(1 << 20))
    with roomstate.open(path, resolver="newest_event", check_auth=False) as store:
        if limit > 0:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
        try:
            for i in range(0, len(events), 500):
                store.add_events(events[i : i + 500])
                out["committed"] = i + 500
        except Exception as exc:  # noqa: BLE001 - reported to the parent
            out["error_type"] = f"{type(exc).__module__}.{type(exc).__qualname__}"
            out["error"] = str(exc)
            out["is_roomstate_error"] = isinstance(exc, roomstate.RoomStateError)
        c = out["committed"]
        out["events_after_error"] = store.stats()["events"]
        out["reads_after_error"] = c > 0 and store.state_after(events[c - 1]["event_id"]) is not None
    with roomstate.open(path, resolver="newest_event", check_auth=False) as store:
        out["events_after_reopen"] = store.stats()["events"]
        out["state_after_reopen"] = c > 0 and len(store.state_after(events[c - 1]["event_id"])) > 0
        if limit > 0:
            resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        if filler != "-":
            os.unlink(filler)
        try:
            store.add_events(events[c : c + 500])
            out["write_after"] = True
            out["events_at_end"] = store.stats()["events"]
        except Exception as exc:  # noqa: BLE001
            out["write_after"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out), flush=True)


def main(argv: List[str]) -> None:
    mode, args = argv[0], argv[1:]
    if mode == "import":
        path, n, seed, batch, durable = args[:5]
        map_size = int(args[5]) if len(args) > 5 else None
        _import(path, int(n), int(seed), int(batch), durable == "1", map_size)
    elif mode == "batches":
        _batches(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif mode == "reader":
        _reader(args[0], args[1], int(args[2]) or None, int(args[3]))
    elif mode == "hold":
        _hold(args[0], float(args[1]))
    elif mode == "fill":
        _fill(args[0], int(args[1]), args[2])
    else:
        raise SystemExit(f"unknown mode {mode!r}")


def script() -> str:
    return os.path.abspath(__file__)


def iter_lines(proc: Any) -> Iterator[str]:
    for line in proc.stdout:
        yield line.rstrip("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
