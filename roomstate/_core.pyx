# cython: language_level=3
"""Kernels over packed state entries, and the codecs of entry records.

A state entry is a packed ``(type NID, state-key NID, event NID)`` triple of
16 bytes, the numpy dtype :data:`ENTRY_DTYPE` (its C struct, ``Entry``, is
declared in ``_core.pxd``).  Arrays of entries are sorted by ``(type,
state_key)``; an event NID of 0 is a tombstone (the key is removed).  Every
kernel takes read-only buffers (numpy views over LMDB buffers work without
copies) and returns new numpy arrays or bytes.

The GIL: every loop over entries runs without it (``with nogil``) — sorting,
overlaying, aligning, diffing, the binary searches, and packing and unpacking
entry records; the GIL is held only to check the arguments and to allocate the
results.  ``pack_uvarints`` and ``unpack_uvarints`` hold it throughout: they
read or build a list of Python ints, one per varint.  ``single`` holds it: it
writes one entry.

>>> import numpy as np
>>> a = np.array([(5, 9, 30), (1, 1, 10), (5, 9, 31)], dtype=ENTRY_DTYPE)
>>> sort_unique(a).tolist()
[(1, 1, 10), (5, 9, 31)]
>>> overlay([sort_unique(a), np.array([(5, 9, 0)], dtype=ENTRY_DTYPE)]).tolist()
[(1, 1, 10)]
"""
cimport cython
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

from ._varint cimport _get_varint, _put_varint

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


cdef Py_ssize_t _heapify(Py_ssize_t* heap, Layer* layers, Py_ssize_t k) noexcept nogil:
    """Fill ``heap`` with the layers that hold entries, as a heap; their number."""
    cdef Py_ssize_t size = 0, i
    for i in range(k):
        if layers[i].n > 0:
            heap[size] = i
            size += 1
    i = size // 2
    while i >= 0:
        _sift_down(heap, size, i, layers)
        i -= 1
    return size


cdef inline Py_ssize_t _heap_advance(Py_ssize_t* heap, Py_ssize_t size, Layer* layers) noexcept nogil:
    """Move the top layer past its entry (out of the heap when used up); the heap's size."""
    cdef Py_ssize_t top = heap[0]
    layers[top].pos += 1
    if layers[top].pos >= layers[top].n:
        size -= 1
        heap[0] = heap[size]
    _sift_down(heap, size, 0, layers)
    return size


cdef Py_ssize_t _overlay(Layer* layers, Py_ssize_t k, Entry* out, bint keep_tombstones) noexcept nogil:
    cdef Py_ssize_t* heap = <Py_ssize_t*>malloc((k + 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t size, top, m = 0
    cdef uint64_t key
    if heap == NULL:
        return -1
    size = _heapify(heap, layers, k)
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
            size = _heap_advance(heap, size, layers)
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


cdef Py_ssize_t _align(Layer* ls, Py_ssize_t k, const Layer* bs, Py_ssize_t nb, uint64_t missing,
                       Entry* ko, uint64_t* base, cnp.npy_intp* ptr, cnp.npy_intp* cols,
                       uint64_t* vals) noexcept nogil:
    """The k-way merge of :func:`align_sparse` (the output arrays hold the sum of the
    layers' lengths); the number of keys, or -1 on no memory."""
    cdef Py_ssize_t* heap = <Py_ssize_t*>malloc((k + 1) * sizeof(Py_ssize_t))
    cdef Py_ssize_t size, top, m = 0, e = 0, start, lo, hi
    cdef cnp.npy_intp tc
    cdef uint64_t key, fill, tv
    if heap == NULL:
        return -1
    size = _heapify(heap, ls, k)
    while size > 0:
        top = heap[0]
        key = key_of(&ls[top].data[ls[top].pos])
        ko[m].type = <uint32_t>(key >> 32)
        ko[m].state_key = <uint32_t>(key & 0xFFFFFFFFu)
        ko[m].event = 0
        ptr[m] = e
        start = e
        while size > 0:  # every state holding the key, last state first
            top = heap[0]
            if key_of(&ls[top].data[ls[top].pos]) != key:
                break
            cols[e] = top
            vals[e] = ls[top].data[ls[top].pos].event
            e += 1
            size = _heap_advance(heap, size, ls)
        lo = start
        hi = e - 1
        while lo < hi:  # columns in ascending order
            tc = cols[lo]; cols[lo] = cols[hi]; cols[hi] = tc
            tv = vals[lo]; vals[lo] = vals[hi]; vals[hi] = tv
            lo += 1
            hi -= 1
        fill = 0  # every state holds the key
        if e - start < k:
            fill = missing
            if nb and not _lookup_in(bs, nb, key, &fill):
                fill = 0
        base[m] = fill
        m += 1
    ptr[m] = e
    free(heap)
    return m


cdef cnp.ndarray _frozen(cnp.ndarray a):
    a.setflags(write=False)
    return a


@cython.final
cdef class Aligned:
    """Several states lined up key by key, stored sparsely (memory and work linear in
    the entries the states hold, not keys × states).

    ``keys`` (an entry array, event 0) is the union of the states' keys.  For key
    ``i``, the states holding an entry for it are ``cols[ptr[i]:ptr[i+1]]``
    (ascending) with their events in ``vals`` (0 for a tombstone); every other
    state has ``base[i]`` (the key's event under the states, or ``missing``; 0
    where every state holds the key).  ``k``: the number of states.  The arrays
    are read-only.
    """
    cdef readonly object keys
    cdef readonly object base
    cdef readonly object ptr
    cdef readonly object cols
    cdef readonly object vals
    cdef readonly Py_ssize_t k
    cdef Py_ssize_t _m
    cdef const cnp.npy_intp* _ptr
    cdef const cnp.npy_intp* _cols
    cdef const uint64_t* _vals
    cdef const uint64_t* _base

    def __init__(self, keys, base, ptr, cols, vals, Py_ssize_t k):
        cdef cnp.ndarray ka = _entries(keys)
        cdef cnp.ndarray ba = np.array(base, dtype=np.uint64)
        cdef cnp.ndarray pa = np.array(ptr, dtype=np.intp)
        cdef cnp.ndarray ca = np.array(cols, dtype=np.intp)
        cdef cnp.ndarray va = np.array(vals, dtype=np.uint64)
        cdef Py_ssize_t m = ka.shape[0], i, p
        if k < 0 or ba.ndim != 1 or pa.ndim != 1 or ca.ndim != 1 or va.ndim != 1:
            raise ValueError("Aligned takes 1-d arrays and k >= 0")
        if ba.shape[0] != m or pa.shape[0] != m + 1 or ca.shape[0] != va.shape[0]:
            raise ValueError("Aligned: base has one value per key, ptr one more, cols and vals as many as each other")
        cdef const cnp.npy_intp* pp = <const cnp.npy_intp*>cnp.PyArray_DATA(pa)
        cdef const cnp.npy_intp* cp = <const cnp.npy_intp*>cnp.PyArray_DATA(ca)
        if pp[0] != 0 or pp[m] != ca.shape[0]:
            raise ValueError("Aligned: ptr must run from 0 to len(cols)")
        for i in range(m):
            if pp[i + 1] < pp[i] or pp[i + 1] - pp[i] > k:
                raise ValueError(f"Aligned: row {i} has {pp[i + 1] - pp[i]} entries (k = {k})")
            for p in range(pp[i], pp[i + 1]):
                if cp[p] < 0 or cp[p] >= k or (p > pp[i] and cp[p] <= cp[p - 1]):
                    raise ValueError(f"Aligned: the columns of row {i} must be ascending and below k")
        self._set(ka.copy(), ba, pa, ca, va, k)

    cdef _set(self, cnp.ndarray keys, cnp.ndarray base, cnp.ndarray ptr, cnp.ndarray cols,
              cnp.ndarray vals, Py_ssize_t k):
        """Take fresh (or already read-only) arrays of the right types, and freeze them."""
        self.keys = _frozen(keys)
        self.base = _frozen(base)
        self.ptr = _frozen(ptr)
        self.cols = _frozen(cols)
        self.vals = _frozen(vals)
        self.k = k
        self._m = keys.shape[0]
        self._ptr = <const cnp.npy_intp*>cnp.PyArray_DATA(ptr)
        self._cols = <const cnp.npy_intp*>cnp.PyArray_DATA(cols)
        self._vals = <const uint64_t*>cnp.PyArray_DATA(vals)
        self._base = <const uint64_t*>cnp.PyArray_DATA(base)

    def __len__(self):
        return self._m

    def __repr__(self):
        return f"<Aligned: {self._m} keys, {self.k} states, {len(self.vals)} entries>"

    cdef inline uint64_t _at(self, Py_ssize_t i, Py_ssize_t j) noexcept nogil:
        cdef Py_ssize_t lo = self._ptr[i], hi = self._ptr[i + 1], mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if self._cols[mid] < j:
                lo = mid + 1
            elif self._cols[mid] > j:
                hi = mid
            else:
                return self._vals[mid]
        return self._base[i]

    cdef Py_ssize_t _row(self, Py_ssize_t i) except -1:
        if i < 0:
            i += self._m
        if i < 0 or i >= self._m:
            raise IndexError(f"key {i} out of range ({self._m} keys)")
        return i

    def value(self, Py_ssize_t i, Py_ssize_t j):
        """The event of key ``i`` in state ``j``."""
        i = self._row(i)
        if j < 0 or j >= self.k:
            raise IndexError(f"state {j} out of range ({self.k} states)")
        return self._at(i, j)

    def row(self, Py_ssize_t i):
        """The events of key ``i`` in every state, as a list (k long: for small k)."""
        i = self._row(i)
        cdef list out = [self._base[i]] * self.k
        cdef Py_ssize_t p
        for p in range(self._ptr[i], self._ptr[i + 1]):
            out[self._cols[p]] = self._vals[p]
        return out

    def holders(self, Py_ssize_t i):
        """Key ``i`` as ``(cols, vals, base)``: the states holding an entry and
        their events, and the event of every other state (None when there is none)."""
        i = self._row(i)
        cdef Py_ssize_t lo = self._ptr[i], hi = self._ptr[i + 1]
        rest = self._base[i] if hi - lo < self.k else None
        return self.cols[lo:hi].tolist(), self.vals[lo:hi].tolist(), rest

    def resets(self, result):
        """How many keys ``result`` (an event per key, 0 for none) sets to what none of
        the states holds there: an event no state has at the key, or nothing where every
        state has an event (a merge's state resets)."""
        cdef const uint64_t[::1] r = np.ascontiguousarray(result, dtype=np.uint64)
        if r.shape[0] != self._m:
            raise ValueError(f"{r.shape[0]} results for {self._m} keys")
        cdef Py_ssize_t i, p, lo, hi, n = 0
        cdef uint64_t want
        cdef bint held
        with nogil:
            for i in range(self._m):
                want = r[i]
                lo = self._ptr[i]
                hi = self._ptr[i + 1]
                held = hi - lo < self.k and self._base[i] == want
                p = lo
                while not held and p < hi:
                    held = self._vals[p] == want
                    p += 1
                if not held:
                    n += 1
        return n

    def masks(self, rows):
        """For the keys ``rows``: each event (not 0) of them -> the bit mask (an int of
        ``k`` bits) of the states holding it there (a state without an entry of its own
        holds the base event)."""
        cdef dict out = {}
        cdef Py_ssize_t i, lo, hi, p, k = self.k
        cdef uint64_t held, bit, nid
        cdef object m, full = (1 << k) - 1, big_held
        cdef bint small = k <= 64
        for r in rows:
            i = self._row(r)
            lo = self._ptr[i]
            hi = self._ptr[i + 1]
            if small:
                held = 0
                for p in range(lo, hi):
                    bit = (<uint64_t>1) << self._cols[p]
                    held |= bit
                    nid = self._vals[p]
                    if nid:
                        m = out.get(nid)
                        out[nid] = bit if m is None else (m | bit)
                if hi - lo < k and self._base[i]:
                    nid = self._base[i]
                    bit = (~held) & (<uint64_t>full)
                    m = out.get(nid)
                    out[nid] = bit if m is None else (m | bit)
            else:
                big_held = 0
                for p in range(lo, hi):
                    m = (<object>1) << self._cols[p]
                    big_held |= m
                    nid = self._vals[p]
                    if nid:
                        out[nid] = out.get(nid, 0) | m
                if hi - lo < k and self._base[i]:
                    nid = self._base[i]
                    out[nid] = out.get(nid, 0) | (full & ~big_held)
        return out

    def candidates(self, Py_ssize_t i):
        """The distinct events (not 0) of key ``i`` across the states, ascending."""
        i = self._row(i)
        cdef Py_ssize_t lo = self._ptr[i], hi = self._ptr[i + 1], p
        cdef set out = set()
        for p in range(lo, hi):
            if self._vals[p]:
                out.add(self._vals[p])
        if hi - lo < self.k and self._base[i]:
            out.add(self._base[i])
        return sorted(out)

    def column(self, Py_ssize_t j):
        """State ``j``'s event for every key (a uint64 array)."""
        if j < 0 or j >= self.k:
            raise IndexError(f"state {j} out of range ({self.k} states)")
        cdef Py_ssize_t m = self._m, i
        out = np.empty(m, dtype=np.uint64)
        cdef uint64_t[::1] o = out
        with nogil:
            for i in range(m):
                o[i] = self._at(i, j)
        return out

    def dense(self):
        """The keys × states array of events (memory k times the keys: for small k)."""
        cdef Py_ssize_t m = self._m, k = self.k, i, p
        out = np.empty((m, k), dtype=np.uint64)
        cdef uint64_t[:, ::1] o = out
        with nogil:
            for i in range(m):
                for p in range(k):
                    o[i, p] = self._base[i]
                for p in range(self._ptr[i], self._ptr[i + 1]):
                    o[i, self._cols[p]] = self._vals[p]
        return out

    def split(self):
        """``(result, agree, conflicted)``: ``agree[i]`` when every state holds the
        same event for key ``i``, which is then ``result[i]`` (else 0); ``conflicted``:
        the indices of the other keys.

        >>> import numpy as np
        >>> a = align_sparse([np.array([(1, 1, 5), (2, 1, 5)], dtype=ENTRY_DTYPE),
        ...                   np.array([(1, 1, 5), (2, 1, 6)], dtype=ENTRY_DTYPE)])
        >>> r, g, c = a.split()
        >>> r.tolist(), g.tolist(), c.tolist()
        ([5, 0], [True, False], [1])
        """
        cdef Py_ssize_t m = self._m, k = self.k, i, p, nc = 0, lo, hi
        cdef cnp.ndarray result = cnp.PyArray_ZEROS(1, <cnp.npy_intp*>&m, cnp.NPY_UINT64, 0)
        cdef cnp.ndarray agree = cnp.PyArray_ZEROS(1, <cnp.npy_intp*>&m, cnp.NPY_BOOL, 0)
        cdef uint64_t* r = <uint64_t*>cnp.PyArray_DATA(result)
        cdef cnp.npy_bool* a = <cnp.npy_bool*>cnp.PyArray_DATA(agree)
        cdef uint64_t first
        with nogil:
            for i in range(m):
                lo = self._ptr[i]
                hi = self._ptr[i + 1]
                if hi - lo < k:
                    first = self._base[i]
                elif hi > lo:
                    first = self._vals[lo]
                else:
                    first = 0  # k == 0
                a[i] = True
                for p in range(lo, hi):
                    if self._vals[p] != first:
                        a[i] = False
                        break
                if a[i]:
                    r[i] = first
                else:
                    nc += 1
        cdef cnp.ndarray conflicted = cnp.PyArray_EMPTY(1, <cnp.npy_intp*>&nc, cnp.NPY_INTP, 0)
        cdef cnp.npy_intp* c = <cnp.npy_intp*>cnp.PyArray_DATA(conflicted)
        p = 0
        for i in range(m):
            if not a[i]:
                c[p] = i
                p += 1
        return result, agree, conflicted

    def delta(self, result):
        """The state ``j`` closest to ``result`` (an event per key) and the delta from
        it: ``(j, delta)``.  ``j`` is the first state with the fewest keys whose event
        differs from ``result``; ``delta`` holds those keys with their event from
        ``result`` (in key order), or is None when there are none."""
        cdef const uint64_t[::1] rv = np.ascontiguousarray(result, dtype=np.uint64)
        cdef Py_ssize_t m = self._m, k = self.k, i, p, j, best = 0, nd = 0
        cdef cnp.npy_intp c
        if rv.shape[0] != m:
            raise ValueError(f"result has {rv.shape[0]} events for {m} keys")
        if k == 0:
            return 0, None
        cost_arr = np.zeros(k, dtype=np.intp)
        cdef cnp.npy_intp[::1] cost = cost_arr
        cdef cnp.npy_intp off = 0
        with nogil:
            # State j differs at key i where it holds an entry other than result[i],
            # or holds none and base[i] is not result[i].
            for i in range(m):
                if self._ptr[i + 1] - self._ptr[i] < k and self._base[i] != rv[i]:
                    off += 1
                    for p in range(self._ptr[i], self._ptr[i + 1]):
                        cost[self._cols[p]] -= 1
                for p in range(self._ptr[i], self._ptr[i + 1]):
                    if self._vals[p] != rv[i]:
                        cost[self._cols[p]] += 1
            for j in range(k):
                if cost[j] < cost[best]:
                    best = j
        nd = cost[best] + off
        if nd <= 0:
            return best, None
        cdef cnp.ndarray out = _empty(nd)
        cdef Entry* o = <Entry*>cnp.PyArray_DATA(out)
        cdef const Entry* kp = <const Entry*>cnp.PyArray_DATA(self.keys)
        j = 0
        with nogil:
            for i in range(m):
                if self._at(i, best) != rv[i]:
                    o[j].type = kp[i].type
                    o[j].state_key = kp[i].state_key
                    o[j].event = rv[i]
                    j += 1
        return best, out

    def with_keys(self, keys, base):
        """These states with more keys that none of them holds (``keys``: an entry
        array, none of them here; ``base``: their events under the states), in key
        order: ``(aligned, order)``, ``order`` the permutation of ``self.keys`` then
        ``keys`` that sorts them (for arrays that go along with the keys)."""
        cdef cnp.ndarray ek = _entries(keys)
        eb = np.ascontiguousarray(base, dtype=np.uint64)
        if eb.shape != (ek.shape[0],):
            raise ValueError("with_keys: one base event per key")
        allk = np.concatenate([self.keys, ek])
        order = np.lexsort((allk["state_key"], allk["type"]))
        counts = np.concatenate([np.diff(self.ptr), np.zeros(len(ek), dtype=np.intp)])[order]
        ptr = np.zeros(len(order) + 1, dtype=np.intp)
        np.cumsum(counts, out=ptr[1:])
        # The old keys keep their relative order, so cols and vals stay as they are.
        cdef Aligned out = Aligned.__new__(Aligned)
        out._set(allk[order], np.concatenate([self.base, eb])[order], ptr, self.cols, self.vals, self.k)
        return out, order


def align_sparse(states, uint64_t missing=0, base=None):
    """Line up several sorted states key by key: an :class:`Aligned`.

    Each state is an entry array (a tombstone entry gives 0).  Where a state has
    no entry for a key it has ``missing``, or with ``base`` (a list of layers
    under every state) the key's event in the overlaid base, 0 when it has none.
    The work is the sum of the states' lengths times log(states).
    """
    cdef list arrays = list(states)
    cdef list base_arrays = list(base) if base is not None else []
    cdef list views = []
    cdef Py_ssize_t k = len(arrays), nb = len(base_arrays), m, total = 0, j
    cdef Layer* ls = NULL
    cdef Layer* bs = NULL
    cdef Entry* ko
    cdef uint64_t* bo
    cdef uint64_t* vo
    cdef cnp.npy_intp* po
    cdef cnp.npy_intp* co
    try:
        if k:
            ls = _layers(arrays, views)
        if nb:
            bs = _layers(base_arrays, views)
        for j in range(k):
            total += ls[j].n
        keys = _empty(total)
        base_v = np.empty(total, dtype=np.uint64)
        ptr = np.empty(total + 1, dtype=np.intp)
        cols = np.empty(total, dtype=np.intp)
        vals = np.empty(total, dtype=np.uint64)
        ko = <Entry*>cnp.PyArray_DATA(keys)
        bo = <uint64_t*>cnp.PyArray_DATA(base_v)
        po = <cnp.npy_intp*>cnp.PyArray_DATA(ptr)
        co = <cnp.npy_intp*>cnp.PyArray_DATA(cols)
        vo = <uint64_t*>cnp.PyArray_DATA(vals)
        with nogil:
            m = _align(ls, k, bs, nb, missing, ko, bo, po, co, vo)
        if m < 0:
            raise MemoryError()
    finally:
        free(ls)
        free(bs)
    if m < total:
        keys, base_v, ptr = keys[:m].copy(), base_v[:m].copy(), ptr[:m + 1].copy()
    cdef Aligned out = Aligned.__new__(Aligned)
    out._set(keys, base_v, ptr, cols, vals, k)
    return out


def align(states, uint64_t missing=0, base=None):
    """Line up several sorted states key by key, densely (for a few states).

    Returns ``(keys, values)``: ``keys`` is an entry array of the union of keys
    (event 0), ``values[i, j]`` the event NID of key ``i`` in state ``j``, or
    where state ``j`` has no entry for the key (a tombstone entry gives 0):
    ``missing``, or with ``base`` (a list of layers under every state) the
    key's event in the overlaid base, 0 when it has none.  Memory: keys × states;
    :func:`align_sparse` is linear.
    """
    a = align_sparse(states, missing, base)
    return a.keys, a.dense()


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


@cython.final
cdef class LayerSet:
    """Entry arrays overlaid (newest last), checked once for many lookups: a snapshot's
    layers, kept while a write transaction reads the same states again and again (the
    authorization rules read three keys of the state before each event).

    >>> a = single(2, 1, 7); b = single(5, 3, 9)
    >>> ls = LayerSet([a]).extended(b)
    >>> len(ls), ls.lookup_pairs([(2, 1), (5, 3), (5, 4)])
    (2, [7, 9, 0])
    """

    cdef list arrays
    cdef Layer* ls
    cdef Py_ssize_t k

    def __cinit__(self):
        self.ls = NULL
        self.k = 0

    def __init__(self, layers):
        cdef list views = []
        self.arrays = list(layers)
        self.k = len(self.arrays)
        if self.k:
            self.ls = _layers(self.arrays, views)
        self.arrays.extend(views)  # contiguous copies: kept alive with the originals

    def __dealloc__(self):
        free(self.ls)

    def __len__(self):
        return self.k

    def extended(self, array):
        """These layers with ``array`` on top (the others are not checked again)."""
        cdef list views = []
        cdef LayerSet out = LayerSet.__new__(LayerSet)
        cdef Layer* top = _layers([array], views)
        out.ls = <Layer*>malloc((self.k + 2) * sizeof(Layer))
        if out.ls == NULL:
            free(top)
            raise MemoryError()
        if self.k:
            memcpy(out.ls, self.ls, self.k * sizeof(Layer))
        out.ls[self.k] = top[0]
        free(top)
        out.k = self.k + 1
        out.arrays = self.arrays + [array] + views
        return out

    def lookup_pairs(self, pairs):
        """The event NID of each ``(type, state key)`` NID pair: 0 where absent or removed."""
        cdef list out = []
        cdef uint64_t result
        cdef uint32_t t, sk
        for pair in pairs:
            t, sk = pair
            result = 0
            if self.k:
                _lookup_in(self.ls, self.k, ((<uint64_t>t) << 32) | sk, &result)
            out.append(result)
        return out


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
# varints: compact records for events and chain snapshots (the codec is _varint.pxd)

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


def single(uint32_t type_nid, uint32_t state_key_nid, uint64_t event_nid):
    """A one-entry array (the delta of one state event)."""
    out = _empty(1)
    cdef Entry[::1] o = out
    o[0].type = type_nid
    o[0].state_key = state_key_nid
    o[0].event = event_nid
    return out
