# The event table declared as an extension type (roomstate/events.py is compiled):
# the writer calls its per-event methods as C calls, and it calls its read-through
# lookups the same way.
from roomstate.txn cimport ReadThrough


cdef class EventTable:
    cdef public object db, ids_db, marks_db, ids
    cdef public object cache, to_nid, to_str
    cdef public bint sums
    cdef object _next, _meta_db
    cdef ReadThrough _records, _nids, _event_ids, _chunks

    cpdef lookup(self, tx, event_id)
    cpdef tuple lookup_or_assign(self, tx, event_id)
    cpdef assign_new(self, tx, event_id)
    cpdef event_id(self, tx, nid)
    cpdef get(self, tx, nid)
    cpdef put(self, tx, nid, rec, append=*)
    cpdef put_placeholder(self, tx, nid, event_id)
    cpdef marks(self, tx, nid)
    cpdef set_marks(self, tx, nid, value)
