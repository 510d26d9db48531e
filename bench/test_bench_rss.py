"""Peak RSS of an hq import in a child process: ``roomstate import`` of a JSON-lines file,
and ``add_events`` of the streaming ``hq`` generator through the Python API.

10^4 events in CI; 10^6 with ROOMSTATE_BENCH_BIG=1 (the figure of issue 4). The peak is
the child's own ``ru_maxrss`` (``os.wait4``); ``floor_rss_bytes`` is the peak of a child
that only imports roomstate and exits, for scale. Target (issue 4): at most 1 GiB at
10^6 events, asserted at every size (an import must not keep every state, or every
event, in memory).
"""

from __future__ import annotations

import sys


MAX_RSS_BYTES = 1 << 30

API_IMPORT = """
import sys
import roomstate
from roomstate import workloads

n, path = int(sys.argv[1]), sys.argv[2]
with roomstate.open(path, resolver="newest_event") as store:
    count = store.add_events(workloads.hq(n, seed=0))
assert count == n, count
"""
FLOOR = "import roomstate, roomstate.workloads"


def check(benchmark, bench, how: str, argv_for, rss_size: int) -> None:
    runs = []

    def run():
        runs.append(bench.run_child(argv_for(bench.fresh_path(f"rss-{how}"))))

    benchmark.group = f"peak rss import hq n={rss_size}"
    benchmark.pedantic(run, rounds=1)
    floor = bench.run_child([sys.executable, "-c", FLOOR])
    (result,) = runs
    info = {
        "figure": "rss",
        "design": "roomstate",
        "how": how,
        "size": rss_size,
        "max_rss_bytes": result.max_rss_bytes,
        "floor_rss_bytes": floor.max_rss_bytes,
        "seconds": result.seconds,
        "events_per_s": rss_size / result.seconds,
    }
    benchmark.extra_info.update(info)
    assert result.max_rss_bytes <= MAX_RSS_BYTES, (
        f"{how} import of {rss_size:,} events peaked at "
        f"{result.max_rss_bytes / 2**20:,.0f} MiB (target <= 1024 MiB)"
    )


def test_peak_rss_cli(benchmark, bench, rss_size):
    cli = bench.cli()
    source = bench.hq_jsonl(rss_size)
    check(
        benchmark, bench, "cli",
        lambda db: [*cli, "import", str(source), "--db", str(db),
                    "--resolver", "newest_event", "--quiet"],
        rss_size,
    )


def test_peak_rss_api(benchmark, bench, rss_size):
    check(
        benchmark, bench, "api",
        lambda db: [sys.executable, "-c", API_IMPORT, str(rss_size), str(db)],
        rss_size,
    )
