# Tuples out of CPython's cyclic GC, for the C classes a bulk import keeps by the
# hundred thousand (Record, Components): inline helpers, compiled into each module.

cdef extern from "Python.h":
    int PyObject_IS_GC(object o)
    int PyObject_GC_IsTracked(object o)
    void PyObject_GC_UnTrack(void* o)


cdef inline tuple _untracked(tuple t):
    """``t``, out of the cyclic GC when it holds only objects the collector does not
    track (ints, strings, numpy arrays): such a tuple is no part of any cycle.

    CPython untracks it itself at the first collection it survives; the tuples
    a bulk import keeps are untracked at once, so that collection does not walk
    them.
    """
    if PyObject_GC_IsTracked(t):
        for item in t:
            if PyObject_IS_GC(item):
                return t
        PyObject_GC_UnTrack(<void*>t)
    return t


cdef inline tuple _extended(tuple t, item):
    """``t + (item,)``, out of the cyclic GC like ``t`` when ``item`` is no GC object."""
    cdef tuple out = t + (item,)
    if not PyObject_GC_IsTracked(t) and not PyObject_IS_GC(item) and PyObject_GC_IsTracked(out):
        PyObject_GC_UnTrack(<void*>out)
    return out
