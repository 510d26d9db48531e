"""The redaction algorithm of each room version.

The spec's room version pages, section "Redactions": "Upon receipt of a
redaction event, the server must strip off any keys not in the following list
[...]. The content object must also be stripped of all keys, unless it is one
of the following event types [...]". What changes between versions:

- v1–v5: ``m.room.aliases`` keeps ``aliases``; v6 drops that special case;
- v8: ``m.room.join_rules`` keeps ``allow``;
- v9: ``m.room.member`` keeps ``join_authorised_via_users_server``;
- v11 (and v12, "unchanged from v11"): the top-level ``origin``, ``membership``
  and ``prev_state`` are no longer kept; ``m.room.create`` keeps all of its
  content (and no longer names ``creator`` as a key); ``m.room.power_levels``
  keeps ``invite``; ``m.room.redaction`` keeps ``redacts`` in content;
  ``m.room.member`` keeps ``third_party_invite`` with only its ``signed`` key.

The result is a new top-level dict and a new ``content`` dict; the values under
them are the input's own objects (not copied), so do not change them.
"""
from .versions import RoomVersion, room_version

__all__ = ["redact"]

_TOP_V1 = frozenset(
    (
        "event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures",
        "depth", "prev_events", "prev_state", "auth_events", "origin", "origin_server_ts", "membership",
    )
)  # fmt: skip
_TOP_V11 = _TOP_V1 - {"prev_state", "origin", "membership"}

_POWER_LEVELS_V1 = ("ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default")
_POWER_LEVELS_V11 = _POWER_LEVELS_V1 + ("invite",)

# Content keys kept, by event type, for each combination of the version flags
# that change them; built once per RoomVersion on first use.
_content_keys_cache: "dict[object, dict[str, object]]" = {}


def _content_keys(v):
    keys = _content_keys_cache.get(v.identifier)
    if keys is None:
        member = ["membership"]
        if v.redaction_keeps_authorised_via:
            member.append("join_authorised_via_users_server")
        keys = {
            "m.room.member": tuple(member),
            "m.room.create": None if v.updated_redaction_rules else ("creator",),  # None: every key
            "m.room.join_rules": ("join_rule", "allow") if v.restricted_join else ("join_rule",),
            "m.room.power_levels": _POWER_LEVELS_V11 if v.updated_redaction_rules else _POWER_LEVELS_V1,
            "m.room.history_visibility": ("history_visibility",),
        }
        if v.special_case_aliases:
            keys["m.room.aliases"] = ("aliases",)
        if v.updated_redaction_rules:
            keys["m.room.redaction"] = ("redacts",)
        _content_keys_cache[v.identifier] = keys
    return keys


def redact(event, version):
    """The event as the redaction algorithm of room version ``version`` leaves it.

    ``version`` is a :class:`RoomVersion` or its identifier. A ``content`` that
    is not an object becomes ``{}`` (the algorithm keeps only named keys of it).
    """
    v = version if isinstance(version, RoomVersion) else room_version(version)
    top = _TOP_V11 if v.updated_redaction_rules else _TOP_V1
    out = {k: val for k, val in event.items() if k in top}
    content = event.get("content")
    if not hasattr(content, "get"):
        out["content"] = {}
        return out
    type_ = event.get("type")
    keep = _content_keys(v).get(type_, ()) if type(type_) is str else ()
    if keep is None:
        out["content"] = dict(content)
        return out
    kept = {k: content[k] for k in keep if k in content}
    if type_ == "m.room.member" and v.updated_redaction_rules:
        tpi = content.get("third_party_invite")
        # "Additionally, it allows the signed key of the third_party_invite key":
        # an object third_party_invite stays, holding only its signed key (empty
        # when it has none), as Synapse reads the rule.
        if hasattr(tpi, "get"):
            kept["third_party_invite"] = {"signed": tpi["signed"]} if "signed" in tpi else {}
    out["content"] = kept
    return out
