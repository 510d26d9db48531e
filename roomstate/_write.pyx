# cython: language_level=3
"""Kernels of the write path: each replaces several Python-level steps of adding one event.

The bytes they produce are exactly those of the general functions they stand
for (``hashlib.blake2b``, ``_core.pack_uvarints`` + ``_core.pack_entries``);
the tests compare them.

>>> import hashlib
>>> event_id_key("$abc:example.org", 8) == hashlib.blake2b(b"$abc:example.org", digest_size=8).digest()
True
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy

from ._varint cimport _put_varint, _zigzag

cimport cython
cimport numpy as cnp
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_AsEncodedString

from ._core import ENTRY_DTYPE, unpack_event_id, unpack_record

cnp.import_array()

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object s)
    void* PyUnicode_DATA(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)
    int PyObject_IS_GC(object o)
    int PyObject_GC_IsTracked(object o)
    void PyObject_GC_UnTrack(void* o)

cdef extern from *:
    """
    /* BLAKE2b (RFC 7693), unkeyed, for short inputs: the digest of hashlib.blake2b. */
    #include <stdint.h>
    #include <string.h>

    static const uint64_t rs_b2b_iv[8] = {
        0x6A09E667F3BCC908ULL, 0xBB67AE8584CAA73BULL, 0x3C6EF372FE94F82BULL, 0xA54FF53A5F1D36F1ULL,
        0x510E527FADE682D1ULL, 0x9B05688C2B3E6C1FULL, 0x1F83D9ABFB41BD6BULL, 0x5BE0CD19137E2179ULL};
    static const uint8_t rs_b2b_sigma[12][16] = {
        {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
        {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
        {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
        {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
        {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
        {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
        {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
        {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
        {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
        {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
        {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
        {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};

    #define RS_ROTR64(x, n) (((x) >> (n)) | ((x) << (64 - (n))))
    #define RS_B2B_G(a, b, c, d, x, y) do { \\
        v[a] = v[a] + v[b] + (x); v[d] = RS_ROTR64(v[d] ^ v[a], 32); \\
        v[c] = v[c] + v[d];       v[b] = RS_ROTR64(v[b] ^ v[c], 24); \\
        v[a] = v[a] + v[b] + (y); v[d] = RS_ROTR64(v[d] ^ v[a], 16); \\
        v[c] = v[c] + v[d];       v[b] = RS_ROTR64(v[b] ^ v[c], 63); } while (0)

    static void rs_b2b_compress(uint64_t h[8], const uint8_t block[128], uint64_t t, int last) {
        uint64_t v[16], m[16];
        int i;
        for (i = 0; i < 8; i++) { v[i] = h[i]; v[i + 8] = rs_b2b_iv[i]; }
        v[12] ^= t;
        if (last) v[14] = ~v[14];
        for (i = 0; i < 16; i++) {
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            memcpy(&m[i], block + 8 * i, 8);
    #else
            int j;
            uint64_t w = 0;
            for (j = 7; j >= 0; j--) w = (w << 8) | block[8 * i + j];
            m[i] = w;
    #endif
        }
        /* Rounds unrolled: the message schedule indexes become constants. */
    #define RS_B2B_ROUND(r) do { \
            RS_B2B_G(0, 4, 8, 12, m[rs_b2b_sigma[r][0]], m[rs_b2b_sigma[r][1]]); \
            RS_B2B_G(1, 5, 9, 13, m[rs_b2b_sigma[r][2]], m[rs_b2b_sigma[r][3]]); \
            RS_B2B_G(2, 6, 10, 14, m[rs_b2b_sigma[r][4]], m[rs_b2b_sigma[r][5]]); \
            RS_B2B_G(3, 7, 11, 15, m[rs_b2b_sigma[r][6]], m[rs_b2b_sigma[r][7]]); \
            RS_B2B_G(0, 5, 10, 15, m[rs_b2b_sigma[r][8]], m[rs_b2b_sigma[r][9]]); \
            RS_B2B_G(1, 6, 11, 12, m[rs_b2b_sigma[r][10]], m[rs_b2b_sigma[r][11]]); \
            RS_B2B_G(2, 7, 8, 13, m[rs_b2b_sigma[r][12]], m[rs_b2b_sigma[r][13]]); \
            RS_B2B_G(3, 4, 9, 14, m[rs_b2b_sigma[r][14]], m[rs_b2b_sigma[r][15]]); } while (0)
        RS_B2B_ROUND(0); RS_B2B_ROUND(1); RS_B2B_ROUND(2); RS_B2B_ROUND(3);
        RS_B2B_ROUND(4); RS_B2B_ROUND(5); RS_B2B_ROUND(6); RS_B2B_ROUND(7);
        RS_B2B_ROUND(8); RS_B2B_ROUND(9); RS_B2B_ROUND(10); RS_B2B_ROUND(11);
    #undef RS_B2B_ROUND
        for (i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
    }

    /* outlen 1..64; any input length. */
    static void rs_blake2b(uint8_t *out, int outlen, const uint8_t *in, size_t inlen) {
        uint64_t h[8];
        uint8_t block[128];
        uint64_t t = 0;
        int i;
        for (i = 0; i < 8; i++) h[i] = rs_b2b_iv[i];
        h[0] ^= 0x01010000ULL ^ (uint64_t)outlen;
        while (inlen > 128) {
            t += 128;
            rs_b2b_compress(h, in, t, 0);
            in += 128;
            inlen -= 128;
        }
        memset(block, 0, sizeof block);
        memcpy(block, in, inlen);
        t += inlen;
        rs_b2b_compress(h, block, t, 1);
        for (i = 0; i < outlen; i++) out[i] = (uint8_t)(h[i >> 3] >> (8 * (i & 7)));
    }
    """
    void rs_blake2b(uint8_t* out, int outlen, const uint8_t* data, size_t inlen) nogil


cdef extern from *:
    """
    /* An empty 1-d array of a dtype; takes its own reference to the dtype (NewFromDescr steals one). */
    static PyObject *rs_new_array(PyObject *descr, npy_intp n) {
        Py_INCREF(descr);
        return PyArray_NewFromDescr(&PyArray_Type, (PyArray_Descr *)descr, 1, &n, NULL, NULL, 0, NULL);
    }
    """
    cnp.ndarray rs_new_array(object descr, cnp.npy_intp n)


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


cdef bytes _utf8(s):
    # surrogatepass, as roomstate.ids.encode: lone surrogates stay exact.
    return PyUnicode_AsEncodedString(s, "utf-8", "surrogatepass")


def event_id_key(event_id, int size):
    """The ``size``-byte BLAKE2b digest of an event ID's UTF-8 bytes: its key in the event-ID index."""
    if not isinstance(event_id, str):
        raise TypeError(f"an event ID is a string, got {type(event_id).__name__}")
    if not 1 <= size <= 64:
        raise ValueError("a BLAKE2b digest has 1 to 64 bytes")
    cdef uint8_t out[64]
    cdef bytes raw
    if PyUnicode_IS_COMPACT_ASCII(event_id):  # its characters are its UTF-8 bytes
        rs_blake2b(out, size, <const uint8_t*>PyUnicode_DATA(event_id), PyUnicode_GET_LENGTH(event_id))
    else:
        raw = _utf8(event_id)
        rs_blake2b(out, size, <const uint8_t*><const char*>raw, len(raw))
    return PyBytes_FromStringAndSize(<char*>out, size)


def uvarint(uint64_t value):
    """One LEB128 varint (``pack_uvarints((value,))``)."""
    cdef unsigned char out[10]
    return PyBytes_FromStringAndSize(<char*>out, _put_varint(out, value))


# ---------------------------------------------------------------------------
# event IDs of room versions 4+: "$" + unpadded base64url of 32 bytes

cdef signed char _B64_VALUE[256]


cdef void _init_b64() noexcept:
    cdef const char* alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    cdef int i
    for i in range(256):
        _B64_VALUE[i] = -1
    for i in range(64):
        _B64_VALUE[<unsigned char>alphabet[i]] = i


_init_b64()


cdef bint _hash_id(event_id, unsigned char* out) except -1:
    """Write the 32 bytes behind a canonical room v4+ event ID to ``out``; False for any other ID."""
    cdef bytes ascii
    cdef const unsigned char* s
    if PyUnicode_IS_COMPACT_ASCII(event_id):
        if PyUnicode_GET_LENGTH(event_id) != 44:
            return False
        s = <const unsigned char*>PyUnicode_DATA(event_id)
    else:  # not ASCII, or a str subclass
        if len(event_id) != 44 or not event_id.isascii():
            return False
        ascii = str.encode(event_id, "ascii")
        s = ascii
    if s[0] != b"$":
        return False
    cdef uint32_t acc = 0
    cdef int bits = 0, n = 0, i
    cdef signed char v
    for i in range(1, 44):
        v = _B64_VALUE[s[i]]
        if v < 0:
            return False
        acc = (acc << 6) | <uint32_t>v
        bits += 6
        if bits >= 8:
            bits -= 8
            out[n] = <unsigned char>((acc >> bits) & 0xFF)
            n += 1
    # 43 characters carry 258 bits: the last 2 must be zero in the canonical form.
    return n == 32 and (acc & ((1u << bits) - 1)) == 0


def pack_event_id(event_id):
    """The 32 bytes behind a canonical room v4+ event ID, or None for any other ID.

    >>> eid = "$" + "A" * 42 + "E"
    >>> unpack_event_id(pack_event_id(eid)) == eid
    True
    >>> pack_event_id("$abc:example.org") is None
    True
    """
    if not isinstance(event_id, str):
        raise TypeError(f"an event ID is a string, got {type(event_id).__name__}")
    cdef unsigned char out[32]
    if not _hash_id(event_id, out):
        return None
    return PyBytes_FromStringAndSize(<char*>out, 32)


# ---------------------------------------------------------------------------
# event records

cdef bytes _pack_record(uint64_t nid, uint64_t flags, uint64_t membership, uint64_t room, uint64_t type_nid,
                        uint64_t state_key_nid, uint64_t depth, uint64_t before, uint64_t after, tuple prevs,
                        const char* tail, Py_ssize_t nt):
    cdef Py_ssize_t n = len(prevs), i, pos = 0
    cdef unsigned char small[256]
    cdef bytearray big = None
    cdef unsigned char* p = small
    if 10 * (9 + n) + nt > 256:
        big = bytearray(10 * (9 + n) + nt)
        p = big
    pos += _put_varint(p + pos, flags)
    pos += _put_varint(p + pos, membership)
    pos += _put_varint(p + pos, room)
    pos += _put_varint(p + pos, type_nid)
    pos += _put_varint(p + pos, state_key_nid)
    pos += _put_varint(p + pos, depth)
    pos += _put_varint(p + pos, before)
    pos += _put_varint(p + pos, 0 if after == before else 1 + _zigzag(<int64_t>(after - before)))
    pos += _put_varint(p + pos, <uint64_t>n)
    for i in range(n):
        pos += _put_varint(p + pos, _zigzag(<int64_t>(nid - <uint64_t>prevs[i])))
    memcpy(p + pos, tail, nt)
    pos += nt
    return PyBytes_FromStringAndSize(<char*>p, pos)


def pack_record(uint64_t nid, uint64_t flags, uint64_t membership, uint64_t room, uint64_t type_nid,
                uint64_t state_key_nid, uint64_t depth, uint64_t before, uint64_t after, tuple prevs,
                bytes tail):
    """An event record (``_core.unpack_record`` reads it back).

    Varints: flags, membership, room, type, state key, depth, before, after
    (0 = same as before, else 1 + zigzag(after - before)), the prev count and
    each prev as zigzag(nid - prev); then ``tail`` (the event ID bytes).
    """
    return _pack_record(nid, flags, membership, room, type_nid, state_key_nid, depth, before, after, prevs, tail,
                        len(tail))


# Record flags.  HASH_ID: the event ID is "$" + the unpadded base64url of the
# 32 stored bytes (room version 4+ IDs shrink from 44 to 32 bytes).
cdef enum:
    _IS_STATE = 1
    _REJECTED = 2
    _OUTLIER = 4
    _PLACEHOLDER = 16
    _HASH_ID = 32

IS_STATE, REJECTED, OUTLIER, PLACEHOLDER, HASH_ID = _IS_STATE, _REJECTED, _OUTLIER, _PLACEHOLDER, _HASH_ID


@cython.no_gc
cdef class Record:
    """A stored event: NIDs of its strings, its depth, and the snapshots around it.

    Packed by :func:`pack_record`; the record is the event ID's reverse map
    too.  A C class: one is made, packed and read for every event added.
    Outside the cyclic GC (it holds a tuple of ints and a string: no cycle can
    pass through it), so a bulk import's records cost no collector passes.
    """

    cdef readonly uint64_t flags
    cdef readonly uint64_t membership
    cdef readonly uint64_t room
    cdef readonly uint64_t type
    cdef readonly uint64_t state_key
    cdef readonly uint64_t depth
    cdef readonly uint64_t before
    cdef readonly uint64_t after
    cdef readonly tuple prevs
    cdef readonly object event_id

    def __init__(self, uint64_t flags, uint64_t membership, uint64_t room, uint64_t type_, uint64_t state_key,
                 uint64_t depth, uint64_t before, uint64_t after, tuple prevs, event_id):
        self.flags = flags
        self.membership = membership
        self.room = room
        self.type = type_
        self.state_key = state_key
        self.depth = depth
        self.before = before
        self.after = after
        self.prevs = _untracked(prevs)
        self.event_id = event_id

    @property
    def is_state(self):
        return bool(self.flags & _IS_STATE)

    @property
    def rejected(self):
        return bool(self.flags & _REJECTED)

    @property
    def outlier(self):
        return bool(self.flags & _OUTLIER)

    def pack(self, uint64_t nid):
        """The record's bytes; the event ID packed to 32 bytes when it can be (flag HASH_ID)."""
        cdef unsigned char packed[32]
        if _hash_id(self.event_id, packed):
            return _pack_record(nid, self.flags | _HASH_ID, self.membership, self.room, self.type, self.state_key,
                                self.depth, self.before, self.after, self.prevs, <const char*>packed, 32)
        cdef bytes raw = _utf8(self.event_id)
        return _pack_record(nid, self.flags, self.membership, self.room, self.type, self.state_key,
                            self.depth, self.before, self.after, self.prevs, raw, len(raw))

    @staticmethod
    def unpack(raw, uint64_t nid):
        flags, membership, room, type_, skey, depth, before, after, prevs, off = unpack_record(raw, nid)
        tail = raw[off:]
        if flags & _HASH_ID:
            event_id = unpack_event_id(tail)
        else:
            event_id = bytes(tail).decode("utf-8", "surrogatepass")
        return Record(flags & ~_HASH_ID, membership, room, type_, skey, depth, before, after, prevs, event_id)


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


def published_records(dict records):
    """After a commit, from a transaction's new records by NID: ``(settled, event_ids)``,
    the records that may be cached (neither outliers nor placeholders) and every event ID."""
    cdef dict settled = {}, event_ids = {}
    cdef Record r
    for nid, rec in records.items():
        r = <Record?>rec
        if not r.flags & (_OUTLIER | _PLACEHOLDER):
            settled[nid] = r
        event_ids[nid] = r.event_id
    return settled, event_ids


cdef packed struct _Entry:
    uint32_t type
    uint32_t state_key
    uint64_t event


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
    cdef _Entry* e = <_Entry*>cnp.PyArray_DATA(delta)
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


# ---------------------------------------------------------------------------
# merging the states before an event with several prevs (see StateStore._merge)

cdef inline bint _is_entries(cnp.ndarray a):
    return cnp.PyArray_NDIM(a) == 1 and cnp.PyArray_IS_C_CONTIGUOUS(a) and a.dtype == ENTRY_DTYPE


def merge_split(const uint64_t[:, :] vals):
    """For ``vals`` (keys × states, event NIDs): ``(result, agree, conflicted)``.

    ``agree[i]``: every state holds the same event for key ``i``, which is then
    ``result[i]`` (else 0); ``conflicted``: the indices of the other keys.

    >>> import numpy as np
    >>> r, a, c = merge_split(np.array([[5, 5], [5, 6], [0, 0]], dtype=np.uint64))
    >>> r.tolist(), a.tolist(), c.tolist()
    ([5, 0, 0], [True, False, True], [1])
    """
    cdef Py_ssize_t n = vals.shape[0], k = vals.shape[1], i, j, nc = 0
    cdef cnp.ndarray result = cnp.PyArray_ZEROS(1, <cnp.npy_intp*>&n, cnp.NPY_UINT64, 0)
    cdef cnp.ndarray agree = cnp.PyArray_ZEROS(1, <cnp.npy_intp*>&n, cnp.NPY_BOOL, 0)
    cdef uint64_t* r = <uint64_t*>cnp.PyArray_DATA(result)
    cdef cnp.npy_bool* a = <cnp.npy_bool*>cnp.PyArray_DATA(agree)
    cdef uint64_t first
    for i in range(n):
        first = vals[i, 0] if k else 0
        a[i] = True
        for j in range(1, k):
            if vals[i, j] != first:
                a[i] = False
                break
        if a[i]:
            r[i] = first
        else:
            nc += 1
    cdef cnp.ndarray conflicted = cnp.PyArray_EMPTY(1, <cnp.npy_intp*>&nc, cnp.NPY_INTP, 0)
    cdef cnp.npy_intp* c = <cnp.npy_intp*>cnp.PyArray_DATA(conflicted)
    j = 0
    for i in range(n):
        if not a[i]:
            c[j] = i
            j += 1
    return result, agree, conflicted


def merge_delta(keys, const uint64_t[:, :] vals, const uint64_t[::1] result):
    """The state ``j`` closest to ``result`` and the delta from it: ``(j, delta)``.

    ``j`` is the first column of ``vals`` (keys × states) with the fewest keys
    whose event differs from ``result``; ``delta`` holds those keys with their
    event from ``result`` (sorted as ``keys``), or is None when there are none.

    >>> import numpy as np
    >>> keys = np.array([(1, 1, 0), (5, 2, 0)], dtype=ENTRY_DTYPE)
    >>> j, d = merge_delta(keys, np.array([[7, 6], [8, 9]], dtype=np.uint64), np.array([7, 9], dtype=np.uint64))
    >>> j, d.tolist()
    (0, [(5, 2, 9)])
    """
    cdef cnp.ndarray ka = <cnp.ndarray?>keys
    if not _is_entries(ka):
        raise TypeError("keys must be a 1-d, C-contiguous entry array")
    cdef Py_ssize_t n = vals.shape[0], k = vals.shape[1], i, j, best = 0, cost, best_cost = -1
    if ka.shape[0] != n or result.shape[0] != n:
        raise ValueError("keys, vals and result must have one row per key")
    for j in range(k):
        cost = 0
        for i in range(n):
            if vals[i, j] != result[i]:
                cost += 1
        if best_cost < 0 or cost < best_cost:
            best, best_cost = j, cost
    if best_cost <= 0:
        return best, None
    cdef cnp.ndarray delta = rs_new_array(ENTRY_DTYPE, best_cost)
    cdef const _Entry* src = <const _Entry*>cnp.PyArray_DATA(ka)
    cdef _Entry* out = <_Entry*>cnp.PyArray_DATA(delta)
    j = 0
    for i in range(n):
        if vals[i, best] != result[i]:
            out[j].type = src[i].type
            out[j].state_key = src[i].state_key
            out[j].event = result[i]
            j += 1
    return best, delta
