"""``check_auth``: the authorization rules applied to each event the store is given.

An event is checked (``roomstate.matrix.auth``) against its own auth events, then against
the state before it; one that fails is stored rejected, with the rule it broke as its
reason.  The rules read the auth events' fields from their records and their content from
the extras (``roomstate.extras``).  Signatures are not checked: that is the caller's part.
"""
from .errors import InvalidEventError, MissingEventError
from .events import MEMBERSHIPS, REJECTED
from .extras import stored_extras
from .ids import CREATE_TYPE_NID, EMPTY_STATE_KEY_NID, MEMBER_TYPE_NID, PREASSIGNED_TYPES, ROOM, STATE_KEY, TYPE
from ._parse import strictly_canonical
from .matrix import auth as rules
from .matrix.canonical import check_json
from .matrix.versions import room_version as version_record

__all__ = ["AuthChecker"]

_CREATE = ("m.room.create", "")
_TYPE_NID = {name: i for i, name in enumerate(PREASSIGNED_TYPES, start=1)}
REDACTION_TYPE_NID = _TYPE_NID["m.room.redaction"]
POWER_LEVELS_TYPE_NID = _TYPE_NID["m.room.power_levels"]
JOIN_RULES_TYPE_NID = _TYPE_NID["m.room.join_rules"]
#: Types whose rules read more than the plain cases (create, power levels, third-party
#: invites): always checked in full.
_SPECIAL_TYPES = (CREATE_TYPE_NID, POWER_LEVELS_TYPE_NID, _TYPE_NID["m.room.third_party_invite"])
_JOIN, _INVITE, _LEAVE, _BAN, _KNOCK = (MEMBERSHIPS.index(m) + 1 for m in ("join", "invite", "leave", "ban", "knock"))


class AuthChecker:
    def __init__(self, tables):
        self.ids = tables.ids
        self.events = tables.events
        self.snaps = tables.snaps
        # A create event's ID names its content (stored again only with the same), so the
        # room version it names can be kept by that ID across transactions.
        self._versions = {}
        self.memo = tables.auth_memo
        self.plain = True

    def event_dict(self, tx, rec):
        """A stored event as the rules read it: its fields, and of its content the extras."""
        ids = self.ids
        content = stored_extras(ids, tx, rec)
        type_ = ids.name(tx, TYPE, rec.type)
        if rec.is_state and type_ == "m.room.member" and 1 <= rec.membership <= len(MEMBERSHIPS):
            content = {**content, "membership": MEMBERSHIPS[rec.membership - 1]}
        d = {
            "event_id": rec.event_id,
            "room_id": ids.name(tx, ROOM, rec.room),
            "type": type_,
            "sender": ids.name(tx, STATE_KEY, rec.sender) if rec.sender else None,
            "content": content,
            "rejected": rec.rejected,
        }
        if rec.is_state:
            d["state_key"] = ids.name(tx, STATE_KEY, rec.state_key)
        if type_ == "m.room.redaction" and "redacts" in content:
            d["redacts"] = content.pop("redacts")
        return d

    def _create_nid(self, tx, room_id, auth_nids, before):
        """The NID of the room's create event, 0 when it is not stored: the first create
        event among the auth events, else the state's, else (room version 12) the one the
        room ID names."""
        events = self.events
        for n in auth_nids:
            rec = events.get(tx, n)
            if rec.type == CREATE_TYPE_NID and rec.state_key == EMPTY_STATE_KEY_NID:
                return n
        nid = self.snaps.get(tx, before, CREATE_TYPE_NID, EMPTY_STATE_KEY_NID) if before else 0
        if not nid and room_id.startswith("!"):
            nid = events.lookup(tx, "$" + room_id[1:]) or 0
        return nid

    def _create(self, tx, room_id, nid):
        """The create event of NID ``nid`` as a dict, or None when it is no create event of
        the room."""
        rec = self.events.get(tx, nid) if nid else None
        if rec is None or rec.type != CREATE_TYPE_NID or not rec.is_state:
            return None
        d = self.event_dict(tx, rec)
        return d if d["room_id"] == room_id else None

    def _version(self, create):
        v = self._versions.get(create["event_id"])
        if v is None:
            v = self._versions[create["event_id"]] = version_record(create["content"].get("room_version", "1"))
        return v

    def forget(self, tx):
        """An event's record changed (an outlier placed in the DAG, now rejected perhaps):
        forget every answer kept."""
        self.memo.cache.clear()
        tx.pending.pop(self.memo.table, None)
        tx.pending.pop("matrix:events", None)  # the Matrix resolution's (roomstate.matrixres)

    def check(self, tx, ev, p, auth_nids, before, fields, prev_nids):
        """The reason the event ``ev`` (parsed as ``p``) breaks the rules, or None.

        ``auth_nids``: its auth events' NIDs, ascending; ``before``: the snapshot of the
        state before it, 0 for an outlier (checked against its auth events only);
        ``fields``: ``(room, type, state key, sender, membership, extras)`` as NIDs (state
        key 0 for a message); ``prev_nids``: its prev events' NIDs.

        The rules read nothing of an event but those fields, whether its only prev event
        is the create event, and its auth events (or the state's events at the keys the
        auth events selection names).  So an answer is kept under those NIDs and given
        again to every event that has them: most messages and joins of a room are the
        same question.  Create events, redactions (rooms v1–v2 read their event ID) and
        memberships outside the five the spec defines are always checked afresh.  A write
        transaction's answers are its own until it commits (a NID it assigned may name
        another event after an abort).
        """
        if p.sender is None:
            raise InvalidEventError("sender", "missing (the store checks the authorization rules)", p.event_id)
        if p.auth_ids is None:
            raise InvalidEventError("auth_events", "missing (the store checks the authorization rules)", p.event_id)
        type_nid = fields[1]
        if type_nid == CREATE_TYPE_NID and fields[2] == EMPTY_STATE_KEY_NID:
            content = ev.get("content") or {}
            rv = version_record(content.get("room_version", "1"))
            strict_json(ev, rv, p.event_id)
            return self._checked(tx, ev, auth_nids, rv, None)
        if self.plain and self._allowed_plainly(tx, ev, p, fields, auth_nids, prev_nids, before):
            return None
        create_nid = self._create_nid(tx, p.room_id, auth_nids, before)
        create = self._room_create(tx, p.room_id, create_nid)
        rv = self._version(create)
        strict_json(ev, rv, p.event_id)
        memo = self.memo
        kept = not (type_nid == REDACTION_TYPE_NID or (type_nid == MEMBER_TYPE_NID and not 1 <= fields[4] <= 5))
        # The rule of the creator's first join: is the only prev event the create event?
        key = (fields, len(prev_nids) == 1 and prev_nids[0] == create_nid, create_nid, auth_nids)
        answer = memo.find(tx, key) if kept else None
        if answer is None:
            reason = self._checked(tx, ev, auth_nids, rv, create)
            # The answer against the auth events, and the keys to read in the state before.
            answer = (reason or "", self._selection(tx, ev, create))
            if kept:
                memo.keep(tx, key, answer)
        reason, selection = answer
        if reason or not before:
            return reason or None
        # Against the state before the event: when it holds exactly the auth events at the
        # keys the selection names (nearly always), the answer is the one just given.
        if selection is None:
            selection = self._selection(tx, ev, create)
        found = {n for n in self.snaps.get_many(tx, before, [(t, k) for t, k in selection if t and k]) if n}
        state = tuple(sorted(found))
        if state == auth_nids:
            return None
        # As above, for the state's create event.
        only_prev = prev_nids[0] if len(prev_nids) == 1 and prev_nids[0] in found else 0
        key = ("before", fields, only_prev, create_nid, state)
        reason = memo.find(tx, key) if kept else None
        if reason is None:
            reason = self._against(tx, ev, state, create, rv) or ""
            if kept:
                memo.keep(tx, key, reason)
        return reason or None

    # -- the plain cases, decided on NIDs --------------------------------------------
    def _allowed_plainly(self, tx, ev, p, fields, auth_nids, prev_nids, before):
        """True when the event is one of the plain cases and the rules allow it, against
        its auth events and the state before it: a message or a state event other than
        the power levels by a joined member with the level it needs; a user's own join
        without extras (public room, or invited) and own leave.  False says only "not
        decided here": :meth:`check` then applies every rule.  Reads the records' NIDs
        and flags, and what is kept of the room's create event, power levels and join
        rules, so that the common events cost no dicts."""
        room, type_nid, skey_nid, sender_nid, membership, extras_nid = fields
        facts = self.memo.find(tx, ("room", room))
        if facts is None:
            create_nid = self._create_nid(tx, p.room_id, auth_nids, before)
            if not create_nid:
                return False
            facts = self._create_facts(tx, p.room_id, create_nid)
            facts = self.memo.keep(tx, ("room", room), (create_nid,) + facts if facts else ())
        if not facts:
            return False
        create_nid, rv, needs_create = facts
        strict_json(ev, rv, p.event_id)
        is_member = type_nid == MEMBER_TYPE_NID
        if is_member:
            # own join (sender == target, no join_authorised_via / third-party invite) or leave
            if skey_nid != sender_nid or extras_nid or membership not in (_JOIN, _LEAVE):
                return False
            if membership == _JOIN and len(prev_nids) == 1 and prev_nids[0] == create_nid:
                return False  # the creator's first join: rule .1, in check()
        elif type_nid in _SPECIAL_TYPES or (type_nid == REDACTION_TYPE_NID and rv.identifier in ("1", "2")):
            return False
        elif skey_nid and (
            (p.state_key != p.sender and p.state_key.startswith("@"))  # rule 9: another user's key
            or (rv.special_case_aliases and p.type == "m.room.aliases")  # v1–v5 rule 4
        ):
            return False
        # The auth events: each of a key the selection allows, once, none rejected.
        events = self.events
        pl = jr = member = 0
        sender_membership = 0  # none: the sender's member event is not among the auth events
        has_create = False
        for n in auth_nids:
            rec = events.get(tx, n)
            if rec.flags & REJECTED:
                return False
            t, k = rec.type, rec.state_key
            if t == CREATE_TYPE_NID and k == EMPTY_STATE_KEY_NID:
                if n != create_nid or not needs_create or has_create:
                    return False  # another create event than the room's, or twice
                has_create = True
            elif t == POWER_LEVELS_TYPE_NID and k == EMPTY_STATE_KEY_NID and not pl:
                pl = n
            elif t == MEMBER_TYPE_NID and k == sender_nid and not member:
                member = n
                sender_membership = rec.membership
            elif t == JOIN_RULES_TYPE_NID and k == EMPTY_STATE_KEY_NID and is_member and membership == _JOIN and not jr:
                jr = n
            else:
                return False
        if needs_create and not has_create:
            return False
        if is_member:
            if not self._own_membership_allowed(tx, rv, membership, sender_membership, jr):
                return False
        else:
            if sender_membership != _JOIN:
                return False
            if self._level(tx, p, fields, create_nid, pl, rv) < self._required(tx, p, fields, create_nid, pl, rv):
                return False
        if not before:
            return True
        # Against the state before: the same events at the keys the selection names.
        snaps = self.snaps
        keys = [(POWER_LEVELS_TYPE_NID, EMPTY_STATE_KEY_NID), (MEMBER_TYPE_NID, sender_nid)]
        if needs_create:
            keys.append((CREATE_TYPE_NID, EMPTY_STATE_KEY_NID))
        if is_member and membership == _JOIN:
            keys.append((JOIN_RULES_TYPE_NID, EMPTY_STATE_KEY_NID))
        found = sorted(n for n in snaps.get_many(tx, before, keys) if n)
        return tuple(found) == auth_nids

    def allowed_in_state(self, tx, rec, room_id, state):
        """The plain cases of :meth:`_allowed_plainly` against a given auth state (the
        iterative auth checks of state resolution): True when the rules allow the stored
        event ``rec`` against the events ``state`` (NIDs, at the keys the auth events
        selection names, the create event included), None when not decided here (the
        caller applies every rule).  The event's prev events are not read (the
        resolution's events carry none, so the creator's first join is no plain case)."""
        if not self.plain:
            return None
        events = self.events
        create_nid = pl = jr = 0
        sender_membership = 0
        type_nid, skey_nid, sender_nid, membership = rec.type, rec.state_key, rec.sender, rec.membership
        for n in state:
            srec = events.get(tx, n)
            t, k = srec.type, srec.state_key
            if t == CREATE_TYPE_NID and k == EMPTY_STATE_KEY_NID:
                create_nid = n
            elif t == POWER_LEVELS_TYPE_NID and k == EMPTY_STATE_KEY_NID:
                pl = n
            elif t == JOIN_RULES_TYPE_NID and k == EMPTY_STATE_KEY_NID:
                jr = n
            elif t == MEMBER_TYPE_NID and k == sender_nid:
                sender_membership = srec.membership
        if not create_nid:
            return None
        facts = self._create_facts(tx, room_id, create_nid)
        if facts is None:
            return None
        rv = facts[0]
        if type_nid == MEMBER_TYPE_NID:
            if skey_nid != sender_nid or rec.extras or membership not in (_JOIN, _LEAVE):
                return None
            return True if self._own_membership_allowed(tx, rv, membership, sender_membership, jr) else None
        if type_nid in _SPECIAL_TYPES or type_nid == REDACTION_TYPE_NID or sender_membership != _JOIN:
            return None
        ids = self.ids
        type_ = ids.name(tx, TYPE, type_nid)
        if rv.special_case_aliases and type_ == "m.room.aliases":
            return None
        sender = ids.name(tx, STATE_KEY, sender_nid)
        if rec.is_state and skey_nid != sender_nid:
            state_key = ids.name(tx, STATE_KEY, skey_nid)
            if state_key.startswith("@"):
                return None  # rule 9: another user's key
        fields = (rec.room, type_nid, skey_nid if rec.is_state else 0, sender_nid)
        p = _Names(room_id, type_, sender)
        if self._level(tx, p, fields, create_nid, pl, rv) < self._required(tx, p, fields, create_nid, pl, rv):
            return None
        return True

    def _own_membership_allowed(self, tx, rv, membership, sender_membership, jr):
        """A user's own join (``membership`` join) or leave, by the membership rules
        (join: not banned, and a public room or invited/joined under invite or knock
        rules; leave: from join, invite or (v7+) knock), with ``jr`` the join rules' NID.
        False also where a rule this does not read could allow it (restricted joins)."""
        if membership == _JOIN:
            if sender_membership == _BAN:
                return False
            join_rule = self._join_rule(tx, jr)
            return join_rule == "public" or (
                (join_rule == "invite" or (rv.knock and join_rule == "knock"))
                and sender_membership in (_JOIN, _INVITE)
            )
        return sender_membership in (_JOIN, _INVITE) or (rv.knock and sender_membership == _KNOCK)

    def _create_facts(self, tx, room_id, create_nid):
        """``(room version, whether the auth events name the create event)`` of a room
        whose create event (NID ``create_nid``) lets the plain cases be decided on NIDs;
        None when it does not (no create event; ``m.federate`` false; room version 12's
        room ID not naming it)."""
        key = ("create", create_nid)
        facts = self.memo.find(tx, key)
        if facts is None:
            create = self._create(tx, room_id, create_nid)
            facts = ()
            if create is not None:
                rv = self._version(create)
                if create["content"].get("m.federate", True) is not False and not (
                    rv.room_id_from_create and rules.check_auth_events(
                        {"type": "m.room.message", "room_id": room_id}, (), rv, create_event=create
                    )
                ):
                    facts = (rv, not rv.room_id_from_create)
            self.memo.keep(tx, key, facts)
        return facts or None

    def _join_rule(self, tx, jr):
        """The join rule of the join-rules event of NID ``jr`` (0: none, read as invite)."""
        if not jr:
            return "invite"
        key = ("join rule", jr)
        rule = self.memo.find(tx, key)
        if rule is None:
            rule = self.event_dict(tx, self.events.get(tx, jr))["content"].get("join_rule", "invite")
            rule = self.memo.keep(tx, key, rule if isinstance(rule, str) else "")
        return rule

    def _levels_state(self, tx, room_id, create_nid, pl):
        """The auth state the power-level functions read: the create event and the power
        levels (kept: many senders' levels are read from the same)."""
        key = ("levels", create_nid, pl)
        state = self.memo.find(tx, key)
        if state is None:
            state = {_CREATE: self._room_create(tx, room_id, create_nid)}
            if pl:
                state[("m.room.power_levels", "")] = self.event_dict(tx, self.events.get(tx, pl))
            self.memo.keep(tx, key, state)
        return state

    def _level(self, tx, p, fields, create_nid, pl, rv):
        key = ("level", create_nid, pl, fields[3])
        level = self.memo.find(tx, key)
        if level is None:
            state = self._levels_state(tx, p.room_id, create_nid, pl)
            level = self.memo.keep(tx, key, rules.power_level_of(p.sender, state, rv))
        return level

    def _required(self, tx, p, fields, create_nid, pl, rv):
        key = ("required", create_nid, pl, fields[1], fields[2] != 0)
        level = self.memo.find(tx, key)
        if level is None:
            state = self._levels_state(tx, p.room_id, create_nid, pl)
            level = self.memo.keep(tx, key, rules.required_level(p.type, fields[2] != 0, state, rv))
        return level

    def _room_create(self, tx, room_id, nid):
        create = self._create(tx, room_id, nid)
        if create is None:
            raise MissingEventError(f"the create event of room {room_id!r} is not stored", room_id)
        return create

    def _selection(self, tx, ev, create):
        """The ``(type, state key)`` NID pairs the auth events selection names for ``ev``
        (0 for a string without a NID, whose key no state holds); None when one lacks a
        NID, since it may gain one (the answer is then not kept)."""
        ids = self.ids
        rv = self._version(create)
        pairs = []
        complete = True
        for type_, state_key in rules.auth_types_for_event(_without_rejected(ev), rv):
            tnid = ids.lookup(tx, TYPE, type_)
            knid = ids.lookup(tx, STATE_KEY, state_key) if isinstance(state_key, str) else 0
            if not (tnid and knid):
                complete = False
            pairs.append((tnid or 0, knid or 0))
        return tuple(pairs) if complete else None

    def _checked(self, tx, ev, auth_nids, rv, create):
        """The rules against the event's auth events: the reason it fails, or None."""
        events = self.events
        auth_dicts = [self.event_dict(tx, events.get(tx, n)) for n in auth_nids]
        event = _without_rejected(ev)
        reason = rules.check_auth_events(event, auth_dicts, rv, create_event=create)
        if reason:
            return reason
        state = {(d["type"], d["state_key"]): d for d in auth_dicts if "state_key" in d}
        if create is not None:
            state.setdefault(_CREATE, create)  # room version 12 does not list it
        return rules.check(event, state, rv)

    def _against(self, tx, ev, state_nids, create, rv):
        """The rules against the state before the event (its events ``state_nids`` at the
        keys the selection names): the reason it fails, or None."""
        events = self.events
        state = {}
        for n in state_nids:
            d = self.event_dict(tx, events.get(tx, n))
            state[(d["type"], d["state_key"])] = d
        state.setdefault(_CREATE, create)
        reason = rules.check(_without_rejected(ev), state, rv)
        return f"against the state before the event: {reason}" if reason else None


class _Names:
    """What the power-level readers take of an event: its room ID, type and sender."""

    __slots__ = ("room_id", "type", "sender")

    def __init__(self, room_id, type_, sender):
        self.room_id = room_id
        self.type = type_
        self.sender = sender


def strict_json(ev, rv, event_id):
    """Room versions 6 and later: InvalidEventError naming the first float or integer out of
    canonical JSON's range in the event (``unsigned`` aside)."""
    if not rv.strict_canonical_json or strictly_canonical(ev):
        return
    for k, v in ev.items():
        if k != "unsigned":
            try:
                check_json(v, True, k)
            except InvalidEventError as exc:
                raise InvalidEventError(exc.field, f"{exc.reason} (room version {rv.identifier})", event_id) from None
            except RecursionError:
                raise InvalidEventError(k, "nested too deeply to check as canonical JSON", event_id) from None


def _without_rejected(ev):
    return ev if "rejected" not in ev else {k: v for k, v in ev.items() if k != "rejected"}
