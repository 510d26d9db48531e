"""Deterministic, seeded Matrix room histories of real PDUs, for tests, benchmarks and the demo.

Every generator yields event dicts (the input format of ``StateStore.add_event``) one at
a time, in a valid topological order: each event's ``prev_events`` were all yielded
before it. The same arguments (seed included) always give the same events.

- :func:`hq` — one room shaped like Matrix HQ;
- :func:`many_rooms` — many rooms of 10–1,000 members, events interleaved;
- :func:`fork_storm` — a room whose long branches change overlapping keys, then merge;
- :func:`busy` — a room written by many servers at once (most events 2–10 prev events).

**The events are PDUs a homeserver would accept**, in room version 10 unless
``room_version`` says otherwise ("1"–"12"): a create event with ``room_version`` (and
``creator`` before v11), senders who are joined (or, for their own membership, allowed),
``origin_server_ts``, ``depth``, and ``auth_events`` chosen by the specification's "auth
events selection" (server-server API): the create event (not in v12), the current power
levels, the sender's member event and, for a membership, the target's member event and,
for a join, invite or knock, the join rules — from the generator's view of the state
before the event. Power levels name admins (100) and moderators (50) and change about
once per 10^4 state events; kicks, bans, unbans and invites come from users with the
power; state events other than memberships come from users with the level the power
levels ask. Room versions 1–2 reference events as ``[event_id, {"sha256": ...}]`` pairs
(the hash is a stand-in: nothing here hashes or signs events, so there are no ``hashes``
or ``signatures`` fields — signatures are the caller's to check).

**Rejections.** A share of the events (:data:`REJECTION_RATE`, 0.2 %) fail the
authorization rules on purpose: a member without power changing the power levels, a
banned user rejoining, a message from a user who left. They carry
``unsigned["io.roomstate.expected_rejection"]`` (the reason), which the engine ignores
(``unsigned`` is not stored), and never the ``rejected`` flag: an engine that checks the
rules must reject them itself. :func:`expected_rejection` reads the mark. The generator
treats them as rejected: they change no state it assumes, and no later event names them
in ``auth_events``. An engine that trusts the caller (``check_auth=False``) takes them as
accepted state; a test that wants that engine's state to match the generator's sets
``rejected=True`` on them itself.

**The state the generator assumes** is the state a store with ``resolver="newest_event"``
computes (the resolver the benchmarks use). Per branch it keeps only what the
authorization rules read (create, power levels, join rules, member events):

- ``hq`` and ``many_rooms``: at a fork each branch gets an overlay of the state at the
  fork point. Within a fork a user's member event changes on one branch only (the branch
  that touched the user first "claims" it; moderators acting on a branch are claimed
  too) and power levels change only outside forks, so a merge has no conflicted key that
  the rules read, and its state is the union of the branches' changes under any resolver
  that keeps unconflicted changes. Topics, names and other state do conflict.
- ``fork_storm``: the branches conflict on member keys and power levels by design. After
  the merge the generator assumes the ``newest_event`` resolution (per key the candidate
  with the largest ``(depth, event_id)``). The Matrix resolver may choose otherwise for
  some keys: under ``resolver="matrix"`` that state is an approximation, and a ``tail``
  event may then be judged differently (the merge event itself is the creator's, who is
  an admin in every branch).
- ``busy``: exact for ``newest_event``: each server sees the events older than its lag
  and its own, references all its forward extremities (at most 10, because lags are at
  most :data:`_MAX_LAG` events), so the ancestors of an event are exactly what its
  server saw, and the ``newest_event`` state of a key is the largest ``(depth,
  event_id)`` among those ancestors' events of that key.

**Memory.** Streaming holds, per room: the member event ID, depth and membership of
everyone who ever had a membership (O(users), ~10^4 in ``hq`` at 10^5 events, ~4 MB), the
current fork's overlays (``fork_storm``: its branches' changes), and for ``busy`` the
last :data:`_BUSY_WINDOW` events and the unsettled state changes among them;
``many_rooms`` also holds its shuffled schedule (one int per event) and a generator per
room. No event dict is kept after it is yielded.

**Event IDs** are random (seeded), in the format of the room version: ``$`` and 43
URL-safe base64 characters from v4, standard base64 in v3, ``$<18 characters>:<origin
server>`` in v1–v2; in v12 the room ID is the create event's ID with ``!`` for ``$``, and
the create event has no ``room_id`` (every other event has; today's engine requires
``room_id`` on every event, so v12 histories go into a store once it derives the room ID
from the create event, and the default, v10, goes in as before). They are not reference
hashes. When ``roomstate.matrix.compute_event_id`` lands, v3+ IDs should become each
event's reference hash (and v12 room IDs with them): in ``_Room.make``, compute the ID
from the finished event dict instead of drawing it first (the generator's state only
needs the ID after the dict is built; the create event's ID gives the v12 room ID).

See ``bench/README.md`` for the shape of each workload and where its figures come from.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import math
import os
import itertools
import random
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

from .matrix.versions import VERSIONS, RoomVersion

__all__ = [
    "REJECTION_MARK",
    "REJECTION_RATE",
    "SERVER",
    "busy",
    "count_stats",
    "expected_rejection",
    "expected_rejections",
    "fork_storm",
    "hq",
    "many_rooms",
    "read_jsonl",
    "write_jsonl",
]

SERVER = "example.org"
#: The ``unsigned`` key that marks an event generated to fail the authorization rules.
REJECTION_MARK = "io.roomstate.expected_rejection"
#: The share of events generated to fail the authorization rules.
REJECTION_RATE = 0.002

Event = dict[str, Any]
# (event_id, depth) of an event that a later event may name as a prev event.
_Ref = tuple[str, int]
# What the generator knows of a state event: (event_id, depth, value), where value is the
# membership of an m.room.member event, a _Power for power levels, the join rule.
_Entry = tuple[str, int, Any]

_BASE_TS = 1_500_000_000_000  # ms; HQ-era timestamps, only for realism

CREATE, MEMBER, POWER_LEVELS, JOIN_RULES = (
    "m.room.create",
    "m.room.member",
    "m.room.power_levels",
    "m.room.join_rules",
)
# State keys of the generator's state maps besides user IDs (which start with "@").
_PL, _JR = "\x00pl", "\x00jr"
_UNLIMITED = 1 << 62  # a v12 creator's power level

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


def _version(room_version: str) -> RoomVersion:
    v = VERSIONS.get(room_version) if isinstance(room_version, str) else None
    if v is None:
        raise ValueError(f"unknown room version {room_version!r} (known: {', '.join(VERSIONS)})")
    return v


def _power_content(users: dict[str, int], extra_events: dict[str, int] | None = None) -> Event:
    """Power levels as Synapse's public_chat preset writes them, with ``users``."""
    events = {
        "m.room.avatar": 50,
        "m.room.canonical_alias": 50,
        "m.room.history_visibility": 100,
        "m.room.name": 50,
        "m.room.power_levels": 100,
        "m.room.server_acl": 100,
        "m.room.tombstone": 100,
    }
    if extra_events:
        events.update(extra_events)
    return {
        "ban": 50,
        "events": events,
        "events_default": 0,
        "invite": 0,
        "kick": 50,
        "redact": 50,
        "state_default": 50,
        "users": users,
        "users_default": 0,
    }


class _Power:
    """An m.room.power_levels content, read once."""

    __slots__ = ("ban", "content", "events", "events_default", "invite", "kick", "state_default",
                 "users", "users_default")

    def __init__(self, content: Event) -> None:
        self.content = content
        self.users: dict[str, int] = content["users"]
        self.users_default: int = content["users_default"]
        self.events: dict[str, int] = content["events"]
        self.events_default: int = content["events_default"]
        self.state_default: int = content["state_default"]
        self.ban: int = content["ban"]
        self.kick: int = content["kick"]
        self.invite: int = content["invite"]

    def needed(self, etype: str, is_state: bool) -> int:
        return self.events.get(etype, self.state_default if is_state else self.events_default)


class _View(Protocol):
    """What drawing an event reads and writes: the state one branch (or one server) sees."""

    @property
    def claims(self) -> dict | None: ...
    @property
    def prevs(self) -> list[_Ref]: ...
    def get(self, key: str) -> _Entry | None: ...
    def put(self, key: str, entry: _Entry) -> None: ...
    def at(self, user: str) -> _View: ...
    def free(self, user: str) -> bool: ...


class _State:
    """The generator's view of one branch: entries by state key (user ID, _PL, _JR).

    A branch of a fork is an overlay over the state at the fork point (``parent``);
    ``claims`` (shared by the fork's branches) says which branch owns which user.
    """

    __slots__ = ("claims", "entries", "get", "parent", "prevs")

    def __init__(self, parent: _State | None = None, claims: dict | None = None) -> None:
        self.entries: dict[str, _Entry] = {}
        self.parent = parent
        self.claims = claims
        self.prevs: list[_Ref] = parent.prevs if parent is not None else []
        # get(key) -> _Entry | None; a plain dict lookup outside forks (the hot path)
        self.get = self.entries.get if parent is None else self._get_overlaid

    def _get_overlaid(self, key: str) -> _Entry | None:
        e = self.entries.get(key)
        if e is None:
            return self.parent.entries.get(key)  # type: ignore[union-attr]
        return e

    def put(self, key: str, entry: _Entry) -> None:
        self.entries[key] = entry

    def at(self, user: str) -> _State:
        """The view in which ``user`` acts: in a room of one server, this one."""
        return self

    def free(self, user: str) -> bool:
        """Whether this branch may change or act as ``user`` (and claim it)."""
        claims = self.claims
        if claims is None:
            return True
        owner = claims.setdefault(user, self)
        return owner is self


def _merge_into(base: _State, branches: list[_State]) -> None:
    """The ``newest_event`` resolution of the branches, written into ``base``: per key
    changed in some branch, the change with the largest (depth, event_id) (the changes
    of a branch are all newer than the fork point, so base's own entry never wins)."""
    merged: dict[str, _Entry] = {}
    for br in branches:
        for key, e in br.entries.items():
            o = merged.get(key)
            if o is None or (e[1], e[0]) > (o[1], o[0]):
                merged[key] = e
    base.entries.update(merged)


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
    reject_rate: float = REJECTION_RATE
    admins: int = 2  # besides the creator, named in the first power levels
    moderators: int = 5
    join_rule: str = "public"  # or "invite", "knock"
    open_state: bool = False  # topic and org.example.state at level 0 (busy)


class _Room:
    """One room: its clock, its people, how its events are made and drawn."""

    def __init__(
        self,
        rng: random.Random,
        room_id: str | None,
        mix: _Mix,
        version: RoomVersion,
        creator: str | None = None,
    ) -> None:
        self.rng = rng
        self.mix = mix
        self.v = version
        self.pairs = version.event_format == 1
        self.url_safe_ids = version.event_format == 3
        self.room_id = room_id or ""  # v12: set from the create event's ID
        self.state = _State()
        self.users: list[str] = []  # everyone who ever had a membership, for choice()
        self.known: set[str] = set()  # every user ID drawn, so that fresh ones are fresh
        self.listed: set[str] = set()  # the users of self.users
        self.staff: list[str] = []  # everyone ever named in power levels above 0
        self.creator = creator or self._fresh_user()
        self.create_id = ""
        self.ts = _BASE_TS + rng.randrange(10**9)
        self.made = 0
        self.pending_pl = 0  # power-level changes drawn inside a fork, made after it

    # -- building blocks ---------------------------------------------------------------

    def _fresh_user(self) -> str:
        rng, space = self.rng, self.mix.user_space
        while True:
            user = f"@u{rng.randrange(space)}:{SERVER}"
            if user not in self.known:
                self.known.add(user)
                return user

    def _new_id(self, sender: str) -> str:
        raw = self.rng.getrandbits(256).to_bytes(32, "big")
        if self.url_safe_ids:
            return "$" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
        if self.v.event_format == 2:
            return "$" + base64.b64encode(raw).rstrip(b"=").decode("ascii")
        return "$" + base64.urlsafe_b64encode(raw[:14]).decode("ascii")[:18] + ":" + sender.split(":", 1)[1]

    def _refs(self, ids: list[str]) -> list:
        if not self.pairs:
            return ids
        return [[i, {"sha256": base64.b64encode(hashlib.sha256(i.encode()).digest()).rstrip(b"=").decode()}]
                for i in ids]

    def level(self, st: _View, user: str) -> int:
        if user == self.creator and self.v.privileged_creators:
            return _UNLIMITED
        pl = st.get(_PL)
        if pl is None:
            return 100 if user == self.creator else 0
        p = pl[2]
        return p.users.get(user, p.users_default)

    def membership(self, st: _View, user: str) -> str | None:
        e = st.get(user)
        return e[2] if e is not None else None

    def auth_ids(
        self, st: _View, etype: str, sender: str, state_key: str | None, membership: str | None
    ) -> list[str]:
        """The auth events selection (server-server API, "Auth events selection") from
        ``st``: create (not in v12), power levels, the sender's member event; for
        m.room.member the target's member event, and the join rules for join, invite
        and knock. (No third-party invites or restricted joins are generated.)"""
        if etype == CREATE:
            return []
        get = st.get
        out = [] if self.v.room_id_from_create else [self.create_id]
        e = get(_PL)
        if e is not None:
            out.append(e[0])
        e = get(sender)
        if e is not None:
            out.append(e[0])
        if etype == MEMBER:
            if state_key != sender:
                e = get(state_key)  # type: ignore[arg-type]
                if e is not None:
                    out.append(e[0])
            if membership == "join" or membership == "invite" or membership == "knock":
                e = get(_JR)
                if e is not None:
                    out.append(e[0])
        return out

    def make(
        self,
        st: _View,
        etype: str,
        content: dict[str, Any],
        *,
        state_key: str | None = None,
        sender: str | None = None,
        reject: str | None = None,
    ) -> Event:
        """An event on ``st``'s branch (prev events: ``st.prevs``), applied to ``st``
        unless it is a marked rejection."""
        self.made += 1
        self.ts += 1 + int(2000 * self.rng.random())
        sender = sender or self.creator
        prevs = st.prevs
        eid = self._new_id(sender)
        if len(prevs) == 1:
            depth = prevs[0][1] + 1
        else:
            depth = 1 + max((d for _, d in prevs), default=0)
        membership = content.get("membership") if etype == MEMBER else None
        ev: Event = {"event_id": eid, "room_id": self.room_id, "type": etype}
        if etype == CREATE:
            self.create_id = eid
            if self.v.room_id_from_create:
                self.room_id = "!" + eid[1:]
                del ev["room_id"]
        if state_key is not None:
            ev["state_key"] = state_key
        ev["sender"] = sender
        ev["origin_server_ts"] = self.ts
        if self.pairs:
            ev["prev_events"] = self._refs([e for e, _ in prevs])
            ev["auth_events"] = self._refs(self.auth_ids(st, etype, sender, state_key, membership))
        else:
            ev["prev_events"] = [e for e, _ in prevs]
            ev["auth_events"] = self.auth_ids(st, etype, sender, state_key, membership)
        ev["depth"] = depth
        ev["content"] = content
        if reject is not None:
            ev["unsigned"] = {REJECTION_MARK: reject}
        elif state_key is not None:
            if etype == MEMBER:
                st.put(state_key, (eid, depth, membership))
            elif etype == POWER_LEVELS:
                st.put(_PL, (eid, depth, _Power(content)))
            elif etype == JOIN_RULES:
                st.put(_JR, (eid, depth, content["join_rule"]))
        return ev

    def member(self, st: _View, user: str, membership: str, sender: str, **content: Any) -> Event:
        if user not in self.listed:
            self.listed.add(user)
            self.known.add(user)
            self.users.append(user)
        content["membership"] = membership
        return self.make(st, MEMBER, content, state_key=user, sender=sender)

    def preamble(self) -> list[Any]:
        """Makers of the five events every room starts with: create, the creator's join,
        power levels (naming the staff, drawn here unless set before), join rules,
        history visibility."""
        creator, mix = self.creator, self.mix
        create: Event = {"room_version": self.v.identifier}
        if not self.v.implicit_room_creator:
            create["creator"] = creator
        if not self.staff:
            self.staff.extend(self._fresh_user() for _ in range(mix.admins + mix.moderators))
        staff = {u: 100 if i < mix.admins else 50 for i, u in enumerate(self.staff)}
        users = dict(staff) if self.v.privileged_creators else {creator: 100, **staff}
        extra = {"m.room.topic": 0, "org.example.state": 0} if mix.open_state else None
        pl = _power_content(users, extra)
        if mix.join_rule != "public":
            pl["invite"] = 50
        return [
            lambda st: self.make(st, CREATE, create, state_key=""),
            lambda st: self.member(st, creator, "join", creator),
            lambda st: self.make(st, POWER_LEVELS, pl, state_key=""),
            lambda st: self.make(st, JOIN_RULES, {"join_rule": mix.join_rule}, state_key=""),
            lambda st: self.make(
                st, "m.room.history_visibility", {"history_visibility": "shared"}, state_key=""
            ),
        ]

    def linear(self, makers: Iterable[Any]) -> Iterator[Event]:
        """The events ``makers`` make, one after the other on ``self.state``."""
        st = self.state
        for make in makers:
            ev = make(st)
            st.prevs = [(ev["event_id"], ev["depth"])]
            yield ev

    # -- who may act -------------------------------------------------------------------

    def joined(self, ctx: _View, min_level: int = 0, *, claim: bool = False) -> tuple[str, _View]:
        """A joined user with at least ``min_level`` (free on ``ctx``'s branch when
        ``claim``), and the view they act in; the creator when a few draws find none."""
        random, users, n = self.rng.random, self.users, len(self.users)
        for _ in range(8):
            user = users[int(n * random())]
            st = ctx.at(user)
            e = st.get(user)
            if (e is not None and e[2] == "join"
                    and (min_level <= 0 or self.level(st, user) >= min_level)
                    and (not claim or user == self.creator or st.free(user))):
                return user, st
        return self.creator, ctx.at(self.creator)

    def actor(self, ctx: _View, need: int, target: str | None = None) -> tuple[str, _View] | None:
        """A joined staff member (or the creator) with ``need`` and more power than
        ``target``, and their view; None when nobody has the power."""
        rng, staff = self.rng, self.staff
        for user in ([rng.choice(staff) for _ in range(3)] if staff else []) + [self.creator]:
            st = ctx.at(user)
            e = st.get(user)
            if e is None or e[2] != "join":
                continue
            lvl = self.level(st, user)
            if lvl < need or target is not None and lvl <= self.level(st, target):
                continue
            if user == self.creator or st.free(user):
                return user, st
        return None

    # -- drawing events ----------------------------------------------------------------

    def _can_grow(self) -> bool:
        cap = self.mix.max_members
        return cap is None or len(self.users) < cap

    def newcomer(self, st: _View) -> Event:
        user = self._fresh_user()
        st.free(user)
        rule = st.get(_JR)[2]  # type: ignore[index]
        if rule == "knock" and self.v.knock:
            return self.member(st, user, "knock", user)
        if rule == "public" and self.rng.random() >= 0.07:
            return self.member(st, user, "join", user, displayname=user[1:].split(":")[0])
        return self.invite(st, user) or self.message(st)

    def invite(self, st: _View, user: str) -> Event | None:
        pl = st.get(_PL)[2]  # type: ignore[index]
        by = self.joined(st, claim=True) if pl.invite == 0 else self.actor(st, pl.invite)
        if by is None:
            return None
        return self.member(by[1], user, "invite", by[0])

    def moderate(self, st: _View, user: str, membership: str) -> Event | None:
        """A kick (``leave``), ban or unban of ``user`` by someone with the power."""
        pl = st.get(_PL)[2]  # type: ignore[index]
        need = pl.kick if membership == "leave" else pl.ban
        if membership == "leave" and self.membership(st, user) == "ban":
            need = max(pl.kick, pl.ban)
        by = self.actor(st, need, user)
        if by is None:
            return None
        return self.member(by[1], user, membership, by[0])

    def membership_event(self, st: _View) -> Event:
        rng, mix = self.rng, self.mix
        growing = self._can_grow()
        filling = growing and mix.max_members is not None
        public = mix.join_rule == "public"
        if growing and (
            (filling and (public or rng.random() < 0.6)) or rng.random() < mix.new_member_share
        ):
            return self.newcomer(st)
        for _ in range(4):
            user = rng.choice(self.users)
            if user != self.creator and st.free(user):
                break
        else:
            return self.message(st)
        current = self.membership(st, user)
        r = rng.random()
        if current == "join":
            # join -> join is a profile change (displayname, avatar): common in big rooms.
            if r < 0.45:
                return self.member(st, user, "join", user, displayname=f"{user[2:8]} {self.made}")
            if r < 0.94:
                return self.member(st, user, "leave", user)
            return self.moderate(st, user, "leave" if r < 0.97 else "ban") or self.member(
                st, user, "leave", user
            )
        if current == "invite":
            return self.member(st, user, "join" if r < 0.7 else "leave", user)
        if current == "knock":
            return (self.invite(st, user) if r < 0.6 else None) or self.member(st, user, "leave", user)
        if current == "ban":
            # the only way out is an unban (leave) by a moderator
            return self.moderate(st, user, "leave") or self.message(st)
        # left, or never a member on this branch
        if r < 0.90:
            rule = st.get(_JR)[2]  # type: ignore[index]
            if rule == "public":
                return self.member(st, user, "join", user)
            if rule == "knock" and self.v.knock:
                return self.member(st, user, "knock", user)
            return self.invite(st, user) or self.message(st)
        if r < 0.97:
            return self.invite(st, user) or self.message(st)
        return self.moderate(st, user, "ban") or self.message(st)

    def power_levels(self, st: _View) -> Event:
        """An admin promotes a member to moderator (60%) or demotes a moderator."""
        rng = self.rng
        by = self.actor(st, 100) or (self.creator, st.at(self.creator))
        pl = by[1].get(_PL)[2]  # type: ignore[index]
        users = dict(pl.users)
        mods = [u for u, lvl in users.items() if lvl == 50]
        if mods and rng.random() < 0.4:
            del users[rng.choice(mods)]
        else:
            user, _ = self.joined(by[1])
            if user != self.creator and users.get(user, 0) < 50:
                users[user] = 50
                if user not in self.staff:
                    self.staff.append(user)
        return self.make(by[1], POWER_LEVELS, dict(pl.content, users=users), state_key="", sender=by[0])

    def other_state(self, st: _View) -> Event:
        etype = self.rng.choices(_OTHER_TYPES, cum_weights=_OTHER_CUM_WEIGHTS)[0]
        pl = st.get(_PL)[2]  # type: ignore[index]
        by = self.actor(st, pl.needed(etype, True))
        if by is None:
            return self.message(st)
        n = self.made
        if etype == JOIN_RULES:  # restated: a room's join rule never changes here
            content: Event = {"join_rule": st.get(_JR)[2]}  # type: ignore[index]
        elif etype == "m.room.history_visibility":
            content = {"history_visibility": "shared"}
        elif etype == "m.room.server_acl":
            content = {"allow": ["*"], "allow_ip_literals": False, "deny": [f"spam{n}.example"]}
        elif etype == "m.room.canonical_alias":
            content = {"alias": f"#room{n}:{SERVER}"}
        elif etype == "m.room.avatar":
            content = {"url": f"mxc://{SERVER}/avatar{n}"}
        elif etype == "m.room.name":
            content = {"name": f"room {n}"}
        else:
            content = {"topic": f"topic {n}"}
        return self.make(by[1], etype, content, state_key="", sender=by[0])

    def message(self, st: _View) -> Event:
        user, view = self.joined(st)
        return self.make(view, "m.room.message", {"msgtype": "m.text", "body": f"message {self.made}"},
                         sender=user)

    def rejection(self, ctx: _View) -> Event | None:
        """An event that fails the authorization rules, marked: a member without power
        changing the power levels, a banned user rejoining, a message from a user who left.
        None when a few draws find no one to send it."""
        rng = self.rng
        kind = rng.randrange(3)
        for _ in range(12):
            user = rng.choice(self.users)
            st = ctx.at(user)
            m = self.membership(st, user)
            if not st.free(user):
                continue
            if kind == 1 and m == "ban":
                return self.make(st, MEMBER, {"membership": "join"}, state_key=user, sender=user,
                                 reject="join by a banned user")
            if kind == 2 and m == "leave":
                return self.make(st, "m.room.message", {"msgtype": "m.text", "body": "still here?"},
                                 sender=user, reject="sender is not joined")
            if kind == 0 and m == "join" and self.level(st, user) < st.get(_PL)[2].events[POWER_LEVELS]:  # type: ignore[index]
                pl = st.get(_PL)[2]  # type: ignore[index]
                content = dict(pl.content, users={**pl.users, user: 100})
                return self.make(st, POWER_LEVELS, content, state_key="", sender=user,
                                 reject="sender may not change m.room.power_levels")
            if _ >= 8:
                kind = 0
        return None

    def random_event(self, st: _View, *, linear: bool = True) -> Event:
        rng, mix = self.rng, self.mix
        if rng.random() < mix.reject_rate:
            ev = self.rejection(st)
            if ev is not None:
                return ev
        filling = mix.max_members is not None and self._can_grow()
        state_fraction = mix.fill_state_fraction if filling else mix.state_fraction
        if rng.random() >= state_fraction:
            return self.message(st)
        if rng.random() < mix.power_levels_rate:
            if not linear:
                self.pending_pl += 1  # power levels change outside forks
            else:
                return self.power_levels(st)
        elif linear and self.pending_pl:
            self.pending_pl -= 1
            return self.power_levels(st)
        if rng.random() < mix.member_share:
            return self.membership_event(st)
        return self.other_state(st)

    # -- the DAG -----------------------------------------------------------------------

    def staff_joins(self) -> list[Any]:
        """Makers of the staff's joins (invited by the creator unless the room is public)."""
        joins = [lambda st, u=u: self.member(st, u, "join", u) for u in self.staff]
        if self.mix.join_rule == "public":
            return joins
        invites = [lambda st, u=u: self.member(st, u, "invite", self.creator) for u in self.staff]
        return [m for pair in zip(invites, joins, strict=True) for m in pair]

    def history(self, n_events: int) -> Iterator[Event]:
        """``n_events`` events: the preamble, the staff joining, then a mostly linear DAG
        with short forks."""
        rng, mix = self.rng, self.mix
        base = self.state
        emitted = 0
        for ev in self.linear(itertools.chain(self.preamble(), self.staff_joins())):
            if emitted == n_events:
                return
            emitted += 1
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
                claims: dict[str, _State] = {}
                branches = [_State(base, claims) for _ in lengths]
                for i in order:
                    br = branches[i]
                    ev = self.random_event(br, linear=False)
                    br.prevs = [(ev["event_id"], ev["depth"])]
                    yield ev
                emitted += len(order)
                _merge_into(base, branches)
                base.prevs = list(dict.fromkeys(br.prevs[0] for br in branches))
            ev = self.random_event(base)
            base.prevs = [(ev["event_id"], ev["depth"])]
            emitted += 1
            yield ev


def hq(
    n_events: int, seed: int = 0, room_id: str | None = None, *, room_version: str = "10"
) -> Iterator[Event]:
    """One room shaped like Matrix HQ, ``n_events`` events long.

    Starts with m.room.create, the creator's join, power levels (the creator, 2 admins
    and 5 moderators), join rules (public) and history visibility, then the staff
    joining; then ~43% state events, ~98% of them m.room.member (one new member per four
    membership events, plausible join/leave/kick/ban/invite transitions by users with
    the power), power levels changing about once per 10^4 state events, topic/name/ACL/
    alias/avatar by moderators; the rest m.room.message from joined members, and 0.2%
    marked rejections (see the module docstring). The DAG is mostly linear with forks of
    2–4 branches (rarely 5–10) of 1–6 events each, merged by the next event (~1.06
    prev_events per event). At 10^6 events the room has ~10^5 state keys.
    ``room_id`` defaults to ``!hq0:example.org``; in room version 12 it comes from the
    create event and may not be given.

    >>> events = list(hq(100, seed=1))
    >>> [e["type"] for e in events[:3]]
    ['m.room.create', 'm.room.member', 'm.room.power_levels']
    >>> events == list(hq(100, seed=1))
    True
    """
    v = _version(room_version)
    rng = random.Random(f"hq:{seed}")
    yield from _Room(rng, _room_id(v, room_id, f"!hq0:{SERVER}"), _Mix(), v).history(n_events)


def _room_id(v: RoomVersion, given: str | None, default: str) -> str | None:
    if v.room_id_from_create:
        if given is not None:
            raise ValueError("in room version 12 the room ID is the create event's; do not give one")
        return None
    return default if given is None else given


def many_rooms(
    n_rooms: int = 1000,
    seed: int = 0,
    min_members: int = 10,
    max_members: int = 1000,
    events_per_room: int | None = None,
    *,
    room_version: str = "10",
) -> Iterator[Event]:
    """``n_rooms`` rooms of ``min_members``–``max_members`` members, events interleaved.

    Each room draws its member count log-uniformly and its join rule (public 60%,
    invite 30%, knock 10% — invite before room version 7), fills up with newcomers (80%
    state while filling: joins, or invites and knocks that are accepted later), then
    carries on with the HQ mix without new members. A room has ``events_per_room``
    events, or by default ``5 + 2 * members`` (about 4·10^5 events for the default 1,000
    rooms). Users are drawn from a shared population of 10^5 so that the same people sit
    in many rooms. Rooms are interleaved uniformly at random; each room's own events keep
    their topological order.
    """
    if not 1 <= min_members <= max_members:
        raise ValueError("need 1 <= min_members <= max_members")
    v = _version(room_version)
    rng = random.Random(f"many_rooms:{seed}")
    lo, hi = math.log(min_members), math.log(max_members)
    rooms: list[Iterator[Event]] = []
    schedule: list[int] = []
    for i in range(n_rooms):
        members = min(max_members, max(min_members, round(math.exp(rng.uniform(lo, hi)))))
        n_events = events_per_room if events_per_room is not None else 5 + 2 * members
        r = rng.random()
        rule = "public" if r < 0.6 else ("knock" if r >= 0.9 and v.knock else "invite")
        mix = _Mix(max_members=members, user_space=100_000, admins=0,
                   moderators=min(2, members // 10), join_rule=rule)
        room = _Room(random.Random(f"many_rooms:{seed}:{i}"), _room_id(v, None, f"!room{i}:{SERVER}"), mix, v)
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
    *,
    room_version: str = "10",
) -> Iterator[Event]:
    """A room of ``n_members`` joined members, then ``n_branches`` branches of
    ``branch_len`` events from the same event, then one merge event whose prev_events
    are all the branch heads, then ``tail`` linear events.

    The branches change overlapping keys: membership of the same existing members (30%
    of branch events: profile changes, leaves, bans and unbans by the creator, rejoins),
    joins (or leaves) of newcomers drawn from a pool shared by all branches (55%; a
    newcomer often joins in several branches, and a key present in only some branches is
    conflicted too), topic (4%), power levels (2%), name (1%); the rest are messages
    from members joined on the branch, and 0.2% marked rejections. With the defaults the
    merge sees ~1,860 conflicted keys (~2,230 with 10 branches). After the merge the
    generator assumes the ``newest_event`` resolution (module docstring).
    """
    v = _version(room_version)
    rng = random.Random(f"fork_storm:{seed}")
    room = _Room(rng, _room_id(v, None, f"!storm{seed}:{SERVER}"), _Mix(), v)
    base = room.state
    yield from room.linear(itertools.chain(room.preamble(), room.staff_joins()))
    members = [room._fresh_user() for _ in range(n_members)]
    yield from room.linear(lambda st, u=u: room.member(st, u, "join", u) for u in members)
    pool_size = max(1, int(0.55 * n_branches * branch_len))
    newcomers = [f"@n{seed}x{i}:{SERVER}" for i in range(pool_size)]

    branches = [_State(base) for _ in range(n_branches)]
    order = [b for b in range(n_branches) for _ in range(branch_len)]
    rng.shuffle(order)
    creator = room.creator
    for b in order:
        st = branches[b]
        r = rng.random()
        ev = room.rejection(st) if r < room.mix.reject_rate else None
        if ev is not None:
            pass
        elif r < 0.30:
            user = rng.choice(members)
            current = room.membership(st, user)
            membership = _storm_transition(rng, current)
            sender = creator if membership == "ban" or current == "ban" else user
            extra = {"displayname": f"{b}.{room.made}"} if membership == current == "join" else {}
            ev = room.member(st, user, membership, sender, **extra)
        elif r < 0.85:
            user = rng.choice(newcomers)
            membership = "leave" if room.membership(st, user) == "join" else "join"
            ev = room.member(st, user, membership, user)
        elif r < 0.89:
            ev = room.make(st, "m.room.topic", {"topic": f"branch {b}"}, state_key="")
        elif r < 0.91:
            ev = room.power_levels(st)
        elif r < 0.92:
            ev = room.make(st, "m.room.name", {"name": f"storm {b}"}, state_key="")
        else:
            ev = room.message(st)
        st.prevs = [(ev["event_id"], ev["depth"])]
        yield ev

    _merge_into(base, branches)
    base.prevs = list(dict.fromkeys(br.prevs[0] for br in branches))
    ev = room.make(base, "m.room.message", {"msgtype": "m.text", "body": "merged"})
    base.prevs = [(ev["event_id"], ev["depth"])]
    yield ev
    for _ in range(tail):
        ev = room.random_event(base)
        base.prevs = [(ev["event_id"], ev["depth"])]
        yield ev


def _storm_transition(rng: random.Random, current: str | None) -> str:
    if current == "join":
        r = rng.random()
        return "join" if r < 0.3 else ("leave" if r < 0.95 else "ban")
    if current == "ban":
        return "leave"
    return "join"


# -- busy: many servers writing at once ------------------------------------------------

#: The most events a server of :func:`busy` lags behind: it has seen every event but the
#: last ``lag`` ones (1 <= lag <= _MAX_LAG), and its own. A server's forward extremities
#: are then at most its last event and the ``_MAX_LAG + 1`` events before its horizon,
#: so an event references all of them within 10 prev events, and its ancestors are
#: exactly the events its server saw.
_MAX_LAG = 8
#: Events kept to find forward extremities: every extremity of every server is among them.
_BUSY_WINDOW = 2 * _MAX_LAG + 4


class _Server:
    """What one server sees at the step being drawn: a view of the state and its
    forward extremities. Entries are looked up in the room's settled state (changes
    every server has seen) and its recent changes that this server has seen."""

    __slots__ = ("busy", "claims", "cutoff", "index", "_front")

    def __init__(self, busy: _Busy, index: int) -> None:
        self.busy = busy
        self.index = index
        self.cutoff = busy.t - busy.lags[index]  # it has seen the events before this seq
        self.claims: dict | None = None
        self._front: list[tuple] | None = None

    def get(self, key: str) -> _Entry | None:
        b = self.busy
        best = b.settled.get(key)
        recent = b.recent.get(key)
        if recent:
            cutoff, index = self.cutoff, self.index
            for seq, origin, e in recent:
                if (seq < cutoff or origin == index) and (
                    best is None or (e[1], e[0]) > (best[1], best[0])
                ):
                    best = e
        return best

    def put(self, key: str, entry: _Entry) -> None:
        b = self.busy
        b.recent.setdefault(key, []).append((b.t, self.index, entry))
        b.changes.append((b.t, key))

    def at(self, user: str) -> _Server:
        return self.busy.at(user)

    def free(self, user: str) -> bool:
        return True

    @property
    def front(self) -> list[tuple]:
        """The window records of this server's forward extremities, oldest first."""
        if self._front is None:
            cutoff, index = self.cutoff, self.index
            seen = [w for w in self.busy.window if w[0] < cutoff or w[4] == index]
            referenced = {p for w in seen for p in w[3]}
            self._front = [w for w in seen if w[0] not in referenced]
        return self._front

    @property
    def prevs(self) -> list[_Ref]:
        return [(w[1], w[2]) for w in self.front]


class _Busy:
    """The DAG and state of a busy room as its servers see them (see _MAX_LAG)."""

    def __init__(self, lags: list[int], server_of: dict[str, int]) -> None:
        self.lags = lags
        self.server_of = server_of
        self.t = 0  # the sequence number of the event being drawn
        self.window: deque[tuple] = deque()  # (seq, event_id, depth, prev seqs, server)
        self.settled: dict[str, _Entry] = {}
        self.recent: dict[str, list[tuple[int, int, _Entry]]] = {}
        self.changes: deque[tuple[int, str]] = deque()  # (seq, key) of recent changes
        self.servers: dict[int, _Server] = {}

    def at(self, user: str) -> _Server:
        index = self.server_of[user]
        s = self.servers.get(index)
        if s is None:
            s = self.servers[index] = _Server(self, index)
        return s

    def record(self, ev: Event) -> None:
        """``ev`` was made (in its sender's view): on to the next step."""
        s = self.at(ev["sender"])
        front = s.front
        assert 0 < len(front) <= 10 or ev["type"] == CREATE
        self.window.append((self.t, ev["event_id"], ev["depth"], tuple(w[0] for w in front), s.index))
        if len(self.window) > _BUSY_WINDOW:
            self.window.popleft()
        self.t += 1
        self.servers = {}
        horizon = self.t - _MAX_LAG  # every server has seen the events before it
        changes, recent, settled = self.changes, self.recent, self.settled
        while changes and changes[0][0] < horizon:
            _, key = changes.popleft()
            entries = recent[key]
            _, _, e = entries.pop(0)
            if not entries:
                del recent[key]
            o = settled.get(key)
            if o is None or (e[1], e[0]) > (o[1], o[0]):
                settled[key] = e


def busy(
    n_events: int,
    n_senders: int = 1000,
    seed: int = 0,
    *,
    n_servers: int = 20,
    room_version: str = "10",
) -> Iterator[Event]:
    """A public room written by ``n_senders`` users on ``n_servers`` servers at once.

    Each server lags 1–8 events behind the room (its own events it sees at once) and
    makes its events on all its forward extremities, as a homeserver does: most events
    have 2–10 prev_events. Users are spread over the servers by a Zipf law (the first
    server is the largest; the creator, 2 admins and 6 moderators are drawn from the
    population). A drawn user who is not joined joins (or is unbanned by a moderator);
    a joined one sends a message (66%), changes their display name (8%), sets one of 64
    ``org.example.state`` keys (8%), the topic (3%; topic and custom state need no
    power here), leaves (2%), is kicked (1%) or banned (0.3%); power levels change about
    once per 4·10^4 events; 0.2% are marked rejections. Display names, topics and custom
    state change on several branches at once, so merges conflict; the state each event
    is made in is exactly the ``newest_event`` state before it.
    """
    if n_senders < 9 or n_servers < 1:
        raise ValueError("need n_senders >= 9 and n_servers >= 1")
    v = _version(room_version)
    rng = random.Random(f"busy:{seed}")
    servers = [f"s{i}.{SERVER}" for i in range(n_servers)]
    lags = [rng.randint(1, _MAX_LAG) for _ in servers]
    cum = list(itertools.accumulate(1 / (i + 1) for i in range(n_servers)))
    homes = [0] + rng.choices(range(n_servers), cum_weights=cum, k=n_senders - 1)
    population = [f"@p{k}:{servers[h]}" for k, h in enumerate(homes)]
    b = _Busy(lags, dict(zip(population, homes, strict=True)))
    mix = _Mix(open_state=True, admins=2, moderators=6)
    room_id = None if v.room_id_from_create else f"!busy{seed}:{servers[0]}"
    room = _Room(rng, room_id, mix, v, creator=population[0])
    room.staff.extend(rng.sample(population[1:], mix.admins + mix.moderators))
    emitted = 0
    for make in room.preamble():
        if emitted == n_events:
            return
        ev = make(b.at(room.creator))
        b.record(ev)
        emitted += 1
        yield ev
    while emitted < n_events:
        ev = _busy_event(room, b, population)
        b.record(ev)
        emitted += 1
        yield ev


def _busy_event(room: _Room, b: _Busy, population: list[str]) -> Event:
    rng = room.rng
    if rng.random() < room.mix.reject_rate:
        ev = room.rejection(b.at(room.creator))
        if ev is not None:
            return ev
    for _ in range(6):
        user = rng.choice(population)
        st = b.at(user)
        if not st.front:
            continue  # its server has not seen the room yet
        current = room.membership(st, user)
        if current == "ban":
            ev = room.moderate(st, user, "leave")
            if ev is not None:
                return ev
            continue
        if current != "join":
            rule = st.get(_JR)
            if current == "invite" or rule is not None and rule[2] == "public":
                return room.member(st, user, "join", user, displayname=user[1:].split(":")[0])
            continue
        r = rng.random()
        if r < 0.66:
            break
        if r < 0.74:
            return room.member(st, user, "join", user, displayname=f"{user[2:6]} {room.made}")
        if r < 0.82:
            key = f"k{rng.randrange(64)}"
            return room.make(st, "org.example.state", {"v": room.made}, state_key=key, sender=user)
        if r < 0.85:
            return room.make(st, "m.room.topic", {"topic": f"topic {room.made}"}, state_key="",
                             sender=user)
        if r < 0.87:
            return room.member(st, user, "leave", user)
        if r < 0.883:
            ev = room.moderate(st, user, "leave" if r < 0.88 else "ban")
            if ev is not None:
                return ev
            break
        if r < 0.883 + 2.5e-5:
            return room.power_levels(st)
        break
    else:
        user, st = room.creator, b.at(room.creator)
    return room.make(st, "m.room.message", {"msgtype": "m.text", "body": f"message {room.made}"},
                     sender=user)
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


def expected_rejection(event: Event) -> str | None:
    """Why ``event`` was generated to fail the authorization rules; None if it was not.

    >>> sorted({expected_rejection(e) for e in hq(5000, seed=1)} - {None})
    ['join by a banned user', 'sender is not joined', 'sender may not change m.room.power_levels']
    """
    unsigned = event.get("unsigned")
    return unsigned.get(REJECTION_MARK) if unsigned else None


def expected_rejections(events: Iterable[Event]) -> dict[str, str]:
    """``{event_id: reason}`` of the marked rejections among ``events``."""
    return {ev["event_id"]: r for ev in events if (r := expected_rejection(ev)) is not None}


def count_stats(events: Iterable[Event]) -> dict[str, Any]:
    """Shape statistics of a history, streaming.

    Keys: ``events``, ``rooms``, ``state_events``, ``state_fraction`` (state / all),
    ``member_fraction`` (m.room.member / state), ``power_levels`` (count, marked
    rejections left out),
    ``state_keys`` (distinct (room, type, state_key)), ``new_member_ratio`` (distinct
    member keys / membership events), ``mean_prevs`` (over events that have prevs),
    ``max_prevs``, ``merges`` (events with more than one prev), ``max_depth``,
    ``prev_counts`` (``{number of prev events: events}``), ``rejections`` (marked, see
    :func:`expected_rejection`) and ``rejection_share``.
    """
    n = n_state = n_member = n_pl = n_with_prevs = total_prevs = max_prevs = merges = 0
    rejections = 0
    prev_counts: dict[int, int] = {}
    max_depth = 0
    rooms = set()
    keys = set()
    member_keys = 0
    for ev in events:
        n += 1
        room = ev.get("room_id") or "!" + ev["event_id"][1:]  # v12 create: no room_id
        rooms.add(room)
        rejections += expected_rejection(ev) is not None
        prevs = len(ev.get("prev_events", ()))
        prev_counts[prevs] = prev_counts.get(prevs, 0) + 1
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
            n_pl += expected_rejection(ev) is None
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
        "prev_counts": dict(sorted(prev_counts.items())),
        "rejections": rejections,
        "rejection_share": rejections / n if n else 0.0,
    }
