"""Hypothesis strategies for Matrix PDUs of every room version (shared by the matrix tests)."""
from hypothesis import strategies as st

from roomstate.matrix import VERSIONS

SAFE_INT = 2**53 - 1
VERSION_IDS = sorted(VERSIONS, key=int)

# Types whose content the redaction algorithm keeps in part, and some it does not know.
TYPES = (
    "m.room.create", "m.room.member", "m.room.join_rules", "m.room.power_levels", "m.room.aliases",
    "m.room.history_visibility", "m.room.redaction", "m.room.message", "m.room.topic", "m.room.third_party_invite",
    "org.example.custom",
)  # fmt: skip
# Content keys that some version keeps for some type, and others.
CONTENT_KEYS = (
    "membership", "join_authorised_via_users_server", "third_party_invite", "creator", "room_version",
    "m.federate", "additional_creators", "join_rule", "allow", "ban", "events", "events_default", "invite",
    "kick", "redact", "state_default", "users", "users_default", "notifications", "aliases",
    "history_visibility", "redacts", "body", "topic", "display_name", "public_key", "signed",
)  # fmt: skip
# Top-level keys beyond the ones every PDU has: kept by some versions, or by none.
EXTRA_TOP = ("origin", "membership", "prev_state", "redacts", "age_ts", "outlier", "destinations", "org.example")

text = st.text(st.characters(codec="utf-8"), max_size=8) | st.sampled_from(["", "join", "@a:x", "$e", "\u65e5\n\"\\"])


def json_values(floats):
    scalars = st.none() | st.booleans() | st.integers(-SAFE_INT, SAFE_INT) | text
    if floats:
        scalars = scalars | st.floats(allow_nan=False, allow_infinity=False)
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(CONTENT_KEYS) | text, inner, max_size=3),
        max_leaves=8,
    )


def event_ids(version):
    if VERSIONS[version].event_format == 1:
        return st.from_regex(r"\$[a-zA-Z0-9]{1,8}:example\.org", fullmatch=True)
    return st.from_regex(r"\$[A-Za-z0-9_\-]{43}", fullmatch=True)


@st.composite
def pdus(draw, version, floats=None):
    """A PDU of room version ``version`` that Synapse parses: every field it requires, well typed."""
    v = VERSIONS[version]
    if floats is None:
        floats = not v.strict_canonical_json
    values = json_values(floats)
    type_ = draw(st.sampled_from(TYPES))
    content = draw(st.dictionaries(st.sampled_from(CONTENT_KEYS) | text, values, max_size=6))
    if type_ == "m.room.member" and draw(st.booleans()):
        content["third_party_invite"] = draw(
            st.fixed_dictionaries({"display_name": text}, optional={"signed": values, "other": values})
        )
    ref = event_ids(version)
    if v.event_format == 1:
        ref = st.tuples(ref, st.fixed_dictionaries({"sha256": text})).map(list)
    pdu = {
        "type": type_,
        "sender": "@" + draw(st.from_regex(r"[a-z0-9]{1,6}", fullmatch=True)) + ":example.org",
        "origin_server_ts": draw(st.integers(0, SAFE_INT)),
        "depth": draw(st.integers(0, SAFE_INT)),
        "content": content,
        "prev_events": draw(st.lists(ref, max_size=3)),
        "auth_events": draw(st.lists(ref, max_size=3)),
        "hashes": {"sha256": draw(text)},
        "signatures": draw(st.dictionaries(st.just("example.org"), st.dictionaries(text, text, max_size=2), max_size=1)),
    }
    if type_ == "m.room.create":
        pdu["state_key"] = ""
        pdu["content"]["room_version"] = version
    elif draw(st.booleans()):
        pdu["state_key"] = draw(text)
    if not (type_ == "m.room.create" and v.room_id_from_create):
        pdu["room_id"] = draw(st.sampled_from(["!r:example.org", "!" + "A" * 43]))
    if v.event_format == 1:
        pdu["event_id"] = draw(event_ids(version))
    if draw(st.booleans()):
        pdu["unsigned"] = {"age": draw(st.integers(0, 1000))}
    for key in draw(st.lists(st.sampled_from(EXTRA_TOP), max_size=3, unique=True)):
        pdu[key] = draw(event_ids(version)) if key == "redacts" else draw(values)
    return pdu
