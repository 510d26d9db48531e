"""Differential tests of roomstate.matrix.auth against Synapse's event auth (the oracle).

Synapse is AGPL: it is used here only as an oracle, never by the package.  Hypothesis
generates rooms (create event, power levels of several levels, join rules, members in
every membership, third-party invites) and crafted events in room versions 1–12, and
checks that ``auth.check`` rejects exactly what
``synapse.event_auth.check_state_dependent_auth_rules`` rejects, and
``auth.check_auth_events`` exactly what ``check_state_independent_auth_rules`` rejects.

Where Synapse departs from the specification the specification wins; the cases are
named in ``_spec_departure`` below.  Third-party invites are signed for real here (the
oracle verifies signatures; roomstate leaves that to the caller, so no badly signed
invite is generated).
"""
import asyncio
import collections
import os
import warnings

import pytest

with warnings.catch_warnings():
    # Synapse's dependencies warn of deprecations on import (twisted.web, jsonschema).
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(twisted|synapse)\.")
    pytest.importorskip("synapse")
    import synapse.storage  # noqa: F401  (first: the event modules import it circularly)
    from synapse.api.errors import SynapseError
    from synapse.api.room_versions import KNOWN_ROOM_VERSIONS
    from synapse.event_auth import check_state_dependent_auth_rules, check_state_independent_auth_rules
    from synapse.events import make_event_from_dict
    import signedjson.key
    import signedjson.sign
    from unpaddedbase64 import encode_base64

from hypothesis import HealthCheck, given, settings, strategies as st

from roomstate.matrix import auth
from auth_rooms import ALL_VERSIONS

pytestmark = pytest.mark.oracle

#: Examples per test (more for a long run: ROOMSTATE_ORACLE_EXAMPLES=20000).
EXAMPLES = int(os.environ.get("ROOMSTATE_ORACLE_EXAMPLES", "600"))

_KEY = signedjson.key.generate_signing_key("0")
_PUBLIC_KEY = encode_base64(signedjson.key.get_verify_key(_KEY).encode())

CREATOR = "@alice:a.test"
USERS = [CREATOR, "@u1:a.test", "@u2:b.test", "@u3:b.test", "@u4:c.test", "@u5:c.test"]
OUTSIDER = "@new:b.test"
LEVELS = [0, 10, 50, 75, 100]
MEMBERSHIPS = ["join", "invite", "leave", "ban", "knock"]
JOIN_RULES = ["public", "invite", "knock", "restricted", "knock_restricted", "private"]
TOP = ["users_default", "events_default", "state_default", "ban", "kick", "redact", "invite"]


class Room:
    """One generated room: the state as PDU dicts, and the same events as Synapse's."""

    def __init__(self, v):
        self.v = v
        self.rv = KNOWN_ROOM_VERSIONS[v]
        self.room_id = None
        self.create = None
        self.state = {}
        self.synapse = {}  # event_id -> Synapse event
        self.counter = 0

    def add(self, pdu, *, rejected=False, to_state=True):
        """Give ``pdu`` its IDs (Synapse's reference hash from v3), keep both forms."""
        self.counter += 1
        pdu.setdefault("origin_server_ts", self.counter)
        pdu.setdefault("depth", self.counter)
        pdu.setdefault("hashes", {"sha256": "aGFzaA"})
        pdu.setdefault("signatures", {})
        if self.room_id is not None:
            pdu.setdefault("room_id", self.room_id)
        if self.v in ("1", "2"):
            pdu["event_id"] = f"$e{self.counter}:{pdu['sender'].partition(':')[2]}"
        ev = make_event_from_dict(
            {k: x for k, x in pdu.items() if k not in ("rejected",) and (self.v in ("1", "2") or k != "event_id")},
            self.rv, rejected_reason="rejected in the test" if rejected else None,
        )
        pdu["event_id"] = ev.event_id
        if rejected:
            pdu["rejected"] = True
        self.synapse[ev.event_id] = ev
        if to_state:
            self.state[(pdu["type"], pdu["state_key"])] = pdu
        return pdu

    def ref(self, event_id):
        return [event_id, {"sha256": "aGFzaA"}] if self.v in ("1", "2") else event_id


def _level(draw, v):
    level = draw(st.sampled_from(LEVELS))
    if int(v) < 10 and draw(st.integers(0, 4)) == 0:
        return draw(st.sampled_from([str(level), f" +{level} ", f"00{level}"]))
    return level


@st.composite
def rooms(draw):
    v = draw(st.sampled_from(ALL_VERSIONS))
    room = Room(v)
    content = {"room_version": v}
    if int(v) < 11:
        content["creator"] = CREATOR
    federate = draw(st.sampled_from([None, True, False]))
    if federate is not None:
        content["m.federate"] = federate
    creators = {CREATOR}
    if v == "12":
        extra = draw(st.lists(st.sampled_from(USERS[1:]), unique=True, max_size=2))
        if extra:
            content["additional_creators"] = extra
            creators.update(extra)
    create = {"type": "m.room.create", "state_key": "", "sender": CREATOR, "content": content,
              "prev_events": [], "auth_events": []}
    if v != "12":
        create["room_id"] = "!room:a.test"
    room.create = room.add(create)
    room.room_id = create.get("room_id") or "!" + create["event_id"][1:]
    room.add({"type": "m.room.member", "state_key": CREATOR, "sender": CREATOR,
              "content": {"membership": "join"}, "prev_events": [room.ref(create["event_id"])], "auth_events": []})
    if draw(st.integers(0, 5)):
        pl = {}
        users = {u: _level(draw, v) for u in USERS if u not in creators and draw(st.booleans())}
        if v != "12" and draw(st.integers(0, 4)):
            users[CREATOR] = 100
        pl["users"] = users
        for key in TOP:
            if draw(st.booleans()):
                pl[key] = _level(draw, v)
        pl["events"] = {t: _level(draw, v) for t in ("m.room.power_levels", "m.room.name", "m.room.message")
                        if draw(st.booleans())}
        if draw(st.booleans()):
            pl["notifications"] = {"room": _level(draw, v)}
        room.add({"type": "m.room.power_levels", "state_key": "", "sender": CREATOR, "content": pl,
                  "prev_events": [room.ref("$p:a.test")], "auth_events": []})
    rule = draw(st.sampled_from(JOIN_RULES + [None]))
    if rule is not None:
        room.add({"type": "m.room.join_rules", "state_key": "", "sender": CREATOR,
                  "content": {"join_rule": rule}, "prev_events": [room.ref("$p:a.test")], "auth_events": []})
    for user in USERS[1:]:
        membership = draw(st.sampled_from(MEMBERSHIPS + [None]))
        if membership is not None:
            sender = user if membership in ("join", "leave", "knock") else CREATOR
            room.add({"type": "m.room.member", "state_key": user, "sender": sender,
                      "content": {"membership": membership}, "prev_events": [room.ref("$p:a.test")], "auth_events": []})
    if draw(st.booleans()):
        keys = ({"public_key": _PUBLIC_KEY} if draw(st.booleans())
                else {"public_keys": [{"public_key": _PUBLIC_KEY}]})
        room.add({"type": "m.room.third_party_invite", "state_key": "tok", "sender": draw(st.sampled_from(USERS)),
                  "content": {"display_name": "x", **keys}, "prev_events": [room.ref("$p:a.test")], "auth_events": []})
    return room


def _signed(mxid, token):
    return signedjson.sign.sign_json({"mxid": mxid, "token": token}, "id.test", _KEY)


@st.composite
def crafted(draw, room):
    """An event for ``room``: its PDU dict, not yet given to Synapse."""
    v = room.v
    sender = draw(st.sampled_from(USERS))
    kind = draw(st.sampled_from(["member"] * 5 + ["message", "state", "power_levels", "tpi", "redaction", "aliases"]))
    prev = ["$prev:a.test"]
    if kind == "member":
        target = draw(st.sampled_from(USERS + [OUTSIDER]))
        membership = draw(st.sampled_from(MEMBERSHIPS))
        if membership in ("join", "knock") and draw(st.integers(0, 3)):
            sender = target
        if membership == "join" and draw(st.integers(0, 5)) == 0:
            prev = [room.create["event_id"]]
        content = {"membership": membership}
        if membership == "join" and draw(st.integers(0, 2)) == 0:
            content[auth.AUTHORISED_VIA] = draw(st.sampled_from(USERS))
        if membership == "invite" and draw(st.integers(0, 2)) == 0:
            mxid = target if draw(st.integers(0, 4)) else OUTSIDER
            token = draw(st.sampled_from(["tok", "tok", "other"]))
            content["third_party_invite"] = {"display_name": "x", "signed": _signed(mxid, token)}
        pdu = {"type": "m.room.member", "state_key": target, "content": content}
    elif kind == "message":
        pdu = {"type": "m.room.message", "content": {"body": "hi"}}
    elif kind == "state":
        pdu = {"type": draw(st.sampled_from(["m.room.topic", "m.room.name", "org.example"])),
               "state_key": draw(st.sampled_from(["", sender, draw(st.sampled_from(USERS))])), "content": {}}
    elif kind == "power_levels":
        pdu = {"type": "m.room.power_levels", "state_key": "", "content": _changed_levels(draw, room)}
    elif kind == "tpi":
        pdu = {"type": "m.room.third_party_invite", "state_key": "t2", "content": {"public_key": _PUBLIC_KEY}}
    elif kind == "redaction":
        pdu = {"type": "m.room.redaction", "content": {}, "redacts": draw(st.sampled_from(["$x:a.test", "$x:b.test"]))}
        if int(v) >= 11:
            pdu["content"]["redacts"] = pdu["redacts"]
    else:
        pdu = {"type": "m.room.aliases", "state_key": draw(st.sampled_from(["a.test", "b.test"])),
               "content": {"aliases": []}}
    pdu.update(sender=sender, prev_events=[room.ref(p) for p in prev], auth_events=[])
    return pdu


def _changed_levels(draw, room):
    old = room.state.get(("m.room.power_levels", ""))
    content = {k: (dict(x) if isinstance(x, dict) else x) for k, x in (old["content"] if old else {}).items()}
    for _ in range(draw(st.integers(1, 3))):
        what = draw(st.sampled_from(["users", "top", "events", "notifications", "bad"]))
        if what == "users":
            user = draw(st.sampled_from(USERS + [OUTSIDER]))
            users = content.setdefault("users", {})
            if user in users and draw(st.booleans()):
                del users[user]
            else:
                users[user] = _level(draw, room.v)
        elif what == "top":
            key = draw(st.sampled_from(TOP))
            if key in content and draw(st.booleans()):
                del content[key]
            else:
                content[key] = _level(draw, room.v)
        elif what in ("events", "notifications"):
            content.setdefault(what, {})[draw(st.sampled_from(["m.room.name", "room", "x"]))] = _level(draw, room.v)
        else:
            content.setdefault("users", {})[draw(st.sampled_from(["notauser", "@nocolon"]))] = 0
    if room.v == "12" and draw(st.integers(0, 5)) == 0:
        content.setdefault("users", {})[CREATOR] = 100
    if int(room.v) >= 10 and draw(st.integers(0, 5)) == 0:
        content[draw(st.sampled_from(TOP))] = "50"
    return content


def _synapse_verdict(call):
    try:
        call()
    except SynapseError as e:  # AuthError, and the SynapseError of power-level checks
        return str(e)
    except RuntimeError as e:
        # v12: Synapse's events refuse to list their auth events when the create event
        # is among them (rooms/v12 3.2: it must not be selected).
        if "implicitly part of the auth chain" not in str(e):
            raise
        return str(e).splitlines()[0]
    return None


def _spec_departure(room, pdu):
    """Why Synapse departs from the spec on this event, or None.

    Synapse also refuses, in a room with ``m.federate: false``, a membership event whose
    *target* is of another server than the creator; the rule (v1–v11 3, v12 4) reads only
    the sender's server.
    """
    create = room.create
    if (
        create["content"].get("m.federate") is False
        and pdu["type"] == "m.room.member"
        and auth._domain(pdu["state_key"]) != auth._domain(create["sender"])
    ):
        return "m.federate read of the target"
    return None


SEEN = {"dependent": 0, "independent": 0, "rejected": 0, "departures": 0}
RULES = collections.Counter()  # the rules that rejected, by check()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_check_matches_synapse(data):
    room = data.draw(rooms())
    pdu = data.draw(crafted(room))
    pdu = room.add(pdu, to_state=False)
    ours = auth.check(pdu, room.state, room.v)
    state_events = [room.synapse[e["event_id"]] for e in room.state.values()]
    theirs = _synapse_verdict(lambda: check_state_dependent_auth_rules(room.synapse[pdu["event_id"]], state_events))
    SEEN["dependent"] += 1
    SEEN["rejected"] += ours is not None
    RULES[f"v{room.v} " + (ours or "allowed").partition(":")[0]] += 1
    if (theirs is None) != (ours is None) and _spec_departure(room, pdu):
        SEEN["departures"] += 1
        assert ours is None and "unfederatable" in theirs, (ours, theirs)
        return
    assert (theirs is None) == (ours is None), f"v{room.v} roomstate: {ours!r}, Synapse: {theirs!r}\n{pdu}"


class _Store:
    """The one store method ``check_state_independent_auth_rules`` calls."""

    def __init__(self, events):
        self.events = events

    async def get_events(self, event_ids, redact_behaviour=None, allow_rejected=False):
        return {e: self.events[e] for e in event_ids if e in self.events}


@settings(max_examples=EXAMPLES * 2 // 3, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_check_auth_events_matches_synapse(data):
    room = data.draw(rooms())
    v = room.v
    if data.draw(st.integers(0, 5)) == 0:
        pdu = _crafted_create(data.draw, room)
        selected = []
    else:
        pdu = data.draw(crafted(room))
        wanted = auth.auth_types_for_event(pdu, v)
        selected = [e for k, e in room.state.items() if k in wanted]
        selected = _mutated(data.draw, room, pdu, selected)
        pdu["auth_events"] = [room.ref(e["event_id"]) for e in selected]
        pdu = room.add(pdu, to_state=False)
    ours = auth.check_auth_events(pdu, selected, v, room.create)
    store = _Store(room.synapse)
    theirs = _synapse_verdict(
        lambda: asyncio.run(check_state_independent_auth_rules(store, room.synapse[pdu["event_id"]])))
    SEEN["independent"] += 1
    assert (theirs is None) == (ours is None), f"v{v} roomstate: {ours!r}, Synapse: {theirs!r}\n{pdu}"


def _crafted_create(draw, room):
    v = room.v
    content = {"room_version": v}
    if int(v) < 11 and draw(st.integers(0, 3)):
        content["creator"] = CREATOR
    if draw(st.integers(0, 4)) == 0:
        content["room_version"] = "99"
    if v == "12" and draw(st.booleans()):
        content["additional_creators"] = draw(st.sampled_from([[USERS[1]], USERS[1], ["nope"], [5]]))
    pdu = {"type": "m.room.create", "state_key": "", "sender": CREATOR, "content": content,
           "prev_events": [room.ref("$x:a.test")] if draw(st.integers(0, 4)) == 0 else [], "auth_events": []}
    if v != "12":
        pdu["room_id"] = draw(st.sampled_from(["!new:a.test", "!new:a.test", "!new:b.test"]))
    room.room_id, saved = None, room.room_id
    try:
        return room.add(pdu, to_state=False)
    finally:
        room.room_id = saved


def _mutated(draw, room, pdu, selected):
    """The selected auth events, perhaps with one fault: a duplicate, a key the selection
    does not allow, a rejected event, the create event dropped or (v12) added, an event
    of another room."""
    fault = draw(st.sampled_from([None, None, "duplicate", "extra", "rejected", "create", "other room"]))
    selected = list(selected)
    if fault == "duplicate" and selected:
        e = draw(st.sampled_from(selected))
        selected.append(room.add({**e, "content": {**e["content"], "x": 1}, "event_id": None}, to_state=False))
    elif fault == "extra":
        extra = [e for k, e in room.state.items() if k not in auth.auth_types_for_event(pdu, room.v)
                 and k != ("m.room.create", "")]
        if extra:
            selected.append(draw(st.sampled_from(extra)))
    elif fault == "rejected" and selected:
        i = draw(st.integers(0, len(selected) - 1))
        if selected[i]["type"] != "m.room.create":
            e = selected[i]
            selected[i] = room.add({**e, "content": {**e["content"], "x": 2}, "event_id": None},
                                   rejected=True, to_state=False)
    elif fault == "create":
        if room.v == "12":
            selected.append(room.create)
        else:
            selected = [e for e in selected if e["type"] != "m.room.create"]
    elif fault == "other room" and selected:
        e = draw(st.sampled_from([e for e in selected if e["type"] != "m.room.create"] or [None]))
        if e is not None:
            other = room.add({**e, "room_id": "!other:a.test", "event_id": None}, to_state=False)
            selected = [other if x is e else x for x in selected]
    return selected


def test_examples_were_checked():
    """Run last in the module: say how many generated examples met the oracle."""
    if SEEN["dependent"] == 0:
        pytest.skip("the Hypothesis tests did not run")
    print(f"\nchecked against Synapse: {SEEN}; rules met: {len(RULES)}")
