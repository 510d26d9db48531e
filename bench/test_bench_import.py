"""Import rate, events/s: ``add_events`` of an hq history into a fresh store (roomstate
and both baselines), and the ``roomstate import`` console script on a JSON-lines file.

Every round writes into a new, empty store, made in the round's ``setup`` and not timed;
the history is generated before timing. ``extra_info`` holds events/s from the fastest
and the median round (``rounds``), timed by the test itself, so the figures exist with
--benchmark-disable too. The command line is timed as a whole process (interpreter
start, imports and JSON parsing included).

Targets (issue 4), asserted only when benchmarks are enabled and n >= 5·10^4: at least
100,000 events/s through ``add_events`` and 50× the Synapse design's rate; at least
50,000 events/s through ``roomstate import``. "roomstate" takes the events as given
(``check_auth=False``), as the baselines do; "roomstate-checked" applies the Matrix
authorization rules, the library's default (issue 11 asks the same 100,000 events/s of
it, not met yet: the case is an expected failure when timed); "roomstate-matrix" also
merges forks by the Matrix state resolution, the library's default resolver (issue 12
asks 80,000 events/s of it, far from met without the auth-DAG index: an expected
failure when timed). The command line is timed
with its default, the rules on.
"""

from __future__ import annotations

import statistics
import time

import pytest

DESIGNS = (
    "roomstate",
    pytest.param("roomstate-checked", marks=pytest.mark.xfail(
        reason="issue 11: the authorization rules cost about 40 % of the rate (bench/RESULTS.md)", strict=False)),
    pytest.param("roomstate-matrix", marks=pytest.mark.xfail(
        reason="issue 12: each merge walks the state's auth chains, no stored index yet (bench/RESULTS.md)",
        strict=False)),
    "synapse",
    "dendrite",
)
TARGET_SIZE = 50_000
MIN_API_RATE = 100_000
MIN_RATIO_VS_SYNAPSE = 50
MIN_CLI_RATE = 50_000


def rates(n: int, seconds: list[float]) -> dict:
    return {
        "rounds": len(seconds),
        "seconds_min": min(seconds),
        "events_per_s": n / min(seconds),
        "events_per_s_median": n / statistics.median(seconds),
    }


def rounds_for(bench, design: str, n: int) -> int:
    if not bench.settings.timing:
        return 1
    if not design.startswith("roomstate"):
        return 1  # the baselines take minutes at 10^5
    return 5 if n <= 10_000 else 3 if n <= 100_000 else 1


@pytest.mark.parametrize("design", DESIGNS)
def test_add_events(benchmark, bench, closing, design, size):
    bench.skip_baseline(design, size)
    events = bench.hq(size)
    seconds: list[float] = []

    def setup():
        store = closing(bench.open_design(design, bench.fresh_path(f"import-{design}")))
        return (store,), {}

    def run(store):
        start = time.perf_counter()
        count = store.add_events(events)
        seconds.append(time.perf_counter() - start)
        assert count == size

    benchmark.group = f"import add_events hq n={size}"
    benchmark.pedantic(run, setup=setup, rounds=rounds_for(bench, design, size))
    info = {"figure": "import", "design": design, "size": size, **rates(size, seconds)}
    if design.startswith("roomstate") and size <= bench.settings.baseline_max:
        # the baselines' rate from the stores the size figures use: the same single
        # add_events call into an empty file
        for other in ("synapse", "dendrite"):
            theirs = size / bench.built(other, size).seconds
            info[f"{other}_events_per_s"] = theirs
            info[f"ratio_vs_{other}"] = info["events_per_s"] / theirs
    benchmark.extra_info.update(info)

    if design.startswith("roomstate") and bench.settings.timing and size >= TARGET_SIZE:
        assert info["events_per_s"] >= MIN_API_RATE, (
            f"add_events: {info['events_per_s']:,.0f} events/s at n={size} "
            f"(target >= {MIN_API_RATE:,})"
        )
        if "ratio_vs_synapse" in info:
            assert info["ratio_vs_synapse"] >= MIN_RATIO_VS_SYNAPSE, (
                f"add_events only {info['ratio_vs_synapse']:.1f}x the Synapse design at "
                f"n={size} (target >= {MIN_RATIO_VS_SYNAPSE}x)"
            )


def test_cli_import(benchmark, bench, size):
    cli = bench.cli()
    source = bench.hq_jsonl(size)
    runs = []

    def run():
        db = bench.fresh_path("cli-import")
        runs.append(
            bench.run_child(
                [*cli, "import", str(source), "--db", str(db),
                 "--resolver", "newest_event", "--quiet"]
            )
        )
        return db

    benchmark.group = f"import cli hq n={size}"
    db = benchmark.pedantic(run, rounds=1 if size > 100_000 else rounds_for(bench, "roomstate", size))
    with bench.open_design("roomstate-checked", db) as store:
        stats = store.stats()
    assert stats["events"] == size, f"the CLI imported {stats['events']} of {size} events"
    seconds = [r.seconds for r in runs]
    info = {
        "figure": "cli_import",
        "design": "roomstate",
        "size": size,
        "file_bytes": source.stat().st_size,
        "max_rss_bytes": max(r.max_rss_bytes for r in runs),
        **rates(size, seconds),
    }
    benchmark.extra_info.update(info)

    if bench.settings.timing and size >= TARGET_SIZE:
        assert info["events_per_s"] >= MIN_CLI_RATE, (
            f"roomstate import: {info['events_per_s']:,.0f} events/s at n={size} "
            f"(target >= {MIN_CLI_RATE:,})"
        )
