"""Event-loop lag of an asyncio server while an import runs: ``roomstate.aio``.

One writer task imports hq(n) in batches of 200 (n = ``ROOMSTATE_BENCH_LAG_SIZE``,
default 2·10^4; 2·10^3 with ``--benchmark-disable``), 16 reader tasks ask
``state_after`` of events already committed, and a ticking task sleeps 5 ms at a
time: its lag is how much later than asked each sleep ends.  ``extra_info`` holds
the largest and the p99 lag of the round with the smallest largest lag, the ticks,
and the reads; pytest-benchmark times the whole round.

A wall-clock bound on a shared machine is a figure, not a test: tests/test_aio.py
asserts what cannot flake (the loop ticks while the import runs, which runs off the
loop thread) and this file measures how long the loop may wait.  The figure we aim
at is a largest lag under 50 ms on an idle 2-core machine; it is reported, never
asserted.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import time

from roomstate import aio

PERIOD = 0.005  # the ticker's sleep, s
BATCH = 200
READERS = 16
TARGET_MAX_LAG_MS = 50.0


def _size(config) -> int:
    if "ROOMSTATE_BENCH_LAG_SIZE" in os.environ:
        return int(float(os.environ["ROOMSTATE_BENCH_LAG_SIZE"]))
    return 2_000 if config.getoption("benchmark_disable", False) else 20_000


def one_round(path, events) -> dict:
    """Import ``events`` through an AsyncStateStore with readers and a ticker running;
    the ticker's lags (s), the reads done, and how many ticks came during the import."""
    ids = [e["event_id"] for e in events]
    lags: list[float] = []
    state = {"committed": 0, "writing": True, "reads": 0, "ticks_during_writes": 0}

    async def ticker():
        while state["writing"]:
            t0 = time.perf_counter()
            await asyncio.sleep(PERIOD)
            lags.append(max(0.0, time.perf_counter() - t0 - PERIOD))
            state["ticks_during_writes"] += 1

    async def writer(st):
        for i in range(0, len(events), BATCH):
            await st.add_events(events[i : i + BATCH])
            state["committed"] = min(i + BATCH, len(events))
        state["writing"] = False

    async def reader(st, k):
        rng = random.Random(k)
        while state["writing"]:
            if not state["committed"]:
                await asyncio.sleep(0.001)
                continue
            (await st.state_after(ids[rng.randrange(state["committed"])])).entries
            state["reads"] += 1

    async def main():
        async with aio.open(path, resolver="newest_event", durable=False) as st:
            await asyncio.gather(ticker(), writer(st), *(reader(st, k) for k in range(READERS)))

    # The history is the benchmark's, not the store's: keep the cyclic GC from
    # rescanning it on every pass (a full pass over it is charged to the loop).
    gc.collect()
    gc.freeze()
    try:
        asyncio.run(main())
    finally:
        gc.unfreeze()
    return {"lags": lags, "reads": state["reads"], "ticks_during_writes": state["ticks_during_writes"]}


def test_loop_lag_during_an_async_import(benchmark, bench, request):
    n = _size(request.config)
    events = bench.hq(n)
    results: list[dict] = []

    def run():
        results.append(one_round(bench.fresh_path("loop-lag"), events))

    benchmark.group = f"loop lag during an aio import, hq n={n}"
    benchmark.pedantic(run, rounds=3 if bench.settings.timing else 1, iterations=1)

    best = min(results, key=lambda r: max(r["lags"], default=0.0))
    lags = sorted(best["lags"])
    assert best["ticks_during_writes"] > 0  # the loop ran while the import did
    p99 = lags[min(len(lags) - 1, int(0.99 * len(lags)))] if lags else 0.0
    info = {
        "figure": "loop_lag",
        "size": n,
        "batch": BATCH,
        "readers": READERS,
        "period_ms": PERIOD * 1000,
        "rounds": len(results),
        "max_lag_ms": (lags[-1] if lags else 0.0) * 1000,
        "p99_lag_ms": p99 * 1000,
        "max_lag_ms_worst_round": max(max(r["lags"], default=0.0) for r in results) * 1000,
        "ticks": len(lags),
        "reads": best["reads"],
        "target_max_lag_ms": TARGET_MAX_LAG_MS,
    }
    benchmark.extra_info.update(info)
    print(
        f"\nloop lag during an aio import of hq n={n}: max {info['max_lag_ms']:.1f} ms, "
        f"p99 {info['p99_lag_ms']:.1f} ms over {info['ticks']} ticks, {info['reads']} reads "
        f"(best of {len(results)} rounds; target max < {TARGET_MAX_LAG_MS:.0f} ms, not asserted)"
    )
