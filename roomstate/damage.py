"""Damaged stores: the one error every reader of stored data raises.

A store is a file people copy, back up, restore and move between machines; a damaged
one must give an error, never a crash, a hang or an exception of some library inside.
Every decoder of a stored value checks what it relies on (lengths, bounds, varints that
end, sorted unique entries, links that lead somewhere) and raises :func:`damaged`: a
:class:`~roomstate.StoreFormatError` naming the table and the key.
"""
import struct
from zlib import crc32

from .errors import StoreFormatError
from .format import CHECKSUM_BYTES, CHECKSUM_RESIDUE

#: What decoding a malformed value raises inside roomstate's own decoders and numpy.
DECODE_ERRORS = (ValueError, KeyError, IndexError, AttributeError, UnicodeDecodeError, struct.error, OverflowError, TypeError)

PREFIX = "the store is damaged: "


def damaged(table, key, reason):
    """The StoreFormatError for a stored value that cannot be right: ``table`` and ``key``
    (an int for NID keys, bytes otherwise) name where it is."""
    if isinstance(key, (bytes, bytearray, memoryview)):
        key = bytes(key)
    error = StoreFormatError(f"{PREFIX}table {table!r}, key {key!r}: {reason}")
    error.table, error.key, error.reason = table, key, reason  # for roomstate check's report
    return error


def decode_error(table, key, exc):
    """:func:`damaged` for an exception a decoder raised, its reason kept."""
    return damaged(table, key, f"cannot be decoded ({type(exc).__name__}: {exc})")


def stored_nid(table, key, raw):
    """A NID stored as a big-endian u64 value (the hash tables, the forward ID map)."""
    if len(raw) != 8:
        raise damaged(table, key, f"a NID value is 8 bytes, this one {len(raw)}")
    nid = int.from_bytes(raw, "big")
    if nid == 0:
        raise damaged(table, key, "the NID is 0")
    return nid


def meta_u64(key, raw):
    """A ``meta`` value: a big-endian u64, followed by its checksum from format version 3
    on (``roomstate.checksum``; which length a store's values have is checked at open)."""
    n = len(raw)
    if n == 8 + CHECKSUM_BYTES:
        if crc32(raw, crc32(key)) != CHECKSUM_RESIDUE:
            raise damaged("meta", key, "its checksum is wrong (the value was changed)")
    elif n != 8:
        raise damaged("meta", key, f"a meta value is 8 bytes and a checksum of 4, this one {n} bytes")
    return int.from_bytes(raw[:8], "big")
