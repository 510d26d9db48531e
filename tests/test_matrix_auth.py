"""The authorization rules of room versions 1–12, written from the specification.

Data, in the manner of gomatrixserverlib's auth tests: each case is a room (its state),
an event, the room versions it runs in, and the rule expected to reject it per version
family (``None``: allowed).  A rule number is checked against the reason's prefix, so
the numbering of each version's rule list is tested too.
"""
import pytest

from roomstate.matrix import auth
from roomstate.errors import InvalidEventError
from auth_rooms import (
    ALL_VERSIONS, BANNED, CREATOR, INVITED, KNOCKER, LEFT, MOD, MOD2, NEW, SAME, USER,
    base_levels, base_room, create_event, create_id, event, join_rules, member,
    power_levels, room_id, state_of, versions,
)


def expect(**by_range):
    """``expect(v1_5="5.2.3", v6_11="4.2.3", v12=...)``: the rule per range of versions;
    a range left out means "allowed" there."""
    out = {}
    for key, rule in by_range.items():
        lo, _, hi = key[1:].partition("_")
        for v in versions(f"{lo}-{hi or lo}"):
            out[v] = rule
    return out


ALLOWED = {}

# Where the member rule's branches sit in each family (v1–v5, v6–v7, v8–v11, v12), as
# the rule lists number them: v6 drops the aliases rule, v8 inserts 4.2
# (join_authorised_via_users_server), v12 inserts rule 2.
_MEMBER_BRANCH = {"join": ("5.2", "4.2", "4.3", "5.3"), "invite": ("5.3", "4.3", "4.4", "5.4"),
                  "leave": ("5.4", "4.4", "4.5", "5.5"), "ban": ("5.5", "4.5", "4.6", "5.6")}


def member_rule(branch, sub):
    a, b, c, d = _MEMBER_BRANCH[branch]
    return expect(v1_5=f"{a}.{sub}", v6_7=f"{b}.{sub}", v8_11=f"{c}.{sub}", v12=f"{d}.{sub}")


# The join rule's "Otherwise, reject" (6 before v8, 7 from v8).
JOIN_REFUSED = expect(v1_5="5.2.6", v6_7="4.2.6", v8_11="4.3.7", v12="5.3.7")


def _tpi(v, token="tok", sender=MOD, **content):
    content.setdefault("public_key", "cHVibGlja2V5")
    return auth_event(v, "m.room.third_party_invite", sender, content, state_key=token)


def auth_event(v, etype, sender, content, state_key):
    return event(v, etype, sender, content, state_key=state_key)


def _tpi_member(v, target=NEW, sender=MOD, token="tok", mxid=None, signed=None):
    if signed is None:
        signed = {"mxid": mxid or target, "token": token,
                  "signatures": {"id.test": {"ed25519:0": "c2lnbmF0dXJl"}}}
    return member(v, target, "invite", sender=sender,
                  third_party_invite={"display_name": "n", "signed": signed})


def _levels(v, **changes):
    levels = base_levels(v)
    levels.update(changes)
    return levels


def _users(v, **changes):
    users = dict(base_levels(v)["users"])
    users.update(changes)
    return users


# (name, versions, room(v) -> state, event(v) -> event, expected rule per version)
CASES = [
    # -- 1: m.room.create ---------------------------------------------------------------
    ("create allowed", "1-12", None, lambda v: create_event(v), ALLOWED),
    ("create with prev_events", "1-12", None,
     lambda v: {**create_event(v), "prev_events": ["$x:a.test"]}, expect(v1_12="1.1")),
    ("create room_id of another server", "1-11", None,
     lambda v: {**create_event(v), "room_id": "!room:b.test"}, expect(v1_11="1.2")),
    ("v12 create with a room_id", "12", None,
     lambda v: {**create_event(v), "room_id": "!create"}, expect(v12="1.2")),
    ("create of an unknown room version", "1-12", None,
     lambda v: create_event(v, room_version="99"), expect(v1_12="1.3")),
    ("create without creator", "1-12", None,
     lambda v: {**create_event(v), "content": {"room_version": v}}, expect(v1_10="1.4")),
    ("v12 additional_creators valid", "12", None,
     lambda v: create_event(v, additional_creators=[MOD, USER]), ALLOWED),
    ("v12 additional_creators not an array", "12", None,
     lambda v: create_event(v, additional_creators=MOD), expect(v12="1.4")),
    ("v12 additional_creators not user IDs", "12", None,
     lambda v: create_event(v, additional_creators=[MOD, "mod"]), expect(v12="1.4")),
    # -- 2 (v12): the room ID names the create event ------------------------------------
    ("v12 room ID names no create event", "12", base_room,
     lambda v: event(v, "m.room.message", USER, room_id="!other"), expect(v12="2")),
    ("no create event in the state", "1-12", lambda v: {},
     lambda v: event(v, "m.room.message", USER), expect(v1_11="2.4", v12="2")),
    # -- 3 / 3 / 4: m.federate ----------------------------------------------------------
    ("unfederated room, sender of another server", "1-12",
     lambda v: base_room(v, create=create_event(v, **{"m.federate": False})),
     lambda v: event(v, "m.room.message", USER), expect(v1_11="3", v12="4")),
    ("unfederated room, sender of the creator's server", "1-12",
     lambda v: base_room(v, create=create_event(v, **{"m.federate": False})),
     lambda v: event(v, "m.room.message", SAME), ALLOWED),
    # -- 4 (v1–v5): m.room.aliases ------------------------------------------------------
    ("aliases of the sender's domain from a non-member", "1-12", base_room,
     lambda v: event(v, "m.room.aliases", LEFT, {"aliases": []}, state_key="b.test"),
     expect(v6_11="5", v12="6")),
    ("aliases of another domain", "1-5", base_room,
     lambda v: event(v, "m.room.aliases", USER, {"aliases": []}, state_key="a.test"),
     expect(v1_5="4.2")),
    # -- member: .1 ---------------------------------------------------------------------
    ("member without membership", "1-12", base_room,
     lambda v: event(v, "m.room.member", NEW, {}, state_key=NEW),
     expect(v1_5="5.1", v6_11="4.1", v12="5.1")),
    # -- member: join -------------------------------------------------------------------
    ("creator's first join", "1-12", lambda v: state_of(create_event(v)),
     lambda v: {**member(v, CREATOR, "join"), "prev_events": [create_id(v)]}, ALLOWED),
    ("creator's first join, v1–v2 reference pair", "1-2", lambda v: state_of(create_event(v)),
     lambda v: {**member(v, CREATOR, "join"), "prev_events": [[create_id(v), {"sha256": "x"}]]}, ALLOWED),
    ("first join of the create sender who is not content.creator", "1-12",
     lambda v: state_of(create_event(v, creator=SAME) if int(v) < 11 else create_event(v)),
     lambda v: {**member(v, CREATOR, "join"), "prev_events": [create_id(v)]},
     expect(v1_5="5.2.6", v6_7="4.2.6", v8_10="4.3.7")),
    ("another user's first join", "1-12", lambda v: state_of(create_event(v)),
     lambda v: {**member(v, SAME, "join"), "prev_events": [create_id(v)]},
     JOIN_REFUSED),
    ("join for another user", "1-12", base_room, lambda v: member(v, NEW, "join", sender=MOD),
     member_rule("join", "2")),
    ("banned user joins a public room", "1-12", base_room, lambda v: member(v, BANNED, "join"),
     member_rule("join", "3")),
    ("join a public room", "1-12", base_room, lambda v: member(v, NEW, "join"), ALLOWED),
    ("invited user joins an invite room", "1-12", lambda v: base_room(v, rule="invite"),
     lambda v: member(v, INVITED, "join"), ALLOWED),
    ("joined user rejoins an invite room", "1-12", lambda v: base_room(v, rule="invite"),
     lambda v: member(v, USER, "join", displayname="u"), ALLOWED),
    ("uninvited user joins an invite room", "1-12", lambda v: base_room(v, rule="invite"),
     lambda v: member(v, NEW, "join"),
     JOIN_REFUSED),
    ("invited user joins a knock room", "1-12", lambda v: base_room(v, rule="knock"),
     lambda v: member(v, INVITED, "join"), expect(v1_5="5.2.6", v6="4.2.6")),
    ("uninvited user joins a knock room", "7-12", lambda v: base_room(v, rule="knock"),
     lambda v: member(v, NEW, "join"), expect(v7="4.2.6", v8_11="4.3.7", v12="5.3.7")),
    ("restricted join authorised by a moderator", "1-12", lambda v: base_room(v, rule="restricted"),
     lambda v: member(v, NEW, "join", join_authorised_via_users_server=MOD),
     expect(v1_5="5.2.6", v6_7="4.2.6")),
    ("restricted join of an invited user, no authoriser", "8-12",
     lambda v: base_room(v, rule="restricted"), lambda v: member(v, INVITED, "join"), ALLOWED),
    ("restricted join, no authoriser", "8-12", lambda v: base_room(v, rule="restricted"),
     lambda v: member(v, NEW, "join"), expect(v8_11="4.3.5.2", v12="5.3.5.2")),
    ("restricted join authorised by a user below the invite level", "8-12",
     lambda v: base_room(v, rule="restricted"),
     lambda v: member(v, NEW, "join", join_authorised_via_users_server=USER),
     expect(v8_11="4.3.5.2", v12="5.3.5.2")),
    ("restricted join authorised by a user who left", "8-12",
     lambda v: base_room(v, rule="restricted", levels=_levels(v, invite=0)),
     lambda v: member(v, NEW, "join", join_authorised_via_users_server=LEFT),
     expect(v8_11="4.3.5.2", v12="5.3.5.2")),
    ("knock_restricted join authorised by a moderator", "8-12",
     lambda v: base_room(v, rule="knock_restricted"),
     lambda v: member(v, NEW, "join", join_authorised_via_users_server=MOD), expect(v8_9="4.3.7")),
    ("knock_restricted join of an invited user", "10-12", lambda v: base_room(v, rule="knock_restricted"),
     lambda v: member(v, INVITED, "join"), ALLOWED),
    ("join of a private room", "1-12", lambda v: base_room(v, rule="private"),
     lambda v: member(v, NEW, "join"), JOIN_REFUSED),
    ("join without a join rules event (read as invite)", "1-12",
     lambda v: {k: e for k, e in base_room(v).items() if k[0] != "m.room.join_rules"},
     lambda v: member(v, NEW, "join"), JOIN_REFUSED),
    # -- member: invite -----------------------------------------------------------------
    ("moderator invites", "1-12", base_room, lambda v: member(v, NEW, "invite", sender=MOD), ALLOWED),
    ("user below the invite level invites", "1-12", base_room,
     lambda v: member(v, NEW, "invite", sender=USER),
     member_rule("invite", "5")),
    ("user who left invites", "1-12", lambda v: base_room(v, levels=_levels(v, invite=0)),
     lambda v: member(v, NEW, "invite", sender=LEFT),
     member_rule("invite", "2")),
    ("invite of a joined user", "1-12", base_room, lambda v: member(v, USER, "invite", sender=MOD),
     member_rule("invite", "3")),
    ("invite of a banned user", "1-12", base_room, lambda v: member(v, BANNED, "invite", sender=MOD),
     member_rule("invite", "3")),
    ("invite of a user who knocked", "7-12", base_room, lambda v: member(v, KNOCKER, "invite", sender=MOD),
     ALLOWED),
    # -- member: invite of a third party ------------------------------------------------
    ("third-party invite", "1-12", lambda v: base_room(v, extra=[_tpi(v)]), _tpi_member, ALLOWED),
    ("third-party invite, public_keys only", "1-12",
     lambda v: base_room(v, extra=[_tpi(v, public_key=None, public_keys=[{"public_key": "aw"}])]),
     _tpi_member, ALLOWED),
    ("third-party invite needs no membership or level of the sender", "1-12",
     lambda v: base_room(v, extra=[_tpi(v, sender=LEFT)]),
     lambda v: _tpi_member(v, sender=LEFT), ALLOWED),
    ("third-party invite of a banned user", "1-12", lambda v: base_room(v, extra=[_tpi(v)]),
     lambda v: _tpi_member(v, target=BANNED),
     member_rule("invite", "1.1")),
    ("third-party invite without signed", "1-12", lambda v: base_room(v, extra=[_tpi(v)]),
     lambda v: member(v, NEW, "invite", sender=MOD, third_party_invite={"display_name": "n"}),
     member_rule("invite", "1.2")),
    ("third-party invite without token", "1-12", lambda v: base_room(v, extra=[_tpi(v)]),
     lambda v: _tpi_member(v, signed={"mxid": NEW, "signatures": {}}),
     member_rule("invite", "1.3")),
    ("third-party invite of another mxid", "1-12", lambda v: base_room(v, extra=[_tpi(v)]),
     lambda v: _tpi_member(v, mxid=USER),
     member_rule("invite", "1.4")),
    ("third-party invite of an unknown token", "1-12", lambda v: base_room(v, extra=[_tpi(v)]),
     lambda v: _tpi_member(v, token="other"),
     member_rule("invite", "1.5")),
    ("third-party invite from another sender", "1-12", lambda v: base_room(v, extra=[_tpi(v)]),
     lambda v: _tpi_member(v, sender=MOD2),
     member_rule("invite", "1.6")),
    ("third-party invite without signatures", "1-12", lambda v: base_room(v, extra=[_tpi(v)]),
     lambda v: _tpi_member(v, signed={"mxid": NEW, "token": "tok"}),
     member_rule("invite", "1.8")),
    ("third-party invite event without public keys", "1-12",
     lambda v: base_room(v, extra=[_tpi(v, public_key=None)]), _tpi_member,
     member_rule("invite", "1.8")),
    # -- member: leave ------------------------------------------------------------------
    ("joined user leaves", "1-12", base_room, lambda v: member(v, USER, "leave"), ALLOWED),
    ("invited user rejects the invite", "1-12", base_room, lambda v: member(v, INVITED, "leave"), ALLOWED),
    ("knocking user retracts the knock", "7-12", base_room, lambda v: member(v, KNOCKER, "leave"), ALLOWED),
    ("user who left leaves again", "1-12", base_room, lambda v: member(v, LEFT, "leave"),
     member_rule("leave", "1")),
    ("banned user leaves", "1-12", base_room, lambda v: member(v, BANNED, "leave"),
     member_rule("leave", "1")),
    ("moderator kicks a user", "1-12", base_room, lambda v: member(v, USER, "leave", sender=MOD), ALLOWED),
    ("moderator unbans", "1-12", base_room, lambda v: member(v, BANNED, "leave", sender=MOD), ALLOWED),
    ("moderator below the ban level unbans", "1-12", lambda v: base_room(v, levels=_levels(v, ban=75)),
     lambda v: member(v, BANNED, "leave", sender=MOD),
     member_rule("leave", "3")),
    # -- member: ban --------------------------------------------------------------------
    ("moderator bans a user", "1-12", base_room, lambda v: member(v, USER, "ban", sender=MOD), ALLOWED),
    ("moderator bans a non-member", "1-12", base_room, lambda v: member(v, NEW, "ban", sender=MOD), ALLOWED),
    # -- member: knock ------------------------------------------------------------------
    ("knock on a knock room", "1-12", lambda v: base_room(v, rule="knock"), lambda v: member(v, NEW, "knock"),
     expect(v1_5="5.6", v6="4.6")),
    ("knock on a public room", "7-12", base_room, lambda v: member(v, NEW, "knock"),
     expect(v7="4.6.1", v8_11="4.7.1", v12="5.7.1")),
    ("knock for another user", "7-12", lambda v: base_room(v, rule="knock"),
     lambda v: member(v, NEW, "knock", sender=MOD), expect(v7="4.6.2", v8_11="4.7.2", v12="5.7.2")),
    ("joined user knocks", "7-12", lambda v: base_room(v, rule="knock"), lambda v: member(v, USER, "knock"),
     expect(v7="4.6.4", v8_11="4.7.4", v12="5.7.4")),
    ("banned user knocks", "7-12", lambda v: base_room(v, rule="knock"), lambda v: member(v, BANNED, "knock"),
     expect(v7="4.6.4", v8_11="4.7.4", v12="5.7.4")),
    ("knock on a knock_restricted room", "7-12", lambda v: base_room(v, rule="knock_restricted"),
     lambda v: member(v, NEW, "knock"), expect(v7="4.6.1", v8_9="4.7.1")),
    ("unknown membership", "1-12", base_room, lambda v: member(v, USER, "dance"),
     expect(v1_5="5.6", v6="4.6", v7="4.7", v8_11="4.8", v12="5.8")),
    # -- the sender is joined -----------------------------------------------------------
    ("message from a joined user", "1-12", base_room, lambda v: event(v, "m.room.message", USER), ALLOWED),
    ("message from a user who left", "1-12", base_room, lambda v: event(v, "m.room.message", LEFT),
     expect(v1_5="6", v6_11="5", v12="6")),
    ("message from an invited user", "1-12", base_room, lambda v: event(v, "m.room.message", INVITED),
     expect(v1_5="6", v6_11="5", v12="6")),
    # -- m.room.third_party_invite ------------------------------------------------------
    ("third_party_invite event from a moderator", "1-12", base_room,
     lambda v: event(v, "m.room.third_party_invite", MOD, {"public_key": "k"}, state_key="t"), ALLOWED),
    ("third_party_invite event below the invite level", "1-12", base_room,
     lambda v: event(v, "m.room.third_party_invite", USER, {"public_key": "k"}, state_key="t"),
     expect(v1_5="7.1", v6_11="6.1", v12="7.1")),
    # -- required power level -----------------------------------------------------------
    ("state event at state_default", "1-12", base_room,
     lambda v: event(v, "m.room.topic", MOD, {"topic": "t"}, state_key=""), ALLOWED),
    ("state event below state_default", "1-12", base_room,
     lambda v: event(v, "m.room.topic", USER, {"topic": "t"}, state_key=""),
     expect(v1_5="8", v6_11="7", v12="8")),
    ("state event below its events level", "1-12", base_room,
     lambda v: event(v, "m.room.name", MOD, {"name": "n"}, state_key=""),
     expect(v1_5="8", v6_11="7", v12="8")),
    ("message below events_default", "1-12", lambda v: base_room(v, levels=_levels(v, events_default=10)),
     lambda v: event(v, "m.room.message", USER), expect(v1_5="8", v6_11="7", v12="8")),
    ("stringy events_default (v1–v9)", "1-9", lambda v: base_room(v, levels=_levels(v, events_default=" +10 ")),
     lambda v: event(v, "m.room.message", USER), expect(v1_9="8", v6_9="7")),
    ("no power levels: creator sends state", "1-12",
     lambda v: {k: e for k, e in base_room(v).items() if k[0] != "m.room.power_levels"},
     lambda v: event(v, "m.room.topic", CREATOR, {"topic": "t"}, state_key=""), ALLOWED),
    ("no power levels: a user sends state (state_default 50)", "1-12",
     lambda v: {k: e for k, e in base_room(v).items() if k[0] != "m.room.power_levels"},
     lambda v: event(v, "m.room.topic", USER, {"topic": "t"}, state_key=""),
     expect(v1_5="8", v6_11="7", v12="8")),
    ("v12 additional creator has unlimited power", "12",
     lambda v: base_room(v, create=create_event(v, additional_creators=[USER])),
     lambda v: event(v, "m.room.name", USER, {"name": "n"}, state_key=""), ALLOWED),
    # -- state_key of another user ------------------------------------------------------
    ("state keyed by the sender's ID", "1-12", base_room,
     lambda v: event(v, "org.example.state", MOD, {}, state_key=MOD), ALLOWED),
    ("state keyed by another user's ID", "1-12", base_room,
     lambda v: event(v, "org.example.state", MOD, {}, state_key=USER),
     expect(v1_5="9", v6_11="8", v12="9")),
    # -- m.room.power_levels ------------------------------------------------------------
    ("power levels with a string level", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, ban="50")), expect(v10_11="9.1", v12="10.1")),
    ("power levels with a float level (v1–v5)", "1-5", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, ban=50.7)), ALLOWED),
    ("power levels with a string in events", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, events={"m.room.power_levels": "50", "m.room.name": 100})),
     expect(v10_11="9.2", v12="10.2")),
    ("power levels with notifications not an object", "10-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, notifications=5)), expect(v10_11="9.2", v12="10.2")),
    ("power levels with a user key that is no user ID", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, users=_users(v, **{"mod": 0}))),
     expect(v1_5="10.1", v6_9="9.1", v10_11="9.3", v12="10.3")),
    ("power levels with a user level that is no integer", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, users=_users(v, **{USER: "lots"}))),
     expect(v1_5="10.1", v6_9="9.1", v10_11="9.3", v12="10.3")),
    ("power levels with a stringy user level (v1–v9)", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, users=_users(v, **{USER: "0050"}))),
     expect(v10_11="9.3", v12="10.3")),
    ("v12 power levels naming the creator", "12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, users=_users(v, **{CREATOR: 100}))),
     expect(v12="10.4")),
    ("v12 power levels naming an additional creator", "12",
     lambda v: base_room(v, create=create_event(v, additional_creators=[SAME])),
     lambda v: power_levels(v, sender=MOD, **_levels(v, users=_users(v, **{SAME: 0}))),
     expect(v12="10.4")),
    ("first power levels", "1-12", lambda v: {k: e for k, e in base_room(v).items() if k[0] != "m.room.power_levels"},
     lambda v: power_levels(v, **_levels(v, ban=1000, users=_users(v, **{USER: 1000}))), ALLOWED),
    ("moderator lowers ban", "1-12", base_room, lambda v: power_levels(v, sender=MOD, **_levels(v, ban=40)), ALLOWED),
    ("moderator rewrites a level as a string (unchanged)", "1-9", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, redact="75")), ALLOWED),
    ("moderator raises kick above its level", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, kick=60)),
     expect(v1_5="10.3.2", v6_9="9.3.2", v10_11="9.5.2", v12="10.6.2")),
    ("moderator lowers redact from above its level", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, redact=50)),
     expect(v1_5="10.3.1", v6_9="9.3.1", v10_11="9.5.1", v12="10.6.1")),
    ("moderator removes redact (above its level)", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **{k: x for k, x in base_levels(v).items() if k != "redact"}),
     expect(v1_5="10.3.1", v6_9="9.3.1", v10_11="9.5.1", v12="10.6.1")),
    ("moderator lowers an events level from above its level", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, events={"m.room.power_levels": 50, "m.room.name": 50})),
     expect(v1_5="10.4.1", v6_9="9.4.1", v10_11="9.6.1", v12="10.7.1")),
    ("moderator adds an events level above its level", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(
         v, events={"m.room.power_levels": 50, "m.room.name": 100, "m.room.topic": 60})),
     expect(v1_5="10.5.1", v6_9="9.5.1", v10_11="9.7.1", v12="10.8.1")),
    ("moderator lowers notifications from above its level", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, notifications={"room": 0})),
     expect(v6_9="9.4.1", v10_11="9.6.1", v12="10.7.1")),
    ("moderator adds notifications above its level", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, notifications={"room": 100, "x": 51})),
     expect(v6_9="9.5.1", v10_11="9.7.1", v12="10.8.1")),
    ("moderator promotes a user to its level", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, users=_users(v, **{USER: 50}))), ALLOWED),
    ("moderator demotes itself", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, users=_users(v, **{MOD: 10}))), ALLOWED),
    ("moderator promotes a user above its level", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, users=_users(v, **{USER: 51}))),
     expect(v1_5="10.7.1", v6_9="9.7.1", v10_11="9.9.1", v12="10.10.1")),
    ("moderator demotes a moderator of its level", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, users=_users(v, **{MOD2: 0}))),
     expect(v1_5="10.6.1", v6_9="9.6.1", v10_11="9.8.1", v12="10.9.1")),
    ("moderator removes a moderator of its level", "1-12", base_room,
     lambda v: power_levels(v, sender=MOD, **_levels(v, users={k: x for k, x in _users(v).items() if k != MOD2})),
     expect(v1_5="10.6.1", v6_9="9.6.1", v10_11="9.8.1", v12="10.9.1")),
    ("v12 creator demotes every moderator", "12", base_room,
     lambda v: power_levels(v, **_levels(v, users={}, ban=10**9)), ALLOWED),
    # -- m.room.redaction ---------------------------------------------------------------
    ("redaction of an event of the redacter's server", "1-12", base_room,
     lambda v: event(v, "m.room.redaction", USER, redacts="$x:b.test"), ALLOWED),
    ("redaction of an event of another server, below the redact level", "1-12", base_room,
     lambda v: event(v, "m.room.redaction", USER, redacts="$x:a.test"), expect(v1_2="11.3")),
    ("redaction at the redact level", "1-12", base_room,
     lambda v: event(v, "m.room.redaction", CREATOR, redacts="$x:b.test"), ALLOWED),
    # -- otherwise, allow ---------------------------------------------------------------
    ("custom state at state_default", "1-12", base_room,
     lambda v: event(v, "org.example.state", MOD, {"x": 1}, state_key="k"), ALLOWED),
]


# Kick and ban take the same checks (leave .2 / .4 / .5, ban .1 / .2 / .3).
for _m, (_not_joined, _refused), _level in (("leave", ("2", "5"), "kick"), ("ban", ("1", "3"), "ban")):
    CASES += [
        (f"{_m}: user removes a moderator", "1-12", base_room,
         lambda v, m=_m: member(v, MOD, m, sender=USER), member_rule(_m, _refused)),
        (f"{_m}: moderator removes a moderator of the same level", "1-12", base_room,
         lambda v, m=_m: member(v, MOD2, m, sender=MOD), member_rule(_m, _refused)),
        (f"{_m}: moderator removes the creator", "1-12", base_room,
         lambda v, m=_m: member(v, CREATOR, m, sender=MOD), member_rule(_m, _refused)),
        (f"{_m}: user who left removes", "1-12", lambda v, lv=_level: base_room(v, levels=_levels(v, **{lv: 0})),
         lambda v, m=_m: member(v, USER, m, sender=LEFT), member_rule(_m, _not_joined)),
    ]


def _params():
    for name, spec, room, make, rules in CASES:
        for v in versions(spec):
            yield pytest.param(v, room, make, rules.get(v), id=f"v{v}-{name}")


@pytest.mark.parametrize("v, room, make, rule", list(_params()))
def test_rule(v, room, make, rule):
    state = room(v) if room is not None else {}
    ev = make(v)
    reason = auth.check(ev, state, v)
    if rule is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(f"rule {rule}: "), reason


def test_every_version_has_allowed_and_rejected_cases():
    for v in ALL_VERSIONS:
        rules = [c[4].get(v) for c in CASES if v in versions(c[1])]
        assert None in rules and len({r for r in rules if r}) > 25


def test_unknown_room_version_is_refused():
    with pytest.raises(InvalidEventError):
        auth.check(event("1", "m.room.message", USER), {}, "13")


# -- power-level helpers ------------------------------------------------------------------

@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_power_level_of(v):
    state = base_room(v)
    assert auth.power_level_of(MOD, state, v) == 50
    assert auth.power_level_of(NEW, state, v) == 0
    expected_creator = auth.PRIVILEGED_LEVEL if v == "12" else 100
    assert auth.power_level_of(CREATOR, state, v) == expected_creator
    assert auth.named_level("invite", state, v) == 50
    assert auth.required_level("m.room.name", True, state, v) == 100
    bare = state_of(create_event(v))
    assert auth.power_level_of(CREATOR, bare, v) == expected_creator
    assert auth.power_level_of(MOD, bare, v) == 0
    assert [auth.named_level(k, bare, v) for k in ("invite", "kick", "ban", "redact")] == [0, 50, 50, 50]
    assert auth.required_level("m.room.topic", True, bare, v) == 50
    assert auth.required_level("m.room.message", False, bare, v) == 0


@pytest.mark.parametrize("value, levels", [
    ("100", {"1": 100, "9": 100, "10": None}),
    (" -0100 ", {"1": -100, "9": -100, "10": None}),
    ("1e3", {"1": None}), ("1_000", {"1": None}), ("١٢", {"1": None}), (True, {"1": None, "10": None}),
    (50.9, {"1": 50, "5": 50, "6": None}), (float("nan"), {"1": None}),
])
def test_level_values(value, levels):
    for v, level in levels.items():
        state = state_of(create_event(v), power_levels(v, users_default=value))
        assert auth.power_level_of(USER, state, v) == (0 if level is None else level)


# -- auth events selection ----------------------------------------------------------------

def _keys(v, *extra):
    keys = {("m.room.power_levels", ""), *extra}
    if v != "12":
        keys.add(("m.room.create", ""))
    return keys


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_auth_types_for_event(v):
    assert auth.auth_types_for_event(create_event(v), v) == set()
    msg = event(v, "m.room.message", USER)
    assert auth.auth_types_for_event(msg, v) == _keys(v, ("m.room.member", USER))
    jr = ("m.room.join_rules", "")
    for membership in ("join", "invite", "knock"):
        ev = member(v, NEW, membership, sender=MOD)
        assert auth.auth_types_for_event(ev, v) == _keys(v, ("m.room.member", MOD), ("m.room.member", NEW), jr)
    for membership in ("leave", "ban"):
        ev = member(v, NEW, membership, sender=MOD)
        assert auth.auth_types_for_event(ev, v) == _keys(v, ("m.room.member", MOD), ("m.room.member", NEW))
    tpi = _tpi_member(v)
    assert auth.auth_types_for_event(tpi, v) == _keys(
        v, ("m.room.member", MOD), ("m.room.member", NEW), jr, ("m.room.third_party_invite", "tok"))
    via = member(v, NEW, "join", join_authorised_via_users_server=MOD)
    extra = {("m.room.member", MOD)} if int(v) >= 8 else set()
    assert auth.auth_types_for_event(via, v) == _keys(v, ("m.room.member", NEW), jr, *extra)


@pytest.mark.parametrize("v", ALL_VERSIONS)
def test_check_auth_events(v):
    state = base_room(v)
    create = state[("m.room.create", "")]
    pl = state[("m.room.power_levels", "")]
    mine = state[("m.room.member", USER)]
    ev = event(v, "m.room.message", USER)
    a = "3" if v == "12" else "2"
    good = [pl, mine] if v == "12" else [create, pl, mine]
    assert auth.check_auth_events(ev, good, v, create) is None

    def reason(auth_events, create_event=create):
        r = auth.check_auth_events(ev, auth_events, v, create_event)
        assert r is not None
        return r.partition(":")[0]

    assert reason(good + [pl]) == f"rule {a}.1"
    assert reason(good + [state[("m.room.join_rules", "")]]) == f"rule {a}.2"
    assert reason(good[:-1] + [{**mine, "rejected": True}]) == f"rule {a}.3"
    assert reason(good[:-1] + [{**mine, "room_id": "!other:b.test"}]) == ("rule 3.5" if v == "12" else "rule 2")
    if v == "12":
        assert reason(good + [create]) == "rule 3.2"
        assert reason(good, {**create, "event_id": "$other"}) == "rule 2"
        assert reason(good, {**create, "rejected": True}) == "rule 2"
    else:
        assert reason([pl, mine]) == "rule 2.4"
    # A create event: rule 1, whatever the list.
    assert auth.check_auth_events(create, [], v) is None
    assert auth.check_auth_events({**create, "prev_events": ["$x"]}, [], v).startswith("rule 1.1")
