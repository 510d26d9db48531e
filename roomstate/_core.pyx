# cython: language_level=3
"""Kernels over packed state entries.

A state entry is a packed ``(type NID, state-key NID, event NID)`` triple of
16 bytes, the numpy dtype :data:`ENTRY_DTYPE`.  Arrays of entries are sorted
by ``(type, state_key)``; an event NID of 0 is a tombstone (the key is
removed).  Every kernel takes read-only buffers (numpy views over LMDB
buffers work without copies), runs its loop without the GIL, and returns new
numpy arrays.

>>> import numpy as np
>>> a = np.array([(5, 9, 30), (1, 1, 10), (5, 9, 31)], dtype=ENTRY_DTYPE)
>>> sort_unique(a).tolist()
[(1, 1, 10), (5, 9, 31)]
>>> overlay([sort_unique(a), np.array([(5, 9, 0)], dtype=ENTRY_DTYPE)]).tolist()
[(1, 1, 10)]
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.list cimport PyList_New, PyList_SET_ITEM, PyList_GET_ITEM, PyList_GET_SIZE
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_Pack
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport calloc, malloc, free
from libc.string cimport memcpy

from ._varint cimport _put_varint

import numpy as np
cimport numpy as cnp

cnp.import_array()

cdef extern from *:
    """
    #ifndef ROOMSTATE_DEBUG
    #define ROOMSTATE_DEBUG 0
    #endif
    """
    int ROOMSTATE_DEBUG

#: True when built with ROOMSTATE_DEBUG=1 (bounds and wraparound checks on).
DEBUG_BUILD = bool(ROOMSTATE_DEBUG)

ENTRY_DTYPE = np.dtype([("type", "<u4"), ("state_key", "<u4"), ("event", "<u8")])


cdef packed struct Entry:
    uint32_t type
    uint32_t state_key
    uint64_t event


cdef inline uint64_t key_of(const Entry* e) noexcept nogil:
    return ((<uint64_t>e.type) << 32) | e.state_key


cdef cnp.ndarray _entries(object obj):
    """``obj`` checked to be a 1-d entry array, made C-contiguous if it is not."""
    if not isinstance(obj, np.ndarray):
        raise TypeError(f"expected a numpy array of ENTRY_DTYPE, got {type(obj).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>obj
    if arr.dtype is not ENTRY_DTYPE and arr.dtype != ENTRY_DTYPE:
        raise TypeError(f"expected dtype {ENTRY_DTYPE}, got {arr.dtype}")
    if cnp.PyArray_NDIM(arr) != 1:
        raise ValueError(f"expected a 1-d entry array, got {cnp.PyArray_NDIM(arr)} dimensions")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        arr = np.ascontiguousarray(arr)
    return arr


cdef const Entry[::1] _view(object obj) except *:
    """A typed view of ``obj``, which must be a 1-d entry array."""
    arr = _entries(obj)
    if arr.shape[0] == 0:
        # A zero-length buffer has no usable pointer; callers check lengths.
        arr = np.zeros(1, dtype=ENTRY_DTYPE)
    return arr


cdef object _empty(Py_ssize_t n):
    return np.empty(n, dtype=ENTRY_DTYPE)


# ---------------------------------------------------------------------------
# sort / unique

cdef void _merge_sort(uint64_t* keys, Py_ssize_t* idx, Py_ssize_t* tmp, Py_ssize_t n) noexcept nogil:
    """Stable bottom-up merge sort of ``idx`` by ``keys[idx]``."""
    cdef Py_ssize_t width = 1, lo, mid, hi, i, j, k
    cdef Py_ssize_t* src = idx
    cdef Py_ssize_t* dst = tmp
    cdef Py_ssize_t* swap
    while width < n:
        lo = 0
        while lo < n:
            mid = lo + width
            if mid > n:
                mid = n
            hi = lo + 2 * width
            if hi > n:
                hi = n
            i = lo
            j = mid
            k = lo
            while i < mid and j < hi:
                if keys[src[j]] < keys[src[i]]:
                    dst[k] = src[j]
                    j += 1
                else:
                    dst[k] = src[i]
                    i += 1
                k += 1
            while i < mid:
                dst[k] = src[i]
                i += 1
                k += 1
            while j < hi:
                dst[k] = src[j]
                j += 1
                k += 1
            lo = hi
        swap = src
        src = dst
        dst = swap
        width *= 2
    if src != idx:
        memcpy(idx, src, n * sizeof(Py_ssize_t))


cdef Py_ssize_t _sort_unique(const Entry* a, Py_ssize_t n, Entry* out, bint drop_tombstones) noexcept nogil:
    """Sort ``a`` by key into ``out`` keeping the last entry of each key; -1 on no memory."""
    cdef uint64_t* keys = <uint64_t*>malloc(n * sizeof(uint64_t))
    cdef Py_ssize_t* idx = <Py_ssize_t*>malloc(n * sizeof(Py_ssize_t))
    cdef Py_ssize_t* tmp = <Py_ssize_t*>malloc(n * sizeof(Py_ssize_t))
    cdef Py_ssize_t i, m = 0
    if keys == NULL or idx == NULL or tmp == NULL:
        free(keys)
        free(idx)
        free(tmp)
        return -1
    for i in range(n):
        keys[i] = key_of(&a[i])
        idx[i] = i
    _merge_sort(keys, idx, tmp, n)
    for i in range(n):
        # Stable sort: the last of a run of equal keys is the latest entry.
        if i + 1 < n and keys[idx[i + 1]] == keys[idx[i]]:
            continue
        if drop_tombstones and a[idx[i]].event == 0:
            continue
        out[m] = a[idx[i]]
        m += 1
    free(keys)
    free(idx)
    free(tmp)
    return m


def sort_unique(entries, bint drop_tombstones=False):
    """Sort entries by (type, state_key); for a repeated key the last one wins.

    Tombstones (event 0) are kept unless ``drop_tombstones``.
    """
    cdef const Entry[::1] a = _view(entries)
    cdef Py_ssize_t n = len(entries)
    out = _empty(n)
    if n == 0:
        return out
    cdef Entry[::1] o = out
    cdef Py_ssize_t m
    with nogil:
        m = _sort_unique(&a[0], n, &o[0], drop_tombstones)
    if m < 0:
        raise MemoryError()
    return out[:m].copy() if m < n else out


def is_sorted_unique(entries):
    """True when keys are strictly increasing (a valid state or block)."""
    cdef const Entry[::1] a = _view(entries)
    cdef Py_ssize_t n = len(entries), i
    cdef bint ok = True
    with nogil:
        for i in range(1, n):
            if key_of(&a[i]) <= key_of(&a[i - 1]):
                ok = False
                break
    return ok


# ---------------------------------------------------------------------------
# overlay: k-way merge, later layers win

cdef struct Layer:
    const Entry* data
    Py_ssize_t n
    Py_ssize_t pos


cdef inline bint _heap_less(Layer* layers, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    # Smaller key first; for equal keys the later (higher) layer first, so
    # that the first entry popped for a key is the winning one.
    cdef uint64_t ka = key_of(&layers[a].data[layers[a].pos])
    cdef uint64_t kb = key_of(&layers[b].data[layers[b].pos])
    if ka != kb:
        return ka < kb
    return a > b


cdef void _sift_down(Py_ssize_t* heap, Py_ssize_t size, Py_ssize_t i, Layer* layers) noexcept nogil:
    cdef Py_ssize_t child, tmp
    while True:
        child = 2 * i + 1
        if child >= size:
            return
        if child + 1 < size and _heap_less(layers, heap[child + 1], heap[child]):
            child += 1
        if _heap_less(layers, heap[child], heap[i]):
            tmp = heap[i]
            heap[i] = heap[child]
            heap[child] = tmp
            i = child
        else:
            return


cdef Py_ssize_t _overlay(Layer* layers, Py_ssize_t k, Entry* out, bint keep_tombstones) noexcept nogil:
    cdef Py_ssize_t* heap = <Py_ssize_t*>malloc((k + 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t size = 0, i, top, m = 0
    cdef uint64_t key
    if heap == NULL:
        return -1
    for i in range(k):
        if layers[i].n > 0:
            heap[size] = i
            size += 1
    i = size // 2
    while i >= 0:
        _sift_down(heap, size, i, layers)
        i -= 1
    while size > 0:
        top = heap[0]
        key = key_of(&layers[top].data[layers[top].pos])
        if keep_tombstones or layers[top].data[layers[top].pos].event != 0:
            out[m] = layers[top].data[layers[top].pos]
            m += 1
        # Advance every layer positioned on this key.
        while size > 0:
            top = heap[0]
            if key_of(&layers[top].data[layers[top].pos]) != key:
                break
            layers[top].pos += 1
            if layers[top].pos >= layers[top].n:
                size -= 1
                heap[0] = heap[size]
            _sift_down(heap, size, 0, layers)
    free(heap)
    return m


cdef Layer* _layers(list arrays, list views) except NULL:
    """Fill a C array of layers from entry arrays.

    Many small layers are the common case (a snapshot's blocks and deltas), so
    this reads each array's data pointer directly instead of acquiring a typed
    memoryview per layer; ``views`` keeps converted copies alive.
    """
    cdef Py_ssize_t k = len(arrays), i
    cdef Layer* layers = <Layer*>malloc((k + 1) * sizeof(Layer))
    cdef cnp.ndarray arr
    if layers == NULL:
        raise MemoryError()
    try:
        for i in range(k):
            arr = _entries(arrays[i])
            if arr is not arrays[i]:
                views.append(arr)  # a contiguous copy: keep it alive
            layers[i].data = <const Entry*>cnp.PyArray_DATA(arr)
            layers[i].n = cnp.PyArray_DIM(arr, 0)
            layers[i].pos = 0
    except BaseException:
        free(layers)
        raise
    return layers


def overlay(layers, bint keep_tombstones=False):
    """Overlay sorted, key-unique layers: later layers override earlier ones.

    With ``keep_tombstones`` the result keeps tombstone entries (a delta);
    otherwise removed keys are dropped (a full state).
    """
    cdef list arrays = list(layers)
    cdef list views = []
    cdef Py_ssize_t k = len(arrays), total = 0, m
    for a in arrays:
        total += len(a)
    out = _empty(total)
    if total == 0:
        return out
    cdef Entry[::1] o = out
    cdef Layer* ls = _layers(arrays, views)
    with nogil:
        m = _overlay(ls, k, &o[0], keep_tombstones)
    free(ls)
    if m < 0:
        raise MemoryError()
    return out[:m] if m < total else out


# ---------------------------------------------------------------------------
# align: the value of every key in each of several states (for merges)

cdef inline bint _min_key(const Layer* ls, Py_ssize_t k, uint64_t* key) noexcept nogil:
    """The smallest key at the layers' positions into ``key``; False when all are used up."""
    cdef bint any_left = False
    cdef uint64_t here
    cdef Py_ssize_t j
    for j in range(k):
        if ls[j].pos < ls[j].n:
            here = key_of(&ls[j].data[ls[j].pos])
            if not any_left or here < key[0]:
                key[0] = here
            any_left = True
    return any_left


cdef Py_ssize_t _union_size(Layer* ls, Py_ssize_t k) noexcept nogil:
    """How many distinct keys the layers hold together (their positions are left at 0)."""
    cdef Py_ssize_t m = 0, j
    cdef uint64_t key = 0
    while _min_key(ls, k, &key):
        for j in range(k):
            if ls[j].pos < ls[j].n and key_of(&ls[j].data[ls[j].pos]) == key:
                ls[j].pos += 1
        m += 1
    for j in range(k):
        ls[j].pos = 0
    return m


cdef inline bint _lookup_in(const Layer* ls, Py_ssize_t k, uint64_t key, uint64_t* event) noexcept nogil:
    """``key``'s event in overlaid layers (the last one holding it wins) into ``event``;
    False when no layer holds it."""
    cdef Py_ssize_t j = k - 1, r
    while j >= 0:
        r = _find(ls[j].data, ls[j].n, key)
        if r >= 0:
            event[0] = ls[j].data[r].event
            return True
        j -= 1
    return False


def align(states, uint64_t missing=0, base=None):
    """Line up several sorted states key by key.

    Returns ``(keys, values)``: ``keys`` is an entry array of the union of keys
    (event 0), ``values[i, j]`` the event NID of key ``i`` in state ``j``, or
    where state ``j`` has no entry for the key (a tombstone entry gives 0):
    ``missing``, or with ``base`` (a list of layers under every state) the
    key's event in the overlaid base, 0 when it has none.
    """
    cdef list arrays = list(states)
    cdef list base_arrays = list(base) if base is not None else []
    cdef list views = []
    cdef Py_ssize_t k = len(arrays), nb = len(base_arrays), m, i, j
    cdef uint64_t key = 0, fill
    cdef bint filled
    cdef Layer* ls = _layers(arrays, views)
    cdef Layer* bs = NULL
    cdef Entry* ko
    cdef uint64_t* vo
    try:
        if nb:
            bs = _layers(base_arrays, views)
        with nogil:
            m = _union_size(ls, k)
        keys = _empty(m)
        values = np.empty((m, max(k, 1)), dtype=np.uint64)
        ko = <Entry*>cnp.PyArray_DATA(keys)
        vo = <uint64_t*>cnp.PyArray_DATA(values)
        with nogil:
            for i in range(m):
                _min_key(ls, k, &key)  # m keys are left: always True
                ko[i].type = <uint32_t>(key >> 32)
                ko[i].state_key = <uint32_t>(key & 0xFFFFFFFFu)
                ko[i].event = 0
                filled = False
                fill = missing
                for j in range(k):
                    if ls[j].pos < ls[j].n and key_of(&ls[j].data[ls[j].pos]) == key:
                        vo[i * k + j] = ls[j].data[ls[j].pos].event
                        ls[j].pos += 1
                    else:
                        if nb and not filled:
                            if not _lookup_in(bs, nb, key, &fill):
                                fill = 0
                            filled = True
                        vo[i * k + j] = fill
    finally:
        free(ls)
        free(bs)
    return keys, values[:, :k]


# ---------------------------------------------------------------------------
# diff

def diff(a, b):
    """Entries of ``b`` not in ``a`` (added) and of ``a`` not in ``b`` (removed).

    Both inputs are full states (no tombstones).  A key whose event changed is
    in both results.
    """
    cdef const Entry[::1] av = _view(a)
    cdef const Entry[::1] bv = _view(b)
    cdef Py_ssize_t na = len(a), nb = len(b), i = 0, j = 0, na_out = 0, nr_out = 0
    added = _empty(nb)
    removed = _empty(na)
    cdef Entry[::1] ao = _empty(1) if nb == 0 else added
    cdef Entry[::1] ro = _empty(1) if na == 0 else removed
    cdef uint64_t ka, kb
    with nogil:
        while i < na or j < nb:
            if j >= nb:
                ro[nr_out] = av[i]
                nr_out += 1
                i += 1
            elif i >= na:
                ao[na_out] = bv[j]
                na_out += 1
                j += 1
            else:
                ka = key_of(&av[i])
                kb = key_of(&bv[j])
                if ka < kb:
                    ro[nr_out] = av[i]
                    nr_out += 1
                    i += 1
                elif kb < ka:
                    ao[na_out] = bv[j]
                    na_out += 1
                    j += 1
                else:
                    if av[i].event != bv[j].event:
                        ro[nr_out] = av[i]
                        nr_out += 1
                        ao[na_out] = bv[j]
                        na_out += 1
                    i += 1
                    j += 1
    return added[:na_out].copy(), removed[:nr_out].copy()


# ---------------------------------------------------------------------------
# lookups

cdef inline Py_ssize_t _find(const Entry* a, Py_ssize_t n, uint64_t key) noexcept nogil:
    """Index of ``key`` in sorted ``a``, or -1."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    cdef uint64_t k
    while lo < hi:
        mid = (lo + hi) >> 1
        k = key_of(&a[mid])
        if k < key:
            lo = mid + 1
        elif k > key:
            hi = mid
        else:
            return mid
    return -1


cdef inline Py_ssize_t _lower_bound(const Entry* a, Py_ssize_t n, uint64_t key) noexcept nogil:
    """First index whose key is >= ``key``."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if key_of(&a[mid]) < key:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef inline Py_ssize_t _upper_bound(const Entry* a, Py_ssize_t n, uint64_t key) noexcept nogil:
    """First index whose key is > ``key``."""
    cdef Py_ssize_t lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if key_of(&a[mid]) <= key:
            lo = mid + 1
        else:
            hi = mid
    return lo


def find(entries, uint32_t type_nid, uint32_t state_key_nid):
    """Index of ``(type_nid, state_key_nid)`` in a sorted entry array, or -1."""
    cdef const Entry[::1] a = _view(entries)
    cdef Py_ssize_t n = len(entries), r
    cdef uint64_t key = ((<uint64_t>type_nid) << 32) | state_key_nid
    with nogil:
        r = _find(&a[0], n, key)
    return r


def lookup_layers(layers, uint32_t type_nid, uint32_t state_key_nid):
    """Event NID of a key in overlaid layers (newest wins): None when absent
    from every layer, 0 when the newest layer holding it has a tombstone."""
    cdef list arrays = list(layers)
    cdef list views = []
    cdef Py_ssize_t k = len(arrays)
    cdef uint64_t result = 0
    cdef bint found = False
    cdef uint64_t key = ((<uint64_t>type_nid) << 32) | state_key_nid
    if k == 0:
        return None
    cdef Layer* ls = _layers(arrays, views)
    with nogil:
        found = _lookup_in(ls, k, key, &result)
    free(ls)
    return result if found else None


def lookup_keys(layers, keys):
    """For each key of the entry array ``keys``, its event NID in the overlaid
    ``layers`` (newest wins); 0 where absent or removed."""
    cdef list arrays = list(layers)
    cdef list views = []
    cdef const Entry[::1] kv = _view(keys)
    cdef Py_ssize_t nk = len(keys), k = len(arrays), i
    values = np.zeros(nk, dtype=np.uint64)
    if nk == 0 or k == 0:
        return values
    cdef uint64_t[::1] vo = values
    cdef Layer* ls = _layers(arrays, views)
    with nogil:
        for i in range(nk):
            _lookup_in(ls, k, key_of(&kv[i]), &vo[i])  # absent: stays 0
    free(ls)
    return values


def select(entries, type_nids, state_key_nids):
    """The entries matching a filter, in order.

    ``type_nids[i], state_key_nids[i]`` is one filter pair; a state-key NID of
    0 matches every key of that type.
    """
    cdef const Entry[::1] a = _view(entries)
    cdef const uint32_t[::1] tv = np.ascontiguousarray(type_nids, dtype=np.uint32)
    cdef const uint32_t[::1] sv = np.ascontiguousarray(state_key_nids, dtype=np.uint32)
    cdef Py_ssize_t n = len(entries), nf = tv.shape[0], i, lo, hi, m = 0
    if sv.shape[0] != nf:
        raise ValueError("type_nids and state_key_nids differ in length")
    mask = np.zeros(max(n, 1), dtype=np.uint8)
    cdef uint8_t[::1] mv = mask
    with nogil:
        for i in range(nf):
            if sv[i] == 0:
                lo = _lower_bound(&a[0], n, (<uint64_t>tv[i]) << 32)
                hi = _upper_bound(&a[0], n, ((<uint64_t>tv[i]) << 32) | 0xFFFFFFFFu)
                while lo < hi:
                    mv[lo] = 1
                    lo += 1
            else:
                lo = _find(&a[0], n, ((<uint64_t>tv[i]) << 32) | sv[i])
                if lo >= 0:
                    mv[lo] = 1
    if n == 0:
        return _empty(0)
    return np.asarray(entries)[mask[:n].view(bool)]


def type_range(entries, uint32_t type_nid):
    """``(lo, hi)``: the slice of a sorted entry array holding ``type_nid``."""
    cdef const Entry[::1] a = _view(entries)
    cdef Py_ssize_t n = len(entries), lo, hi
    with nogil:
        lo = _lower_bound(&a[0], n, (<uint64_t>type_nid) << 32)
        hi = _upper_bound(&a[0], n, ((<uint64_t>type_nid) << 32) | 0xFFFFFFFFu)
    return lo, hi


# ---------------------------------------------------------------------------
# varints: compact records for events and chain snapshots

cdef inline Py_ssize_t _get_varint(const unsigned char* buf, Py_ssize_t n, Py_ssize_t pos, uint64_t* out) noexcept nogil:
    """Decode one varint at ``pos``; the new position, or -1 when truncated or too long."""
    cdef uint64_t v = 0
    cdef int shift = 0
    cdef unsigned char b
    while True:
        if pos >= n or shift > 63:
            return -1
        b = buf[pos]
        pos += 1
        v |= (<uint64_t>(b & 0x7F)) << shift
        if b < 0x80:
            out[0] = v
            return pos
        shift += 7


def pack_uvarints(values):
    """LEB128-encode a sequence of unsigned 64-bit integers.

    >>> unpack_uvarints(pack_uvarints([0, 127, 128, 2**64 - 1]), 4)
    ([0, 127, 128, 18446744073709551615], 14)
    """
    cdef list vals = list(values)
    cdef Py_ssize_t k = len(vals), i, pos = 0
    cdef bytearray out = bytearray(10 * k)
    cdef unsigned char* p = out
    for i in range(k):
        v = vals[i]
        if not isinstance(v, int):
            raise TypeError(f"varints encode integers, got {type(v).__name__}")
        pos += _put_varint(p + pos, <uint64_t>v)
    del out[pos:]
    return bytes(out)


def unpack_uvarints(const unsigned char[::1] buf, Py_ssize_t count, Py_ssize_t offset=0):
    """Decode ``count`` varints from ``buf`` at ``offset``: ``(values, next offset)``."""
    cdef Py_ssize_t n = buf.shape[0], i, pos = offset
    cdef uint64_t v
    cdef list out = []
    if offset < 0 or offset > n:
        raise ValueError("offset out of range")
    for i in range(count):
        pos = _get_varint(&buf[0] if n else NULL, n, pos, &v)
        if pos < 0:
            raise ValueError("truncated or malformed varint record")
        out.append(v)
    return out, pos


def pack_entries(entries):
    """Entries as varint triples (a chain snapshot's delta)."""
    cdef const Entry[::1] a = _view(entries)
    cdef Py_ssize_t n = len(entries), i, pos = 0
    cdef bytearray out = bytearray(30 * n + 1)
    cdef unsigned char* p = out
    with nogil:
        for i in range(n):
            pos += _put_varint(p + pos, a[i].type)
            pos += _put_varint(p + pos, a[i].state_key)
            pos += _put_varint(p + pos, a[i].event)
    del out[pos:]
    return bytes(out)


def unpack_entries(const unsigned char[::1] buf, Py_ssize_t count, Py_ssize_t offset=0):
    """Decode ``count`` varint-triple entries from ``buf`` at ``offset``."""
    cdef Py_ssize_t n = buf.shape[0], i, pos = offset
    cdef uint64_t t, k, e
    cdef bint bad = False
    if offset < 0 or offset > n or count < 0:
        raise ValueError("offset or count out of range")
    if count > (n - offset) // 3:
        # Every entry takes at least three bytes: a larger count is corrupt.
        raise ValueError("truncated or malformed entry record")
    out = _empty(count)
    if count == 0:
        return out
    cdef Entry[::1] o = out
    cdef const unsigned char* b = &buf[0]
    with nogil:
        for i in range(count):
            pos = _get_varint(b, n, pos, &t)
            if pos >= 0:
                pos = _get_varint(b, n, pos, &k)
            if pos >= 0:
                pos = _get_varint(b, n, pos, &e)
            if pos < 0 or t > 0xFFFFFFFFu or k > 0xFFFFFFFFu:
                bad = True
                break
            o[i].type = <uint32_t>t
            o[i].state_key = <uint32_t>k
            o[i].event = e
    if bad:
        raise ValueError("truncated or malformed entry record")
    return out


# ---------------------------------------------------------------------------
# event IDs of room versions 4+: "$" + unpadded base64url of 32 bytes

cdef const char* _B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def unpack_event_id(const unsigned char[::1] raw):
    """The event ID of 32 bytes packed by :func:`roomstate._write.pack_event_id`."""
    if raw.shape[0] != 32:
        raise ValueError("a packed event ID is 32 bytes")
    return _unpack_event_id(&raw[0])


cdef str _unpack_event_id(const unsigned char* raw):
    cdef char out[44]
    cdef uint32_t acc = 0
    cdef int bits = 0, n = 1, i
    out[0] = b"$"
    for i in range(32):
        acc = (acc << 8) | raw[i]
        bits += 8
        while bits >= 6:
            bits -= 6
            out[n] = _B64_ALPHABET[(acc >> bits) & 0x3F]
            n += 1
    out[n] = _B64_ALPHABET[(acc << (6 - bits)) & 0x3F]
    n += 1
    return out[:n].decode("ascii")


def single(uint32_t type_nid, uint32_t state_key_nid, uint64_t event_nid):
    """A one-entry array (the delta of one state event)."""
    out = _empty(1)
    cdef Entry[::1] o = out
    o[0].type = type_nid
    o[0].state_key = state_key_nid
    o[0].event = event_nid
    return out


# ---------------------------------------------------------------------------
# event records (see roomstate.events.Record; packed by roomstate._write.pack_record)

cdef inline int64_t _unzigzag(uint64_t z) noexcept nogil:
    return <int64_t>(z >> 1) ^ -<int64_t>(z & 1)


cdef Py_ssize_t _record_head(const unsigned char* raw, Py_ssize_t n, uint64_t* v) noexcept nogil:
    """Decode a record's nine header varints into ``v``; the position after them, or -1."""
    cdef Py_ssize_t pos = 0, i
    for i in range(9):
        pos = _get_varint(raw, n, pos, &v[i])
        if pos < 0:
            return -1
    return pos


def unpack_record(const unsigned char[::1] raw, uint64_t nid):
    """``(flags, membership, room, type, state_key, depth, before, after, prevs, tail_offset)``."""
    cdef Py_ssize_t n = raw.shape[0], pos, i
    cdef uint64_t v[9]
    cdef uint64_t z
    if n == 0:
        raise ValueError("empty event record")
    pos = _record_head(&raw[0], n, v)
    if pos < 0:
        raise ValueError("truncated event record")
    cdef uint64_t after = v[6] if v[7] == 0 else v[6] + <uint64_t>_unzigzag(v[7] - 1)
    cdef list prevs = []
    for i in range(<Py_ssize_t>v[8]):
        pos = _get_varint(&raw[0], n, pos, &z)
        if pos < 0:
            raise ValueError("truncated event record")
        prevs.append(nid - <uint64_t>_unzigzag(z))
    return v[0], v[1], v[2], v[3], v[4], v[5], v[6], after, tuple(prevs), pos


cdef str _record_event_id(const unsigned char* raw, Py_ssize_t n):
    """The event ID in the event record ``raw[:n]`` (``n`` > 0)."""
    cdef uint64_t v[9]
    cdef uint64_t z
    cdef Py_ssize_t pos = _record_head(raw, n, v), i
    if pos < 0:
        raise ValueError("truncated event record")
    for i in range(<Py_ssize_t>v[8]):
        pos = _get_varint(raw, n, pos, &z)
        if pos < 0:
            raise ValueError("truncated event record")
    if v[0] & 32:
        if n - pos != 32:
            raise ValueError("a packed event ID is 32 bytes")
        return _unpack_event_id(raw + pos)
    return PyUnicode_DecodeUTF8(<const char*>raw + pos, n - pos, "surrogatepass")


def fetch_names(txn, db, nids, bint records=False):
    """The strings stored under big-endian 8-byte NID keys in ``db``, in the order of ``nids``.

    A name table's values are UTF-8 strings; with ``records`` they are event
    records, and their event IDs are returned.  None where a NID has no value.
    One C loop over ``txn.get``: a cold read's every state key and event ID.
    """
    cdef list out = []
    cdef unsigned char key[8]
    cdef uint64_t v
    cdef int i
    cdef Py_buffer view
    get = txn.get
    for nid in nids:
        v = nid
        for i in range(8):
            key[7 - i] = <unsigned char>((v >> (8 * i)) & 0xFF)
        val = get(PyBytes_FromStringAndSize(<char*>key, 8), None, db)
        if val is None:
            out.append(None)
            continue
        PyObject_GetBuffer(val, &view, PyBUF_SIMPLE)
        try:
            if records:
                if view.len == 0:
                    raise ValueError("empty event record")
                out.append(_record_event_id(<const unsigned char*>view.buf, view.len))
            else:
                out.append(PyUnicode_DecodeUTF8(<const char*>view.buf, view.len, "surrogatepass"))
        finally:
            PyBuffer_Release(&view)
    return out


# ---------------------------------------------------------------------------
# event input: the fast path of roomstate.events.parse

MEMBERSHIPS = ("join", "invite", "leave", "ban", "knock")
MEMBERSHIP_CODE = {m: i for i, m in enumerate(MEMBERSHIPS, start=1)}
OTHER_MEMBERSHIP = 7  # a membership string outside the five the spec defines
MAX_DEPTH = 2**63 - 1
MAX_PREVS = 65535


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

    def __init__(self, str event_id, str room_id, str type, state_key, list prev_ids, depth, bint rejected,
                 int membership):
        self.event_id = event_id
        self.room_id = room_id
        self.type = type
        self.state_key = state_key
        self.prev_ids = prev_ids
        self.depth = depth
        self.rejected = rejected
        self.membership = membership


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
    return ParsedEvent(event_id, room_id, type_, state_key, prev_ids, depth, rejected, membership)


# ---------------------------------------------------------------------------
# strings of a state: NID -> string caches and the view they fill

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
    """The base of :class:`roomstate.statemap.StateMap`: its strings once listed.

    ``dict(state)`` asks for every key and then reads the keys back one by one
    in the same order; a cursor answers each such read from the lists without
    a lookup (any other key is found by binary search over the entries).
    """

    cdef public list _keys
    cdef public list _values
    cdef Py_ssize_t _cursor

    def __iter__(self):
        keys = self._strings()[0]
        self._cursor = 0
        return iter(keys)

    def __getitem__(self, key):
        cdef list keys = self._keys
        cdef Py_ssize_t i = self._cursor
        if keys is not None and i < PyList_GET_SIZE(keys) and PyList_GET_ITEM(keys, i) == <PyObject*>key:
            self._cursor = i + 1
            return self._values[i]
        i = self._index(key)
        if i < 0:
            raise KeyError(key)
        self._cursor = i + 1
        if self._values is not None:
            return self._values[i]
        return self._event_id(i)
