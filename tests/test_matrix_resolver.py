"""``resolver="matrix"`` in the store: the state before every merge equals the pure
state resolution of :mod:`roomstate.matrix.stateres` over the states after the prevs,
read back from the store and given the events' full PDUs (the reference)."""
import pytest

import roomstate
from roomstate import workloads
from roomstate.errors import InvalidEventError, MissingEventError
from roomstate.matrix import stateres


def _reference_check(store, pdus):
    by_id = {}
    for ev in pdus:
        eid = ev.get("event_id")
        by_id[eid] = ev
    checked = 0
    for ev in pdus:
        prevs = ev.get("prev_events") or []
        prev_ids = [p[0] if isinstance(p, list) else p for p in prevs]
        if len(set(prev_ids)) < 2:
            continue
        info = store.event(ev["event_id"])
        if info.outlier:
            continue
        sets = [dict(store.state_after(p)) for p in prev_ids]

        def get_event(eid):
            pdu = by_id[eid]
            d = dict(pdu)
            d["rejected"] = store.event(eid).rejected
            return d

        rv = store.room_version(ev["room_id"])
        want = stateres.resolve(rv, sets, get_event)
        got = dict(store.state_before(ev["event_id"]))
        assert got == want, ev["event_id"]
        checked += 1
    return checked


@pytest.mark.parametrize("room_version", ["1", "2", "6", "10", "11", "12"])
def test_busy_room_merges_equal_the_reference(room_version):
    pdus = list(workloads.busy(400, n_senders=40, seed=3, room_version=room_version))
    with roomstate.open(":memory:") as store:
        store.add_events(pdus)
        # busy events carry their IDs in v1-v2 only: take the computed ones.
        pdus = [dict(ev, event_id=ev.get("event_id") or _computed(ev, room_version)) for ev in pdus]
        assert _reference_check(store, pdus) > 50


def _computed(ev, room_version):
    return roomstate.matrix.compute_event_id(ev, room_version)


def test_fork_storm_merge_equals_the_reference():
    pdus = list(workloads.fork_storm(n_branches=6, branch_len=30, n_members=60, seed=1))
    with roomstate.open(":memory:") as store:
        store.add_events(pdus)
        pdus = [dict(ev, event_id=ev.get("event_id") or _computed(ev, "10")) for ev in pdus]
        assert _reference_check(store, pdus) >= 1


def test_resolve_state_of_given_states():
    pdus = list(workloads.busy(300, n_senders=30, seed=5))
    with roomstate.open(":memory:") as store:
        store.add_events(pdus)
        room = pdus[0]["room_id"] if "room_id" in pdus[0] else store.rooms()[0]
        merges = [ev for ev in pdus if len(ev["prev_events"]) >= 3]
        ev = merges[-1]
        sets = [store.state_after(p) for p in ev["prev_events"]]
        eid = ev.get("event_id") or _computed(ev, "10")
        assert store.resolve_state(room, sets) == store.state_before(eid)
        # Plain dicts of strings give the same answer as the store's StateMaps.
        assert store.resolve_state(room, [dict(s) for s in sets]) == store.state_before(eid)
        assert store.resolve_state(room, []) == {}
        one = dict(sets[0])
        assert store.resolve_state(room, [one]) == one
        with pytest.raises(MissingEventError):
            store.resolve_state(room, [{("m.room.topic", ""): "$nope"}])
        key, event_id = next(iter(one.items()))
        with pytest.raises(InvalidEventError, match="not its key"):
            store.resolve_state(room, [{("m.room.topic", "x"): event_id}])
        with pytest.raises(TypeError):
            store.resolve_state(room, one)


def test_matrix_is_the_default():
    assert roomstate.resolvers.resolver_of(None) is roomstate.resolvers.BUILTIN["matrix"]
    with roomstate.open(":memory:") as store:
        assert store.resolver is roomstate.resolvers.BUILTIN["matrix"]


def test_events_without_auth_data_are_refused_with_a_reason():
    events = [
        {"event_id": "$a", "room_id": "!r", "type": "m.room.create", "state_key": "", "content": {}},
        {"event_id": "$b", "room_id": "!r", "type": "m.room.topic", "state_key": "", "prev_events": ["$a"]},
        {"event_id": "$c", "room_id": "!r", "type": "m.room.topic", "state_key": "", "prev_events": ["$a"]},
        {"event_id": "$d", "room_id": "!r", "type": "m.room.message", "prev_events": ["$b", "$c"]},
    ]
    with roomstate.open(":memory:", check_auth=False) as store:
        store.add_events(events[:3])
        with pytest.raises(InvalidEventError, match="stored without its") as info:
            store.add_event(events[3])
        assert info.value.event_id in ("$a", "$b", "$c")
        assert not store.has_event("$d")
        store.add_event(events[3], resolver="newest_event")
        assert store.get_state("$d", "m.room.topic", "") == "$c"


def test_events_with_content_but_no_sender_are_refused():
    """Content makes a record hold auth data; without a sender the rules cannot run."""
    def ev(eid, type_, prevs, state_key=None, **content):
        d = {"event_id": eid, "room_id": "!r", "type": type_, "prev_events": prevs, "content": content}
        if state_key is not None:
            d["state_key"] = state_key
        return d

    events = [ev("$a", "m.room.create", [], "", creator="@x:y"),
              ev("$b", "m.room.member", ["$a"], "@b:y", membership="join"),
              ev("$t", "m.room.topic", ["$a"], "", topic="t"),
              ev("$m", "m.room.message", ["$b", "$t"])]
    with roomstate.open(":memory:", check_auth=False) as store:
        with pytest.raises(InvalidEventError, match="without its sender") as info:
            store.add_events(events)
        assert info.value.field == "sender"
        assert store.rooms() == []  # the whole call was undone


def _ban_fork():
    """Alice bans Bob while Bob, on another branch, sets the topic twice; Alice's message
    merges the branches (README's example)."""
    from roomstate.matrix import compute_event_id

    room, alice, bob = "!room:example.org", "@alice:example.org", "@bob:example.org"

    def pdu(type_, prev, auth, depth, sender=alice, state_key=None, **content):
        ev = {"room_id": room, "type": type_, "sender": sender, "content": content, "depth": depth,
              "origin_server_ts": 1_700_000_000_000 + depth, "prev_events": prev, "auth_events": auth}
        if state_key is not None:
            ev["state_key"] = state_key
        return ev, compute_event_id(ev, "10")

    create, c = pdu("m.room.create", [], [], 1, state_key="", room_version="10", creator=alice)
    join_a, ja = pdu("m.room.member", [c], [c], 2, state_key=alice, membership="join")
    power, p = pdu("m.room.power_levels", [ja], [c, ja], 3, state_key="", users={alice: 100, bob: 50})
    rules, r = pdu("m.room.join_rules", [p], [c, ja, p], 4, state_key="", join_rule="public")
    join_b, jb = pdu("m.room.member", [r], [c, p, r], 5, sender=bob, state_key=bob, membership="join")
    topic, t = pdu("m.room.topic", [jb], [c, p, ja], 6, state_key="", topic="welcome")
    ban, b = pdu("m.room.member", [t], [c, p, ja, jb], 7, state_key=bob, membership="ban")
    bob1, b1 = pdu("m.room.topic", [t], [c, p, jb], 7, sender=bob, state_key="", topic="bob was here")
    bob2, b2 = pdu("m.room.topic", [b1], [c, p, jb], 8, sender=bob, state_key="", topic="bob rules")
    msg, m = pdu("m.room.message", [b, b2], [c, p, ja], 9, body="hello")
    events = [create, join_a, power, rules, join_b, topic, ban, bob1, bob2, msg]
    return room, events, dict(t=t, b=b, b2=b2, m=m, bob=bob)


def test_a_reset_is_read_back_with_its_inputs():
    room, events, ids = _ban_fork()
    with roomstate.open(":memory:") as store:
        store.add_events(events)
        assert store.get_state(ids["m"], "m.room.topic", "") == ids["t"]
        resets = store.state_resets(room)
        # The topic went back to the one before the fork: neither branch's state held it
        # (the ban branch holds $t too, so it is no reset) -- the merge kept $t, held by
        # the ban branch: not a reset either.
        assert resets == []
    with roomstate.open(":memory:", resolver=lambda ctx: {}) as store:
        store.add_events(events)  # a resolver that drops every conflicted key
        resets = store.state_resets(room)
        dropped = {(r.type, r.state_key): r for r in resets}
        assert set(dropped) == {("m.room.topic", ""), ("m.room.member", ids["bob"])}
        topic = dropped[("m.room.topic", "")]
        assert topic.kind == "dropped" and topic.resolved is None and topic.event_id == ids["m"]
        assert topic.prev_state == [ids["t"], ids["b2"]]
        assert store.stats()["state_resets"] == 2  # counted as the merge was made


def test_an_older_event_is_a_reset():
    """A merge whose state holds, at a key, an event no prev state held there."""
    def ev(eid, type_, prevs, state_key=None):
        d = {"event_id": eid, "room_id": "!r", "type": type_, "prev_events": prevs}
        if state_key is not None:
            d["state_key"] = state_key
        return d

    def back_to_old_name(ctx):
        return {("m.room.topic", ""): "$t2", ("m.room.name", ""): "$old_name"}

    with roomstate.open(":memory:", check_auth=False, resolver="newest_event") as store:
        store.add_events([ev("$c", "m.room.create", [], ""), ev("$t1", "m.room.topic", ["$c"], ""),
                          ev("$t2", "m.room.topic", ["$c"], "")])
        store.add_event(ev("$old_name", "m.room.name", ["$far"], ""), outlier=True)
        store.add_event(ev("$m", "m.room.message", ["$t1", "$t2"]), resolver=back_to_old_name)
        store.add_event(ev("$n", "m.room.message", ["$t1", "$t2"]))  # newest_event: no reset
        resets = store.state_resets("!r")
        assert len(resets) == 1
        (r,) = resets
        assert (r.event_id, r.type, r.state_key, r.kind, r.resolved) == ("$m", "m.room.name", "", "older", "$old_name")
        assert r.prev_state == [None, None]
        assert store.stats()["state_resets"] == 1


def test_resets_of_an_unknown_room():
    with roomstate.open(":memory:") as store:
        with pytest.raises(MissingEventError):
            store.state_resets("!nope")


def test_resets_on_the_command_line(tmp_path):
    import json
    import subprocess
    import sys

    room, events, ids = _ban_fork()
    db = str(tmp_path / "store")
    with roomstate.open(db, resolver=lambda ctx: {}) as store:
        store.add_events(events)
    proc = subprocess.run([sys.executable, "-m", "roomstate", "resets", "--db", db, room],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {(d["type"], d["kind"]) for d in lines} == {("m.room.topic", "dropped"), ("m.room.member", "dropped")}
    assert proc.stderr.strip() == f"2 state resets in {room}"


@pytest.mark.parametrize("room_version", ["6", "10", "12"])
def test_the_resolutions_plain_cases_decide_as_every_rule_does(tmp_path, room_version):
    """The iterative auth checks decide own joins and leaves, and events by joined
    members with the level they need, on NIDs (``AuthChecker.allowed_in_state``); with
    that off, every event goes through every rule: the same states and rejections."""
    from roomstate.matrixres import MatrixResolution

    pdus = list(workloads.busy(600, n_senders=40, seed=5, room_version=room_version))
    seen = []
    for plain in (True, False):
        with roomstate.open(tmp_path / f"s{plain}") as s:
            s._merger._matrix = MatrixResolution(s._tables)
            s._merger._matrix.checker.plain = plain
            s.add_events(pdus)
            ids = [ev.get("event_id") or _computed(ev, room_version) for ev in pdus]
            seen.append([(dict(s.state_before(e)), s.event(e).rejected) for e in ids])
    assert seen[0] == seen[1]


def test_allowed_in_state_agrees_with_the_rules():
    """Every state event of a busy room against the state before it at the keys its
    auth events selection names: where the plain cases say allowed, so do the rules,
    and they decide most events."""
    from roomstate.matrix import auth
    from roomstate.matrixres import MatrixResolution, _Graph

    pdus = list(workloads.busy(500, n_senders=30, seed=2, room_version="10"))
    decided = checked = 0
    with roomstate.open(":memory:") as s:
        s.add_events(pdus)
        res = MatrixResolution(s._tables)
        room_id = pdus[0]["room_id"]
        with s._reader.reading() as tx:
            g = _Graph(res, tx)
            for ev in pdus:
                eid = ev.get("event_id") or _computed(ev, "10")
                nid = g.nid(eid)
                rec = g.record(nid)
                if not rec.is_state or rec.type == 1:
                    continue
                before = s.state_before(eid)
                d = g.by_nid(nid)
                state = {k: before[k] for k in auth.auth_types_for_event(d, "10") if k in before}
                nids = tuple(sorted(g.nid(e) for e in state.values()))
                verdict = res.checker.allowed_in_state(tx, rec, room_id, nids)
                want = auth.check(d, {k: g.by_nid(g.nid(e)) for k, e in state.items()}, "10")
                checked += 1
                if verdict:
                    decided += 1
                    assert want is None, (eid, want)
    assert checked > 100 and decided > checked // 2


@pytest.mark.parametrize("room_version", ["10", "12"])
def test_the_count_of_resets_is_the_reads(room_version):
    """``stats()["state_resets"]``, counted as the merges are made, equals what
    ``state_resets`` reads back from the stored states; a batch that fails counts
    nothing."""
    pdus = list(workloads.fork_storm(n_branches=8, branch_len=25, n_members=40, seed=4, room_version=room_version))
    with roomstate.open(":memory:", resolver=_drop_conflicts) as store:
        store.add_events(pdus[:len(pdus) // 2])
        before = store.stats()["state_resets"]
        bad = dict(pdus[-1], sender=17)  # an InvalidEventError, after good merges
        with pytest.raises(InvalidEventError):
            store.add_events(pdus[len(pdus) // 2:] + [bad])
        assert store.stats()["state_resets"] == before
        store.add_events(pdus[len(pdus) // 2:])
        counted = store.stats()["state_resets"]
        (room_id,) = store.rooms()
        read = len(store.state_resets(room_id))
        assert counted == read > before  # the merges of the failed batch counted once, when stored


def _drop_conflicts(ctx):
    """A resolver that leaves every conflicted key empty: a reset at every merge."""
    return {}


def test_a_store_without_the_count_says_so(tmp_path):
    from roomstate.format import META_COUNT_RESETS

    path = tmp_path / "s"
    with roomstate.open(path) as store:
        assert store.stats()["state_resets"] == 0
    import lmdb
    env = lmdb.open(str(path), max_dbs=32, subdir=True)
    with env.begin(write=True) as txn:
        txn.delete(META_COUNT_RESETS, db=env.open_db(b"meta", txn=txn))
    env.close()
    with roomstate.open(path) as store:
        assert store.stats()["state_resets"] is None


def test_reads_of_two_stores_keep_nothing_of_each_other():
    """A read transaction's kept values (the resolution's records and auth closures) are
    its own: a resolution read in one store, then one in another store whose NIDs name
    other events, gives the other store's answer (the reference's)."""
    from roomstate.txn import ReadTx

    assert ReadTx(None, None).pending is not ReadTx(None, None).pending
    def branches(pdus):  # up to the merge of every branch: several forward extremities
        return pdus[:next(i for i, ev in enumerate(pdus) if len(ev["prev_events"]) > 1)]

    first = branches(list(workloads.fork_storm(n_branches=5, branch_len=20, n_members=30, seed=1)))
    second = branches(list(workloads.fork_storm(n_branches=7, branch_len=15, n_members=50, seed=2)))
    with roomstate.open(":memory:") as a, roomstate.open(":memory:") as b:
        a.add_events(first)
        b.add_events(second)
        for store in (a, b, a, b):
            (room_id,) = store.rooms()
            tips = store.forward_extremities(room_id)
            assert len(tips) > 1
            sets = [dict(store.state_after(t)) for t in tips]
            by_id = {}
            for ev in (first if store is a else second):
                eid = ev.get("event_id") or _computed(ev, "10")
                by_id[eid] = dict(ev, event_id=eid, rejected=store.event(eid).rejected)
            want = stateres.resolve("10", sets, by_id.__getitem__)
            assert dict(store.current_state(room_id)) == want
            assert dict(store.resolve_state(room_id, sets)) == want


def test_closures_kept_between_transactions_survive_aborts():
    """The store keeps a room's auth closure from one transaction to the next (given back
    at commit); a transaction that aborts after moving it drops it (its NIDs are given
    again). Events one transaction each, with an aborted batch between them: every merge
    still equals the reference."""
    pdus = list(workloads.busy(300, n_senders=30, seed=7, room_version="10"))
    with roomstate.open(":memory:") as store:
        for ev in pdus[:120]:
            store.add_event(ev)
        assert store._tables.auth_closures  # kept after a commit
        with pytest.raises(InvalidEventError):
            store.add_events(pdus[120:170] + [dict(pdus[-1], sender=17)])
        for ev in pdus[120:]:
            store.add_event(ev)
        pdus = [dict(ev, event_id=ev.get("event_id") or _computed(ev, "10")) for ev in pdus]
        assert _reference_check(store, pdus) > 50
