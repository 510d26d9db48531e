"""Queries: the state at an event, a room's current state, diffs, members, counts,
and the strings of NIDs that a :class:`~roomstate.statemap.StateMap` lists.

Every query runs in the thread's write transaction when there is one (a read
inside a batch sees the batch), else in a read transaction begun only when a
cache misses (:meth:`roomstate.transactions.Transactions.reading`).
"""

import numpy as np

from . import _core, _names
from ._core import ENTRY_DTYPE
from .blocks import empty_entries, frozen
from ._records import IS_STATE, PLACEHOLDER
from .checksum import unseal
from .damage import DECODE_ERRORS, damaged, decode_error
from .errors import MissingEventError, RoomStateError
from .eventinfo import EventInfo, StateReset
from .extras import stored_extras
from .events import HAS_AUTH, MEMBERSHIP_CODE, MEMBERSHIPS
from .format import STATE_TABLES
from .ids import CREATE_TYPE_NID, EMPTY_STATE_KEY_NID, EVENT, MEMBER_TYPE_NID, ROOM, STATE_KEY, TYPE, decode
from .blocks import BLOCK_KIND
from .snapshots import SNAPSHOT_KIND
from .statemap import StateDiff, StateMap


class Reader:
    def __init__(self, transactions, tables):
        self.transactions = transactions
        self.check_open = transactions.check_open
        self.ids = tables.ids
        self.events = tables.events
        self.snaps = tables.snaps
        self.rooms = tables.rooms
        self.meta = tables.meta
        self.merger = None  # set by the store: current_state merges the extremities

    def reading(self):
        return self.transactions.reading()

    # -- records -------------------------------------------------------------
    def record(self, tx, event_id):
        """``(nid, record)`` of a stored event, or MissingEventError."""
        if not isinstance(event_id, str):
            raise TypeError(f"event_id must be a string, got {type(event_id).__name__}")
        nid = self.ids.lookup(tx, EVENT, event_id)
        rec = self.events.get(tx, nid) if nid else None
        if rec is None:
            raise MissingEventError(f"unknown event {event_id!r}", event_id)
        return nid, rec

    def snapshot_at(self, tx, event_id, after):
        """The snapshot of the state before (or after) an event."""
        _, rec = self.record(tx, event_id)
        if rec.outlier:
            raise MissingEventError(f"the state at {event_id!r} is not known (it is an outlier)", event_id)
        return rec.after if after else rec.before

    def room(self, tx, room_id):
        if not isinstance(room_id, str):
            raise TypeError(f"room_id must be a string, got {type(room_id).__name__}")
        room = self.ids.lookup(tx, ROOM, room_id)
        if not room:
            raise MissingEventError(f"unknown room {room_id!r}")
        return room

    def snapshot_state(self, snap):
        """The entries of a snapshot, in their own transaction."""
        with self.reading() as tx:
            return self.snaps.state(tx, snap)

    # -- state maps ------------------------------------------------------------
    def statemap_of(self, loader):
        """A StateMap whose entries ``loader()`` gives when first needed."""
        return StateMap(self, loader=loader)

    def filtered(self, tx, entries, types):
        """The entries of the ``(type, state_key)`` pairs (``state_key`` None: the whole type)."""
        if types is None:
            return entries
        if isinstance(types, (str, bytes)) or not hasattr(types, "__iter__"):
            raise TypeError("types must be an iterable of (type, state_key) pairs")
        tn, kn = [], []
        for pair in types:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(f"types: {pair!r} is not a (type, state_key) pair")
            t, k = pair
            if not isinstance(t, str) or not (k is None or isinstance(k, str)):
                raise TypeError(f"types: {pair!r} must be (str, str or None)")
            tnid = self.ids.lookup(tx, TYPE, t)
            if not tnid:
                continue
            knid = 0 if k is None else self.ids.lookup(tx, STATE_KEY, k)
            if k is not None and not knid:
                continue
            tn.append(tnid)
            kn.append(knid)
        if not tn:
            return empty_entries()
        return frozen(_core.select(entries, tn, kn))

    def state_at(self, event_id, after, types):
        with self.reading() as tx:
            snap = self.snapshot_at(tx, event_id, after)
            return StateMap(self, self.filtered(tx, self.snaps.state(tx, snap), types))

    def current_state(self, room_id, types, resolver):
        with self.reading() as tx:
            room = self.room(tx, room_id)
            ex = self.rooms.extremities(tx, room)
            if not ex:
                return StateMap(self, empty_entries())
            snaps = [self.extremity(tx, room, e).after for e in ex]
            entries = self.merger.merged_entries(tx, room_id, snaps, resolver)
            return StateMap(self, self.filtered(tx, entries, types))

    def resolve_state(self, room_id, state_sets, resolver):
        with self.reading() as tx:
            room = self.room(tx, room_id)
            return StateMap(self, self.merger.resolved_entries(tx, room, room_id, state_sets, resolver))

    def state_resets(self, room_id):
        """The state resets of a room's merges, in the order the events were stored."""
        with self.reading() as tx:
            room = self.room(tx, room_id)
            events, ids, snaps = self.events, self.ids, self.snaps
            todo = list(self.rooms.extremities(tx, room))
            seen = set(todo)
            merges = []
            while todo:
                nid = todo.pop()
                rec = events.get(tx, nid)
                if rec is None:
                    raise damaged("events", nid, "an event named as a prev event or extremity has no record")
                if rec.flags & PLACEHOLDER or rec.outlier:
                    continue
                prev_recs = []
                for p in rec.prevs:
                    if p not in seen:
                        seen.add(p)
                        todo.append(p)
                    prec = events.get(tx, p)
                    if prec is not None and not prec.flags & PLACEHOLDER and not prec.outlier:
                        prev_recs.append(prec)
                if len(prev_recs) == len(rec.prevs) and len({r.after for r in prev_recs}) > 1:
                    merges.append((nid, rec, prev_recs))
            out = []
            for nid, rec, prev_recs in sorted(merges, key=lambda m: m[0]):
                afters = [r.after for r in prev_recs]
                _, al = snaps.aligned(tx, afters + [rec.before])
                k = len(afters)
                keys = al.keys
                for i in range(len(al)):
                    # Which events the prevs held (the resolved state is column k).
                    cols, vals, rest = al.holders(i)
                    last = bool(cols) and cols[-1] == k
                    resolved = vals[-1] if last else rest
                    held = set(vals[:-1] if last else vals)
                    if len(cols) - last < k:
                        held.add(rest)  # some prev holds no entry of its own: the base event
                    if resolved:
                        if resolved in held:
                            continue
                        kind = "older"
                    elif 0 in held:
                        continue
                    else:
                        kind = "dropped"
                    held_list = al.row(i)[:k]
                    out.append(StateReset(
                        event_id=rec.event_id,
                        type=ids.name(tx, TYPE, int(keys["type"][i])),
                        state_key=ids.name(tx, STATE_KEY, int(keys["state_key"][i])),
                        kind=kind,
                        resolved=events.event_id(tx, resolved) if resolved else None,
                        prev_state=[events.event_id(tx, e) if e else None for e in held_list],
                    ))
            return out

    def extremity(self, tx, room, nid):
        """The record of one of a room's forward extremities: a stored event of that room with its state."""
        rec = self.events.get(tx, nid)
        if rec is None or rec.outlier or rec.room != room:
            what = "has no record" if rec is None else "is an outlier" if rec.outlier else "is of another room"
            raise damaged("rooms", room, f"its forward extremity {nid} {what}")
        return rec

    def forward_extremities(self, room_id):
        with self.reading() as tx:
            room = self.room(tx, room_id)
            return self.ids.names(tx, EVENT, sorted(self.rooms.extremities(tx, room)))

    def get_state(self, event_id, type_, state_key, after):
        with self.reading() as tx:
            snap = self.snapshot_at(tx, event_id, after)
            tnid = self.ids.lookup(tx, TYPE, type_)
            knid = self.ids.lookup(tx, STATE_KEY, state_key)
            if not tnid or not knid:
                return None
            enid = self.snaps.get(tx, snap, tnid, knid)
            return self.ids.name(tx, EVENT, enid) if enid else None

    def state_diff(self, event_a, event_b):
        with self.reading() as tx:
            sa = self.snapshot_at(tx, event_a, True)
            sb = self.snapshot_at(tx, event_b, True)
            if sa == sb:
                return StateDiff({}, {})
            _, al = self.snaps.aligned(tx, [sa, sb])
            vals = np.stack([al.column(0), al.column(1)], axis=1)
            changed = vals[:, 0] != vals[:, 1]
            keys, vals = al.keys[changed], vals[changed]
            names = self.ids.names
            tn = names(tx, TYPE, keys["type"])
            kn = names(tx, STATE_KEY, keys["state_key"])
            added, removed = {}, {}
            for col, out in ((1, added), (0, removed)):
                sel = np.flatnonzero(vals[:, col] != 0)
                evs = names(tx, EVENT, vals[sel, col])
                for i, e in zip(sel.tolist(), evs):
                    out[(tn[i], kn[i])] = e
            return StateDiff(added, removed)

    def members(self, event_id, membership, after):
        code = MEMBERSHIP_CODE.get(membership)
        if code is None:
            raise ValueError(f"membership must be one of {', '.join(MEMBERSHIP_CODE)}, got {membership!r}")
        with self.reading() as tx:
            snap = self.snapshot_at(tx, event_id, after)
            state = self.snaps.state(tx, snap)
            lo, hi = _core.type_range(state, MEMBER_TYPE_NID)
            sub = state[lo:hi]
            codes = self.events.memberships(tx, sub["event"])
            return self.ids.names(tx, STATE_KEY, sub["state_key"][codes == code])

    def has_event(self, event_id):
        with self.reading() as tx:
            nid = self.ids.lookup(tx, EVENT, event_id)
            return bool(nid) and self.events.get(tx, nid) is not None

    def event_record(self, event_id):
        with self.reading() as tx:
            return self.record(tx, event_id)[1]

    def event(self, event_id):
        """The :class:`~roomstate.eventinfo.EventInfo` of a stored event."""
        with self.reading() as tx:
            _, rec = self.record(tx, event_id)
            ids, events = self.ids, self.events
            has_auth = bool(rec.flags & HAS_AUTH)
            membership = None
            if rec.is_state and rec.type == MEMBER_TYPE_NID:
                membership = MEMBERSHIPS[rec.membership - 1] if 1 <= rec.membership <= len(MEMBERSHIPS) else ""
            rejected_reason = None
            if rec.reason:
                rejected_reason = ids.name(tx, STATE_KEY, rec.reason)
            elif rec.rejected:
                rejected_reason = "rejected by the caller (the event was given with rejected: true)"
            return EventInfo(
                event_id=rec.event_id,
                room_id=ids.name(tx, ROOM, rec.room),
                type=ids.name(tx, TYPE, rec.type),
                state_key=ids.name(tx, STATE_KEY, rec.state_key) if rec.is_state else None,
                sender=ids.name(tx, STATE_KEY, rec.sender) if rec.sender else None,
                origin_server_ts=rec.ts if has_auth and rec.ts else None,
                depth=rec.depth,
                prev_events=[events.event_id(tx, n) for n in rec.prevs],
                auth_events=[events.event_id(tx, n) for n in rec.auth_events] if has_auth else None,
                membership=membership,
                outlier=rec.outlier,
                rejected=rec.rejected,
                rejected_reason=rejected_reason,
            )

    def room_version(self, room_id):
        """The room version its create event names ("1" when it names none)."""
        with self.reading() as tx:
            room = self.room(tx, room_id)
            create = 0
            for enid in self.rooms.extremities(tx, room):  # the create event is in the state after each
                rec = self.extremity(tx, room, enid)
                create = self.snaps.get(tx, rec.after, CREATE_TYPE_NID, EMPTY_STATE_KEY_NID)
                break
            rec = self.events.get(tx, create) if create else None
            if rec is None:
                raise MissingEventError(f"the create event of room {room_id!r} is not in its state")
            if not rec.extras:
                raise RoomStateError(
                    f"the create event of room {room_id!r} was stored without its content "
                    "(by a roomstate of format version 1)"
                )
            version = stored_extras(self.ids, tx, rec).get("room_version", "1")
            if not isinstance(version, str):
                raise RoomStateError(f"the create event of room {room_id!r} names a room version that is not a string")
            return version

    def auth_chain(self, event_ids):
        """Every auth ancestor of the events (the events themselves left out), as event IDs.

        Walks the stored auth event NIDs; each event is read once, so the walk ends on
        any store, a damaged one with a cycle included."""
        if isinstance(event_ids, str):
            raise TypeError("event_ids must be an iterable of event IDs, not one string")
        with self.reading() as tx:
            events = self.events
            todo = []
            for event_id in event_ids:
                todo.extend(self.record(tx, event_id)[1].auth_events)
            seen = set()
            while todo:
                nid = todo.pop()
                if nid in seen:
                    continue
                seen.add(nid)
                rec = events.get(tx, nid)
                if rec is None:
                    raise damaged("events", nid, "an auth event named by a stored event has no record")
                todo.extend(rec.auth_events)
            return {events.event_id(tx, nid) for nid in seen}

    def stats(self, backend):
        with self.reading() as tx:
            tables = backend.table_stats(tx.txn)
            events, state_events = self.meta.counts(tx)
            resets = self.meta.resets(tx)
            state_bytes = sum(tables[n]["bytes"] for n in STATE_TABLES)
            space = backend.space(tables)
            in_use = space["bytes_in_use"]
            return {
                "events": events,
                "state_events": state_events,
                "rooms": tables["rooms"]["entries"],
                "blocks": self.ids.peek_next(tx, BLOCK_KIND) - 1,
                "snapshots": self.ids.peek_next(tx, SNAPSHOT_KIND) - 1,
                "block_entries": self._block_entries(tx),
                "state_resets": resets,
                "tables": tables,
                "state_bytes": state_bytes,
                **space,
                "bytes_per_event": in_use / events if events else 0.0,
                "bytes_per_state_event": in_use / state_events if state_events else 0.0,
                "state_bytes_per_state_event": state_bytes / state_events if state_events else 0.0,
            }

    def room_ids(self):
        with self.reading() as tx:
            with tx.txn.cursor(db=self.ids.names_db[ROOM]) as cur:
                names = []
                sums = self.ids.sums
                for key, value in cur:
                    if sums:
                        value = unseal("names_r", int.from_bytes(key, "big"), key, value)
                    try:
                        names.append(decode(value))
                    except UnicodeDecodeError as exc:
                        raise decode_error("names_r", key, exc) from None
                return sorted(names)

    def room_counts(self):
        """``{room_id: (events, state events)}`` in one pass over the event records,
        counted as ``stats()`` counts them (outliers included, placeholders not)."""
        counts = {}
        with self.reading() as tx:
            if tx.write:
                raise RoomStateError("room_counts() counts committed events: call it outside a batch")
            with tx.txn.cursor(db=self.events.db) as cur:
                for key, raw in cur:
                    try:
                        (flags, _, room), _ = _core.unpack_uvarints(raw, 3)
                    except DECODE_ERRORS as exc:
                        raise decode_error("events", key, exc) from None
                    if flags & PLACEHOLDER:
                        continue
                    n = counts.get(room)
                    if n is None:
                        n = counts[room] = [0, 0]
                    n[0] += 1
                    if flags & IS_STATE:
                        n[1] += 1
            names = self.ids.names(tx, ROOM, list(counts))
        return {name: tuple(n) for name, n in zip(names, counts.values())}

    def _block_entries(self, tx):
        total = 0
        with tx.txn.cursor(db=self.snaps.blocks.blocks_db) as cur:
            for _, value in cur:
                total += len(value) // ENTRY_DTYPE.itemsize
        return total

    # -- strings, for StateMap ---------------------------------------------------
    def state_strings(self, entries):
        """The ``(type, state_key)`` keys and the event IDs of entries, as two lists.

        Answered from the NID caches in one C loop when they hold every string
        (a warm store); otherwise the strings they miss are read into them in
        one C loop per kind first.
        """
        self.check_open()  # cached strings too: a closed store answers nothing
        ids, events = self.ids, self.events
        caches = (ids.pairs, ids.to_str[TYPE], ids.to_str[STATE_KEY], events.to_str)
        keys, values, missing = _names.state_names(entries, *caches)
        if not missing:
            return keys, values
        with self.reading() as tx:
            if not tx.write:  # only committed strings may be cached
                for kind, column in ((TYPE, "type"), (STATE_KEY, "state_key"), (EVENT, "event")):
                    ids.read(tx, kind, np.unique(entries[column]).tolist())
                keys, values, missing = _names.state_names(entries, *caches)
            if missing:  # a write transaction's reads, or caches too small for the state
                at = [i for i, k in enumerate(keys) if k is None]
                if at:
                    sub = entries[at]
                    pairs = zip(ids.names(tx, TYPE, sub["type"]), ids.names(tx, STATE_KEY, sub["state_key"]))
                    for i, pair in zip(at, pairs):
                        keys[i] = pair
                at = [i for i, v in enumerate(values) if v is None]
                if at:
                    for i, event_id in zip(at, ids.names(tx, EVENT, entries["event"][at])):
                        values[i] = event_id
        return keys, values

    def event_ids(self, nids):
        """Event IDs of event NIDs, in order."""
        with self.reading() as tx:
            return self.ids.names(tx, EVENT, nids)

    def key_nids(self, type_, state_key):
        """``(type NID, state key NID)`` of a key; 0 for a string never seen."""
        cache_t = self.ids.to_nid[TYPE].get(type_)
        cache_k = self.ids.to_nid[STATE_KEY].get(state_key)
        if cache_t is not None and cache_k is not None:
            return cache_t, cache_k
        with self.reading() as tx:
            return self.ids.lookup(tx, TYPE, type_), self.ids.lookup(tx, STATE_KEY, state_key)
