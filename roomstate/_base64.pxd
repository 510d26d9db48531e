# Unpadded base64url (RFC 4648 section 5) of 32 bytes: the 43 characters after the "$" of
# a room version 4+ event ID.  Inline helpers in a .pxd, so each module that cimports
# them compiles its own copy; the alphabet is written here and nowhere else.

cdef extern from *:
    """
    #include <string.h>
    static const char rs_b64url_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    static signed char rs_b64url_value[256];
    static int rs_b64url_ready = 0;

    /* The alphabet's inverse (-1: not in it), built from it on first use. */
    static const signed char *rs_b64url_values(void) {
        int i;
        if (!rs_b64url_ready) {
            memset(rs_b64url_value, -1, sizeof rs_b64url_value);
            for (i = 0; i < 64; i++) rs_b64url_value[(unsigned char)rs_b64url_alphabet[i]] = (signed char)i;
            rs_b64url_ready = 1;
        }
        return rs_b64url_value;
    }
    """
    const char* rs_b64url_alphabet
    const signed char* rs_b64url_values() noexcept nogil

from libc.stdint cimport uint32_t


cdef inline void _b64_encode32(const unsigned char* raw, char* out) noexcept nogil:
    """Write the 43 characters of 32 bytes ``raw`` to ``out``."""
    cdef uint32_t acc = 0
    cdef int bits = 0, n = 0, i
    for i in range(32):
        acc = (acc << 8) | raw[i]
        bits += 8
        while bits >= 6:
            bits -= 6
            out[n] = rs_b64url_alphabet[(acc >> bits) & 0x3F]
            n += 1
    out[n] = rs_b64url_alphabet[(acc << (6 - bits)) & 0x3F]


cdef inline bint _b64_decode32(const unsigned char* s, unsigned char* out) noexcept nogil:
    """Write the 32 bytes behind the 43 characters ``s`` to ``out``; False unless ``s``
    is their canonical encoding (every character in the alphabet, the 2 spare bits 0)."""
    cdef const signed char* value = rs_b64url_values()
    cdef uint32_t acc = 0
    cdef int bits = 0, n = 0, i
    cdef signed char v
    for i in range(43):
        v = value[s[i]]
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
