# The authorization checker declared as an extension type (roomstate/authcheck.py is
# compiled): the writer calls ``check`` for every event as a C call, and the plain cases
# read records and kept answers through typed tables.
cimport cython

from roomstate._records cimport Record
from roomstate.events cimport EventTable
from roomstate.txn cimport ReadThrough


@cython.final
cdef class AuthChecker:
    cdef readonly object ids, snaps
    cdef readonly EventTable events
    cdef readonly ReadThrough memo
    cdef dict _versions
    # False: every event through every rule (the plain cases are tested against that).
    cdef public bint plain

    cpdef check(self, tx, ev, p, tuple auth_nids, before, tuple fields, list prev_nids)
    @cython.locals(rec=Record, t=cython.ulonglong, k=cython.ulonglong, sender_membership=cython.ulonglong)
    cdef bint _allowed_plainly(self, tx, ev, p, tuple fields, tuple auth_nids, list prev_nids, before) except -1
    @cython.locals(rec=Record)
    cdef _create_nid(self, tx, room_id, tuple auth_nids, before)
    cdef _create_facts(self, tx, room_id, create_nid)
    cdef _join_rule(self, tx, jr)
    cdef _level(self, tx, p, tuple fields, create_nid, pl, rv)
    cdef _required(self, tx, p, tuple fields, create_nid, pl, rv)
