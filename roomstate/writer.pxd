# Declarations that make the compiled Writer an extension type: its tables are
# struct fields, and the steps of the add path are direct C calls from ``add``
# (each still callable from Python, for the tests that run one step alone).
cimport cython

from roomstate.authcheck cimport AuthChecker
from roomstate.events cimport EventTable


@cython.final
cdef class Writer:
    cdef readonly object ids, snaps, rooms, meta, merger
    cdef readonly AuthChecker checker
    cdef readonly bint check_auth
    cdef readonly EventTable events

    cpdef add(self, tx, ev, outlier, given, resolver)
    cpdef tuple prevs(self, tx, eid, room, prev_ids)
    cpdef tuple auth_events(self, tx, eid, room, auth_ids)
    cpdef reject_for(self, tx, ev, p, auth, before, tuple fields, list prev_nids)
    cpdef bint place_missing_prevs(self, tx, eid, prev_ids, list prev_nids, list prev_recs, allowed) except -1
    cpdef tuple states(self, tx, room, room_id, eid, prev_ids, list prev_recs, unsettled, given, resolver,
                       type_nid, skey_nid, enid)
    cpdef extremities(self, tx, room, enid, list prev_nids, has_child)
    cpdef mark_parents(self, tx, list prev_nids, list prev_recs)
