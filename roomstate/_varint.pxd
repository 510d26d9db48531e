# Inline helpers shared by the Cython modules (a .pxd, so each module compiles its own copy).
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


cdef inline uint64_t _zigzag(int64_t v) noexcept nogil:
    return (<uint64_t>v << 1) ^ <uint64_t>(v >> 63)
