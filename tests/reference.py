"""A plain-Python reference of the state semantics: a dict per event."""


class Reference:
    """What a correct store answers, computed the obvious way."""

    def __init__(self):
        self.events = {}  # event_id -> dict(room, type, state_key, prevs, depth, rejected, membership, outlier)
        self.before = {}  # event_id -> dict or None (outlier)
        self.after = {}
        self.children = {}  # event_id -> set of non-outlier children

    def depth(self, eid):
        return self.events[eid]["depth"]

    def merge(self, states):
        if len(states) == 1:
            return dict(states[0])
        keys = set().union(*states)
        out = {}
        for k in keys:
            vals = [s.get(k) for s in states]
            if all(v == vals[0] for v in vals) and vals[0] is not None:
                out[k] = vals[0]
            else:
                cands = {v for v in vals if v is not None}
                out[k] = max(cands, key=lambda e: (self.depth(e), e))
        return out

    def add(self, ev, outlier=False, state_before=None):
        eid = ev["event_id"]
        prevs = list(dict.fromkeys(p if isinstance(p, str) else p[0] for p in ev.get("prev_events", [])))
        known = [p for p in prevs if p in self.events]
        depth = ev.get("depth")
        if depth is None:
            depth = 1 + max((self.events[p]["depth"] for p in known), default=0)
        if eid in self.events and not self.events[eid]["outlier"]:
            return
        if eid in self.events and outlier:
            return
        self.events[eid] = {
            "room": ev["room_id"],
            "type": ev["type"],
            "state_key": ev.get("state_key"),
            "prevs": prevs,
            "depth": depth,
            "rejected": ev.get("rejected", False),
            "membership": (ev.get("content") or {}).get("membership"),
            "outlier": outlier,
        }
        if outlier:
            self.before[eid] = self.after[eid] = None
            return
        if state_before is not None:
            before = dict(state_before)
        elif not prevs:
            before = {}
        else:
            before = self.merge([self.after[p] for p in prevs])
        after = dict(before)
        if ev.get("state_key") is not None and not ev.get("rejected", False):
            after[(ev["type"], ev["state_key"])] = eid
        self.before[eid] = before
        self.after[eid] = after
        for p in prevs:
            self.children.setdefault(p, set()).add(eid)

    def extremities(self, room):
        return sorted(
            e
            for e, info in self.events.items()
            if info["room"] == room and not info["outlier"] and not self.children.get(e)
        )

    def current(self, room):
        ex = self.extremities(room)
        if not ex:
            return {}
        return self.merge([self.after[e] for e in ex])

    def members(self, eid, membership, after=False):
        state = (self.after if after else self.before)[eid]
        return sorted(
            k for (t, k), e in state.items() if t == "m.room.member" and self.events[e]["membership"] == membership
        )

    def diff(self, a, b):
        sa, sb = self.after[a], self.after[b]
        added = {k: v for k, v in sb.items() if sa.get(k) != v}
        removed = {k: v for k, v in sa.items() if sb.get(k) != v}
        return added, removed
