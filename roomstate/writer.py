"""The add path: one event in, its record, its state and its room's extremities out.

``add`` runs the steps in order, each a method that can be tested alone:
parse the event (:func:`roomstate.events.parse`), give its strings NIDs,
read its prevs (:meth:`Writer.prevs`), find the state before and after it
(:meth:`Writer.states`), store its record, and move the room's forward
extremities (:meth:`Writer.extremities`).
"""
from collections.abc import Mapping

from . import _core
from ._write import cached_nid
from .blocks import empty_entries, entries_from
from .authcheck import AuthChecker
from .errors import InvalidEventError, MissingEventError
from .extras import EXTRAS_TYPES, extras_of, stored_extras
from .events import HAS_AUTH, HAS_CHILD, IS_STATE, MEMBERSHIP_MASK, OUTLIER, REJECTED, Record, parse, parse_common
from .ids import CREATE_TYPE_NID, EMPTY_STATE_KEY_NID, EVENT, ROOM, STATE_KEY, TYPE
from .matrix.eventid import compute_event_id
from .matrix.pdu import check_reference_counts
from .matrix.versions import version_of_create
from .snapshots import EMPTY_SNAPSHOT

#: What :meth:`Writer.add` stored.
ADDED_NOTHING, ADDED_EVENT, ADDED_STATE_EVENT = 0, 1, 2
#: Events of one ``add_all`` between trims of its transaction's caches.
TRIM_EVERY = 50_000


class Writer:
    def __init__(self, tables, merger, check_auth=False):
        self.check_auth = bool(check_auth)
        self.checker = AuthChecker(tables) if check_auth else None
        self.ids = tables.ids
        self.events = tables.events
        self.snaps = tables.snaps
        self.rooms = tables.rooms
        self.meta = tables.meta
        self.merger = merger

    def add_one(self, tx, ev, outlier, given, resolver):
        """Add one event and count it."""
        added = self.add(tx, ev, outlier, given, resolver)
        if added:
            self.meta.count_new(tx, 1, int(added == ADDED_STATE_EVENT))

    def add_all(self, tx, events, resolver, bar=None):
        """Add events in order in ``tx``; how many of them were new."""
        n = n_new = n_state = 0
        add = self.add
        for ev in events:
            added = add(tx, ev, False, None, resolver)
            n += 1
            if n % TRIM_EVERY == 0:
                tx.trim()  # keep a long transaction's caches bounded
            if added:
                n_new += 1
                if added == ADDED_STATE_EVENT:
                    n_state += 1
            if bar is not None:
                bar.update(1)
        self.meta.count_new(tx, n_new, n_state)
        return n_new

    def add(self, tx, ev, outlier, given, resolver):
        """Store one event; :data:`ADDED_NOTHING` when it was stored already."""
        if type(ev) is dict and "event_id" in ev and "room_id" in ev:
            named = ev
        else:
            ev, named = self.identify(tx, ev)
        p = parse_common(named) or parse(named)  # parse() takes the full validation when the fast path declines
        if self.check_auth:
            check_reference_counts(named, p.event_id)  # the PDU format's limits, on Matrix events
        ids, events = self.ids, self.events
        # Each field read once: ParsedEvent attributes are descriptor lookups.
        eid, room_id, type_, state_key = p.event_id, p.room_id, p.type, p.state_key
        membership, rejected = p.membership, p.rejected
        is_state = state_key is not None
        enid, fresh = events.lookup_or_assign(tx, eid)
        known_nid = not fresh
        existing = None if fresh else events.get(tx, enid)
        # Committed NIDs are in the process caches, this transaction's in its tables.
        to_nid, pending = ids.to_nid, tx.pending
        room = cached_nid(to_nid[ROOM], pending, "nid:r", room_id) or ids.assign(tx, ROOM, room_id)
        type_nid = cached_nid(to_nid[TYPE], pending, "nid:t", type_) or ids.assign(tx, TYPE, type_)
        skey_nid = 0
        if is_state:
            skey_nid = cached_nid(to_nid[STATE_KEY], pending, "nid:k", state_key) or ids.assign(
                tx, STATE_KEY, state_key
            )
        prev_nids, prev_recs, max_depth, missing, unsettled = self.prevs(tx, eid, room, p.prev_ids)
        depth = p.depth if p.depth is not None else 1 + max_depth
        flags = (IS_STATE if is_state else 0) | (REJECTED if rejected else 0)
        sender, ts, auth_ids = p.sender, p.ts, p.auth_ids
        sender_nid = extras_nid = 0
        auth = ()
        if sender is not None or ts is not None or auth_ids is not None:
            flags |= HAS_AUTH
            if sender is not None:
                sender_nid = cached_nid(to_nid[STATE_KEY], pending, "nid:k", sender) or ids.assign(
                    tx, STATE_KEY, sender
                )
            if auth_ids:
                auth = self.auth_events(tx, eid, room, auth_ids)
        if type_ in EXTRAS_TYPES:
            extras = extras_of(ev, type_, eid)
            if extras is not None:
                flags |= HAS_AUTH
                # Extras are strings of the state-key kind, as user IDs are: one NID per distinct value.
                extras_nid = cached_nid(to_nid[STATE_KEY], pending, "nid:k", extras) or ids.assign(tx, STATE_KEY, extras)
        ts = ts or 0

        if existing is not None:
            self.check_same(tx, existing, p, room, type_nid, skey_nid, prev_nids, flags, sender_nid, auth, extras_nid)
            if not existing.outlier or outlier:
                return ADDED_NOTHING
        appendable = not known_nid  # a NID above every stored record: its record can be appended
        if missing and self.place_missing_prevs(tx, eid, p.prev_ids, prev_nids, prev_recs, outlier or given is not None):
            appendable = False

        reason_nid = 0
        if outlier:
            before = after = 0
            flags |= OUTLIER
            if self.check_auth and not rejected:
                reason_nid = self.reject_for(
                    tx, ev, p, auth, 0, (room, type_nid, skey_nid, sender_nid, membership, extras_nid), prev_nids
                )
                if reason_nid:
                    flags |= REJECTED
        elif self.check_auth and not rejected:
            # The state before, then the rules against it, then the state after.
            before, _ = self.states(
                tx, room, room_id, eid, p.prev_ids, prev_recs, unsettled, given, resolver, 0, skey_nid, enid,
            )
            if existing is not None:
                self.checker.forget(tx)  # an outlier's answers may change with its state
            reason_nid = self.reject_for(
                tx, ev, p, auth, before, (room, type_nid, skey_nid, sender_nid, membership, extras_nid), prev_nids
            )
            if reason_nid:
                flags |= REJECTED
                after = before
            else:
                after = self.snaps.derive_state(tx, before, type_nid, skey_nid, enid) if is_state else before
        else:
            before, after = self.states(
                tx, room, room_id, eid, p.prev_ids, prev_recs, unsettled, given, resolver,
                type_nid if is_state and not rejected else 0, skey_nid, enid,
            )

        rec = Record(
            flags, membership, room, type_nid, skey_nid, depth, before, after, tuple(prev_nids), eid, sender_nid, ts, auth,
            extras_nid, reason_nid,
        )
        events.put(tx, enid, rec, append=appendable)
        # A brand-new NID has no marks yet; one that named a prev may have HAS_CHILD.
        own = events.marks(tx, enid) if known_nid else 0
        if (own & MEMBERSHIP_MASK) != membership:
            events.set_marks(tx, enid, (own & ~MEMBERSHIP_MASK) | membership)
        added = (ADDED_STATE_EVENT if is_state else ADDED_EVENT) if existing is None else ADDED_NOTHING
        if outlier:
            return added
        tx.last = (eid, enid, rec)
        self.extremities(tx, room, enid, prev_nids, own & HAS_CHILD)
        if missing or unsettled:
            self.mark_parents(tx, prev_nids, prev_recs)
        return added

    # -- the steps -------------------------------------------------------------
    def identify(self, tx, ev):
        """``(event, named)``: an event without ``event_id`` with the one its room version
        computes (the reference hash, rooms v3+), and ``named``, the same with the room ID
        a room version 12 create event names but does not carry (the rules read the event
        as given: a v12 create event with a ``room_id`` breaks them)."""
        if not isinstance(ev, Mapping):
            return ev, ev  # parse() says what is wrong
        is_create = ev.get("type") == "m.room.create" and ev.get("state_key") == ""
        if "event_id" in ev and not (is_create and "room_id" not in ev):
            return ev, ev
        rv = self.room_version_of(tx, ev, is_create)
        if "event_id" not in ev:
            try:
                ev = {**ev, "event_id": compute_event_id(ev, rv)}
            except RecursionError:
                raise InvalidEventError("event", "nested too deeply to compute its event ID") from None
        eid = ev["event_id"]
        if is_create and "room_id" not in ev and rv.room_id_from_create and isinstance(eid, str) and eid:
            return ev, {**ev, "room_id": "!" + eid[1:]}
        return ev, ev  # parse() says what is wrong with an event ID that is not one

    def room_version_of(self, tx, ev, is_create):
        """The room version of an event that does not carry its ID: a create event's
        content names it; another event's is its room's, read from the create event
        among its auth events (room version 12: the one its room ID names)."""
        if is_create:
            content = ev.get("content")
            return version_of_create(content if isinstance(content, Mapping) else {})
        events = self.events
        room_id = ev.get("room_id")
        auth = ev.get("auth_events")
        candidates = []
        if isinstance(auth, (list, tuple)):
            for ref in auth:
                ref = ref[0] if isinstance(ref, (list, tuple)) and ref else ref  # v1–v2: [id, hashes]
                if isinstance(ref, str):
                    candidates.append(ref)
        if isinstance(room_id, str) and room_id.startswith("!"):
            candidates.append("$" + room_id[1:])
        for ref in candidates:
            nid = events.lookup(tx, ref)
            rec = events.get(tx, nid) if nid else None
            if rec is not None and rec.type == CREATE_TYPE_NID and rec.state_key == EMPTY_STATE_KEY_NID:
                return version_of_create(stored_extras(self.ids, tx, rec))
        raise MissingEventError(
            f"the create event of room {room_id!r} is not stored (among the auth events), so the"
            " event's ID cannot be computed: its room version says how"
        )

    def prevs(self, tx, eid, room, prev_ids):
        """``(nids, records, max depth, missing, unsettled)`` of an event's prevs.

        A record is None for a prev not stored; ``unsettled`` when one is an outlier.
        """
        events = self.events
        prev_nids = []
        prev_recs = []
        max_depth = 0
        missing = unsettled = False
        last = tx.last
        for pid in prev_ids:
            if last is not None and last[0] == pid:
                # The event just added in this transaction: the usual prev of a linear history.
                pnid, prec = last[1], last[2]
            else:
                pnid = events.lookup(tx, pid)
                prec = events.get(tx, pnid) if pnid else None
            if prec is None:
                missing = True
            else:
                if prec.room != room:
                    raise InvalidEventError("prev_events", f"prev event {pid!r} belongs to another room", eid)
                if prec.depth > max_depth:
                    max_depth = prec.depth
                if prec.flags & OUTLIER:
                    unsettled = True
            prev_nids.append(pnid)
            prev_recs.append(prec)
        return prev_nids, prev_recs, max_depth, missing, unsettled

    def auth_events(self, tx, eid, room, auth_ids):
        """The NIDs of an event's auth events, ascending and without repeats: each must be
        stored (an outlier will do) and belong to the event's room."""
        events = self.events
        nids = set()
        for aid in auth_ids:
            anid = events.lookup(tx, aid)
            arec = events.get(tx, anid) if anid else None
            if arec is None:
                raise MissingEventError(f"auth event {aid!r} of {eid!r} is not stored", aid)
            if arec.room != room:
                raise InvalidEventError("auth_events", f"auth event {aid!r} belongs to another room", eid)
            nids.add(anid)
        return tuple(sorted(nids))

    def reject_for(self, tx, ev, p, auth, before, fields, prev_nids):
        """The state-key NID of the rule the event breaks (its reason, stored once per
        wording), or 0 when the authorization rules allow it.  ``fields``: the event's
        room, type, state key, sender, membership and extras (NIDs)."""
        reason = self.checker.check(tx, ev, p, auth, before, fields, prev_nids)
        if not reason:
            return 0
        ids = self.ids
        return cached_nid(ids.to_nid[STATE_KEY], tx.pending, "nid:k", reason) or ids.assign(tx, STATE_KEY, reason)

    def place_missing_prevs(self, tx, eid, prev_ids, prev_nids, prev_recs, allowed):
        """Give prevs not stored yet a NID and a placeholder record (outliers and given
        states only); True when one was placed."""
        placed = False
        events = self.events
        for i, pid in enumerate(prev_ids):
            if prev_recs[i] is None:
                if not allowed:
                    raise MissingEventError(f"prev event {pid!r} of {eid!r} is not stored", pid)
                if not prev_nids[i]:
                    prev_nids[i] = events.assign_new(tx, pid)
                    events.put_placeholder(tx, prev_nids[i], pid)
                    placed = True
        return placed

    def states(self, tx, room, room_id, eid, prev_ids, prev_recs, unsettled, given, resolver, type_nid, skey_nid, enid):
        """``(before, after)``: the snapshots of the state before and after the event.

        ``type_nid`` is 0 unless the event is an accepted state event.
        """
        if given is not None:
            parents = [r.after for r in prev_recs if r is not None and not r.outlier]
            before = self.given_state(tx, room, eid, given, parents)
        else:
            if unsettled:
                for pid, prec in zip(prev_ids, prev_recs):
                    if prec.outlier:
                        raise MissingEventError(
                            f"the state after prev event {pid!r} of {eid!r} is not known (it is an outlier)", pid
                        )
            if len(prev_recs) == 1:
                before = prev_recs[0].after
            elif not prev_recs:
                before = EMPTY_SNAPSHOT
            else:
                before = self.merger.merged_snapshot(tx, room_id, [r.after for r in prev_recs], resolver)
        if type_nid:
            return before, self.snaps.derive_state(tx, before, type_nid, skey_nid, enid)
        return before, before

    def extremities(self, tx, room, enid, prev_nids, has_child):
        """The new event replaces its prevs among the room's forward extremities, and is
        one itself unless a stored event already names it as a prev."""
        self.rooms.replace_extremities(tx, room, prev_nids, 0 if has_child else enid)

    def mark_parents(self, tx, prev_nids, prev_recs):
        # HAS_CHILD is read only when an event whose NID existed already is
        # added: a prev not stored yet, or an outlier whose state arrives.
        events = self.events
        for pnid, prec in zip(prev_nids, prev_recs):
            if prec is None or prec.flags & OUTLIER:
                f = events.marks(tx, pnid)
                if not f & HAS_CHILD:
                    events.set_marks(tx, pnid, f | HAS_CHILD)

    def check_same(self, tx, rec, p, room, type_nid, skey_nid, prev_nids, flags, sender_nid=0, auth=(), extras_nid=0):
        """An event stored again must carry the same fields."""

        def differ(field, reason):
            raise InvalidEventError(field, f"already stored with a different {reason}", p.event_id)

        if rec.room != room:
            differ("room_id", "room")
        if rec.type != type_nid:
            differ("type", "type")
        if rec.state_key != skey_nid:
            differ("state_key", "state key")
        if tuple(prev_nids) != rec.prevs:
            differ("prev_events", "list of prev events")
        # An event the rules rejected (it has a reason) may be given again either way.
        compared = IS_STATE if rec.reason else IS_STATE | REJECTED
        if (rec.flags & compared) != flags & compared:
            differ("rejected", "rejected flag")
        if rec.membership != p.membership:
            differ("content.membership", "membership")
        if p.depth is not None and p.depth != rec.depth:
            differ("depth", "depth")
        if rec.flags & HAS_AUTH and flags & HAS_AUTH:
            # An event stored with auth data and given again with it: the same data.
            if rec.sender != sender_nid:
                differ("sender", "sender")
            if p.ts is not None and rec.ts != p.ts:
                differ("origin_server_ts", "origin_server_ts")
            if rec.auth_events != auth:
                differ("auth_events", "list of auth events")
            if rec.extras != extras_nid:
                differ("content", "content the authorization rules read")

    def given_state(self, tx, room, eid, given, parents):
        """The snapshot of a state someone else gave, stored as a delta against the closest candidate."""
        if not isinstance(given, Mapping):
            raise InvalidEventError("state_before", f"must be a mapping, got {type(given).__name__}", eid)
        ids, events = self.ids, self.events
        rows = []
        for key, sid in given.items():
            if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key)):
                raise InvalidEventError("state_before", f"key {key!r} is not a (type, state_key) pair", eid)
            if not isinstance(sid, str):
                raise InvalidEventError("state_before", f"value for {key!r} is not an event ID", eid)
            snid = ids.lookup(tx, EVENT, sid)
            srec = events.get(tx, snid) if snid else None
            if srec is None:
                raise MissingEventError(f"state event {sid!r} given for {eid!r} is not stored", sid)
            if srec.room != room:
                raise InvalidEventError("state_before", f"event {sid!r} belongs to another room", eid)
            tnid = ids.lookup(tx, TYPE, key[0])
            knid = ids.lookup(tx, STATE_KEY, key[1])
            if not srec.is_state or srec.type != tnid or srec.state_key != knid:
                raise InvalidEventError("state_before", f"event {sid!r} is not the state event for {key!r}", eid)
            rows.append((tnid, knid, snid))
        target = _core.sort_unique(entries_from(rows)) if rows else empty_entries()
        # The state after the newest event named is often exactly the given
        # state (a join's state in a room we already follow): reuse it then.
        candidates = list(parents)
        if rows:
            newest = events.get(tx, max(r[2] for r in rows))
            if newest is not None and not newest.outlier:
                candidates.append(newest.after)
        best = None
        for snap in dict.fromkeys(candidates):
            added, removed = _core.diff(self.snaps.state(tx, snap), target)
            cost = len(added) + len(removed)
            if best is None or cost < best[0]:
                best = (cost, snap, added, removed)
        if best is None:
            return self.snaps.derive(tx, EMPTY_SNAPSHOT, target, indexed=True)
        cost, snap, added, removed = best
        if cost == 0:
            return snap
        tomb = removed.copy()
        tomb["event"] = 0
        delta = _core.overlay([tomb, added], keep_tombstones=True)
        return self.snaps.derive(tx, snap, delta, indexed=True)
