# cython: language_level=3
"""Event records and the event IDs in them.

An event record holds the NIDs of an event's strings, its depth, the snapshots
around it and its event ID; it is the event ID's reverse map too.  This module
packs and reads records (:class:`Record`, :func:`pack_record`,
:func:`unpack_record`; the flag bits are declared once, in ``_records.pxd``),
packs a room version 4+ event ID to the 32 bytes behind it and back (the
base64url codec is ``_base64.pxd``), and hashes an event ID to its key in the
event-ID index (:func:`event_id_key`, BLAKE2b).

The GIL: every function here holds it.  Each handles one event's few dozen
bytes and makes or reads Python objects (strings, tuples, bytes), so releasing
the GIL would cost about as much as the work; the many-event loops that run
without it are the entry kernels of ``roomstate._core``.  The bytes match the
general functions they stand for (``hashlib.blake2b``; the tests compare them).

>>> import hashlib
>>> event_id_key("$abc:example.org", 8) == hashlib.blake2b(b"$abc:example.org", digest_size=8).digest()
True
"""
from libc.stdint cimport uint8_t, uint64_t, int64_t
from libc.string cimport memcpy, memmove

from ._base64 cimport _b64_decode32, _b64_encode32
from ._gc cimport _untracked
from ._varint cimport _get_varint, _put_varint, _unzigzag, _zigzag

cimport cython
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_AsEncodedString, PyUnicode_DecodeUTF8

cdef extern from "Python.h":
    bint PyUnicode_IS_COMPACT_ASCII(object s)
    void* PyUnicode_DATA(object s)
    Py_ssize_t PyUnicode_GET_LENGTH(object s)

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


# ---------------------------------------------------------------------------
# event IDs of room versions 4+: "$" + unpadded base64url of 32 bytes

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
    return _b64_decode32(s + 1, out)


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


def unpack_event_id(const unsigned char[::1] raw):
    """The event ID of 32 bytes packed by :func:`pack_event_id`."""
    if raw.shape[0] != 32:
        raise ValueError("a packed event ID is 32 bytes")
    return _unpack_event_id(&raw[0])


cdef str _unpack_event_id(const unsigned char* raw):
    cdef char out[44]
    out[0] = b"$"
    _b64_encode32(raw, out + 1)
    return out[:44].decode("ascii")


# ---------------------------------------------------------------------------
# event records (the flag bits are in _records.pxd)

IS_STATE, REJECTED, OUTLIER, HAS_AUTH, PLACEHOLDER, HASH_ID = _IS_STATE, _REJECTED, _OUTLIER, _HAS_AUTH, _PLACEHOLDER, _HASH_ID


cdef bytes _pack_record(uint64_t nid, uint64_t flags, uint64_t membership, uint64_t room, uint64_t type_nid,
                        uint64_t state_key_nid, uint64_t depth, uint64_t before, uint64_t after, tuple prevs,
                        const char* tail, Py_ssize_t nt, uint64_t sender=0, uint64_t ts=0, tuple auth=None,
                        uint64_t extras=0, uint64_t reason=0):
    cdef Py_ssize_t n = len(prevs), i, pos = 0, na = 0, start, body
    cdef unsigned char small[256]
    cdef bytearray big = None
    cdef unsigned char* p = small
    cdef uint64_t a, last
    if flags & _HAS_AUTH:
        na = len(auth)
    if 10 * (9 + n + 7 + na) + nt > 256:
        big = bytearray(10 * (9 + n + 7 + na) + nt)
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
    if flags & _HAS_AUTH:
        # The auth section: its length (a varint), then sender, origin_server_ts, the auth
        # event count and NIDs (ascending: the first as zigzag(nid - first), each next one
        # as its distance from the one before), the extras NID and the rejection reason's NID.  Written 3 bytes on (room
        # for the length), then moved down behind the length.
        start = pos
        pos += 3
        pos += _put_varint(p + pos, sender)
        pos += _put_varint(p + pos, ts)
        pos += _put_varint(p + pos, <uint64_t>na)
        last = 0
        for i in range(na):
            a = <uint64_t>auth[i]
            if i == 0:
                pos += _put_varint(p + pos, _zigzag(<int64_t>(nid - a)))
            else:
                if a <= last:
                    raise ValueError("auth event NIDs must be ascending and unique")
                pos += _put_varint(p + pos, a - last)
            last = a
        pos += _put_varint(p + pos, extras)
        pos += _put_varint(p + pos, reason)
        body = pos - start - 3
        i = _put_varint(p + start, <uint64_t>body)
        memmove(p + start + i, p + start + 3, body)
        pos = start + i + body
    memcpy(p + pos, tail, nt)
    pos += nt
    return PyBytes_FromStringAndSize(<char*>p, pos)


def pack_record(uint64_t nid, uint64_t flags, uint64_t membership, uint64_t room, uint64_t type_nid,
                uint64_t state_key_nid, uint64_t depth, uint64_t before, uint64_t after, tuple prevs,
                bytes tail, uint64_t sender=0, uint64_t ts=0, tuple auth=(), uint64_t extras=0,
                uint64_t reason=0):
    """An event record (:func:`unpack_record` reads it back).

    Varints: flags, membership, room, type, state key, depth, before, after
    (0 = same as before, else 1 + zigzag(after - before)), the prev count and
    each prev as zigzag(nid - prev); with flag ``HAS_AUTH``, the auth section
    (:func:`unpack_auth`); then ``tail`` (the event ID bytes).
    """
    return _pack_record(nid, flags, membership, room, type_nid, state_key_nid, depth, before, after, prevs, tail,
                        len(tail), sender, ts, auth, extras, reason)


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
    if v[0] & _HAS_AUTH:
        pos = _skip_auth(&raw[0], n, pos)
    return v[0], v[1], v[2], v[3], v[4], v[5], v[6], after, tuple(prevs), pos


cdef Py_ssize_t _skip_auth(const unsigned char* raw, Py_ssize_t n, Py_ssize_t pos) except -1:
    """The position after the auth section that starts at ``pos``."""
    cdef uint64_t body
    pos = _get_varint(raw, n, pos, &body)
    if pos < 0 or body > <uint64_t>(n - pos):
        raise ValueError("truncated auth data in an event record")
    return pos + <Py_ssize_t>body


def unpack_auth(const unsigned char[::1] raw, uint64_t nid):
    """``(sender, origin_server_ts, auth event NIDs, extras, reason)`` of a record with flag
    ``HAS_AUTH`` (:func:`pack_record` writes them); None for one without."""
    cdef Py_ssize_t n = raw.shape[0], pos, i, end
    cdef uint64_t v[9]
    cdef uint64_t z, sender, ts, na, extras, reason, a = 0
    if n == 0:
        raise ValueError("empty event record")
    pos = _record_head(&raw[0], n, v)
    if pos < 0:
        raise ValueError("truncated event record")
    if not v[0] & _HAS_AUTH:
        return None
    for i in range(<Py_ssize_t>v[8]):
        pos = _get_varint(&raw[0], n, pos, &z)
        if pos < 0:
            raise ValueError("truncated event record")
    end = _skip_auth(&raw[0], n, pos)
    pos = _get_varint(&raw[0], n, pos, &z)  # the section's length: read again, to step over it
    pos = _get_varint(&raw[0], end, pos, &sender)
    if pos >= 0:
        pos = _get_varint(&raw[0], end, pos, &ts)
    if pos >= 0:
        pos = _get_varint(&raw[0], end, pos, &na)
    if pos < 0 or na > <uint64_t>(end - pos):
        raise ValueError("truncated auth data in an event record")
    cdef list auth = []
    for i in range(<Py_ssize_t>na):
        pos = _get_varint(&raw[0], end, pos, &z)
        if pos < 0:
            raise ValueError("truncated auth data in an event record")
        a = nid - <uint64_t>_unzigzag(z) if i == 0 else a + z
        auth.append(a)
    pos = _get_varint(&raw[0], end, pos, &extras)
    if pos >= 0:
        pos = _get_varint(&raw[0], end, pos, &reason)
    if pos != end:
        raise ValueError("malformed auth data in an event record")
    return sender, ts, tuple(auth), extras, reason


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
    if v[0] & _HAS_AUTH:
        pos = _skip_auth(raw, n, pos)
    if v[0] & _HASH_ID:
        if n - pos != 32:
            raise ValueError("a packed event ID is 32 bytes")
        return _unpack_event_id(raw + pos)
    return PyUnicode_DecodeUTF8(<const char*>raw + pos, n - pos, "surrogatepass")


@cython.no_gc
cdef class Record:
    """A stored event: NIDs of its strings, its depth, and the snapshots around it.

    Packed by :func:`pack_record`; the record is the event ID's reverse map
    too.  A C class: one is made, packed and read for every event added.
    Outside the cyclic GC (it holds a tuple of ints and a string: no cycle can
    pass through it), so a bulk import's records cost no collector passes.
    """

    # Attributes: _records.pxd.

    def __init__(self, uint64_t flags, uint64_t membership, uint64_t room, uint64_t type_, uint64_t state_key,
                 uint64_t depth, uint64_t before, uint64_t after, tuple prevs, event_id, uint64_t sender=0,
                 uint64_t ts=0, tuple auth_events=(), uint64_t extras=0, uint64_t reason=0):
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
        self.sender = sender
        self.ts = ts
        self.auth_events = _untracked(auth_events)
        self.extras = extras
        self.reason = reason

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
                                self.depth, self.before, self.after, self.prevs, <const char*>packed, 32,
                                self.sender, self.ts, self.auth_events, self.extras, self.reason)
        cdef bytes raw = _utf8(self.event_id)
        return _pack_record(nid, self.flags, self.membership, self.room, self.type, self.state_key,
                            self.depth, self.before, self.after, self.prevs, raw, len(raw),
                            self.sender, self.ts, self.auth_events, self.extras, self.reason)

    @staticmethod
    def unpack(raw, uint64_t nid):
        flags, membership, room, type_, skey, depth, before, after, prevs, off = unpack_record(raw, nid)
        tail = raw[off:]
        if flags & _HASH_ID:
            event_id = unpack_event_id(tail)
        else:
            event_id = bytes(tail).decode("utf-8", "surrogatepass")
        if flags & _HAS_AUTH:
            sender, ts, auth, extras, reason = unpack_auth(raw, nid)
            return Record(flags & ~_HASH_ID, membership, room, type_, skey, depth, before, after, prevs, event_id,
                          sender, ts, auth, extras, reason)
        return Record(flags & ~_HASH_ID, membership, room, type_, skey, depth, before, after, prevs, event_id)


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
