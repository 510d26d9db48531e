"""The import rate of hq with and without the authorization rules, side by side.

    python bench/check_auth_side.py [N] [ROUNDS]

One ``add_events`` of ``workloads.hq(N, seed=0)`` (room version 10, real PDUs) into a
fresh store per round, ``check_auth=False`` and ``True`` alternating, so that both see
the same machine load; prints events/s, bytes per event and rejected events of each round.
"""
import os
import sys
import tempfile
import time

import roomstate
from roomstate import workloads


def main(n=50_000, rounds=3):
    events = list(workloads.hq(n, seed=0))
    for r in range(rounds):
        for check_auth in (False, True):
            with tempfile.TemporaryDirectory() as d:
                with roomstate.open(os.path.join(d, "s"), resolver="newest_event", check_auth=check_auth) as store:
                    start = time.perf_counter()
                    store.add_events(events)
                    seconds = time.perf_counter() - start
                    rejected = sum(store.event(e["event_id"]).rejected for e in events)
                    print(f"round {r}  check_auth={check_auth!s:5}  {n / seconds:9,.0f} events/s  "
                          f"{store.stats()['bytes_per_event']:.2f} bytes/event  {rejected} rejected", flush=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
