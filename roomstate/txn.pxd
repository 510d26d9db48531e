# The write transaction and the read-through lookup (roomstate.txn), declared for
# the compiled tables that call them per event: their methods are C calls there.
cimport cython


cdef class Tx:
    cdef public object txn
    cdef public bint write
    cdef public Tx parent
    cdef public dict pending
    cdef public dict undo
    # (event ID, NID, record) of the event this transaction added last.
    cdef public object last


@cython.final
cdef class ReadThrough:
    cdef public object cache
    cdef readonly object table

    cpdef find(self, tx, key)
    cpdef keep(self, tx, key, value)
