# cython: language_level=3
"""Kernels of the write path: each replaces several Python-level steps of adding one event.

* :func:`cached_nid`: a NID from the committed cache or this transaction's pending table;
* :func:`uvarint`: one varint (an ID map's value);
* :func:`chain_link` and :class:`Components`: the record and parts of a chain snapshot
  (see :mod:`roomstate.snapshots`);

The bytes they produce are exactly those of the general functions they stand
for (``_core.pack_uvarints`` + ``_core.pack_entries``); the tests compare them.
Event records and event IDs are :mod:`roomstate._records`.

The GIL: every kernel here holds it.  Each handles one event and makes Python
objects (bytes, tuples, a numpy array).  The steps of a merge are
``_core.Aligned``'s.

>>> uvarint(300) == bytes([0xAC, 0x02])
True
"""
from libc.stdint cimport uint32_t, uint64_t

from ._core cimport Entry
from ._gc cimport _extended, _untracked
from ._varint cimport _put_varint

cimport cython
cimport numpy as cnp
from cpython.bytes cimport PyBytes_FromStringAndSize

from ._core import ENTRY_DTYPE

cnp.import_array()

cdef extern from *:
    """
    /* An empty 1-d array of a dtype; takes its own reference to the dtype (NewFromDescr steals one). */
    static PyObject *rs_new_array(PyObject *descr, npy_intp n) {
        Py_INCREF(descr);
        return PyArray_NewFromDescr(&PyArray_Type, (PyArray_Descr *)descr, 1, &n, NULL, NULL, 0, NULL);
    }
    """
    cnp.ndarray rs_new_array(object descr, cnp.npy_intp n)


def uvarint(uint64_t value):
    """One LEB128 varint (``pack_uvarints((value,))``)."""
    cdef unsigned char out[10]
    return PyBytes_FromStringAndSize(<char*>out, _put_varint(out, value))


def cached_nid(cache, dict pending, table, key):
    """The NID of ``key`` in ``cache`` (committed NIDs, a dict or a subclass that keeps
    dict lookups) or in this transaction's pending ``table``; 0 when neither has it
    (it may still be stored: look it up)."""
    if not isinstance(cache, dict):
        raise TypeError(f"cache must be a dict, got {type(cache).__name__}")
    nid = (<dict>cache).get(key)
    if nid is None:
        t = pending.get(table)
        if t is not None:
            nid = (<dict?>t).get(key)
    return 0 if nid is None else nid


# ---------------------------------------------------------------------------
# chain snapshots (see roomstate.snapshots)

def chain_link(uint64_t kind, uint64_t hops, uint64_t weight, uint64_t parent, uint32_t type_nid,
               uint32_t state_key_nid, uint64_t event_nid):
    """``(record, delta)`` of a chain snapshot whose delta is one entry (a state event).

    ``record`` is ``pack_uvarints((kind, hops, weight, parent, 1)) + pack_entries(delta)``;
    ``delta`` the one-entry array, read-only.
    """
    cdef unsigned char out[80]
    cdef Py_ssize_t pos = 0
    pos += _put_varint(out + pos, kind)
    pos += _put_varint(out + pos, hops)
    pos += _put_varint(out + pos, weight)
    pos += _put_varint(out + pos, parent)
    pos += _put_varint(out + pos, 1)
    pos += _put_varint(out + pos, type_nid)
    pos += _put_varint(out + pos, state_key_nid)
    pos += _put_varint(out + pos, event_nid)
    cdef cnp.ndarray delta = rs_new_array(ENTRY_DTYPE, 1)
    cdef Entry* e = <Entry*>cnp.PyArray_DATA(delta)
    e.type = type_nid
    e.state_key = state_key_nid
    e.event = event_nid
    cnp.PyArray_CLEARFLAGS(delta, cnp.NPY_ARRAY_WRITEABLE)
    return PyBytes_FromStringAndSize(<char*>out, pos), delta


@cython.no_gc
cdef class Components:
    """A snapshot resolved into its parts: blocks, then chain deltas oldest first
    (see :mod:`roomstate.snapshots`).  A C class: each state event makes one.
    Outside the cyclic GC, like Record (tuples of ints and of entry arrays)."""

    cdef readonly tuple blocks
    cdef readonly tuple sizes
    cdef readonly tuple links
    cdef readonly tuple deltas
    cdef readonly Py_ssize_t hops
    cdef readonly Py_ssize_t weight
    # One integer per part, to find the prefix two snapshots share.
    cdef readonly tuple ids

    def __init__(self, tuple blocks, tuple sizes, tuple links, tuple deltas, Py_ssize_t hops, Py_ssize_t weight,
                 tuple ids=None):
        self.blocks = _untracked(blocks)
        self.sizes = _untracked(sizes)
        self.links = _untracked(links)
        self.deltas = _untracked(deltas)
        self.hops = hops
        self.weight = weight
        if ids is None:
            ids = tuple([b * 2 for b in blocks]) + tuple([s * 2 + 1 for s in links])
        self.ids = _untracked(ids)

    def link(self, nid, delta, Py_ssize_t hops, Py_ssize_t weight):
        """The parts of a chain link on top of these."""
        cdef Components c = Components.__new__(Components)
        c.blocks = self.blocks
        c.sizes = self.sizes
        c.links = _extended(self.links, nid)
        c.deltas = _extended(self.deltas, delta)
        c.hops = hops
        c.weight = weight
        c.ids = _extended(self.ids, nid * 2 + 1)
        return c
