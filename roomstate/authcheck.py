"""``check_auth``: the authorization rules applied to each event the store is given.

An event is checked (``roomstate.matrix.auth``) against its own auth events, then against
the state before it; one that fails is stored rejected, with the rule it broke as its
reason.  The rules read the auth events' fields from their records and their content from
the extras (``roomstate.extras``).  Signatures are not checked: that is the caller's part.
"""
from .errors import InvalidEventError, MissingEventError
from .events import MEMBERSHIPS
from .extras import stored_extras
from .ids import CREATE_TYPE_NID, EMPTY_STATE_KEY_NID, ROOM, STATE_KEY, TYPE
from .matrix import auth as rules
from .matrix.versions import room_version as version_record

__all__ = ["AuthChecker"]

_CREATE = ("m.room.create", "")


class AuthChecker:
    def __init__(self, tables):
        self.ids = tables.ids
        self.events = tables.events
        self.snaps = tables.snaps
        # A create event's ID names its content (stored again only with the same), so the
        # room version it names can be kept by that ID across transactions.
        self._versions = {}

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

    def _create(self, tx, room_id, auth_dicts, before):
        """The room's create event (a dict), or None when it is not stored."""
        for d in auth_dicts:
            if d["type"] == "m.room.create" and d.get("state_key") == "":
                return d
        nid = self.snaps.get(tx, before, CREATE_TYPE_NID, EMPTY_STATE_KEY_NID) if before else 0
        if not nid and room_id.startswith("!"):
            nid = self.events.lookup(tx, "$" + room_id[1:])  # room version 12: the room ID names it
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

    def check(self, tx, ev, p, auth_nids, before):
        """The reason the event ``ev`` (parsed as ``p``) breaks the rules, or None.

        ``auth_nids``: its auth events' NIDs; ``before``: the snapshot of the state before
        it, 0 for an outlier (checked against its auth events only).
        """
        if p.sender is None:
            raise InvalidEventError("sender", "missing (the store checks the authorization rules)", p.event_id)
        if p.auth_ids is None:
            raise InvalidEventError("auth_events", "missing (the store checks the authorization rules)", p.event_id)
        events = self.events
        auth_dicts = [self.event_dict(tx, events.get(tx, n)) for n in auth_nids]
        if p.type == "m.room.create" and p.state_key == "":
            content = ev.get("content") or {}
            rv = version_record(content.get("room_version", "1"))
            create = None
        else:
            create = self._create(tx, p.room_id, auth_dicts, before)
            if create is None:
                raise MissingEventError(f"the create event of room {p.room_id!r} is not stored", p.room_id)
            rv = self._version(create)
        event = ev if "rejected" not in ev else {k: v for k, v in ev.items() if k != "rejected"}
        reason = rules.check_auth_events(event, auth_dicts, rv, create_event=create)
        if reason:
            return reason
        state = {(d["type"], d["state_key"]): d for d in auth_dicts if "state_key" in d}
        if create is not None:
            state.setdefault(_CREATE, create)  # room version 12 does not list it
        reason = rules.check(event, state, rv)
        if reason or not before:
            return reason
        # Against the state before the event: the keys the auth events selection names.
        ids, snaps = self.ids, self.snaps
        state = {}
        for type_, state_key in rules.auth_types_for_event(event, rv):
            tnid = ids.lookup(tx, TYPE, type_)
            knid = ids.lookup(tx, STATE_KEY, state_key) if tnid else 0
            enid = snaps.get(tx, before, tnid, knid) if knid else 0
            if enid:
                state[(type_, state_key)] = self.event_dict(tx, events.get(tx, enid))
        if create is not None:
            state.setdefault(_CREATE, create)
        reason = rules.check(event, state, rv)
        return f"against the state before the event: {reason}" if reason else None
