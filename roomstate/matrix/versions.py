"""Room versions 1–12 as data: one record per version, with the flags that change the rules.

The version of a room is its create event's ``content.room_version`` ("1" when
absent). Sources: the Matrix specification's room version pages (spec.matrix.org,
"Room Versions" and ``/rooms/v1`` … ``/rooms/v12``). Each flag below names the
version that introduced it.
"""
from dataclasses import dataclass

from ..errors import InvalidEventError

__all__ = ["RoomVersion", "VERSIONS", "room_version", "version_of_create"]


@dataclass(frozen=True)
class RoomVersion:
    identifier: str
    #: 1: servers name events (``$local:server``), references are ``[id, hashes]`` pairs
    #: (v1–v2); 2: the event ID is the reference hash in standard base64 (v3); 3: in
    #: URL-safe base64 (v4 and later).
    event_format: int
    #: "v1" (rooms v1), "v2" (v2–v11), "v2.1" (v12).
    state_res: str
    #: v1–v5: ``m.room.aliases`` has its own authorization rule and keeps ``aliases``
    #: through a redaction.
    special_case_aliases: bool
    #: v6: integers in canonical JSON must lie in [-(2**53)+1, 2**53-1]; no floats.
    strict_canonical_json: bool
    #: v6: the ``notifications`` keys of a power-levels change are checked.
    limit_notifications_power_levels: bool
    #: v7: the ``knock`` membership and join rule.
    knock: bool
    #: v8: the ``restricted`` join rule and ``join_authorised_via_users_server``;
    #: ``allow`` of ``m.room.join_rules`` survives a redaction.
    restricted_join: bool
    #: v9: ``join_authorised_via_users_server`` of ``m.room.member`` survives a redaction.
    redaction_keeps_authorised_via: bool
    #: v10: the ``knock_restricted`` join rule.
    knock_restricted: bool
    #: v10: power levels must be integers (strings of digits are refused).
    integer_power_levels: bool
    #: v11: the room creator is the create event's sender (no ``creator`` field).
    implicit_room_creator: bool
    #: v11: ``redacts`` is under ``content`` of ``m.room.redaction``.
    redacts_in_content: bool
    #: v11: the redaction algorithm of v11 (create keeps all content; power levels keep
    #: ``invite``; top-level ``origin``, ``membership``, ``prev_state`` are stripped).
    updated_redaction_rules: bool
    #: v12: the room ID is the create event's reference hash with ``!``; the create event
    #: carries no ``room_id`` and is not listed in ``auth_events``.
    room_id_from_create: bool
    #: v12: the creators (sender and ``additional_creators``) have unlimited power and
    #: may not appear in ``users`` of power levels.
    privileged_creators: bool

    @property
    def url_safe_ids(self) -> bool:
        return self.event_format == 3

    @property
    def hash_ids(self) -> bool:
        """Event IDs are reference hashes (v3 and later), not given by servers."""
        return self.event_format >= 2


def _v(n, **changes):
    """Version ``n``: the previous version with ``changes``."""
    prev = VERSIONS[str(n - 1)]
    fields = {k: getattr(prev, k) for k in prev.__dataclass_fields__}
    fields.update(identifier=str(n), **changes)
    VERSIONS[str(n)] = RoomVersion(**fields)


VERSIONS: "dict[str, RoomVersion]" = {
    "1": RoomVersion(
        identifier="1",
        event_format=1,
        state_res="v1",
        special_case_aliases=True,
        strict_canonical_json=False,
        limit_notifications_power_levels=False,
        knock=False,
        restricted_join=False,
        redaction_keeps_authorised_via=False,
        knock_restricted=False,
        integer_power_levels=False,
        implicit_room_creator=False,
        redacts_in_content=False,
        updated_redaction_rules=False,
        room_id_from_create=False,
        privileged_creators=False,
    )
}
_v(2, state_res="v2")
_v(3, event_format=2)
_v(4, event_format=3)
_v(5)  # signing-key validity: the caller's part (signatures are checked on receipt)
_v(6, special_case_aliases=False, strict_canonical_json=True, limit_notifications_power_levels=True)
_v(7, knock=True)
_v(8, restricted_join=True)
_v(9, redaction_keeps_authorised_via=True)
_v(10, knock_restricted=True, integer_power_levels=True)
_v(11, implicit_room_creator=True, redacts_in_content=True, updated_redaction_rules=True)
_v(12, state_res="v2.1", room_id_from_create=True, privileged_creators=True)


def room_version(identifier) -> RoomVersion:
    """The record of a room version identifier; InvalidEventError for one not known."""
    v = VERSIONS.get(identifier) if isinstance(identifier, str) else None
    if v is None:
        raise InvalidEventError(
            "content.room_version",
            f"unknown room version {identifier!r} (known: {', '.join(VERSIONS)})",
        )
    return v


def version_of_create(create_content) -> RoomVersion:
    """The room version a create event's content names ("1" when it names none)."""
    return room_version(create_content.get("room_version", "1"))
