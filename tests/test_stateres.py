"""State resolution (roomstate.matrix.stateres) on the scenarios the Matrix community
uses, re-written from their descriptions (Synapse's tests/state/test_v2.py, test_v21.py,
tests/test_state.py; MSC4297's problems A and B), and on v1 cases.

Each test states the answer the specification gives and why, in its comments; the
scenarios of ``stateres_rooms.Graph`` hang off a shared start (create, Alice joins, power
levels with Alice at 100, public join rules, Bob, Charlie and Zara join).
"""
import hashlib

import pytest

from roomstate.errors import InvalidEventError, MissingEventError
from roomstate.matrix import resolve, stateres
from stateres_rooms import ALICE, BOB, CHARLIE, EVELYN, ZARA, Events, Graph, changed_at_end, ev, levels, member

V2_VERSIONS = ["2", "6", "10", "11", "12"]


def check(v, events, edges, expected_names):
    graph = Graph(v, events, edges)
    got, expected = changed_at_end(graph, expected_names)
    assert got == expected


# -- the community's v2 scenarios -------------------------------------------------------------

@pytest.mark.parametrize("v", V2_VERSIONS)
def test_ban_vs_power_levels(v):
    # Alice gives Bob 50 (PA); on one branch she bans Bob (MB), on the other Bob sends
    # power levels (PB).  Step 1 sorts PA, then MB before PB (Alice's 100 beats Bob's 50);
    # PB then fails (Bob is banned): PA, Alice's join MA and the ban stand.
    events = [
        ev("PA", "m.room.power_levels", ALICE, levels(v, {ALICE: 100, BOB: 50}), ""),
        member("MA", ALICE, ALICE, "join"),
        member("MB", ALICE, BOB, "ban"),
        ev("PB", "m.room.power_levels", BOB, levels(v, {ALICE: 100, BOB: 50}), ""),
    ]
    check(v, events, [["END", "MB", "MA", "PA", "START"], ["END", "PB", "PA"]], ["PA", "MA", "MB"])


@pytest.mark.parametrize("v", V2_VERSIONS)
def test_join_rule_evasion(v):
    # Alice makes the room private (JR) while Evelyn joins (ME) on another branch.  JR is a
    # power event, applied in step 1; Evelyn's join is checked after it, in step 4, and
    # fails: the join rules are JR and Evelyn is not in the room.
    events = [
        ev("JR", "m.room.join_rules", ALICE, {"join_rule": "private"}, ""),
        member("ME", EVELYN, EVELYN, "join"),
    ]
    check(v, events, [["END", "JR", "START"], ["END", "ME", "START"]], ["JR"])


@pytest.mark.parametrize("v", V2_VERSIONS)
def test_offtopic_power_levels(v):
    # PA (Alice: Bob 50), PB (Bob: Charlie 50), PC (Charlie lowers himself to 0) on one
    # branch; the other stays at PA.  PB is in the auth difference (in the chain of the
    # first state only), so PA, PB, PC are replayed in that order and all pass: PC.
    events = [
        ev("PA", "m.room.power_levels", ALICE, levels(v, {ALICE: 100, BOB: 50}), ""),
        ev("PB", "m.room.power_levels", BOB, levels(v, {ALICE: 100, BOB: 50, CHARLIE: 50}), ""),
        ev("PC", "m.room.power_levels", CHARLIE, levels(v, {ALICE: 100, BOB: 50, CHARLIE: 0}), ""),
    ]
    check(v, events, [["END", "PC", "PB", "PA", "START"], ["END", "PA"]], ["PC"])


def _topic_events(v):
    """T1, PA1 (Bob 50), T2, PA2 (Bob 0) by Alice; PB (Bob 50) and T3 by Bob."""
    return [
        ev("T1", "m.room.topic", ALICE, {}, ""),
        ev("PA1", "m.room.power_levels", ALICE, levels(v, {ALICE: 100, BOB: 50}), ""),
        ev("T2", "m.room.topic", ALICE, {}, ""),
        ev("PA2", "m.room.power_levels", ALICE, levels(v, {ALICE: 100, BOB: 0}), ""),
        ev("PB", "m.room.power_levels", BOB, levels(v, {ALICE: 100, BOB: 50}), ""),
        ev("T3", "m.room.topic", BOB, {}, ""),
    ]


@pytest.mark.parametrize("v", V2_VERSIONS)
def test_topic_basic(v):
    # After PA1 (Bob 50), Alice demotes Bob (PA2) on one branch while Bob sends power
    # levels (PB) and a topic (T3) on the other.  Step 1: PA1, then PA2 before PB (Alice's
    # 100 beats Bob's 50), and PB fails (Bob is at 0).  The mainline of PA2 is PA2, PA1,
    # IPOWER; T1 (on IPOWER) sorts first, then T2 and T3 (both on PA1) by timestamp; T3
    # fails (Bob at 0): the topic is T2.
    check(v, _topic_events(v), [["END", "PA2", "T2", "PA1", "T1", "START"], ["END", "T3", "PB", "PA1"]], ["PA2", "T2"])


@pytest.mark.parametrize("v", V2_VERSIONS)
def test_topic_reset(v):
    # One branch: T1, PA (Bob 50), Bob's topic T2, Alice bans Bob (MB); the other stays at
    # T1.  PA and MB apply in step 1; in step 4 Bob's T2 fails (he is banned), so the
    # topic goes back to T1 — the resolution keeps the ban and drops the banned user's
    # topic.
    events = [
        ev("T1", "m.room.topic", ALICE, {}, ""),
        ev("PA", "m.room.power_levels", ALICE, levels(v, {ALICE: 100, BOB: 50}), ""),
        ev("T2", "m.room.topic", BOB, {}, ""),
        member("MB", ALICE, BOB, "ban"),
    ]
    check(v, events, [["END", "MB", "T2", "PA", "T1", "START"], ["END", "T1"]], ["T1", "MB", "PA"])


@pytest.mark.parametrize("v", V2_VERSIONS)
def test_topic_setting(v):
    # As in topic basic, then a message MZ1 merges the branches (its state: PA2, T2) and
    # Alice sets T4 after it.  At END T4 (on PA2, mainline position 0) sorts after T3 (on
    # PB, then PA1: position 1) and passes: T4 and PA2.
    events = _topic_events(v) + [ev("MZ1", "m.room.message", ZARA), ev("T4", "m.room.topic", ALICE, {}, "")]
    edges = [["END", "T4", "MZ1", "PA2", "T2", "PA1", "T1", "START"], ["END", "MZ1", "T3", "PB", "PA1"]]
    check(v, events, edges, ["T4", "PA2"])


@pytest.mark.parametrize("v", V2_VERSIONS)
def test_mainline_sort(v):
    # PA2 keeps Bob at 50 but raises m.room.power_levels to 100, so Bob's PB fails in step
    # 1.  The mainline of PA2 is PA2, PA1, IPOWER: T3 (on PA2, position 0) sorts after T4
    # (on PB then PA1, position 1) although T4 was sent later, and both pass: T3.  Without
    # the mainline ordering T4, the later one, would win.
    events = [
        ev("T1", "m.room.topic", ALICE, {}, ""),
        ev("PA1", "m.room.power_levels", ALICE, levels(v, {ALICE: 100, BOB: 50}), ""),
        ev("T2", "m.room.topic", ALICE, {}, ""),
        ev("PA2", "m.room.power_levels", ALICE,
           levels(v, {ALICE: 100, BOB: 50}, events={"m.room.power_levels": 100}), ""),
        ev("PB", "m.room.power_levels", BOB, levels(v, {ALICE: 100, BOB: 50}), ""),
        ev("T3", "m.room.topic", BOB, {}, ""),
        ev("T4", "m.room.topic", ALICE, {}, ""),
    ]
    check(v, events, [["END", "T3", "PA2", "T2", "PA1", "T1", "START"], ["END", "T4", "PB", "PA1"]], ["T3", "PA2"])


@pytest.mark.parametrize("v", V2_VERSIONS)
def test_concurrent_joins(v):
    # Bob and Charlie join at once after the join rules (no power levels event): their
    # member keys are conflicted (each missing from the other state), both joins pass in
    # step 4 against public join rules, and the state holds both.
    room = Events(v)
    create = room.add("create", "m.room.create", ALICE,
                      {"room_version": v, **({"creator": ALICE} if int(v) < 11 else {})}, "")
    c = [] if v == "12" else [create]
    ma = room.add("IMA", "m.room.member", ALICE, {"membership": "join"}, ALICE, c)
    jr = room.add("IJR", "m.room.join_rules", ALICE, {"join_rule": "public"}, "", c + [ma])
    mb = room.add("IMB", "m.room.member", BOB, {"membership": "join"}, BOB, c + [jr])
    mc = room.add("IMC", "m.room.member", CHARLIE, {"membership": "join"}, CHARLIE, c + [jr])
    at_bob, at_charlie = room.state(create, ma, jr, mb), room.state(create, ma, jr, mc)
    assert resolve(v, [at_bob, at_charlie], room.get) == room.state(create, ma, jr, mb, mc)


# -- the orderings, one step at a time -------------------------------------------------------

def _flat_events(v="10"):
    """A create event, Alice's join and power levels (Bob 50), and nothing else."""
    room = Events(v)
    create = room.add("CREATE", "m.room.create", ALICE, {"room_version": v, "creator": ALICE}, "")
    ma = room.add("MA", "m.room.member", ALICE, {"membership": "join"}, ALICE, [create])
    pl = room.add("PL", "m.room.power_levels", ALICE, {"users": {ALICE: 100, BOB: 50}}, "", [create, ma])
    return room, create, ma, pl


def test_lexicographical_ordering_by_id():
    # The auth DAG l→o, m→{n, o}, n→o, p→o with equal power and timestamps: Kahn's
    # algorithm picks the smallest ready ID each time: o, then l, n (m waits for n), m, p.
    room, create, ma, pl = _flat_events()
    ids = {x: room.add(x, "m.room.topic", ALICE, {}, "", [create, ma, pl], ts=0) for x in "lmnop"}
    before = {ids["l"]: {ids["o"]}, ids["m"]: {ids["n"], ids["o"]}, ids["n"]: {ids["o"]}, ids["o"]: set(),
              ids["p"]: {ids["o"]}}
    order = stateres.reverse_topological_power_ordering(set(ids.values()), before, room.get, "10")
    assert order == [ids[x] for x in "olnmp"]


def test_lexicographical_ordering_by_power_then_timestamp_then_id():
    # No auth edges between them: Alice (100) first; then Bob's two (50) by timestamp;
    # then Zara's two (0) with the same timestamp, by event ID.
    room, create, ma, pl = _flat_events()
    a = room.add("a", "m.room.topic", ALICE, {}, "", [create, ma, pl], ts=9)
    b_late = room.add("b1", "m.room.topic", BOB, {}, "", [create, ma, pl], ts=5)
    b_early = room.add("b2", "m.room.topic", BOB, {}, "", [create, ma, pl], ts=3)
    z2 = room.add("z2", "m.room.topic", ZARA, {}, "", [create, ma, pl], ts=1)
    z1 = room.add("z1", "m.room.topic", ZARA, {}, "", [create, ma, pl], ts=1)
    order = stateres.reverse_topological_power_ordering({a, b_late, b_early, z1, z2}, {}, room.get, "10")
    assert order == [a, b_early, b_late, z1, z2]


def test_sender_power_level_reads_the_auth_events():
    # The power level is the one the event's own auth events give: users, else
    # users_default, else (no power levels event) 100 for the creator and 0 for others;
    # in room version 12 the creators are above every level.
    room, create, ma, pl = _flat_events()
    room.events[pl]["content"]["users_default"] = 10
    for sender, want in ((ALICE, 100), (BOB, 50), (CHARLIE, 10)):
        e = room.add(f"t{sender[1:3]}", "m.room.topic", sender, {}, "", [create, ma, pl])
        assert stateres.sender_power_level(room.get(e), room.get, "10") == want
    for sender, want in ((ALICE, 100), (BOB, 0)):
        e = room.add(f"n{sender[1:3]}", "m.room.topic", sender, {}, "", [create, ma])
        assert stateres.sender_power_level(room.get(e), room.get, "10") == want
    v12 = Events("12")
    create12 = v12.add("create", "m.room.create", ALICE, {"room_version": "12"}, "")
    pl12 = v12.add("pl", "m.room.power_levels", ALICE, {"users": {BOB: 50}}, "")
    e = v12.add("t", "m.room.topic", ALICE, {}, "", [pl12])
    assert create12 == "$create"
    assert stateres.sender_power_level(v12.get(e), v12.get, "12") > 2**53 - 1


def test_mainline_ordering_positions():
    # Mainline of P2: [P2, P1, P0].  x cites P2 (position 0), y cites P1 (position 1), z
    # cites P0 (2), w cites no power levels (∞).  Greater positions first: w, z, y, x; two
    # events at one position by timestamp.
    room, create, ma, p0 = _flat_events()
    p1 = room.add("P1", "m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "", [create, ma, p0])
    p2 = room.add("P2", "m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "", [create, ma, p1])
    x = room.add("x", "m.room.topic", ALICE, {}, "", [create, ma, p2], ts=1)
    y_late = room.add("y2", "m.room.topic", ALICE, {}, "", [create, ma, p1], ts=8)
    y = room.add("y", "m.room.topic", ALICE, {}, "", [create, ma, p1], ts=7)
    z = room.add("z", "m.room.topic", ALICE, {}, "", [create, ma, p0], ts=1)
    w = room.add("w", "m.room.topic", ALICE, {}, "", [create, ma], ts=99)
    assert stateres.mainline(p2, room.get) == [p2, p1, p0]
    assert stateres.mainline_ordering([x, y_late, y, z, w], p2, room.get) == [w, z, y, y_late, x]


@pytest.mark.parametrize("v", ["10", "12"])
def test_origin_server_ts_breaks_ties(v):
    # Two concurrent topics by Alice on the same power levels: same mainline position, so
    # the earlier timestamp is applied first and the later one wins; at equal timestamps
    # the greater event ID is applied last and wins.
    room = Events(v)
    create = room.add("create", "m.room.create", ALICE, {"room_version": v, "creator": ALICE}, "")
    c = [] if v == "12" else [create]
    ma = room.add("MA", "m.room.member", ALICE, {"membership": "join"}, ALICE, c)
    pl = room.add("PL", "m.room.power_levels", ALICE, levels(v, {ALICE: 100}), "", c + [ma])
    base = room.state(create, ma, pl)
    t_late = room.add("ta", "m.room.topic", ALICE, {}, "", c + [ma, pl], ts=20)
    t_early = room.add("tb", "m.room.topic", ALICE, {}, "", c + [ma, pl], ts=10)
    sets = [{**base, ("m.room.topic", ""): t_late}, {**base, ("m.room.topic", ""): t_early}]
    assert resolve(v, sets, room.get)[("m.room.topic", "")] == t_late
    u1 = room.add("u1", "m.room.topic", ALICE, {}, "", c + [ma, pl], ts=30)
    u2 = room.add("u2", "m.room.topic", ALICE, {}, "", c + [ma, pl], ts=30)
    sets = [{**base, ("m.room.topic", ""): u2}, {**base, ("m.room.topic", ""): u1}]
    assert resolve(v, sets, room.get)[("m.room.topic", "")] == max(u1, u2)


# -- the auth difference and the conflicted state subgraph -----------------------------------

def _chain():
    """a ← b ← c ← d (each the auth event of the next), and e citing c and b."""
    room = Events("10")
    a = room.add("a", "x.a", ALICE, {}, "")
    b = room.add("b", "x.b", ALICE, {}, "", [a])
    c = room.add("c", "x.c", ALICE, {}, "", [b])
    d = room.add("d", "x.d", ALICE, {}, "", [c])
    e = room.add("e", "x.e", ALICE, {}, "", [c, b])
    return room, a, b, c, d, e


def test_auth_difference_is_the_union_minus_the_intersection_of_the_auth_chains():
    room, a, b, c, d, e = _chain()
    # {a, b} has the full auth chain {a} (b's auth event; neither event authorises
    # itself); {c} has {b, a}: the difference is {b}.
    assert stateres.auth_difference([room.state(a, b), room.state(c)], room.get) == {b}
    # {c, d}: chain {c, b, a}; {a, b, e}: chain {a, c, b}: no difference.
    assert stateres.auth_difference([room.state(c, d), room.state(a, b, e)], room.get) == set()
    # {d}: {c, b, a}; {b}: {a}: the difference is {b, c}.
    assert stateres.auth_difference([room.state(d), room.state(b)], room.get) == {b, c}
    # Three sets: {d}: {c, b, a}; {c}: {b, a}; {a}: {}.
    assert stateres.auth_difference([room.state(d), room.state(c), room.state(a)], room.get) == {a, b, c}
    assert stateres.auth_chain([d], room.get) == {a, b, c}
    # Counting each set's own events in its chain (Synapse's reading): {a, b} against
    # {c, b, a}: the difference is {c}.
    assert stateres.auth_difference([room.state(a, b), room.state(c)], room.get, with_state_events=True) == {c}


def test_conflicted_state_subgraph_is_the_paths_between_conflicted_events():
    room, a, b, c, d, e = _chain()
    # d and a conflicted: the path d → c → b → a, endpoints included.
    assert stateres.conflicted_state_subgraph({d, a}, room.get) == {a, b, c, d}
    # e and b: the paths e → b and e → c → b.
    assert stateres.conflicted_state_subgraph({e, b}, room.get) == {b, c, e}
    # d and e: no path between them; each is its own endpoint.
    assert stateres.conflicted_state_subgraph({d, e}, room.get) == {d, e}


def test_the_given_auth_difference_and_subgraph_are_used():
    # resolve() takes the two sets from callables (an index) when given them.
    v = "12"
    graph = Graph(v, [ev("T1", "m.room.topic", ALICE, {}, ""), ev("T2", "m.room.topic", ALICE, {}, "")],
                  [["END", "T1", "START"], ["END", "T2", "START"]])
    sets = [graph.after["T1"], graph.after["T2"]]
    calls = []

    def diff(state_sets):
        calls.append("diff")
        return stateres.auth_difference(state_sets, graph.get)

    def subgraph(ids):
        calls.append(("subgraph", frozenset(ids)))
        return stateres.conflicted_state_subgraph(ids, graph.get)

    out = resolve(v, sets, graph.get, auth_difference=diff, conflicted_subgraph=subgraph)
    assert out == resolve(v, sets, graph.get)
    assert calls == ["diff", ("subgraph", frozenset({graph.id("T1"), graph.id("T2")}))]
    assert out[("m.room.topic", "")] == graph.id("T2")  # sent later, same mainline position


# -- MSC4297: problems A and B ----------------------------------------------------------------

def _room_for(v):
    room = Events(v)
    create = room.add("create", "m.room.create", ALICE, {"room_version": v, **({"creator": ALICE} if int(v) < 11 else {})}, "")
    return room, create, ([] if v == "12" else [create])


@pytest.mark.parametrize("v, kept", [("11", False), ("12", True)])
def test_msc4297_problem_a_join_rules(v, kept):
    # Alice makes Bob an admin, sets public join rules (JR1), Bob joins, Alice sets invite
    # (JR2) and leaves.  A server gives a state that still holds JR1.  The join rules are
    # the one conflict, and both sets agree Alice has left.
    # v2: step 2 starts from the unconflicted state, where Alice has left: JR1 and JR2
    # both fail (the sender is not joined) and the join rules are gone (a state reset).
    # v2.1: step 2 starts empty, so each join rule is checked against its own auth
    # events, where Alice is joined: JR1 then JR2 pass, and JR2 is kept.
    room, create, c = _room_for(v)
    ma1 = room.add("ma1", "m.room.member", ALICE, {"membership": "join"}, ALICE, c)
    pl = room.add("pl", "m.room.power_levels", ALICE, levels(v, {ALICE: 100, BOB: 100}), "", c + [ma1])
    jr1 = room.add("jr1", "m.room.join_rules", ALICE, {"join_rule": "public"}, "", c + [ma1, pl])
    mb = room.add("mb", "m.room.member", BOB, {"membership": "join"}, BOB, c + [pl, jr1])
    jr2 = room.add("jr2", "m.room.join_rules", ALICE, {"join_rule": "invite"}, "", c + [ma1, pl])
    ma2 = room.add("ma2", "m.room.member", ALICE, {"membership": "leave"}, ALICE, c + [pl, ma1])
    correct = room.state(create, ma2, mb, pl, jr2)
    incorrect = room.state(create, ma2, mb, pl, jr1)
    out = resolve(v, [correct, incorrect], room.get)
    if kept:
        assert out == correct
    else:
        assert out == {k: e for k, e in correct.items() if k != ("m.room.join_rules", "")}


@pytest.mark.parametrize("v, kept", [("11", False), ("12", True)])
def test_msc4297_problem_b_power_levels(v, kept):
    # Alice promotes Bob (P2), Bob promotes Charlie (P3); Evelyn joins under P3 (ME1) and
    # then renames herself citing the old P1 (ME2).  One state (after ME2, from a partial
    # /state) holds P1; the other (after Zara joins) P3.
    # v2: P2 is in both states' auth chains, so not in the auth difference: step 1
    # replays P1 then P3 (P1 is in P3's auth chain) without P2, and P3 fails (Bob is at 0
    # under P1): the power levels go back to P1.
    # v2.1: P2 lies on the path P3 → P2 → P1 between two conflicted events (the
    # conflicted state subgraph): P1, P2, P3 replay in order and P3 is kept; Evelyn's
    # member key then sorts ME2 (on P1) before ME1 (on P3), so ME1 ends it.
    room, create, c = _room_for(v)
    ma = room.add("ma", "m.room.member", ALICE, {"membership": "join"}, ALICE, c)
    p1 = room.add("p1", "m.room.power_levels", ALICE, levels(v, {ALICE: 100}), "", c + [ma])
    jr = room.add("jr", "m.room.join_rules", ALICE, {"join_rule": "public"}, "", c + [ma, p1])
    mb = room.add("mb", "m.room.member", BOB, {"membership": "join"}, BOB, c + [p1, jr])
    mc = room.add("mc", "m.room.member", CHARLIE, {"membership": "join"}, CHARLIE, c + [p1, jr])
    p2 = room.add("p2", "m.room.power_levels", ALICE, levels(v, {ALICE: 100, BOB: 50}), "", c + [ma, p1])
    p3 = room.add("p3", "m.room.power_levels", BOB, levels(v, {ALICE: 100, BOB: 50, CHARLIE: 50}), "", c + [mb, p2])
    me1 = room.add("me1", "m.room.member", EVELYN, {"membership": "join"}, EVELYN, c + [p3, jr])
    me2 = room.add("me2", "m.room.member", EVELYN, {"membership": "join", "displayname": "E"}, EVELYN,
                   c + [p1, jr, me1])
    mz = room.add("mz", "m.room.member", ZARA, {"membership": "join"}, ZARA, c + [p3, jr])
    dodgy = room.state(create, ma, mb, mc, me2, p1, jr)
    sensible = room.state(create, ma, mb, mc, mz, p3, jr)
    out = resolve(v, [dodgy, sensible], room.get)
    if kept:
        assert out == room.state(create, ma, mb, mc, me1, mz, p3, jr)
        assert p2 in stateres.conflicted_state_subgraph({p1, p3, me2, mz}, room.get)
    else:
        assert out[("m.room.power_levels", "")] == p1
    assert p2 not in stateres.auth_difference([dodgy, sensible], room.get)


# -- rejected events, missing events, trivial inputs -----------------------------------------

def test_a_rejected_event_that_passes_is_admitted():
    # rooms v2 "Rejected events": an event rejected for the state at it is handled as usual.
    # Bob's topic (rejected on our server, say) sits in a state set another server gave;
    # Bob is at 50 in the power levels and the topic passes in the resolution: it is kept.
    # Synapse keeps rejected events out (named in the module's docstring).
    room, create, ma, pl = _flat_events()
    mb = room.add("MB", "m.room.member", BOB, {"membership": "join"}, BOB, [create, pl])
    t = room.add("T", "m.room.topic", BOB, {}, "", [create, mb, pl], rejected=True)
    base = room.state(create, ma, pl, mb)
    assert resolve("10", [base, {**base, ("m.room.topic", ""): t}], room.get) == {**base, ("m.room.topic", ""): t}
    # One whose own auth events break the rules (here: a rejected auth event) stays out.
    bad_pl = room.add("BADPL", "m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "", [create, ma], rejected=True)
    t2 = room.add("T2", "m.room.topic", BOB, {}, "", [create, mb, bad_pl], rejected=True)
    assert ("m.room.topic", "") not in resolve("10", [base, {**base, ("m.room.topic", ""): t2}], room.get)


def test_trivial_inputs():
    room, create, ma, pl = _flat_events()
    s = room.state(create, ma, pl)
    assert resolve("10", [], room.get) == {}
    assert resolve("10", [s], room.get) == s
    assert resolve("10", [s, dict(s)], room.get) == s
    assert resolve(stateres._version("1"), [s, s], room.get) == s


def test_an_unknown_event_is_a_missing_event_error():
    room, create, ma, pl = _flat_events()
    s = room.state(create, ma, pl)

    def get(eid):
        if eid not in room.events:
            raise MissingEventError(f"unknown {eid}", eid)
        return room.events[eid]

    with pytest.raises(MissingEventError):
        resolve("10", [s, {**s, ("m.room.topic", ""): "$nope:a.test"}], get)


def test_a_key_missing_from_one_set_is_conflicted_in_v2_and_not_in_v1():
    room, create, ma, pl = _flat_events()
    t = room.add("T", "m.room.topic", ALICE, {}, "", [create, ma, pl])
    s = room.state(create, ma, pl)
    uncon, con = stateres.unconflicted_and_conflicted([s, {**s, ("m.room.topic", ""): t}])
    assert con == {("m.room.topic", ""): {t}} and ("m.room.topic", "") not in uncon
    uncon, con = stateres.unconflicted_and_conflicted([s, {**s, ("m.room.topic", ""): t}], missing_conflicts=False)
    assert con == {} and uncon[("m.room.topic", "")] == t


# -- v1 ------------------------------------------------------------------------------------------

def _v1_room():
    room = Events("1")
    create = room.add("create", "m.room.create", ALICE, {"creator": ALICE}, "", depth=1)
    ma = room.add("ma", "m.room.member", ALICE, {"membership": "join"}, ALICE, [create], depth=2)
    pl = room.add("pl", "m.room.power_levels", ALICE, {"users": {ALICE: 100, BOB: 50}}, "", [create, ma], depth=3)
    jr = room.add("jr", "m.room.join_rules", ALICE, {"join_rule": "public"}, "", [create, ma, pl], depth=4)
    mb = room.add("mb", "m.room.member", BOB, {"membership": "join"}, BOB, [create, pl, jr], depth=5)
    return room, room.state(create, ma, pl, jr, mb), (create, ma, pl, jr, mb)


def _sha1(eid):
    return hashlib.sha1(eid.encode()).hexdigest()


def test_v1_power_levels_by_depth_each_next_one_while_allowed():
    # Three concurrent power levels: by ascending depth, p5 (Alice) is added to R, then p6
    # (Bob demotes Alice: not allowed, Alice's 100 is above Bob's 50) stops the pass: p5.
    room, base, (create, ma, pl, jr, mb) = _v1_room()
    p5 = room.add("p5", "m.room.power_levels", ALICE, {"users": {ALICE: 100, BOB: 0}}, "", [create, ma, pl], depth=6)
    p6 = room.add("p6", "m.room.power_levels", BOB, {"users": {ALICE: 0, BOB: 50}}, "", [create, mb, pl], depth=7)
    p7 = room.add("p7", "m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "", [create, ma, pl], depth=8)
    sets = [{**base, ("m.room.power_levels", ""): p} for p in (p5, p6, p7)]
    assert resolve("1", sets, room.get)[("m.room.power_levels", "")] == p5
    # Without p6 in the way, the chain goes on to the deepest: p7.
    assert resolve("1", [sets[0], sets[2]], room.get)[("m.room.power_levels", "")] == p7


def test_v1_other_events_highest_depth_that_passes_and_sha1_ties():
    room, base, (create, ma, pl, jr, mb) = _v1_room()
    deep = room.add("deep", "m.room.topic", BOB, {}, "", [create, mb, pl], depth=9)
    shallow = room.add("shallow", "m.room.topic", ALICE, {}, "", [create, ma, pl], depth=8)
    sets = [{**base, ("m.room.topic", ""): deep}, {**base, ("m.room.topic", ""): shallow}]
    # The highest depth passes (Bob at 50, state_default 50): deep.
    assert resolve("1", sets, room.get)[("m.room.topic", "")] == deep
    # Equal depths: the lowest sha1(event_id) wins.
    x = room.add("x1", "m.room.name", ALICE, {}, "", [create, ma, pl], depth=9)
    y = room.add("y1", "m.room.name", ALICE, {}, "", [create, ma, pl], depth=9)
    sets = [{**base, ("m.room.name", ""): x}, {**base, ("m.room.name", ""): y}]
    assert resolve("1", sets, room.get)[("m.room.name", "")] == min((x, y), key=_sha1)
    # No conflicting event passes (Zara is not in the room): the key is left out.
    z1 = room.add("z1", "m.room.name", ZARA, {}, "", [create, pl], depth=9)
    z2 = room.add("z2", "m.room.name", ZARA, {}, "", [create, pl], depth=10)
    sets = [{**base, ("m.room.name", ""): z1}, {**base, ("m.room.name", ""): z2}]
    assert ("m.room.name", "") not in resolve("1", sets, room.get)


def test_v1_a_missing_key_is_not_a_conflict_and_members_resolve_after_power():
    room, base, (create, ma, pl, jr, mb) = _v1_room()
    t = room.add("t", "m.room.topic", ZARA, {}, "", [create, pl], depth=9)
    # Zara's topic would fail the rules, but a key in one state only is unconflicted.
    assert resolve("1", [base, {**base, ("m.room.topic", ""): t}], room.get)[("m.room.topic", "")] == t
    # Alice bans Bob on one branch; Bob (at 50) sets power levels on the other.  Power
    # levels resolve first: pl (depth 3) goes into R, then Bob's p7 (depth 7) is checked
    # in R, where Bob has no member event (his key is conflicted, and R starts without
    # the conflicting events): it fails, pl stays.  Then Bob's key: his join (depth 5),
    # then the ban (depth 6), allowed in R (Alice at 100, ban level 50): banned.
    ban = room.add("ban", "m.room.member", ALICE, {"membership": "ban"}, BOB, [create, ma, pl, mb], depth=6)
    p7 = room.add("p7", "m.room.power_levels", BOB, {"users": {ALICE: 100, BOB: 50}, "kick": 50}, "",
                  [create, mb, pl], depth=7)
    sets = [{**base, ("m.room.member", BOB): ban}, {**base, ("m.room.power_levels", ""): p7}]
    out = resolve("1", sets, room.get)
    assert out[("m.room.member", BOB)] == ban and out[("m.room.power_levels", "")] == pl
    # With Bob's membership agreed, his power levels pass after pl: p7.
    sets = [base, {**base, ("m.room.power_levels", ""): p7}]
    assert resolve("1", sets, room.get)[("m.room.power_levels", "")] == p7


def test_auth_events_in_a_cycle_are_an_invalid_event_error():
    # Two power levels events each citing the other: no topological ordering exists.
    room, create, ma, pl = _flat_events()
    room.add("PX", "m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "", [create, ma, "$PY:a.test"])
    room.add("PY", "m.room.power_levels", ALICE, {"users": {ALICE: 100}}, "", [create, ma, "$PX:a.test"])
    s = room.state(create, ma)
    sets = [{**s, ("m.room.power_levels", ""): "$PX:a.test"}, {**s, ("m.room.power_levels", ""): "$PY:a.test"}]
    with pytest.raises(InvalidEventError, match="cycle"):
        resolve("10", sets, room.get)


def test_step_1_takes_every_auth_ancestor_in_the_full_conflicted_set():
    # rooms v2, Algorithm step 1: X is the power events of the full conflicted set and
    # "the events in the auth chain of P which also belong to the full conflicted set" —
    # the whole auth chain.  Alice kicks Carol (K), citing power levels Z that Bob sent
    # citing his join MB1; Z is in both states, MB1 only in one (Bob left in the other).
    # MB1 is in K's auth chain through Z, outside the full conflicted set: it joins X and
    # sorts before K.  A walk through the full conflicted set alone (Synapse's) misses it.
    room, create, ma, pl = _flat_events()
    mb1 = room.add("MB1", "m.room.member", BOB, {"membership": "join"}, BOB, [create, pl])
    z = room.add("Z", "m.room.power_levels", BOB, {"users": {ALICE: 100, BOB: 50}}, "", [create, mb1, pl])
    mc = room.add("MC", "m.room.member", CHARLIE, {"membership": "join"}, CHARLIE, [create, z])
    mb2 = room.add("MB2", "m.room.member", BOB, {"membership": "leave"}, BOB, [create, mb1, z])
    k = room.add("K", "m.room.member", ALICE, {"membership": "leave"}, CHARLIE, [create, ma, mc, z])
    full = {k, mc, mb1, mb2}
    x, before = stateres.power_events_and_auth_ancestors(full, room.get)
    assert x == {k, mc, mb1} and before[k] == {mc, mb1}
    x, before = stateres.power_events_and_auth_ancestors(full, room.get, walk_within_full=True)
    assert x == {k, mc} and before[k] == {mc}
    assert stateres.reverse_topological_power_ordering({k, mc, mb1}, {k: {mc, mb1}}, room.get, "10")[-1] == k
