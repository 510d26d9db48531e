"""Event graphs for the state-resolution tests, built from named events and edges.

A scenario names its events and gives chains of ``prev_events`` edges (``["END", "B",
"A", "START"]``: END follows B, B follows A, A follows START), hung off a shared start of
the room (create, Alice joins, power levels with Alice at 100, public join rules, Bob,
Charlie and Zara join).  The graph is processed in topological order, the smallest name
first among the events that are ready; each event gets the next ``origin_server_ts`` in
that order, a depth one more than its deepest prev event, its auth events from the state
before it (the auth events selection), and that state is the resolution (by
``stateres.resolve``) of the states after its prev events.
"""
from heapq import heapify, heappop, heappush

from roomstate.matrix import auth, stateres

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
CHARLIE = "@charlie:example.com"
EVELYN = "@evelyn:example.com"
ZARA = "@zara:example.com"

TOPIC = ("m.room.topic", "")
PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")


def ev(name, etype, sender, content=None, state_key=None):
    """A named event, without its graph fields yet."""
    e = {"name": name, "type": etype, "sender": sender, "content": content or {}}
    if state_key is not None:
        e["state_key"] = state_key
    return e


def member(name, sender, target, membership):
    return ev(name, "m.room.member", sender, {"membership": membership}, target)


def levels(v, users, **more):
    """Power-levels content; room version 12 leaves the creator out (rule 10.4)."""
    users = {u: lv for u, lv in users.items() if not (v == "12" and u == ALICE)}
    return {"users": users, **more}


def initial(v):
    create = {"room_version": v}
    if int(v) < 11:
        create["creator"] = ALICE
    return [
        ev("CREATE", "m.room.create", ALICE, create, ""),
        member("IMA", ALICE, ALICE, "join"),
        ev("IPOWER", "m.room.power_levels", ALICE, levels(v, {ALICE: 100}), ""),
        ev("IJR", "m.room.join_rules", ALICE, {"join_rule": "public"}, ""),
        member("IMB", BOB, BOB, "join"),
        member("IMC", CHARLIE, CHARLIE, "join"),
        member("IMZ", ZARA, ZARA, "join"),
        ev("START", "m.room.message", ZARA),
        ev("END", "m.room.message", ZARA),
    ]


INITIAL_EDGES = ["START", "IMZ", "IMC", "IMB", "IJR", "IPOWER", "IMA", "CREATE"]


class Graph:
    """The events of a scenario, by ID, and the state after each (by name)."""

    def __init__(self, v, events, edges):
        self.v = v
        self.room_id = "!CREATE" if v == "12" else "!room:example.com"
        self.events = {}  # event ID -> dict
        self.after = {}  # name -> state after
        named = {e["name"]: e for e in initial(v) + list(events)}
        prevs = {name: set() for name in named}
        for chain in [INITIAL_EDGES] + list(edges):
            for a, b in zip(chain, chain[1:]):
                prevs[a].add(b)
        waiting = {name: len(p) for name, p in prevs.items()}
        nexts = {name: [] for name in named}
        for name, p in prevs.items():
            for b in p:
                nexts[b].append(name)
        ready = [name for name, n in waiting.items() if n == 0]
        heapify(ready)
        ts = 0
        while ready:
            name = heappop(ready)
            self._add(named[name], sorted(prevs[name]), ts)
            ts += 1
            for n in nexts[name]:
                waiting[n] -= 1
                if waiting[n] == 0:
                    heappush(ready, n)

    def id(self, name):
        return f"${name}" if self.v == "12" else f"${name}:example.com"

    def get(self, event_id):
        return self.events[event_id]

    def _add(self, spec, prev_names, ts):
        v = self.v
        if prev_names:
            states = [self.after[p] for p in prev_names]
            before = states[0] if len(states) == 1 else stateres.resolve(v, states, self.get)
        else:
            before = {}
        e = {k: x for k, x in spec.items() if k != "name"}
        e.update(event_id=self.id(spec["name"]), origin_server_ts=ts,
                 prev_events=[self.id(p) for p in prev_names],
                 depth=1 + max((self.events[self.id(p)]["depth"] for p in prev_names), default=0),
                 rejected=False)
        if not (v == "12" and e["type"] == "m.room.create"):
            e["room_id"] = self.room_id
        keys = auth.auth_types_for_event(e, v) if e["type"] != "m.room.create" else set()
        e["auth_events"] = [before[k] for k in sorted(keys) if k in before]
        self.events[e["event_id"]] = e
        after = dict(before)
        if "state_key" in e:
            after[(e["type"], e["state_key"])] = e["event_id"]
        self.after[spec["name"]] = after


def changed_at_end(graph, expected_names):
    """The state at END on the keys changed since START and the keys of the expected
    events, and the expected state (key -> ID) to compare it with."""
    expected = {}
    for name in expected_names:
        e = graph.get(graph.id(name))
        expected[(e["type"], e["state_key"])] = e["event_id"]
    start, end = graph.after["START"], graph.after["END"]
    got = {k: e for k, e in end.items() if k in expected or start.get(k) != e}
    return got, expected


class Events:
    """Hand-made events by ID (for the tests that give auth events themselves)."""

    def __init__(self, v, room_id=None):
        self.v = v
        self.room_id = room_id or ("!create" if v == "12" else "!room:a.test")
        self.events = {}
        self.ts = 0

    def add(self, name, etype, sender, content=None, state_key=None, auth_events=(), *, ts=None, depth=None,
            rejected=False):
        self.ts += 1
        eid = f"${name}" if self.v == "12" or ":" in name else f"${name}:a.test"
        e = {"event_id": eid, "type": etype, "sender": sender, "content": content or {},
             "auth_events": list(auth_events), "prev_events": [], "rejected": rejected,
             "origin_server_ts": self.ts if ts is None else ts, "depth": self.ts if depth is None else depth}
        if not (self.v == "12" and etype == "m.room.create"):
            e["room_id"] = self.room_id
        if state_key is not None:
            e["state_key"] = state_key
        self.events[eid] = e
        return eid

    def get(self, event_id):
        return self.events[event_id]

    def state(self, *ids):
        return {(self.events[i]["type"], self.events[i]["state_key"]): i for i in ids}
