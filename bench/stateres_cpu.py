"""roomstate's state resolution and Synapse's on one forked room, alternating, in CPU time.

    PYTHONPATH=. python bench/stateres_cpu.py VERSION MEMBERS BRANCHES ROUNDS [REPEATS]

The room is ``test_bench_stateres.Room`` (see that module); CPU time (``process_time``)
is less disturbed than wall time when other work shares the machine.  Prints the medians
and minima and the ratio of the medians; the answers must be equal.
"""
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
warnings.filterwarnings("ignore", category=DeprecationWarning)

import test_bench_stateres as bench  # noqa: E402

from roomstate.matrix import stateres  # noqa: E402


def main(argv):
    v, members, branches, rounds = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    repeats = int(argv[4]) if len(argv) > 4 else 5
    room = bench.Room(v, members, branches, rounds)
    get = room.events.__getitem__
    synapse = bench._synapse(room)
    if synapse is None:
        sys.exit("matrix-synapse is not installed")
    _, conflicted = stateres.unconflicted_and_conflicted(room.state_sets)
    ours, theirs = [], []
    for _ in range(repeats):
        start = time.process_time()
        a = stateres.resolve(v, room.state_sets, get)
        ours.append(time.process_time() - start)
        start = time.process_time()
        b = synapse(room.state_sets)
        theirs.append(time.process_time() - start)
        assert a == b
    mo, mt = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
    print(f"v{v} members={members} branches={branches} rounds={rounds} keys={len(room.base)} "
          f"conflicted={len(conflicted)}: roomstate {mo:.1f} ms (min {min(ours) * 1e3:.1f}), "
          f"Synapse {mt:.1f} ms (min {min(theirs) * 1e3:.1f}), ratio {mt / mo:.1f}x")


if __name__ == "__main__":
    main(sys.argv[1:])
