"""Rooms and events in PDU shape for the authorization-rules tests (shared by the spec
tests and the differential tests against Synapse)."""
ALL_VERSIONS = [str(v) for v in range(1, 13)]

CREATOR = "@alice:a.test"
MOD = "@mod:a.test"  # power level 50
MOD2 = "@mod2:b.test"  # power level 50
USER = "@user:b.test"  # joined, power level 0
SAME = "@carol:a.test"  # joined, power level 0, the creator's server
BANNED = "@banned:b.test"
INVITED = "@invited:b.test"
KNOCKER = "@knocker:b.test"  # v7+: membership knock
LEFT = "@left:b.test"
NEW = "@new:b.test"  # no membership at all


def versions(spec: str) -> "list[str]":
    """``"1-5,12"`` -> ["1", ..., "5", "12"]."""
    out = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.extend(str(v) for v in range(int(lo), int(hi or lo) + 1))
    return out


def room_id(v: str) -> str:
    return "!create" if v == "12" else "!room:a.test"


def create_id(v: str) -> str:
    return "$create" if v == "12" else "$create:a.test"


def create_event(v: str, *, sender=CREATOR, **content) -> dict:
    content.setdefault("room_version", v)
    if int(v) < 11:
        content.setdefault("creator", sender)
    ev = {"type": "m.room.create", "state_key": "", "sender": sender, "content": content,
          "event_id": create_id(v), "prev_events": [], "auth_events": [], "origin_server_ts": 0, "depth": 1}
    if v != "12":
        ev["room_id"] = room_id(v)
    return ev


_counter = [0]


def event(v: str, etype: str, sender: str, content=None, *, state_key=None, **fields) -> dict:
    _counter[0] += 1
    ev = {"type": etype, "sender": sender, "content": {} if content is None else content,
          "room_id": room_id(v), "event_id": f"$e{_counter[0]}:{sender.partition(':')[2] or 'x.test'}",
          "prev_events": ["$prev:a.test"], "auth_events": [], "origin_server_ts": 0, "depth": 5}
    if state_key is not None:
        ev["state_key"] = state_key
    ev.update(fields)
    return ev


def member(v: str, target: str, membership: str, sender=None, **content) -> dict:
    content["membership"] = membership
    return event(v, "m.room.member", sender or target, content, state_key=target)


def power_levels(v: str, sender=CREATOR, **content) -> dict:
    return event(v, "m.room.power_levels", sender, content, state_key="")


def join_rules(v: str, rule: str, sender=CREATOR) -> dict:
    return event(v, "m.room.join_rules", sender, {"join_rule": rule}, state_key="")


def base_levels(v: str) -> dict:
    users = {MOD: 50, MOD2: 50}
    if v != "12":
        users[CREATOR] = 100
    return {"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
            "ban": 50, "kick": 50, "redact": 75, "invite": 50,
            "events": {"m.room.power_levels": 50, "m.room.name": 100},
            "notifications": {"room": 100}}


def state_of(*events) -> dict:
    return {(e["type"], e["state_key"]): e for e in events}


def base_room(v: str, *, levels=None, rule="public", create=None, extra=()) -> dict:
    """A room: creator, two moderators, users in every membership, a join rule."""
    create = create or create_event(v)
    evs = [create, member(v, CREATOR, "join"), power_levels(v, **(levels or base_levels(v))),
           join_rules(v, rule)]
    for u in (MOD, MOD2, USER, SAME):
        evs.append(member(v, u, "join"))
    evs.append(member(v, BANNED, "ban", sender=MOD))
    evs.append(member(v, INVITED, "invite", sender=MOD))
    evs.append(member(v, LEFT, "leave"))
    if int(v) >= 7:
        evs.append(member(v, KNOCKER, "knock"))
    evs.extend(extra)
    return state_of(*evs)
