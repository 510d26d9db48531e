"""The import rate with the Matrix state resolution against ``newest_event``, side by side.

    python bench/resolver_side.py [WORKLOAD] [N] [ROUNDS]

One ``add_events`` of ``workloads.WORKLOAD(N, seed=0)`` (hq or busy, room version 10, real
PDUs, the authorization rules on) into a fresh store per round, ``resolver="newest_event"``
and ``"matrix"`` alternating, so that both see the same machine load; prints events/s,
the merges (events with several prev events) and how many events' state before differs
between the two resolvers.
"""
import os
import sys
import tempfile
import time

import roomstate
from roomstate import workloads


def main(workload="hq", n=50_000, rounds=2):
    events = list(getattr(workloads, workload)(n, seed=0))
    merges = sum(len(e["prev_events"]) > 1 for e in events)
    for r in range(rounds):
        for resolver in ("newest_event", "matrix"):
            with tempfile.TemporaryDirectory() as d:
                with roomstate.open(os.path.join(d, "s"), resolver=resolver) as store:
                    start = time.perf_counter()
                    store.add_events(events)
                    seconds = time.perf_counter() - start
                    print(f"round {r}  {workload} {n:,}  resolver={resolver:12}  {n / seconds:9,.0f} events/s  "
                          f"{merges:,} merges  {seconds * 1000 / max(merges, 1):.2f} ms per merge (all of the import)",
                          flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0] if args else "hq", *(int(a) for a in args[1:3]))
