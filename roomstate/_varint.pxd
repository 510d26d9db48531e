# LEB128 varints and zigzag, both directions: the integer codec of every record
# (event records, chain snapshots, entry deltas).  Inline helpers in a .pxd, so each
# module compiles its own copy and the loops that call them stay free of calls.
from libc.stdint cimport uint64_t, int64_t


cdef inline Py_ssize_t _put_varint(unsigned char* out, uint64_t v) noexcept nogil:
    """LEB128-encode ``v`` at ``out``; the number of bytes written (at most 10)."""
    cdef Py_ssize_t n = 0
    while v >= 0x80:
        out[n] = <unsigned char>((v & 0x7F) | 0x80)
        v >>= 7
        n += 1
    out[n] = <unsigned char>v
    return n + 1


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


cdef inline uint64_t _zigzag(int64_t v) noexcept nogil:
    return (<uint64_t>v << 1) ^ <uint64_t>(v >> 63)


cdef inline int64_t _unzigzag(uint64_t z) noexcept nogil:
    return <int64_t>(z >> 1) ^ -<int64_t>(z & 1)
