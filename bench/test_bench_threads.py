"""Full-state reads on 1 and 2 threads: the kernels release the GIL, so reads scale.

A store holding hq(n) (n = ``ROOMSTATE_BENCH_THREADS_SIZE``, default 2·10^5: ~12,000
state keys at the sampled events; 2·10^4 with ``--benchmark-disable``) is read by
``threads`` threads at once, each ``state_after(event).entries`` (the full state as
NIDs) of events drawn at random from 1,000 of the second half of the history — more
than the store's state cache holds, so every read merges its snapshot's layers in the
``overlay`` kernel (``with nogil``).

The test's own loop times the same number of reads on 1 and on 2 threads (best of 3)
and reports reads/s and the speedup in ``extra_info``; pytest-benchmark times a round
of reads per thread count for its own statistics.

Target (issue 5): 2 threads >= 1.6x the reads/s of 1 thread on a 2-core machine.
Asserted when benchmarks are enabled on 2 or more CPUs; a miss is reported as a skip,
not a failure, when the machine itself does not scale: a GIL-free workload (hashlib
over a large buffer) timed the same way reaches less than 1.8x (fewer than 2 free
cores: CPU quota, other jobs).
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
import time

import pytest

import roomstate
from roomstate import workloads

TARGET_SPEEDUP = 1.6
MACHINE_MIN_SPEEDUP = 1.8
READS = 1200  # per timed round, split over the threads
POOL = 1000


def _size(config) -> int:
    if "ROOMSTATE_BENCH_THREADS_SIZE" in os.environ:
        return int(float(os.environ["ROOMSTATE_BENCH_THREADS_SIZE"]))
    return 20_000 if config.getoption("benchmark_disable", False) else 200_000


def _timing(config) -> bool:
    return not config.getoption("benchmark_disable", False)


class ThreadReads:
    def __init__(self, path, n):
        events = list(workloads.hq(n, seed=0))
        with roomstate.open(path, resolver="newest_event", durable=False) as store:
            store.add_events(events)
        ids = [e["event_id"] for e in events]
        self.n = n
        self.pool = random.Random("bench-threads").sample(ids[n // 2 :], min(POOL, n // 2))
        self.store = roomstate.open(path, resolver="newest_event", readonly=True)
        for eid in self.pool:  # warm the block and snapshot caches, as on a busy server
            self.store.state_after(eid)
        self.keys = sum(len(self.store.state_after(e)) for e in self.pool[:50]) / 50

    def close(self):
        self.store.close()

    def run(self, threads: int, reads: int = READS, seed: int = 0) -> float:
        """Do ``reads`` full-state reads on ``threads`` threads; the wall time."""
        store, pool = self.store, self.pool
        errors = []
        start = threading.Barrier(threads + 1)

        def worker(k):
            rng = random.Random(f"{seed}:{k}")
            picks = [rng.choice(pool) for _ in range(reads // threads)]
            start.wait()
            try:
                for eid in picks:
                    store.state_after(eid).entries
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for w in workers:
            w.start()
        start.wait()
        t0 = time.perf_counter()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - t0
        if errors:
            raise errors[0]
        return elapsed


def _machine_speedup() -> float:
    """How much 2 threads of GIL-free work beat 1 here (hashlib drops the GIL)."""
    data = bytes(8 << 20)

    def rate(threads):
        def work():
            for _ in range(8 // threads):
                hashlib.sha256(data).digest()

        best = 0.0
        for _ in range(3):
            ws = [threading.Thread(target=work) for _ in range(threads)]
            t0 = time.perf_counter()
            for w in ws:
                w.start()
            for w in ws:
                w.join()
            best = max(best, 8 / (time.perf_counter() - t0))
        return best

    return rate(2) / rate(1)


@pytest.fixture(scope="module")
def thread_reads(request, tmp_path_factory):
    tr = ThreadReads(tmp_path_factory.mktemp("threads") / "store", _size(request.config))
    yield tr
    tr.close()


@pytest.fixture(scope="module")
def own_loop(request, thread_reads):
    """reads/s on 1 and 2 threads (best of 3 rounds each, interleaved)."""
    rounds = 3 if _timing(request.config) else 1
    best = {1: 0.0, 2: 0.0}
    for r in range(rounds):
        for threads in (1, 2):
            best[threads] = max(best[threads], READS / thread_reads.run(threads, seed=r))
    return {
        "reads_per_s_1": best[1],
        "reads_per_s_2": best[2],
        "speedup": best[2] / best[1],
        "machine_speedup": _machine_speedup() if _timing(request.config) else None,
    }


@pytest.mark.parametrize("threads", [1, 2])
def test_full_state_reads_on_threads(benchmark, request, thread_reads, own_loop, threads):
    benchmark.group = f"full-state reads, hq n={thread_reads.n}"
    rounds = iter(range(10**6))
    benchmark.pedantic(lambda: thread_reads.run(threads, seed=next(rounds)), rounds=5, iterations=1)
    benchmark.extra_info.update(
        {
            "figure": "threads",
            "threads": threads,
            "size": thread_reads.n,
            "state_keys_mean": thread_reads.keys,
            "reads_per_round": READS,
            **own_loop,
        }
    )
    if threads == 1:
        return
    print(
        f"\nfull-state reads at ~{thread_reads.keys:.0f} keys: 1 thread {own_loop['reads_per_s_1']:.0f}/s, "
        f"2 threads {own_loop['reads_per_s_2']:.0f}/s ({own_loop['speedup']:.2f}x; "
        f"the machine's GIL-free ceiling {own_loop['machine_speedup'] or float('nan'):.2f}x)"
    )
    if not _timing(request.config) or (os.cpu_count() or 1) < 2 or own_loop["speedup"] >= TARGET_SPEEDUP:
        return
    if own_loop["machine_speedup"] < MACHINE_MIN_SPEEDUP:
        pytest.skip(
            f"this machine gives GIL-free work only {own_loop['machine_speedup']:.2f}x on 2 threads "
            f"(busy or CPU-limited): the {TARGET_SPEEDUP}x target is not measurable here"
        )
    assert own_loop["speedup"] >= TARGET_SPEEDUP, (
        f"2 threads read {own_loop['speedup']:.2f}x the rate of 1 (target >= {TARGET_SPEEDUP}x)"
    )
