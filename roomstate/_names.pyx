# cython: language_level=3
"""The strings of a state: NID -> string caches, the listing of a state's keys and
event IDs from them, and the fetching of the names they lack.

* :class:`NameCache`, a bounded open-addressing map from NIDs to objects that
  the loops below read from C without making Python ints;
* :func:`state_names`, one C loop over a state's entries that looks every key
  and event ID up in the caches;
* :class:`StateView`, the C base of :class:`roomstate.statemap.StateMap`;
* :func:`fetch_names`, one C loop of LMDB gets that decodes the names (or the
  event IDs in event records) the caches lack.

The GIL: everything here holds it.  Each step reads or stores Python objects
(cache values and their reference counts, the lists and tuples returned, the
LMDB transaction's ``get``), so there is no loop that could run without it;
holding it is also what lets threads share one :class:`NameCache`.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.list cimport PyList_New, PyList_SET_ITEM, PyList_GET_ITEM, PyList_GET_SIZE
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_Pack
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint64_t
from libc.stdlib cimport calloc, free

cimport numpy as cnp

from zlib import crc32

from ._core cimport Entry, _entries, key_of
from ._records cimport _record_event_id
from .damage import damaged
from .format import CHECKSUM_BYTES, CHECKSUM_RESIDUE

cnp.import_array()


# ---------------------------------------------------------------------------
# NID -> string caches and the view they fill

cdef struct _Slot:
    uint64_t key  # 0: empty (NIDs start at 1)
    PyObject* value


cdef inline Py_ssize_t _slot_of(uint64_t key, Py_ssize_t mask) noexcept nogil:
    # a 64-bit finaliser: dense NIDs spread over the table
    key ^= key >> 33
    key *= 0xff51afd7ed558ccdULL
    key ^= key >> 33
    return <Py_ssize_t>(key & <uint64_t>mask)


cdef class NameCache:
    """A bounded map from NIDs (ints >= 1 below 2**64) to objects, read from C.

    An open-addressing table: lookups from the kernels below cost a few
    nanoseconds and make no Python ints.  It holds at most ``limit`` items;
    adding one more empties it first (the caches it backs are refilled from
    the store on the next miss).  All operations hold the GIL throughout, so
    threads may share one.
    """

    cdef _Slot* _slots
    cdef Py_ssize_t _mask
    cdef Py_ssize_t _used
    cdef readonly Py_ssize_t limit

    def __cinit__(self):
        self._slots = NULL
        self._reset(64)

    def __init__(self, Py_ssize_t limit):
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.limit = limit

    def __dealloc__(self):
        self._drop_all()
        free(self._slots)

    cdef int _reset(self, Py_ssize_t capacity) except -1:
        cdef _Slot* slots = <_Slot*>calloc(capacity, sizeof(_Slot))
        if slots == NULL:
            raise MemoryError()
        self._drop_all()
        free(self._slots)
        self._slots = slots
        self._mask = capacity - 1
        self._used = 0
        return 0

    cdef void _drop_all(self) noexcept:
        cdef Py_ssize_t i
        if self._slots == NULL:
            return
        for i in range(self._mask + 1):
            if self._slots[i].key:
                Py_XDECREF(self._slots[i].value)
                self._slots[i].key = 0
                self._slots[i].value = NULL
        self._used = 0

    cdef inline PyObject* find(self, uint64_t key) noexcept:
        cdef Py_ssize_t i = _slot_of(key, self._mask)
        cdef _Slot* s
        while True:
            s = &self._slots[i]
            if s.key == key:
                return s.value
            if s.key == 0:
                return NULL
            i = (i + 1) & self._mask

    cdef int _grow(self) except -1:
        cdef _Slot* old = self._slots
        cdef Py_ssize_t n = self._mask + 1, i, j
        cdef _Slot* slots = <_Slot*>calloc(2 * n, sizeof(_Slot))
        if slots == NULL:
            raise MemoryError()
        self._slots = slots
        self._mask = 2 * n - 1
        for i in range(n):
            if old[i].key:
                j = _slot_of(old[i].key, self._mask)
                while slots[j].key:
                    j = (j + 1) & self._mask
                slots[j] = old[i]
        free(old)
        return 0

    cdef int store(self, uint64_t key, object value) except -1:
        if key == 0:
            raise ValueError("NID 0 cannot be cached")
        if self.find(key) == NULL:
            if self._used >= self.limit:
                self._drop_all()
            if 2 * (self._used + 1) > self._mask + 1:
                self._grow()
        cdef Py_ssize_t i = _slot_of(key, self._mask)
        while self._slots[i].key and self._slots[i].key != key:
            i = (i + 1) & self._mask
        Py_INCREF(value)
        if self._slots[i].key:
            Py_XDECREF(self._slots[i].value)
        else:
            self._slots[i].key = key
            self._used += 1
        self._slots[i].value = <PyObject*>value
        return 0

    def get(self, uint64_t key, default=None):
        cdef PyObject* v = self.find(key) if key else NULL
        return <object>v if v != NULL else default

    def __getitem__(self, key):
        cdef uint64_t k = key
        cdef PyObject* v = self.find(k) if k else NULL
        if v == NULL:
            raise KeyError(key)
        return <object>v

    def __setitem__(self, key, value):
        cdef uint64_t k = key
        self.store(k, value)

    def __contains__(self, key):
        return isinstance(key, int) and 0 < key < 2**64 and self.find(key) != NULL

    def __len__(self):
        return self._used

    def update(self, items):
        """Add every ``(nid, value)`` of a mapping."""
        self.put_many(items.keys(), items.values())

    publish = update

    def absent(self, nids):
        """The NIDs of ``nids`` (ints >= 1) the cache does not hold, in order."""
        cdef list out = []
        cdef uint64_t k
        for nid in nids:
            k = nid
            if self.find(k) == NULL:
                out.append(nid)
        return out

    def put_many(self, nids, values):
        """Add ``nids[i] -> values[i]`` for every i."""
        for nid, value in zip(nids, values):
            self.store(nid, value)

    def clear(self):
        self._drop_all()


def state_names(entries, NameCache pairs, NameCache types, NameCache state_keys, NameCache events):
    """The keys and the event IDs of a state, from the caches, in entry order.

    Returns ``(keys, event_ids, missing)``: two lists with a ``(type, state_key)``
    tuple and an event ID per entry (key tuples are shared through ``pairs``,
    keyed by ``type << 32 | state_key``), and how many entries are missing a
    string — their slots hold None.
    """
    arr = _entries(entries)
    cdef const Entry* e = <const Entry*>cnp.PyArray_DATA(arr)
    cdef Py_ssize_t n = arr.shape[0], i, missing = 0
    cdef list keys = PyList_New(n)
    cdef list values = PyList_New(n)
    cdef PyObject* p
    cdef PyObject* t
    cdef PyObject* s
    cdef uint64_t k
    for i in range(n):
        k = key_of(&e[i])
        p = pairs.find(k)
        if p == NULL:
            t = types.find(e[i].type)
            s = state_keys.find(e[i].state_key)
            if t != NULL and s != NULL:
                pair = PyTuple_Pack(2, t, s)
                pairs.store(k, pair)
                p = <PyObject*>pair
        if p == NULL:
            p = <PyObject*>None
            missing += 1
        Py_INCREF(<object>p)
        PyList_SET_ITEM(keys, i, <object>p)
        p = events.find(e[i].event)
        if p == NULL:
            p = <PyObject*>None
            missing += 1
        Py_INCREF(<object>p)
        PyList_SET_ITEM(values, i, <object>p)
    return keys, values, missing


cdef class StateView:
    """The base of :class:`roomstate.statemap.StateMap`: its entries and its strings once listed.

    ``dict(state)`` asks for every key and then reads the keys back one by one
    in the same order; a cursor answers each such read from the lists without
    a lookup (any other key is found by binary search over the entries).

    Every attribute lives here, at the C level, and none can be set from Python:
    the lookups below index the string lists without bounds checks, so the lists
    are set only by :meth:`_strings`, checked to hold one string per entry.
    """

    cdef readonly object _reader  # a roomstate.reader.Reader: NIDs to strings and back
    cdef object _entries
    cdef object _loader
    cdef list _keys
    cdef list _values
    cdef Py_ssize_t _cursor

    def __init__(self, reader, entries=None, loader=None):
        self._reader = reader
        self._entries = entries
        self._loader = loader
        self._keys = None
        self._values = None
        self._cursor = 0

    @property
    def entries(self):
        """The state's entries: a numpy structured array of NIDs sorted by key."""
        if self._entries is None:
            if self._loader is None:
                raise TypeError("this StateMap was made without entries")
            self._entries = self._loader()
            self._loader = None
        return self._entries

    def _strings(self):
        """``(keys, event_ids)``: every entry's strings, listed once."""
        if self._keys is None:
            entries = self.entries
            keys, values = self._reader.state_strings(entries)
            if type(keys) is not list or type(values) is not list or len(keys) != len(entries) or len(values) != len(entries):
                raise TypeError("state_strings must give one key and one event ID per entry, as two lists")
            self._values = values  # before _keys: a reader checks _keys first
            self._keys = keys
        return self._keys, self._values

    def __iter__(self):
        keys = self._strings()[0]
        self._cursor = 0
        return iter(keys)

    def __getitem__(self, key):
        cdef list keys = self._keys
        cdef list values = self._values
        cdef Py_ssize_t i = self._cursor
        if keys is not None and 0 <= i < PyList_GET_SIZE(keys) and PyList_GET_ITEM(keys, i) == <PyObject*>key:
            self._cursor = i + 1
            return values[i]
        i = self._index(key)
        if i < 0:
            raise KeyError(key)
        self._cursor = i + 1
        if values is not None and i < PyList_GET_SIZE(values):
            return values[i]
        return self._event_id(i)


# ---------------------------------------------------------------------------
# names a cache lacks, from LMDB

def fetch_names(txn, db, nids, bint records=False, checked=None):
    """The strings stored under big-endian 8-byte NID keys in ``db``, in the order of ``nids``.

    A name table's values are UTF-8 strings (then, when ``checked`` names the table, a
    checksum: format version 3; a wrong one is damaged() naming the table and NID); with
    ``records`` they are event records, and their event IDs are returned.  None where a
    NID has no value.
    One C loop over ``txn.get``: a cold read's every state key and event ID.
    """
    cdef list out = []
    cdef unsigned char key[8]
    cdef uint64_t v
    cdef int i
    cdef Py_ssize_t n
    cdef Py_buffer view
    cdef bint sums = checked is not None
    get = txn.get
    for nid in nids:
        v = nid
        for i in range(8):
            key[7 - i] = <unsigned char>((v >> (8 * i)) & 0xFF)
        k = PyBytes_FromStringAndSize(<char*>key, 8)
        val = get(k, None, db)
        if val is None:
            out.append(None)
            continue
        if sums and (len(val) < CHECKSUM_BYTES or crc32(val, crc32(k)) != CHECKSUM_RESIDUE):
            raise damaged(checked, nid, "its checksum is wrong (the value was changed)")
        PyObject_GetBuffer(val, &view, PyBUF_SIMPLE)
        try:
            if records:
                if view.len == 0:
                    raise ValueError("empty event record")
                out.append(_record_event_id(<const unsigned char*>view.buf, view.len))
            else:
                n = view.len - CHECKSUM_BYTES if sums else view.len
                out.append(PyUnicode_DecodeUTF8(<const char*>view.buf, n, "surrogatepass"))
        finally:
            PyBuffer_Release(&view)
    return out
