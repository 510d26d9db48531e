"""What the authorization rules read of an event's content: its *extras*.

Stored once per distinct value as canonical JSON, a string of the state-key kind (as
user IDs are: tables ``ids`` and ``names_k``), and named from the event record's auth
section by its NID (docs/FORMAT.md §4.5).  Most events have none: a message's content is never read,
and of a member event's only ``membership``, which the record holds already.

======================================  ==============================================
event                                   extras
======================================  ==============================================
``m.room.create``                       the whole content (the room version, creators,
                                        ``m.federate``: room version 11 keeps it all)
``m.room.power_levels``                 the whole content
``m.room.join_rules``                   ``join_rule``, ``allow``
``m.room.third_party_invite``           ``public_key``, ``public_keys``
``m.room.member``                       ``join_authorised_via_users_server``,
                                        ``third_party_invite``, when it has either
``m.room.redaction``                    ``redacts`` (top level; rooms v1–v2 check it)
======================================  ==============================================
"""
from collections.abc import Mapping

import json

from .errors import InvalidEventError, StoreFormatError
from .ids import STATE_KEY
from .matrix.canonical import encode

__all__ = ["EXTRAS_TYPES", "extras_of", "stored_extras"]

_ALL = None  # the whole content
_KEYS = {
    "m.room.create": _ALL,
    "m.room.power_levels": _ALL,
    "m.room.join_rules": ("join_rule", "allow"),
    "m.room.third_party_invite": ("public_key", "public_keys"),
    "m.room.member": ("join_authorised_via_users_server", "third_party_invite"),
}
#: Event types that may have extras.
EXTRAS_TYPES = frozenset(_KEYS) | {"m.room.redaction"}


def extras_of(ev, type_, event_id):
    """The extras of an event mapping as a canonical JSON string, or None when it has none."""
    if type_ == "m.room.redaction":
        redacts = ev.get("redacts")
        if redacts is None:
            return None
        if not isinstance(redacts, str):
            raise InvalidEventError("redacts", f"must be an event ID string, got {type(redacts).__name__}", event_id)
        return _encode({"redacts": redacts}, event_id)
    if type_ not in _KEYS:
        return None
    content = ev.get("content")
    if content is None:
        content = {}
    elif not isinstance(content, Mapping):
        raise InvalidEventError("content", f"must be a mapping, got {type(content).__name__}", event_id)
    keys = _KEYS[type_]
    if keys is _ALL:
        return _encode(content, event_id)
    kept = {k: content[k] for k in keys if k in content}
    if not kept:
        return None
    return _encode(kept, event_id)


def _encode(value, event_id):
    """Canonical JSON, not strict: the room version's own limits (no floats from version 6)
    are the authorization rules' to check, and an event that breaks them is stored rejected."""
    try:
        return encode(value, strict=False, path="content").decode("utf-8")
    except InvalidEventError as exc:  # NaN, keys that are not strings, objects JSON lacks, lone surrogates
        # The field is the fixed name; the path (made of the event's own keys, which may hold
        # lone surrogates) goes into the reason, escaped, so that the message prints anywhere.
        where, why = (t.encode("utf-8", "backslashreplace").decode("utf-8") for t in (exc.field, exc.reason))
        raise InvalidEventError("content", f"cannot be written as canonical JSON: {where}: {why}", event_id) from None


def stored_extras(ids, tx, rec):
    """The extras of a stored event record as a dict ({} when it has none); a stored
    value that is not a JSON object is a :class:`StoreFormatError`."""
    if not rec.extras:
        return {}
    raw = ids.name(tx, STATE_KEY, rec.extras)
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise StoreFormatError(f"the store is damaged: the extras of event {rec.event_id!r} are not a JSON object")
    return value
