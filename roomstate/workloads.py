"""Deterministic, seeded Matrix room histories for tests, benchmarks and the demo.

Every generator yields event dicts (the input format of ``StateStore.add_event``) one at
a time, in a valid topological order: each event's ``prev_events`` were all yielded
before it. Nothing but the current branch heads and the generator's view of who is in
the room is held in memory, so a 10^6-event history streams in constant space beyond
the member list. The same arguments (seed included) always give the same events.

- :func:`hq` — one room shaped like Matrix HQ;
- :func:`many_rooms` — many rooms of 10–1,000 members, events interleaved;
- :func:`fork_storm` — a room whose long branches change overlapping keys, then merge.

See ``bench/README.md`` for the shape of each workload and where its figures come from.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

__all__ = [
    "SERVER",
    "count_stats",
    "fork_storm",
    "hq",
    "many_rooms",
    "read_jsonl",
    "write_jsonl",
]

SERVER = "example.org"

Event = dict[str, Any]
# (event_id, depth) of an event that a later event may name as a prev event.
_Ref = tuple[str, int]

_BASE_TS = 1_500_000_000_000  # ms; HQ-era timestamps, only for realism

# Non-member state of a large public room, by relative frequency (power levels are
# drawn separately, at a fixed rate per state event).
_OTHER_STATE = (
    ("m.room.topic", 35),
    ("m.room.server_acl", 25),
    ("m.room.canonical_alias", 15),
    ("m.room.name", 10),
    ("m.room.avatar", 10),
    ("m.room.history_visibility", 3),
    ("m.room.join_rules", 2),
)
_OTHER_TYPES = tuple(t for t, _ in _OTHER_STATE)
_OTHER_CUM_WEIGHTS = tuple(
    sum(w for _, w in _OTHER_STATE[: i + 1]) for i in range(len(_OTHER_STATE))
)


def _event_id(rng: random.Random) -> str:
    """A room v4+ style event ID: '$' and 43 URL-safe base64 characters (32 bytes)."""
    raw = rng.getrandbits(256).to_bytes(32, "big")
    return "$" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class _Mix:
    """How a room's events are drawn."""

    state_fraction: float = 0.43
    member_share: float = 0.98  # of state events
    new_member_share: float = 0.25  # of membership events
    power_levels_rate: float = 1e-4  # per state event
    fork_rate: float = 0.04  # chance, per linear event, that a fork starts there
    wide_fork_share: float = 0.05  # of forks: 5-10 branches instead of 2-4
    max_branch_len: int = 6
    user_space: int = 10_000_000  # user IDs are drawn from @u0 .. @u<user_space-1>
    max_members: int | None = None  # no new members past this many
    fill_state_fraction: float = 0.8  # state fraction while below max_members


class _Room:
    """The generator's view of one room: its members, its clock and how to draw events."""

    def __init__(self, rng: random.Random, room_id: str, mix: _Mix) -> None:
        self.rng = rng
        self.room_id = room_id
        self.mix = mix
        self.membership: dict[str, str] = {}
        self.users: list[str] = []  # everyone who ever had a membership, for choice()
        self.creator = self._fresh_user()
        self.ts = _BASE_TS + rng.randrange(10**9)
        self.made = 0

    # -- building blocks ---------------------------------------------------------------

    def _fresh_user(self) -> str:
        rng, space = self.rng, self.mix.user_space
        while True:
            user = f"@u{rng.randrange(space)}:{SERVER}"
            if user not in self.membership:
                return user

    def make(
        self,
        etype: str,
        prevs: list[_Ref],
        content: dict[str, Any],
        *,
        state_key: str | None = None,
        sender: str | None = None,
    ) -> Event:
        self.made += 1
        self.ts += 1 + self.rng.randrange(2000)
        ev: Event = {"event_id": _event_id(self.rng), "room_id": self.room_id, "type": etype}
        if state_key is not None:
            ev["state_key"] = state_key
        ev["sender"] = sender or self.creator
        ev["origin_server_ts"] = self.ts
        ev["prev_events"] = [eid for eid, _ in prevs]
        ev["depth"] = 1 + max((depth for _, depth in prevs), default=0)
        ev["content"] = content
        return ev

    def member(self, prevs: list[_Ref], user: str, membership: str, sender: str) -> Event:
        if user not in self.membership:
            self.users.append(user)
        self.membership[user] = membership
        return self.make(
            "m.room.member",
            prevs,
            {"membership": membership},
            state_key=user,
            sender=sender,
        )

    def preamble(self) -> Iterator[Event]:
        """The five events every room starts with, linearly."""
        creator = self.creator
        prevs: list[_Ref] = []
        for ev in (
            lambda p: self.make(
                "m.room.create", p, {"creator": creator, "room_version": "10"}, state_key=""
            ),
            lambda p: self.member(p, creator, "join", creator),
            lambda p: self.make("m.room.power_levels", p, {"users": {creator: 100}}, state_key=""),
            lambda p: self.make("m.room.join_rules", p, {"join_rule": "public"}, state_key=""),
            lambda p: self.make(
                "m.room.history_visibility", p, {"history_visibility": "shared"}, state_key=""
            ),
        ):
            event = ev(prevs)
            prevs = [(event["event_id"], event["depth"])]
            yield event

    # -- drawing events ----------------------------------------------------------------

    def _can_grow(self) -> bool:
        cap = self.mix.max_members
        return cap is None or len(self.users) < cap

    def membership_event(self, prevs: list[_Ref]) -> Event:
        rng = self.rng
        growing = self._can_grow()
        filling = growing and self.mix.max_members is not None
        if filling or (growing and rng.random() < self.mix.new_member_share):
            user = self._fresh_user()
            if rng.random() < 0.07:
                return self.member(prevs, user, "invite", self._someone())
            return self.member(prevs, user, "join", user)
        user = rng.choice(self.users)
        current = self.membership[user]
        r = rng.random()
        if current == "join":
            # join -> join is a profile change (displayname, avatar): common in big rooms.
            if r < 0.45:
                return self.member(prevs, user, "join", user)
            if r < 0.97:
                return self.member(prevs, user, "leave", user)
            return self.member(prevs, user, "ban", self.creator)
        if current == "leave":
            if r < 0.90:
                return self.member(prevs, user, "join", user)
            if r < 0.97:
                return self.member(prevs, user, "invite", self._someone())
            return self.member(prevs, user, "ban", self.creator)
        if current == "invite":
            return self.member(prevs, user, "join" if r < 0.7 else "leave", user)
        # ban: the only way out is an unban (leave) by a moderator
        return self.member(prevs, user, "leave", self.creator)

    def _someone(self) -> str:
        return self.rng.choice(self.users) if self.users else self.creator

    def power_levels(self, prevs: list[_Ref]) -> Event:
        promoted = self._someone()
        return self.make(
            "m.room.power_levels",
            prevs,
            {"users": {self.creator: 100, promoted: 50}, "users_default": 0},
            state_key="",
        )

    def other_state(self, prevs: list[_Ref]) -> Event:
        etype = self.rng.choices(_OTHER_TYPES, cum_weights=_OTHER_CUM_WEIGHTS)[0]
        return self.make(etype, prevs, {"n": self.made}, state_key="")

    def message(self, prevs: list[_Ref]) -> Event:
        return self.make(
            "m.room.message",
            prevs,
            {"msgtype": "m.text", "body": f"message {self.made}"},
            sender=self._someone(),
        )

    def random_event(self, prevs: list[_Ref]) -> Event:
        rng, mix = self.rng, self.mix
        filling = mix.max_members is not None and self._can_grow()
        state_fraction = mix.fill_state_fraction if filling else mix.state_fraction
        if rng.random() >= state_fraction:
            return self.message(prevs)
        if rng.random() < mix.power_levels_rate:
            return self.power_levels(prevs)
        if rng.random() < mix.member_share:
            return self.membership_event(prevs)
        return self.other_state(prevs)

    # -- the DAG -----------------------------------------------------------------------

    def history(self, n_events: int) -> Iterator[Event]:
        """``n_events`` events: the preamble, then a mostly linear DAG with short forks."""
        rng, mix = self.rng, self.mix
        emitted = 0
        head: list[_Ref] = []
        for ev in self.preamble():
            if emitted == n_events:
                return
            emitted += 1
            head = [(ev["event_id"], ev["depth"])]
            yield ev
        while emitted < n_events:
            room_left = n_events - emitted
            if room_left >= 3 and rng.random() < mix.fork_rate:
                if rng.random() < mix.wide_fork_share:
                    n_branches = rng.randint(5, 10)
                else:
                    n_branches = rng.randint(2, 4)
                n_branches = min(n_branches, room_left - 1)
                lengths = [rng.randint(1, mix.max_branch_len) for _ in range(n_branches)]
                # keep the whole fork, merge included, inside n_events
                while sum(lengths) > room_left - 1:
                    i = lengths.index(max(lengths))
                    lengths[i] -= 1
                lengths = [n for n in lengths if n > 0]
                order = [i for i, n in enumerate(lengths) for _ in range(n)]
                rng.shuffle(order)  # branches arrive interleaved, as over federation
                heads = [head[0]] * len(lengths)
                for i in order:
                    ev = self.random_event([heads[i]])
                    heads[i] = (ev["event_id"], ev["depth"])
                    yield ev
                emitted += len(order)
                prevs = list(dict.fromkeys(heads))
                ev = self.random_event(prevs)
            else:
                ev = self.random_event(head)
            emitted += 1
            head = [(ev["event_id"], ev["depth"])]
            yield ev


def hq(n_events: int, seed: int = 0, room_id: str = f"!hq0:{SERVER}") -> Iterator[Event]:
    """One room shaped like Matrix HQ, ``n_events`` events long.

    Starts with m.room.create, the creator's join, power levels, join rules and history
    visibility; then ~43% state events, ~98% of them m.room.member (one new member per
    four membership events, plausible join/leave/ban/invite transitions), power levels
    changing about once per 10^4 state events, topic/name/ACL/alias/avatar sprinkled in;
    the rest m.room.message. The DAG is mostly linear with forks of 2–4 branches (rarely
    5–10) of 1–6 events each, merged by the next event (~1.06 prev_events per event).
    At 10^6 events the room has ~10^5 state keys.

    >>> events = list(hq(100, seed=1))
    >>> [e["type"] for e in events[:3]]
    ['m.room.create', 'm.room.member', 'm.room.power_levels']
    >>> events == list(hq(100, seed=1))
    True
    """
    rng = random.Random(f"hq:{seed}")
    yield from _Room(rng, room_id, _Mix()).history(n_events)


def many_rooms(
    n_rooms: int = 1000,
    seed: int = 0,
    min_members: int = 10,
    max_members: int = 1000,
    events_per_room: int | None = None,
) -> Iterator[Event]:
    """``n_rooms`` rooms of ``min_members``–``max_members`` members, events interleaved.

    Each room draws its member count log-uniformly, fills up with joins (80% state
    while filling), then carries on with the HQ mix without new members. A room has
    ``events_per_room`` events, or by default ``5 + 2 * members`` (about 4·10^5 events
    for the default 1,000 rooms). Users are drawn from a shared population of 10^5 so
    that the same people sit in many rooms. Rooms are interleaved uniformly at random;
    each room's own events keep their topological order.
    """
    if not 1 <= min_members <= max_members:
        raise ValueError("need 1 <= min_members <= max_members")
    rng = random.Random(f"many_rooms:{seed}")
    lo, hi = math.log(min_members), math.log(max_members)
    rooms: list[Iterator[Event]] = []
    schedule: list[int] = []
    for i in range(n_rooms):
        members = min(max_members, max(min_members, round(math.exp(rng.uniform(lo, hi)))))
        n_events = events_per_room if events_per_room is not None else 5 + 2 * members
        mix = _Mix(max_members=members, user_space=100_000)
        room = _Room(random.Random(f"many_rooms:{seed}:{i}"), f"!room{i}:{SERVER}", mix)
        rooms.append(room.history(n_events))
        schedule.extend([i] * n_events)
    rng.shuffle(schedule)
    for i in schedule:
        yield next(rooms[i])


def fork_storm(
    n_branches: int = 8,
    branch_len: int = 500,
    seed: int = 0,
    n_members: int = 500,
    tail: int = 10,
) -> Iterator[Event]:
    """A room of ``n_members`` joined members, then ``n_branches`` branches of
    ``branch_len`` events from the same event, then one merge event whose prev_events
    are all the branch heads, then ``tail`` linear events.

    The branches change overlapping keys: membership of the same existing members (30%
    of branch events), joins (or leaves) of newcomers drawn from a pool shared by all
    branches (55%; a newcomer often joins in several branches, and a key present in
    only some branches is conflicted too), topic (4%), power levels (2%), name (1%);
    the rest are messages. With the defaults the merge sees ~1,860 conflicted keys
    (~2,230 with 10 branches).
    """
    rng = random.Random(f"fork_storm:{seed}")
    room = _Room(rng, f"!storm{seed}:{SERVER}", _Mix())
    head: list[_Ref] = []
    for ev in room.preamble():
        head = [(ev["event_id"], ev["depth"])]
        yield ev
    for _ in range(n_members):
        user = room._fresh_user()
        ev = room.member(head, user, "join", user)
        head = [(ev["event_id"], ev["depth"])]
        yield ev
    members = list(room.users)
    base_membership = dict(room.membership)
    pool_size = max(1, int(0.55 * n_branches * branch_len))
    newcomers = [f"@n{seed}x{i}:{SERVER}" for i in range(pool_size)]

    heads = [head[0]] * n_branches
    views = [dict(base_membership) for _ in range(n_branches)]
    order = [b for b in range(n_branches) for _ in range(branch_len)]
    rng.shuffle(order)
    for b in order:
        view = views[b]
        prevs = [heads[b]]
        r = rng.random()
        if r < 0.30:
            user = rng.choice(members)
            membership = _storm_transition(rng, view.get(user, "leave"))
            view[user] = membership
            sender = room.creator if membership == "ban" else user
            ev = room.make(
                "m.room.member", prevs, {"membership": membership}, state_key=user, sender=sender
            )
        elif r < 0.85:
            user = rng.choice(newcomers)
            membership = "leave" if view.get(user) == "join" else "join"
            view[user] = membership
            ev = room.make(
                "m.room.member", prevs, {"membership": membership}, state_key=user, sender=user
            )
        elif r < 0.89:
            ev = room.make("m.room.topic", prevs, {"topic": f"branch {b}"}, state_key="")
        elif r < 0.91:
            ev = room.power_levels(prevs)
        elif r < 0.92:
            ev = room.make("m.room.name", prevs, {"name": f"storm {b}"}, state_key="")
        else:
            ev = room.message(prevs)
        heads[b] = (ev["event_id"], ev["depth"])
        yield ev

    ev = room.message(list(dict.fromkeys(heads)))
    head = [(ev["event_id"], ev["depth"])]
    yield ev
    for _ in range(tail):
        ev = room.random_event(head)
        head = [(ev["event_id"], ev["depth"])]
        yield ev


def _storm_transition(rng: random.Random, current: str) -> str:
    if current == "join":
        r = rng.random()
        return "join" if r < 0.3 else ("leave" if r < 0.95 else "ban")
    if current == "ban":
        return "leave"
    return "join"


# -- files and statistics ------------------------------------------------------------


def _open_text(path: os.PathLike[str] | str, mode: str) -> IO[str]:
    if os.fspath(path).endswith(".gz"):
        return gzip.open(path, mode + "t", encoding="utf-8")  # type: ignore[return-value]
    return open(path, mode, encoding="utf-8")


def write_jsonl(events: Iterable[Event], path: os.PathLike[str] | str) -> int:
    """Write one compact JSON object per line (gzip when ``path`` ends in .gz).

    Returns the number of events written.
    """
    count = 0
    dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    with _open_text(path, "w") as out:
        for ev in events:
            out.write(dumps(ev))
            out.write("\n")
            count += 1
    return count


def read_jsonl(path: os.PathLike[str] | str) -> Iterator[Event]:
    """Yield the events of a JSON-lines file written by :func:`write_jsonl`."""
    with _open_text(path, "r") as src:
        for line in src:
            if line.strip():
                yield json.loads(line)


def count_stats(events: Iterable[Event]) -> dict[str, Any]:
    """Shape statistics of a history, streaming.

    Keys: ``events``, ``rooms``, ``state_events``, ``state_fraction`` (state / all),
    ``member_fraction`` (m.room.member / state), ``power_levels`` (count),
    ``state_keys`` (distinct (room, type, state_key)), ``new_member_ratio`` (distinct
    member keys / membership events), ``mean_prevs`` (over events that have prevs),
    ``max_prevs``, ``merges`` (events with more than one prev), ``max_depth``.
    """
    n = n_state = n_member = n_pl = n_with_prevs = total_prevs = max_prevs = merges = 0
    max_depth = 0
    rooms = set()
    keys = set()
    member_keys = 0
    for ev in events:
        n += 1
        room = ev["room_id"]
        rooms.add(room)
        prevs = len(ev.get("prev_events", ()))
        if prevs:
            n_with_prevs += 1
            total_prevs += prevs
            max_prevs = max(max_prevs, prevs)
            merges += prevs > 1
        max_depth = max(max_depth, ev.get("depth", 0))
        if ev.get("state_key") is None:
            continue
        n_state += 1
        key = (room, ev["type"], ev["state_key"])
        is_new = key not in keys
        keys.add(key)
        if ev["type"] == "m.room.member":
            n_member += 1
            member_keys += is_new
        elif ev["type"] == "m.room.power_levels":
            n_pl += 1
    return {
        "events": n,
        "rooms": len(rooms),
        "state_events": n_state,
        "state_fraction": n_state / n if n else 0.0,
        "member_fraction": n_member / n_state if n_state else 0.0,
        "power_levels": n_pl,
        "state_keys": len(keys),
        "new_member_ratio": member_keys / n_member if n_member else 0.0,
        "mean_prevs": total_prevs / n_with_prevs if n_with_prevs else 0.0,
        "max_prevs": max_prevs,
        "merges": merges,
        "max_depth": max_depth,
    }
