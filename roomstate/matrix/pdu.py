"""Validation of Matrix events: a federation PDU or a client-format event, for a room version.

:func:`validate_event` checks an event mapping and returns a :class:`MatrixEvent`:
the fields the engine stores and the authorization rules read, normalized
(event IDs of ``prev_events`` and ``auth_events`` as plain strings in every room
version; ``redacts`` from wherever the version keeps it). A bad event raises
:class:`~roomstate.errors.InvalidEventError` naming the field and the reason.
An event that is well formed but breaks an authorization rule (a create event
with ``prev_events``, a member event without ``membership``, ...) is *not* an
error here: that is the rules' verdict, a rejection.

What is required when (DESIGN.md section 2):

- ``auth_data=True`` (a store with ``check_auth`` on): ``type``, ``sender``,
  ``origin_server_ts``, ``depth``, ``prev_events``, ``auth_events``, ``content``,
  and ``room_id`` (not on a v12 create event), as the PDU formats of the spec
  require them. A client-format event (the client-server API's shape, without
  ``prev_events``, ``auth_events`` and ``depth``) cannot be checked against the
  rules and is refused, naming the first missing field.
- ``auth_data=False`` (``check_auth=False``): only ``type`` and ``room_id`` (and an
  ``event_id`` in room versions 1–2); every other field is checked when present.

``event_id`` is used as given; where it is absent (room versions 3 and later)
it is computed as the reference hash (:func:`~roomstate.matrix.compute_event_id`).
Whether a given ID matches the event's hash, and the ``hashes`` and
``signatures``, are the caller's to check: a homeserver does on receipt.
``hashes``, ``signatures`` and ``unsigned`` are accepted and not kept.

Room versions with ``strict_canonical_json`` (v6 and later) refuse floats and
integers outside [-(2**53)+1, 2**53-1] anywhere in the event but ``unsigned``
(which no hash or signature covers, and which relaying servers add to).
"""
from collections.abc import Mapping

from .._parse import MAX_DEPTH, MAX_PREVS, MEMBERSHIP_CODE, OTHER_MEMBERSHIP, ParsedEvent
from ..errors import InvalidEventError
from . import canonical
from .eventid import compute_event_id
from .versions import RoomVersion, room_version, version_of_create

__all__ = ["MAX_AUTH_EVENTS", "MAX_PREV_EVENTS", "MatrixEvent", "check_reference_counts", "validate_event"]

# The PDU format of every room version (server-server API, "Persistent Data Unit", rooms
# v1-v12): ``auth_events`` "Must contain less than or equal to 10 events" and
# ``prev_events`` "Must contain less than or equal to 20 events".  (Synapse refuses a
# received event over either limit, as a bad request, before storing it.)
MAX_AUTH_EVENTS = 10
MAX_PREV_EVENTS = 20

# Content keys the authorization rules read, by event type (rooms v1–v12, "Authorization rules").
_POWER_LEVEL_KEYS = (
    "users", "users_default", "events", "events_default", "state_default", "ban", "kick", "redact", "invite",
    "notifications",
)  # fmt: skip
_CREATE_KEYS = ("room_version", "creator", "m.federate", "additional_creators")
_THIRD_PARTY_INVITE_KEYS = ("public_key", "public_keys")
_INT64 = 2**63


class MatrixEvent:
    """A validated event: the fields the engine stores and the authorization rules read.

    ``prev_events`` holds each prev once, in the given order; ``auth_events`` is
    as given (duplicates included: the rules reject them). The content fields are
    None when the event's type has none of them: ``membership``,
    ``join_authorised_via_users_server`` and ``third_party_invite`` for
    ``m.room.member``; ``power_levels``, ``join_rules``, ``create`` and
    ``third_party_invite_keys`` (``public_key``/``public_keys``) as dicts of the
    keys the rules read from those state events, values as given.
    """

    __slots__ = (
        "room_version", "event_id", "room_id", "type", "state_key", "sender", "origin_server_ts", "depth",
        "prev_events", "auth_events", "membership", "join_authorised_via_users_server", "third_party_invite",
        "power_levels", "join_rules", "create", "third_party_invite_keys", "redacts", "rejected",
    )  # fmt: skip

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.pop(name, None))
        if fields:
            raise TypeError(f"unknown MatrixEvent fields: {', '.join(fields)}")

    def __repr__(self):
        return f"MatrixEvent({self.event_id!r}, type={self.type!r}, state_key={self.state_key!r})"

    def __eq__(self, other):
        if type(other) is not MatrixEvent:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value: not hashable

    def parsed(self):
        """The engine's simplified shape of this event (:class:`roomstate._parse.ParsedEvent`)."""
        membership = 0
        if self.membership is not None:
            membership = MEMBERSHIP_CODE.get(self.membership, OTHER_MEMBERSHIP)
        return ParsedEvent(
            self.event_id, self.room_id, self.type, self.state_key, list(self.prev_events), self.depth,
            bool(self.rejected), membership,
        )  # fmt: skip


def validate_event(ev, room_version=None, *, auth_data=True):
    """Validate an event of a room of ``room_version``; a :class:`MatrixEvent`.

    ``room_version`` (a RoomVersion or its identifier) may be omitted for a
    create event, whose ``content.room_version`` names it ("1" when absent);
    for any other event it is the room's version, which the caller knows.
    """
    if type(ev) is not dict and not isinstance(ev, Mapping):
        raise InvalidEventError("event", f"must be a mapping, got {type(ev).__name__}")
    given_id = ev.get("event_id")
    if given_id is not None or "event_id" in ev:
        given_id = _event_id(given_id, "event_id", None)

    type_ = _string(ev, "type", given_id, True)
    state_key = _string(ev, "state_key", given_id, False)
    content = ev.get("content")
    if content is None:
        if auth_data or "content" in ev:
            raise InvalidEventError("content", "missing" if "content" not in ev else "must be an object", given_id)
        content = {}
    elif type(content) is not dict and not isinstance(content, Mapping):
        raise InvalidEventError("content", f"must be an object, got {type(content).__name__}", given_id)

    is_create = type_ == "m.room.create"
    v = _room_version(ev, room_version, is_create, content, given_id)
    if is_create and state_key != "":
        raise InvalidEventError("state_key", "an m.room.create event has the empty state key", given_id)
    if v.strict_canonical_json:
        for k, val in ev.items():
            if k != "unsigned":
                canonical.check_json(val, True, k)

    if given_id is None and v.event_format == 1:
        raise InvalidEventError(
            "event_id", f"missing: events of room version {v.identifier} carry their own event ID"
        )
    event_id = given_id if given_id is not None else compute_event_id(ev, v)
    room_id = _room_id(ev, v, is_create, event_id, given_id)

    sender = _string(ev, "sender", event_id, auth_data)
    if sender is not None and (not sender.startswith("@") or ":" not in sender):
        raise InvalidEventError("sender", f"must be a user ID (@localpart:domain), got {sender!r}", event_id)
    ts = ev.get("origin_server_ts")
    if ts is not None or "origin_server_ts" in ev or auth_data:
        ts = _integer(ev, "origin_server_ts", event_id, -_INT64, _INT64 - 1)
    depth = ev.get("depth")
    if depth is not None or "depth" in ev or auth_data:
        depth = _integer(ev, "depth", event_id, 0, canonical.MAX_INT if v.strict_canonical_json else MAX_DEPTH)
    if auth_data:
        check_reference_counts(ev, event_id)
    prev_events = _references(ev, "prev_events", v, event_id, auth_data, True)
    auth_events = _references(ev, "auth_events", v, event_id, auth_data, False)

    rejected = ev.get("rejected", False)
    if type(rejected) is not bool:
        raise InvalidEventError("rejected", f"must be a boolean, got {type(rejected).__name__}", event_id)

    out = MatrixEvent(
        room_version=v, event_id=event_id, room_id=room_id, type=type_, state_key=state_key, sender=sender,
        origin_server_ts=ts, depth=depth, prev_events=prev_events, auth_events=auth_events, rejected=rejected,
    )  # fmt: skip
    if state_key is not None:
        _state_content(out, content, v)
    if type_ == "m.room.redaction":
        if v.redacts_in_content:
            redacts, field = content.get("redacts"), "content.redacts"
        else:
            redacts, field = ev.get("redacts"), "redacts"
        if redacts is not None:
            out.redacts = _event_id(redacts, field, event_id)
    return out


def check_reference_counts(ev, event_id):
    """InvalidEventError naming ``prev_events`` or ``auth_events`` when the event lists more
    than the PDU format allows (``MAX_PREV_EVENTS``, ``MAX_AUTH_EVENTS``), counted as
    given: an entry listed twice counts twice."""
    for field, limit in (("prev_events", MAX_PREV_EVENTS), ("auth_events", MAX_AUTH_EVENTS)):
        refs = ev.get(field)
        if (type(refs) is list or isinstance(refs, (list, tuple))) and len(refs) > limit:
            raise InvalidEventError(
                field, f"has {len(refs)} entries; a Matrix event (PDU) has at most {limit}", event_id
            )


def _room_version(ev, given, is_create, content, event_id):
    if given is not None:
        v = given if isinstance(given, RoomVersion) else room_version(given)
        if is_create:
            named = version_of_create(content)
            if named is not v:
                raise InvalidEventError(
                    "content.room_version",
                    f"names room version {named.identifier}, but the room is of version {v.identifier}",
                    event_id,
                )
        return v
    if is_create:
        return version_of_create(content)
    raise InvalidEventError(
        "room_version",
        "not given: only a create event names its room's version; give the room's version for other events",
        event_id,
    )


def _room_id(ev, v, is_create, event_id, given_id):
    room_id = ev.get("room_id")
    if is_create and v.room_id_from_create:
        # Rooms v12, auth rule 1.2: the create event has no room_id; the room ID
        # is its event ID with "!".  A client-format create event has both: accept
        # the room_id that agrees with its event ID.
        derived = "!" + event_id[1:]
        if room_id is None and "room_id" not in ev:
            return derived
        if given_id is not None and room_id == derived:
            return derived
        raise InvalidEventError(
            "room_id",
            f"a room version {v.identifier} create event has no room_id (its room ID is its event ID with '!')",
            event_id,
        )
    room_id = _string(ev, "room_id", event_id, True)
    if not room_id:
        raise InvalidEventError("room_id", "must not be empty", event_id)
    return room_id


def _string(ev, field, event_id, required):
    value = ev.get(field)
    if type(value) is str:
        return value
    if value is None and field not in ev:
        if required:
            raise InvalidEventError(field, "missing", event_id)
        return None
    if not isinstance(value, str):
        raise InvalidEventError(field, f"must be a string, got {type(value).__name__}", event_id)
    return str(value)


def _integer(ev, field, event_id, low, high):
    if field not in ev:
        raise InvalidEventError(field, "missing", event_id)
    value = ev[field]
    if type(value) is not int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidEventError(field, f"must be an integer, got {type(value).__name__}", event_id)
        value = int(value)
    if not low <= value <= high:
        raise InvalidEventError(field, f"must be between {low} and {high}, got {value}", event_id)
    return value


def _event_id(value, field, event_id):
    if type(value) is not str:
        if not isinstance(value, str):
            raise InvalidEventError(field, f"must be an event ID string, got {type(value).__name__}", event_id)
        value = str(value)
    if not value.startswith("$") or len(value) < 2:
        raise InvalidEventError(field, f"must be an event ID ($...), got {value!r}", event_id)
    return value


def _references(ev, field, v, event_id, required, dedupe):
    """The event IDs of ``prev_events`` or ``auth_events``, validated for the version's format."""
    refs = ev.get(field)
    if refs is None:
        if required or field in ev:
            raise InvalidEventError(field, "missing" if field not in ev else "must be a list", event_id)
        return []
    if type(refs) is not list and type(refs) is not tuple:
        raise InvalidEventError(field, f"must be a list, got {type(refs).__name__}", event_id)
    if len(refs) > MAX_PREVS:
        raise InvalidEventError(field, f"has {len(refs)} entries, at most {MAX_PREVS}", event_id)
    pairs = v.event_format == 1
    out = []
    for i, ref in enumerate(refs):
        where = f"{field}[{i}]"
        if pairs:
            # Rooms v1–v2, PDU format: "[event_id, {hashes}]" pairs.
            if type(ref) not in (list, tuple) or len(ref) != 2:
                raise InvalidEventError(
                    where, f"must be an [event_id, hashes] pair in room version {v.identifier}", event_id
                )
            if not isinstance(ref[1], Mapping):
                raise InvalidEventError(f"{where}[1]", "the hashes must be an object", event_id)
            ref = _event_id(ref[0], f"{where}[0]", event_id)
        else:
            ref = _event_id(ref, where, event_id)
        if ref == event_id:
            raise InvalidEventError(where, "an event cannot reference itself", event_id)
        out.append(ref)
    if dedupe and len(out) > 1:
        out = list(dict.fromkeys(out))
    return out


def _state_content(out, content, v):
    """Copy the content fields the authorization rules read from a state event."""
    t = out.type
    if t == "m.room.member":
        m = content.get("membership")
        if m is not None and type(m) is not str:
            if not isinstance(m, str):
                raise InvalidEventError("content.membership", f"must be a string, got {type(m).__name__}", out.event_id)
            m = str(m)
        out.membership = m
        if v.restricted_join:
            via = content.get("join_authorised_via_users_server")
            if via is not None:
                if not isinstance(via, str):
                    raise InvalidEventError(
                        "content.join_authorised_via_users_server",
                        f"must be a user ID string, got {type(via).__name__}",
                        out.event_id,
                    )
                out.join_authorised_via_users_server = str(via)
        tpi = content.get("third_party_invite")
        if tpi is not None:
            if not isinstance(tpi, Mapping):
                raise InvalidEventError(
                    "content.third_party_invite", f"must be an object, got {type(tpi).__name__}", out.event_id
                )
            out.third_party_invite = dict(tpi)
    elif out.state_key != "":
        if t == "m.room.third_party_invite":
            out.third_party_invite_keys = _subset(content, _THIRD_PARTY_INVITE_KEYS)
    elif t == "m.room.power_levels":
        out.power_levels = _subset(content, _POWER_LEVEL_KEYS)
    elif t == "m.room.join_rules":
        out.join_rules = _subset(content, ("join_rule", "allow") if v.restricted_join else ("join_rule",))
    elif t == "m.room.create":
        out.create = _subset(content, _CREATE_KEYS)


def _subset(content, keys):
    return {k: content[k] for k in keys if k in content}
