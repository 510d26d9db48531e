# The steps of the Matrix state resolution on NIDs (roomstate/matrixres.py is compiled):
# _V2 as an extension type, so that its steps read the records' fields as C fields.
cimport cython

from roomstate._records cimport Record


@cython.final
cdef class _V2:
    cdef readonly object res, tx, room_id, rv, g, layers
    cdef object _create_v12
    cdef dict _levels, _selections, _ok

    cdef Record _rec(self, nid)
    @cython.locals(rec=Record)
    cpdef bint is_power_event(self, nid) except -1
    @cython.locals(rec=Record, arec=Record)
    cpdef sender_power_level(self, nid)
    @cython.locals(arec=Record)
    cpdef _pl_auth_event(self, Record rec)
    @cython.locals(rec=Record)
    cpdef tuple selection(self, nid)
    @cython.locals(rec=Record, arec=Record, v12=cython.bint)
    cpdef iterative_auth_checks(self, layers, dict over, order)
