"""Merges stay linear in the number of states they merge.

A merge lines the states up sparsely (``_core.Aligned``: the entries the states
differ by, not keys × states), so an event whose prevs are K fork tips, or a room
with K forward extremities, costs memory and time in K plus the state.  Each case
runs in a child process that reports its peak memory (``ru_maxrss``): the dense
table these cases once built was K² cells (K = 10^4: 2.3 GB; K = 3·10^4: 6.7 GiB
asked for).
"""
import json
import subprocess
import sys
import textwrap

import pytest

# A child's peak RSS with the package and numpy loaded is ~60-90 MB; the cases
# below add their events and states (tens of MB).  A K² table would be GBs.
PEAK_MB = 400

_FORKS = textwrap.dedent('''
    import json, resource, sys
    import roomstate
    K = int(sys.argv[1])
    R = "!forks:x.test"
    with roomstate.open(":memory:", check_auth=False, resolver="newest_event") as store:
        def ev(eid, prevs, depth, t, sk=None):
            d = {"event_id": eid, "room_id": R, "type": t, "prev_events": prevs, "depth": depth}
            if sk is not None:
                d["state_key"] = sk
            return d
        store.add_events([ev("$c", [], 1, "m.room.create", ""), ev("$t0", ["$c"], 2, "m.room.topic", "")])
        # K tips: each sets a key of its own, and every tenth also the topic (conflicts).
        tips = []
        for j in range(K):
            if j % 10 == 0:
                tips.append(ev(f"$tip{j}", ["$t0"], 3, "m.room.topic", ""))
            else:
                tips.append(ev(f"$tip{j}", ["$t0"], 3, "x.fork", f"k{j}"))
        store.add_events(tips)
        assert len(store.forward_extremities(R)) == K
        current = store.current_state(R)  # K extremities, nothing stored
        store.add_event(ev("$merge", [t["event_id"] for t in tips], 4, "m.room.message"))
        before = store.state_before("$merge")
        assert dict(before) == dict(current)
        assert len(before) == 2 + (K - (K + 9) // 10)
        assert before[("m.room.topic", "")] == max((t["event_id"] for t in tips if t["type"] == "m.room.topic"))
        assert store.forward_extremities(R) == ["$merge"]
    print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
''')

_MATRIX = textwrap.dedent('''
    import json, resource, sys
    import roomstate
    from roomstate.matrix import compute_event_id
    K = int(sys.argv[1])
    V = "10"
    A = "@alice:x.test"
    R = "!big:x.test"
    def pdu(t, sender, content, prevs, auth, depth, sk=None):
        d = {"room_id": R, "type": t, "sender": sender, "content": content, "prev_events": prevs,
             "auth_events": auth, "depth": depth, "origin_server_ts": depth}
        if sk is not None:
            d["state_key"] = sk
        d["event_id"] = compute_event_id(d, V)
        return d
    create = pdu("m.room.create", A, {"room_version": V, "creator": A}, [], [], 1, "")
    c = create["event_id"]
    join = pdu("m.room.member", A, {"membership": "join"}, [c], [c], 2, A)
    pl = pdu("m.room.power_levels", A, {"users": {A: 100}}, [join["event_id"]], [c, join["event_id"]], 3, "")
    jr = pdu("m.room.join_rules", A, {"join_rule": "public"}, [pl["event_id"]],
             [c, join["event_id"], pl["event_id"]], 4, "")
    joins = []
    for j in range(K):
        u = f"@u{j}:y.test"
        joins.append(pdu("m.room.member", u, {"membership": "join"}, [jr["event_id"]],
                         [c, pl["event_id"], jr["event_id"]], 5, u))
    with roomstate.open(":memory:") as store:
        store.add_events([create, join, pl, jr] + joins)
        assert not any(store.event(e["event_id"]).rejected for e in joins[:: max(1, K // 50)])
        assert len(store.forward_extremities(R)) == K
        state = store.current_state(R)  # the Matrix resolution of K states
        assert len(state) == 4 + K
        assert all(state[("m.room.member", e["state_key"])] == e["event_id"] for e in joins)
    print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
''')


def _run(script, k):
    proc = subprocess.run([sys.executable, "-c", script, str(k)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("k", [10_000, 30_000])
def test_a_merge_of_many_fork_tips_is_linear(k):
    out = _run(_FORKS, k)
    print(f"K = {k}: peak {out['peak_mb']:.0f} MB")
    assert out["peak_mb"] < PEAK_MB, out


def test_matrix_current_state_over_many_extremities_is_bounded():
    out = _run(_MATRIX, 5_000)
    print(f"peak {out['peak_mb']:.0f} MB")
    assert out["peak_mb"] < PEAK_MB, out
