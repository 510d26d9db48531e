"""The authorization rules of room versions 1–12, and the auth events selection.

Sources (the authority): the Matrix specification, server-server API "Checks performed
on receipt of a PDU", "Auth events selection" and "Definitions", and the "Authorization
rules" section of each room version page (spec.matrix.org ``/rooms/v1`` … ``/rooms/v12``);
the defaults of ``m.room.power_levels`` come from its event schema in the client-server
API.  Comments cite the rules by number.  The numbering differs between versions, so a
comment gives the number of each family, e.g. ``# 5.3.2 / 4.3.2 / 5.3.2`` for
v1–v5 / v6–v11 / v12 (see :class:`_Numbers`), and the reasons returned carry the number
of the room version checked: ``"rule 4.3.3: sender is banned"``.

Events are plain dicts in PDU shape (``type``, ``state_key``, ``sender``, ``content``,
``room_id``, ``event_id``, ``prev_events``, ``redacts``…).  A state or a set of auth
events is a mapping ``(type, state_key) -> event dict``.

What is the caller's, not this module's:

- **Signatures.**  The rules ask that an event be signed by its sender's server (and
  in v1–v2 by the server of its event ID), that a ``join_authorised_via_users_server``
  join be signed by the authorising user's server (v8+ rule 4.2.1 / v12 5.2.1), and that a
  third-party invite's ``signed`` block carry a signature that verifies under one of the
  ``m.room.third_party_invite`` event's public keys (4.4.1.7 / 5.3.1.7).  This module
  checks the *structure* of those (a ``signed`` block with ``mxid``, ``token`` and at least
  one ``ed25519`` signature; an invite event with at least one public key) and nothing
  cryptographic: a homeserver verifies signatures on receipt, before these rules.
- **Rejected auth events** are recognised by a true ``rejected`` key in their dict.
- **In room version 12** the create event is not among an event's ``auth_events``: a
  caller checking an event against its auth events puts the room's create event into
  the mapping given to :func:`check` itself, and gives it to :func:`check_auth_events`.

Where the specification leaves a case open, the choice made is said where it is made.
"""
import re
from typing import Mapping, Optional

from .versions import RoomVersion, VERSIONS, room_version

__all__ = [
    "CREATE", "MEMBER", "JOIN_RULES", "POWER_LEVELS", "THIRD_PARTY_INVITE",
    "PRIVILEGED_LEVEL", "auth_types_for_event", "check_auth_events", "check",
    "power_level_of", "named_level", "required_level", "creators", "is_valid_user_id",
]

CREATE = "m.room.create"
MEMBER = "m.room.member"
JOIN_RULES = "m.room.join_rules"
POWER_LEVELS = "m.room.power_levels"
THIRD_PARTY_INVITE = "m.room.third_party_invite"
ALIASES = "m.room.aliases"
REDACTION = "m.room.redaction"

CREATE_KEY = (CREATE, "")
POWER_LEVELS_KEY = (POWER_LEVELS, "")
JOIN_RULES_KEY = (JOIN_RULES, "")

#: The level of a room creator in room version 12 ("infinitely high"): above every level
#: a v12 event can carry, since canonical JSON bounds integers to 2**53 - 1.
PRIVILEGED_LEVEL = 1 << 53

AUTHORISED_VIA = "join_authorised_via_users_server"

#: The levels named at the top of ``m.room.power_levels`` content, with their defaults
#: (event schema of m.room.power_levels: kick, ban, redact 50, invite 0, whether the
#: property or the whole event is missing; users_default and events_default 0,
#: state_default 50).
_TOP_LEVELS = ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite")
_NAMED_DEFAULTS = {"invite": 0, "kick": 50, "ban": 50, "redact": 50}

# Strings that v1–v9 accept as power levels (rooms/v1 "m.room.power_levels events accept
# values as strings"): base-10 digits, one optional sign, leading and trailing whitespace.
_STRINGY_LEVEL = re.compile(r"[ \t\n\r\f\v]*[+-]?[0-9]+[ \t\n\r\f\v]*\Z")


class _Numbers:
    """The rule numbers of one room version.

    Three families: v1–v5 keep rule 4 for ``m.room.aliases``; v6–v11 drop it (members
    are rule 4); v12 inserts rule 2 (the room ID names the create event).  Inside the
    member rule, v8 inserts 2 (``join_authorised_via_users_server``) and v7 adds knock.
    """

    def __init__(self, rv: RoomVersion):
        v12 = rv.room_id_from_create
        self.auth = 3 if v12 else 2
        self.federate = self.auth + 1
        self.aliases = 4 if rv.special_case_aliases else 0
        self.member = 5 if (v12 or rv.special_case_aliases) else 4
        self.joined = self.member + 1
        self.third_party = self.member + 2
        self.required = self.member + 3
        self.state_key = self.member + 4
        self.power = self.member + 5
        self.redaction = self.power + 1 if not rv.hash_ids else 0
        m = 3 if rv.restricted_join else 2
        self.join, self.invite, self.leave, self.ban = m, m + 1, m + 2, m + 3
        self.knock = m + 4 if rv.knock else 0
        self.unknown_membership = m + 5 if rv.knock else m + 4
        # Inside the power-levels rule: v10 puts two type checks before the check of
        # `users`, v12 one more after it (creators may not be listed).
        p = 3 if rv.integer_power_levels else 1
        self.pl_users = p
        self.pl_creators = p + 1 if rv.privileged_creators else 0
        q = p + (2 if rv.privileged_creators else 1)
        self.pl_no_previous = q
        self.pl_top, self.pl_events_old, self.pl_events_new = q + 1, q + 2, q + 3
        self.pl_users_old, self.pl_users_new = q + 4, q + 5


_NUMBERS = {ident: _Numbers(rv) for ident, rv in VERSIONS.items()}


def _version(rv) -> RoomVersion:
    return rv if isinstance(rv, RoomVersion) else room_version(rv)


def _reject(rule, why: str) -> str:
    return f"rule {rule}: {why}"


def _content(event) -> dict:
    content = event.get("content")
    return content if isinstance(content, dict) else {}


def _membership(event) -> Optional[str]:
    """The membership of an ``m.room.member`` event (None for no such event)."""
    if event is None:
        return None
    m = _content(event).get("membership")
    return m if isinstance(m, str) else None


def _domain(user_id) -> str:
    """The server name of a user ID, room ID or v1–v2 event ID (after the first colon)."""
    if not isinstance(user_id, str):
        return ""
    _, colon, domain = user_id.partition(":")
    return domain if colon else ""


def _ref_id(ref):
    """An event ID from a reference: an ID, or an ``[id, hashes]`` pair (v1–v2)."""
    if isinstance(ref, (list, tuple)) and ref:
        return ref[0]
    return ref


def is_valid_user_id(user_id) -> bool:
    """``@localpart:domain`` (appendices, "User Identifiers"): a string of at most 255
    bytes, the sigil, a non-empty localpart without a colon, a non-empty server name.
    The server-name grammar itself is not checked here."""
    if not isinstance(user_id, str) or not user_id.startswith("@"):
        return False
    local, colon, domain = user_id[1:].partition(":")
    return bool(colon and local and domain) and len(user_id.encode("utf-8")) <= 255


# -- power levels -------------------------------------------------------------------------

def _as_level(value, rv: RoomVersion):
    """A power-level value as an int, or None if the room version does not take it.

    v10+: integers only (rooms/v10 "Values in m.room.power_levels events must be
    integers").  v1–v9 also take strings of an integer (rooms/v1 "accept values as
    strings"); v1–v5, without canonical-JSON rules, also floats, truncated (rooms/v1
    "accept values as floats"; infinities and NaN refused).  Booleans are never levels.
    """
    if type(value) is int:
        return value
    if rv.integer_power_levels:
        return None
    if type(value) is str:
        return int(value) if _STRINGY_LEVEL.match(value) else None
    if type(value) is float and not rv.strict_canonical_json:
        if value != value or value in (float("inf"), float("-inf")):
            return None
        return int(value)
    return None


def _level_in(mapping, key, rv: RoomVersion):
    """The parsed level at ``mapping[key]``; None when absent or not a level.

    A value a version does not take is read as absent: in v1–v9 the rules validate only
    ``users`` (rule 10.1 / 9.1), so an accepted power-levels event may carry other values
    the spec gives no meaning to.
    """
    if not isinstance(mapping, dict) or key not in mapping:
        return None
    return _as_level(mapping[key], rv)


def creators(create_event, rv) -> "set[str]":
    """The room creators (v12: the create event's sender plus ``additional_creators``;
    before: the one creator, ``content.creator`` in v1–v10 and the sender from v11)."""
    rv = _version(rv)
    if create_event is None:
        return set()
    if rv.privileged_creators:
        extra = _content(create_event).get("additional_creators")
        out = {u for u in extra if isinstance(u, str)} if isinstance(extra, list) else set()
        out.add(create_event.get("sender"))
        return out
    return {_creator(create_event, rv)}


def _creator(create_event, rv: RoomVersion):
    if rv.implicit_room_creator:
        return create_event.get("sender")
    return _content(create_event).get("creator")


def power_level_of(user_id, auth_state: Mapping, rv) -> int:
    """The power level of ``user_id`` in ``auth_state``.

    v12: a creator's is :data:`PRIVILEGED_LEVEL`.  With a power-levels event: its
    ``users`` entry, else ``users_default``, else 0.  Without one, the creator has 100 and
    everyone else 0 (event schema of m.room.power_levels).
    """
    rv = _version(rv)
    create = auth_state.get(CREATE_KEY)
    if rv.privileged_creators and create is not None and user_id in creators(create, rv):
        return PRIVILEGED_LEVEL
    pl = auth_state.get(POWER_LEVELS_KEY)
    if pl is None:
        if create is not None and user_id == _creator(create, rv):
            return 100
        return 0
    content = _content(pl)
    level = _level_in(content.get("users"), user_id, rv)
    if level is None:
        level = _level_in(content, "users_default", rv)
    return 0 if level is None else level


def named_level(name: str, auth_state: Mapping, rv) -> int:
    """The *invite*, *kick*, *ban* or *redact level* (server-server API, "Definitions")."""
    pl = auth_state.get(POWER_LEVELS_KEY)
    level = None if pl is None else _level_in(_content(pl), name, _version(rv))
    return _NAMED_DEFAULTS[name] if level is None else level


def required_level(event_type: str, is_state: bool, auth_state: Mapping, rv) -> int:
    """The *required power level* of an event type: ``events[type]``, else
    ``state_default`` (50) for a state event or ``events_default`` (0) for another."""
    rv = _version(rv)
    pl = auth_state.get(POWER_LEVELS_KEY)
    content = _content(pl) if pl is not None else {}
    level = _level_in(content.get("events"), event_type, rv)
    if level is None:
        level = _level_in(content, "state_default" if is_state else "events_default", rv)
    if level is None:
        level = 50 if is_state else 0
    return level


# -- auth events selection ----------------------------------------------------------------

def auth_types_for_event(event, rv) -> "set[tuple[str, str]]":
    """The ``(type, state_key)`` keys the auth events selection allows for ``event``.

    Server-server API, "Auth events selection": none for the create event; else the
    create event (not in v12: rooms/v12 rule 3.2), the power levels, the sender's member
    event; for a member event also the target's, the join rules when joining, inviting
    or knocking (the knock rules read the join rule, 4.7.1 / 5.7.1, so knocks select it
    as homeservers do), the third-party invite named by ``signed.token`` of an invite,
    and (v8+) the member event of ``join_authorised_via_users_server`` of a join.
    """
    rv = _version(rv)
    etype = event.get("type")
    if etype == CREATE:
        return set()
    keys = {POWER_LEVELS_KEY, (MEMBER, event.get("sender"))}
    if not rv.room_id_from_create:
        keys.add(CREATE_KEY)
    if etype == MEMBER:
        content = _content(event)
        membership = content.get("membership")
        keys.add((MEMBER, event.get("state_key")))
        if membership in ("join", "invite", "knock"):
            keys.add(JOIN_RULES_KEY)
        if membership == "invite":
            tpi = content.get("third_party_invite")
            signed = tpi.get("signed") if isinstance(tpi, dict) else None
            token = signed.get("token") if isinstance(signed, dict) else None
            if isinstance(token, str):
                keys.add((THIRD_PARTY_INVITE, token))
        if rv.restricted_join and membership == "join":
            via = content.get(AUTHORISED_VIA)
            if isinstance(via, str):
                keys.add((MEMBER, via))
    return keys


def check_auth_events(event, auth_events, rv, create_event=None) -> Optional[str]:
    """The rules on the event's own ``auth_events`` (given as event dicts), before any
    state: rule 1 for a create event; else rule 2 (v1–v11) / 3 (v12), and in v12 rule 2
    when the room's ``create_event`` is given.  None when they pass, else the reason.
    """
    rv = _version(rv)
    n = _NUMBERS[rv.identifier]
    if event.get("type") == CREATE:
        return _check_create(event, rv)
    if rv.room_id_from_create and create_event is not None:
        reason = _check_room_id_names_create(event, create_event)
        if reason is not None:
            return reason
    allowed = auth_types_for_event(event, rv)
    room_id = event.get("room_id")
    seen = set()
    for auth_event in auth_events:
        key = (auth_event.get("type"), auth_event.get("state_key"))
        # v12 3.5; in v1–v11 the auth events are "a subset of the room state"
        # (auth events selection), so never another room's.
        if auth_event.get("room_id", room_id) != room_id and not (
            rv.room_id_from_create and key == CREATE_KEY
        ):
            return _reject(f"{n.auth}.5" if rv.room_id_from_create else f"{n.auth}",
                           f"auth event {auth_event.get('event_id')} is of another room")
        if key in seen:  # 2.1 / 3.1
            return _reject(f"{n.auth}.1", f"duplicate auth events for {key}")
        seen.add(key)
        if key not in allowed:  # 2.2 / 3.2 (v12: the create event is never selected)
            return _reject(f"{n.auth}.2", f"auth event {key} is not one the auth events selection allows")
        if auth_event.get("rejected"):  # 2.3 / 3.3
            return _reject(f"{n.auth}.3", f"auth event {auth_event.get('event_id')} was rejected")
    if not rv.room_id_from_create and CREATE_KEY not in seen:  # 2.4
        return _reject(f"{n.auth}.4", "no m.room.create event among the auth events")
    return None


# -- the rules ----------------------------------------------------------------------------

def _check_create(event, rv: RoomVersion) -> Optional[str]:
    if event.get("prev_events"):  # 1.1
        return _reject("1.1", "the create event has prev_events")
    if rv.room_id_from_create:
        if "room_id" in event:  # v12 1.2
            return _reject("1.2", "the create event has a room_id")
    elif _domain(event.get("room_id")) != _domain(event.get("sender")):  # 1.2
        return _reject("1.2", "the room ID's domain is not the sender's")
    content = _content(event)
    if "room_version" in content and content["room_version"] not in VERSIONS:  # 1.3
        return _reject("1.3", f"unknown room version {content['room_version']!r}")
    if not rv.implicit_room_creator and "creator" not in content:  # v1–v10 1.4
        return _reject("1.4", "the create event's content has no creator")
    if rv.privileged_creators and "additional_creators" in content:  # v12 1.4
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
            return _reject("1.4", "additional_creators is not an array of user IDs")
    return None  # 1.5


def _check_room_id_names_create(event, create) -> Optional[str]:
    """v12 rule 2: the room ID is the event ID of an accepted create event with ``!``."""
    create_id = create.get("event_id")
    if (
        create.get("rejected")
        or not isinstance(create_id, str)
        or event.get("room_id") != "!" + create_id[1:]
    ):
        return _reject("2", "the room ID does not name an accepted m.room.create event")
    return None


def check(event, auth_state: Mapping, rv) -> Optional[str]:
    """The authorization rules for ``event`` against ``auth_state`` (its auth events, the
    create event included in every version, or the state before it).

    None when the event is allowed, else the reason: ``"rule N.M: ..."``.  Rule 2 / 3's
    checks of the auth events list are :func:`check_auth_events`'s; this function checks
    what they say of a state (a create event is there).
    """
    rv = _version(rv)
    n = _NUMBERS[rv.identifier]
    etype = event.get("type")
    if etype == CREATE:  # 1
        return _check_create(event, rv)
    create = auth_state.get(CREATE_KEY)
    if create is None:  # 2.4 (v12: 2, the room has no create event)
        return _reject("2" if rv.room_id_from_create else f"{n.auth}.4",
                       "no m.room.create event in the state")
    if rv.room_id_from_create:  # v12 2
        reason = _check_room_id_names_create(event, create)
        if reason is not None:
            return reason
    sender = event.get("sender")
    # 3 / 3 / 4: m.federate is read as the spec writes it, "set to false".
    if _content(create).get("m.federate") is False and _domain(sender) != _domain(create.get("sender")):
        return _reject(n.federate, "the room is not federated and the sender is of another server")

    if n.aliases and etype == ALIASES:  # v1–v5 4
        if "state_key" not in event:  # 4.1
            return _reject("4.1", "m.room.aliases without a state_key")
        if event["state_key"] != _domain(sender):  # 4.2
            return _reject("4.2", "the state_key of m.room.aliases is not the sender's domain")
        return None  # 4.3

    if etype == MEMBER:  # 5 / 4 / 5
        return _check_member(event, auth_state, rv, n, create)

    sender_membership = _membership(auth_state.get((MEMBER, sender)))
    if sender_membership != "join":  # 6 / 5 / 6
        return _reject(n.joined, "the sender is not joined to the room")

    sender_level = power_level_of(sender, auth_state, rv)
    if etype == THIRD_PARTY_INVITE:  # 7 / 6 / 7
        if sender_level >= named_level("invite", auth_state, rv):  # 7.1
            return None
        return _reject(f"{n.third_party}.1", "the sender's power level is below the invite level")

    is_state = "state_key" in event
    if required_level(etype, is_state, auth_state, rv) > sender_level:  # 8 / 7 / 8
        return _reject(n.required, f"the sender's power level is below the level {etype} requires")

    state_key = event.get("state_key")
    if isinstance(state_key, str) and state_key.startswith("@") and state_key != sender:  # 9 / 8 / 9
        return _reject(n.state_key, "the state_key is another user's ID")

    if etype == POWER_LEVELS:  # 10 / 9 / 10
        return _check_power_levels(event, auth_state, rv, n, sender_level, create)

    if n.redaction and etype == REDACTION:  # v1–v2 11
        if sender_level >= named_level("redact", auth_state, rv):  # 11.1
            return None
        if _domain(event.get("redacts")) == _domain(event.get("event_id")) != "":  # 11.2
            return None
        return _reject("11.3", "the sender may not redact an event of another server")
    return None  # 11 / 10 / 11 (v1–v2: 12)


def _check_member(event, auth_state, rv: RoomVersion, n: _Numbers, create) -> Optional[str]:
    m = n.member
    content = event.get("content")
    if "state_key" not in event or not isinstance(content, dict) or "membership" not in content:
        return _reject(f"{m}.1", "m.room.member without a state_key or content.membership")
    # v8+ 4.2.1 / v12 5.2.1 (join_authorised_via_users_server signed by its server): the
    # caller's, with every signature check (module docstring).
    membership = content["membership"]
    sender = event.get("sender")
    target = event["state_key"]
    sender_membership = _membership(auth_state.get((MEMBER, sender)))
    target_membership = _membership(auth_state.get((MEMBER, target)))
    jr = auth_state.get(JOIN_RULES_KEY)
    # No join rules event: "invite", as homeservers read it (the spec names no default).
    join_rule = _content(jr).get("join_rule", "invite") if jr is not None else "invite"

    if membership == "join":
        j = f"{m}.{n.join}"
        prev = event.get("prev_events") or []
        if (  # .1: the creator's first join
            len(prev) == 1
            and _ref_id(prev[0]) == create.get("event_id")
            and target == _creator(create, rv)
        ):
            return None
        if sender != target:  # .2
            return _reject(f"{j}.2", "the sender may not join another user")
        if sender_membership == "ban":  # .3
            return _reject(f"{j}.3", "the sender is banned")
        if join_rule == "invite" or (rv.knock and join_rule == "knock"):  # .4
            if sender_membership in ("invite", "join"):
                return None
            return _reject(f"{j}.{7 if rv.restricted_join else 6}", "the sender is not invited")
        if rv.restricted_join and (
            join_rule == "restricted" or (rv.knock_restricted and join_rule == "knock_restricted")
        ):  # v8+ .5
            if sender_membership in ("invite", "join"):  # .5.1
                return None
            via = content.get(AUTHORISED_VIA)
            # .5.2: "a user with sufficient permission to invite other users": joined
            # (invite rule .2) with at least the invite level (invite rule .4).
            if not (
                isinstance(via, str)
                and _membership(auth_state.get((MEMBER, via))) == "join"
                and power_level_of(via, auth_state, rv) >= named_level("invite", auth_state, rv)
            ):
                return _reject(f"{j}.5.2", f"{AUTHORISED_VIA} is not a user who may invite")
            return None  # .5.3
        if join_rule == "public":  # .5 / .6
            return None
        return _reject(f"{j}.{7 if rv.restricted_join else 6}", f"join rule {join_rule!r} does not allow the join")

    if membership == "invite":
        i = f"{m}.{n.invite}"
        if "third_party_invite" in content:  # .1
            return _check_third_party_invite(event, content, auth_state, f"{i}.1", target_membership)
        if sender_membership != "join":  # .2
            return _reject(f"{i}.2", "the sender is not joined to the room")
        if target_membership in ("join", "ban"):  # .3
            return _reject(f"{i}.3", f"the target is already {'joined' if target_membership == 'join' else 'banned'}")
        if power_level_of(sender, auth_state, rv) >= named_level("invite", auth_state, rv):  # .4
            return None
        return _reject(f"{i}.5", "the sender's power level is below the invite level")

    if membership == "leave":
        lv = f"{m}.{n.leave}"
        if sender == target:  # .1
            if sender_membership in ("invite", "join") or (rv.knock and sender_membership == "knock"):
                return None
            return _reject(f"{lv}.1", f"the sender may not leave from membership {sender_membership!r}")
        if sender_membership != "join":  # .2
            return _reject(f"{lv}.2", "the sender is not joined to the room")
        sender_level = power_level_of(sender, auth_state, rv)
        if target_membership == "ban" and sender_level < named_level("ban", auth_state, rv):  # .3
            return _reject(f"{lv}.3", "the sender's power level is below the ban level (unban)")
        if _may_remove(sender_level, target, "kick", auth_state, rv):  # .4
            return None
        return _reject(f"{lv}.5", "the sender may not kick the target")

    if membership == "ban":
        b = f"{m}.{n.ban}"
        if sender_membership != "join":  # .1
            return _reject(f"{b}.1", "the sender is not joined to the room")
        if _may_remove(power_level_of(sender, auth_state, rv), target, "ban", auth_state, rv):  # .2
            return None
        return _reject(f"{b}.3", "the sender may not ban the target")

    if rv.knock and membership == "knock":  # v7+
        k = f"{m}.{n.knock}"
        if not (join_rule == "knock" or (rv.knock_restricted and join_rule == "knock_restricted")):  # .1
            return _reject(f"{k}.1", f"join rule {join_rule!r} does not allow knocking")
        if sender != target:  # .2
            return _reject(f"{k}.2", "the sender may not knock for another user")
        if sender_membership not in ("ban", "invite", "join"):  # .3
            return None
        return _reject(f"{k}.4", f"the sender may not knock from membership {sender_membership!r}")

    return _reject(f"{m}.{n.unknown_membership}", f"unknown membership {membership!r}")


def _may_remove(sender_level, target, level_name, auth_state, rv) -> bool:
    """Kick and ban (leave .4, ban .2): the sender's level is at least the *kick* or *ban
    level*, and the target's is below the sender's."""
    return (
        sender_level >= named_level(level_name, auth_state, rv)
        and power_level_of(target, auth_state, rv) < sender_level
    )


def _check_third_party_invite(event, content, auth_state, r: str, target_membership) -> Optional[str]:
    """Rule 5.3.1 / 4.3.1 / 4.4.1 / 5.4.1 (prefix ``r``): an invite of a third party."""
    if target_membership == "ban":  # .1
        return _reject(f"{r}.1", "the target is banned")
    tpi = content["third_party_invite"]
    signed = tpi.get("signed") if isinstance(tpi, dict) else None
    if not isinstance(signed, dict):  # .2
        return _reject(f"{r}.2", "third_party_invite has no signed object")
    if "mxid" not in signed or "token" not in signed:  # .3
        return _reject(f"{r}.3", "signed has no mxid or no token")
    if signed["mxid"] != event.get("state_key"):  # .4
        return _reject(f"{r}.4", "signed.mxid is not the state_key")
    token = signed["token"]
    invite = auth_state.get((THIRD_PARTY_INVITE, token)) if isinstance(token, str) else None
    if invite is None:  # .5
        return _reject(f"{r}.5", "no m.room.third_party_invite for the token")
    if invite.get("sender") != event.get("sender"):  # .6
        return _reject(f"{r}.6", "the sender is not the sender of the m.room.third_party_invite")
    # .7: a signature of `signed` matches a public key of the invite.  Verifying it is
    # the caller's (module docstring); the structure is checked here: one ed25519
    # signature at least, one public key at least.
    if _has_signature(signed) and _public_keys(_content(invite)):
        return None
    return _reject(f"{r}.8", "no signature of signed can match a public key of the invite")


def _has_signature(signed) -> bool:
    sigs = signed.get("signatures")
    if not isinstance(sigs, dict):
        return False
    return any(
        isinstance(block, dict)
        and any(isinstance(k, str) and k.startswith("ed25519:") and isinstance(v, str) for k, v in block.items())
        for block in sigs.values()
    )


def _public_keys(invite_content) -> list:
    keys = []
    if isinstance(invite_content.get("public_key"), str):
        keys.append(invite_content["public_key"])
    more = invite_content.get("public_keys")
    if isinstance(more, list):
        keys.extend(k["public_key"] for k in more if isinstance(k, dict) and isinstance(k.get("public_key"), str))
    return keys


def _check_power_levels(event, auth_state, rv: RoomVersion, n: _Numbers, sender_level, create) -> Optional[str]:
    p = n.power
    new = event.get("content")
    if not isinstance(new, dict):
        new = {}
    if rv.integer_power_levels:
        for key in _TOP_LEVELS:  # v10+ .1
            if key in new and type(new[key]) is not int:
                return _reject(f"{p}.1", f"{key} is not an integer")
        for key in ("events", "notifications"):  # v10+ .2
            if key in new and not (
                isinstance(new[key], dict) and all(type(v) is int for v in new[key].values())
            ):
                return _reject(f"{p}.2", f"{key} is not an object of integers")
    users = new.get("users")
    if "users" in new and not (
        isinstance(users, dict)
        and all(is_valid_user_id(u) and _as_level(v, rv) is not None for u, v in users.items())
    ):  # .1 / .3
        return _reject(f"{p}.{n.pl_users}", "users is not an object of user IDs to levels")
    if n.pl_creators and isinstance(users, dict):  # v12 .4
        if any(u in users for u in creators(create, rv)):
            return _reject(f"{p}.{n.pl_creators}", "users names a room creator")
    old_event = auth_state.get(POWER_LEVELS_KEY)
    if old_event is None:  # .2 / .4 / .5
        return None
    old = _content(old_event)

    for key in _TOP_LEVELS:  # .3 / .5 / .6
        before, after = _level_in(old, key, rv), _level_in(new, key, rv)
        if before == after:
            continue
        if before is not None and before > sender_level:
            return _reject(f"{p}.{n.pl_top}.1", f"the current {key} is above the sender's level")
        if after is not None and after > sender_level:
            return _reject(f"{p}.{n.pl_top}.2", f"the new {key} is above the sender's level")

    maps = ("events", "notifications") if rv.limit_notifications_power_levels else ("events",)
    for prop in maps:  # .4 and .5 / .6 and .7 / .7 and .8
        reason = _check_level_map(old.get(prop), new.get(prop), rv, sender_level,
                                  f"{p}.{n.pl_events_old}.1", f"{p}.{n.pl_events_new}.1", prop, None)
        if reason is not None:
            return reason
    # .6 and .7 / .8 and .9 / .9 and .10
    return _check_level_map(old.get("users"), users, rv, sender_level,
                            f"{p}.{n.pl_users_old}.1", f"{p}.{n.pl_users_new}.1", "users", event.get("sender"))


def _check_level_map(old, new, rv, sender_level, old_rule, new_rule, prop, own) -> Optional[str]:
    """Entries of ``events``, ``notifications`` or ``users`` changed, added or removed.

    Changed or removed: the current value may not exceed the sender's level (for
    ``users``, other than the sender's own entry, not even equal it).  Added or changed:
    the new value may not exceed the sender's level.
    """
    old = old if isinstance(old, dict) else {}
    new = new if isinstance(new, dict) else {}
    for key in old.keys() | new.keys():
        before, after = _level_in(old, key, rv), _level_in(new, key, rv)
        if before == after:
            continue
        if before is not None:
            if own is not None and key != own:
                if before >= sender_level:
                    return _reject(old_rule, f"{prop}[{key!r}] is at or above the sender's level")
            elif before > sender_level:
                return _reject(old_rule, f"{prop}[{key!r}] is above the sender's level")
        if after is not None and after > sender_level:
            return _reject(new_rule, f"the new {prop}[{key!r}] is above the sender's level")
    return None
