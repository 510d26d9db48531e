"""Merge time on ``fork_storm``: adding the one event whose prev_events are the heads of
8 (or 10) long branches that changed overlapping keys, resolved with ``newest_event``.

The history up to the merge is written once per design into a template store; every
round copies the template (not timed) and times ``add_event(merge)`` alone. The designs
must agree on the merged state. Issue 4 sets no target; the figure is compared with the
baselines' in the same run.

roomstate commits with an fsync (``durable=True``, the default); the baselines' SQLite in
WAL mode with ``synchronous=NORMAL`` does not fsync at commit. "roomstate-nosync"
(``durable=False``) is the like-for-like durability; both are reported.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

import pytest

from roomstate import workloads

DESIGNS = ("roomstate", "roomstate-nosync", "synapse", "dendrite")
BRANCHES = (8, 10)


class Storms:
    """Per branch count: the events before the merge, the merge event, and per design a
    template store holding those events (built once per module)."""

    def __init__(self, bench):
        self.bench = bench
        self.events: dict[int, tuple[list[dict], dict]] = {}
        self.templates: dict[tuple[str, int], Path] = {}

    def history(self, branches: int) -> tuple[list[dict], dict]:
        if branches not in self.events:
            events = list(workloads.fork_storm(n_branches=branches, tail=0))
            merge = events.pop()
            assert len(merge["prev_events"]) == branches
            self.events[branches] = (events, merge)
        return self.events[branches]

    def template(self, design: str, branches: int) -> Path:
        key = (design, branches)
        if key not in self.templates:
            events, _ = self.history(branches)
            path = self.bench.fresh_path(f"storm-{design}-{branches}")
            with self.bench.open_design(design, path) as db:
                db.add_events(events)
            self.templates[key] = path
        return self.templates[key]

    def copy(self, design: str, branches: int) -> Path:
        source = self.template(design, branches)
        target = self.bench.fresh_path(f"storm-round-{design}")
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            for suffix in ("", "-wal", "-shm"):
                if Path(f"{source}{suffix}").exists():
                    shutil.copyfile(f"{source}{suffix}", f"{target}{suffix}")
        return target


@pytest.fixture(scope="module")
def storms(bench) -> Storms:
    return Storms(bench)


def conflicted_keys(events: list[dict], merge: dict) -> int:
    """Keys not held by the same event after every branch head (the spec's conflicted
    set; a key missing after some heads counts). Before the merge every event has one
    prev, so each head's state is its chain back to m.room.create."""
    by_id = {ev["event_id"]: ev for ev in events}
    head_states = []
    for head in merge["prev_events"]:
        state: dict[tuple[str, str], str] = {}
        ev = by_id[head]
        while True:
            if "state_key" in ev:
                state.setdefault((ev["type"], ev["state_key"]), ev["event_id"])
            if not ev["prev_events"]:
                break
            ev = by_id[ev["prev_events"][0]]
        head_states.append(state)
    keys = set().union(*head_states)
    return sum(1 for k in keys if len({s.get(k) for s in head_states}) > 1)


@pytest.mark.parametrize("branches", BRANCHES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("design", DESIGNS)
def test_fork_storm_merge(benchmark, bench, storms, closing, design, branches):
    events, merge = storms.history(branches)
    seconds: list[float] = []

    def setup():
        return (closing(bench.open_design(design, storms.copy(design, branches))),), {}

    def run(db):
        start = time.perf_counter()
        db.add_event(merge)
        seconds.append(time.perf_counter() - start)

    rounds = (5 if design.startswith("roomstate") else 3) if bench.settings.timing else 1
    benchmark.group = f"merge fork_storm branches={branches}"
    benchmark.pedantic(run, setup=setup, rounds=rounds)

    # the designs agree on the merged state (checked on the last round's store)
    with bench.open_design(design, storms.copy(design, branches)) as db:
        db.add_event(merge)
        merged = dict(db.state_after(merge["event_id"]))
    with bench.open_design("synapse", storms.copy("synapse", branches)) as reference:
        reference.add_event(merge)
        assert merged == reference.state_after(merge["event_id"])

    info = {
        "figure": "merge",
        "design": design,
        "branches": branches,
        "events_before_merge": len(events),
        "conflicted_keys": conflicted_keys(events, merge),
        "state_keys_after": len(merged),
        "rounds": len(seconds),
        "ms_min": min(seconds) * 1e3,
        "ms_median": statistics.median(seconds) * 1e3,
    }
    benchmark.extra_info.update(info)
