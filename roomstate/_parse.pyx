# cython: language_level=3
"""Event input: the fast path of :func:`roomstate.events.parse`.

:func:`parse_common` validates an event of the common, well-formed shape and
returns the fields the engine reads as a :class:`ParsedEvent`; anything else
goes to the full validation in Python, which names the field and the reason.
The membership codes and the depth and prev limits are defined here, once.

The GIL: everything here holds it; the input is a Python dict and every check
reads Python objects.
"""

MEMBERSHIPS = ("join", "invite", "leave", "ban", "knock")
MEMBERSHIP_CODE = {m: i for i, m in enumerate(MEMBERSHIPS, start=1)}
OTHER_MEMBERSHIP = 7  # a membership string outside the five the spec defines
MAX_DEPTH = 2**63 - 1
MAX_PREVS = 65535
_ABSENT = object()
MAX_AUTH = 64  # auth events of one event; the selection names at most 6 keys


cdef class ParsedEvent:
    """The fields of an event the engine reads, validated."""

    cdef readonly str event_id
    cdef readonly str room_id
    cdef readonly str type
    cdef readonly object state_key
    cdef readonly list prev_ids
    cdef readonly object depth
    cdef readonly bint rejected
    cdef readonly int membership
    # Auth data, when the event carries it (None otherwise): the sender, origin_server_ts
    # and the IDs of its auth events (duplicates kept: the authorization rules refuse them).
    cdef readonly object sender
    cdef readonly object ts
    cdef readonly list auth_ids

    def __init__(self, str event_id, str room_id, str type, state_key, list prev_ids, depth, bint rejected,
                 int membership, sender=None, ts=None, list auth_ids=None):
        self.event_id = event_id
        self.room_id = room_id
        self.type = type
        self.state_key = state_key
        self.prev_ids = prev_ids
        self.depth = depth
        self.rejected = rejected
        self.membership = membership
        self.sender = sender
        self.ts = ts
        self.auth_ids = auth_ids


def parse_common(ev):
    """A ParsedEvent for an event of the common, well-formed shape; None otherwise.

    None sends the event to the full validation in Python, which names the
    field and the reason of any error: this path never raises for bad input.
    """
    if type(ev) is not dict:
        return None
    cdef dict d = <dict>ev
    event_id = d.get("event_id")
    room_id = d.get("room_id")
    type_ = d.get("type")
    if type(event_id) is not str or type(room_id) is not str or type(type_) is not str:
        return None
    if not event_id or not room_id:
        return None
    state_key = d.get("state_key")
    if state_key is None:
        if "state_key" in d:
            return None
    elif type(state_key) is not str:
        return None
    prevs = d.get("prev_events")
    cdef list prev_ids
    cdef Py_ssize_t n, i
    if prevs is None:
        if "prev_events" in d:
            return None
        prev_ids = []
    else:
        if type(prevs) is not list and type(prevs) is not tuple:
            return None
        n = len(prevs)
        if n > MAX_PREVS:
            return None
        prev_ids = []
        seen = set() if n > 8 else None
        for i in range(n):
            p = prevs[i]
            if type(p) is not str or not p or p == event_id:
                return None
            if seen is not None:
                if p in seen:
                    continue
                seen.add(p)
            elif n > 1 and p in prev_ids:
                continue
            prev_ids.append(p)
    depth = d.get("depth")
    if depth is not None and (type(depth) is not int or depth < 0 or depth > MAX_DEPTH):
        return None
    rejected = d.get("rejected", False)
    if type(rejected) is not bool:
        return None
    cdef int membership = 0
    if state_key is not None and type_ == "m.room.member":
        content = d.get("content")
        if content is not None:
            if type(content) is not dict:
                return None
            m = (<dict>content).get("membership")
            if m is not None:
                if type(m) is not str:
                    return None
                membership = MEMBERSHIP_CODE.get(m, OTHER_MEMBERSHIP)
    # Absent fields read as _ABSENT (one dict lookup each); a present None takes the full path.
    sender = d.get("sender", _ABSENT)
    if sender is _ABSENT:
        sender = None
    elif type(sender) is not str:
        return None
    ts = d.get("origin_server_ts", _ABSENT)
    if ts is _ABSENT:
        ts = None
    elif type(ts) is not int or ts < 0 or ts > MAX_DEPTH:
        return None
    auth = d.get("auth_events", _ABSENT)
    cdef list auth_ids = None
    if auth is not _ABSENT:
        if type(auth) is not list or len(<list>auth) > MAX_AUTH:
            return None
        for a in <list>auth:
            if type(a) is not str or not a or a == event_id:
                return None  # [id, hashes] pairs of room versions 1-2 take the full path
        auth_ids = list(<list>auth)
    return ParsedEvent(event_id, room_id, type_, state_key, prev_ids, depth, rejected, membership,
                       sender, ts, auth_ids)



cdef bint _strict(object value, int depth):
    cdef type t = type(value)
    if t is str or t is bool or value is None:
        return True
    if t is int:
        return -9007199254740991 <= value <= 9007199254740991
    if depth > 100:
        return False  # deeper than the checks below care to go: the full check says
    if t is dict:
        for v in (<dict>value).values():
            if not _strict(v, depth + 1):
                return False
        return True
    if t is list:
        for v in <list>value:
            if not _strict(v, depth + 1):
                return False
        return True
    return False  # floats, and anything else: the full check says what it is


def strictly_canonical(ev):
    """True when no value of the event (``unsigned`` aside) is a float or an integer
    outside [-(2**53)+1, 2**53-1], as canonical JSON requires from room version 6; False
    says only "look closer" (``roomstate.matrix.canonical.check_json`` names the field)."""
    if type(ev) is not dict:
        return False
    for k, v in (<dict>ev).items():
        if k != "unsigned" and not _strict(v, 0):
            return False
    return True
