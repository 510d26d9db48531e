"""Value checksums (format version 3): a damaged value is an error, not a wrong answer.

Every value of the tables in ``CHECKED_TABLES`` (``format.py``) ends with 4 bytes: the
CRC-32 (zlib's, ISO-HDLC) of the value's key then its body, little-endian.  CRC-32
finds every error of up to 3 bits and every burst of up to 32 bits in values of these
sizes, also in the short ones (a chain link is ~8 bytes, where Adler-32 is weak), and
zlib computes it in C at GB/s.  The key is covered too, so a value found under another
key (a damaged B-tree page) fails as well.  Appended little-endian, the CRC-32 of the
key, the body and the checksum together is a constant (``RESIDUE``): a check is one
CRC over the stored value as it is, with no copy.
"""
import struct
from zlib import crc32

from .damage import damaged
from .format import CHECKSUM_BYTES, CHECKSUM_RESIDUE as RESIDUE, META_FORMAT, SHORT_CHECKSUM_BYTES, U64

_LE32 = struct.Struct("<I")
_LE16 = struct.Struct("<H")


def seal(key, body):
    """``body`` with its checksum under ``key`` appended: the value to store."""
    return bytes(body) + _LE32.pack(crc32(body, crc32(key)))


def intact(key, raw):
    """True when the stored value ``raw`` ends with the right checksum for ``key``."""
    return len(raw) >= CHECKSUM_BYTES and crc32(raw, crc32(key)) == RESIDUE


def unseal(table, nid, key, raw):
    """The body of the stored value ``raw`` under ``key`` (a view: the caller copies what it
    keeps); damaged() naming ``table`` and ``nid`` (the key as errors show it) when its
    checksum is wrong."""
    if len(raw) < CHECKSUM_BYTES or crc32(raw, crc32(key)) != RESIDUE:
        raise damaged(table, nid, "its checksum is wrong (the value was changed)")
    return memoryview(raw)[:-CHECKSUM_BYTES]


def seal_short(key, body):
    """``body`` and the low 2 bytes of its CRC-32 under ``key`` (``flags`` chunks)."""
    return bytes(body) + _LE16.pack(crc32(body, crc32(key)) & 0xFFFF)


def unseal_short(table, nid, key, raw):
    """The body of a value sealed by :func:`seal_short` (a view), or damaged()."""
    view = memoryview(raw)
    body = view[:-SHORT_CHECKSUM_BYTES]
    if len(view) < SHORT_CHECKSUM_BYTES or _LE16.unpack(view[-SHORT_CHECKSUM_BYTES:])[0] != crc32(body, crc32(key)) & 0xFFFF:
        raise damaged(table, nid, "its checksum is wrong (the value was changed)")
    return body


def meta_value(key, value):
    """The stored ``meta`` value of the integer ``value``: sealed, but for ``format``,
    which stays a plain u64 so that every roomstate reads the version it must refuse."""
    raw = U64.pack(value)
    return raw if key == META_FORMAT else seal(key, raw)
