"""LMDB's file layout, as far as opening a store safely needs it: the two meta pages.

LMDB maps ``data.mdb`` and trusts that the file holds every page its meta page
names; a page past the end of a truncated file is a SIGBUS on first touch, which
no Python code can catch.  So the store reads the meta pages itself before LMDB
maps the file (:func:`check_data_file`) and refuses a file shorter than they say.

The layout (LMDB 0.9, ``mdb.c``; a 64-bit little-endian build, which is what
py-lmdb bundles for the machines roomstate runs on): pages 0 and 1 are meta pages.
Each starts with the 16-byte page header, then ``MDB_meta``:

======  =====  =====================================================
offset  bytes  field
======  =====  =====================================================
16      4      ``mm_magic`` = 0xBEEFC0DE
20      4      ``mm_version`` = 1
40      4      the page size (``mm_psize``: the free DB's ``md_pad``)
80      8      the free DB's root page (``mm_dbs[0].md_root``; all ones: empty)
128     8      the main DB's root page (``mm_dbs[1].md_root``)
136     8      ``mm_last_pg``: the last page in use
144     8      ``mm_txnid``: the transaction that wrote this meta page
======  =====  =====================================================

LMDB uses the meta page with the larger transaction ID; so does this module, among
the valid ones (the right magic and version, a page size that is a power of two).
"""
import os
import struct

from ..errors import StorageError, StoreFormatError

MAGIC = 0xBEEFC0DE
DATA_VERSION = 1
_HEAD = struct.Struct("<II")  # magic, version at offset 16
_PSIZE = struct.Struct("<I")  # at offset 40
_TAIL = struct.Struct("<QQ")  # last page, txnid at offset 136
_ROOT = struct.Struct("<Q")  # a root page: the free DB's at 80, the main DB's at 128
#: An ``MDB_db`` record (48 bytes; a named database's value in the main DB): its root at 40.
DB_RECORD_BYTES, DB_ROOT_OFFSET = 48, 40
NO_PAGE = (1 << 64) - 1
META_BYTES = 152
MIN_PAGE, MAX_PAGE = 512, 1 << 16


class MetaPage:
    __slots__ = ("page_size", "last_page", "txnid")

    def __init__(self, page_size, last_page, txnid):
        self.page_size = page_size
        self.last_page = last_page
        self.txnid = txnid

    @property
    def bytes_needed(self):
        """The file size the meta page implies: every page up to the last one in use."""
        return (self.last_page + 1) * self.page_size


def parse_meta(raw):
    """The :class:`MetaPage` in the first bytes of a page, or None when they are not one."""
    if len(raw) < META_BYTES:
        return None
    magic, version = _HEAD.unpack_from(raw, 16)
    if magic != MAGIC or version != DATA_VERSION:
        return None
    (psize,) = _PSIZE.unpack_from(raw, 40)
    if not MIN_PAGE <= psize <= MAX_PAGE or psize & (psize - 1):
        return None
    last, txnid = _TAIL.unpack_from(raw, 136)
    if last < 1:
        return None
    for offset in (80, 128):
        if not root_in_range(_ROOT.unpack_from(raw, offset)[0], last):
            return None
    return MetaPage(psize, last, txnid)


def root_in_range(root, last_page):
    """Whether a database's root page number can be one: none, or a page after the meta pages."""
    return root == NO_PAGE or 2 <= root <= last_page


def db_record_root(raw):
    """The root page of a named database's record (its value in LMDB's main database),
    or None when the value is not such a record."""
    if len(raw) != DB_RECORD_BYTES:
        return None
    return _ROOT.unpack_from(raw, DB_ROOT_OFFSET)[0]


def read_meta(f):
    """The meta page LMDB would use in the open file ``f`` (the valid one with the larger
    transaction ID), or None when neither is valid."""
    first = parse_meta(os.pread(f.fileno(), META_BYTES, 0))
    candidates = [first] if first is not None else []
    # The second meta page sits one page on; with page 0 unreadable, try the usual sizes.
    sizes = [first.page_size] if first is not None else [4096, 8192, 16384, 65536, 2048, 1024, 512]
    for psize in sizes:
        second = parse_meta(os.pread(f.fileno(), META_BYTES, psize))
        if second is not None and second.page_size == psize:
            candidates.append(second)
            break
    if not candidates:
        return None
    return max(candidates, key=lambda m: m.txnid)


def check_data_file(path):
    """Refuse a ``data.mdb`` that LMDB would crash on: one whose meta pages are both
    damaged, or that is shorter than the pages its meta page names (a truncated copy).

    An empty file is left to LMDB (a store being created: LMDB writes the meta pages
    first).  Raises :class:`StoreFormatError` naming the file, or :class:`StorageError`
    when it cannot be read.
    """
    try:
        with open(path, "rb") as f:
            # The meta page is read before the size: a writer extends the file before it
            # writes the meta page that names the new pages, so the size read after it is
            # at least what it names.
            size_before = os.fstat(f.fileno()).st_size
            if size_before == 0:
                return None
            meta = read_meta(f)
            size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise StorageError(f"cannot read {path!r}: {exc.strerror or exc}") from exc
    if meta is None:
        raise StoreFormatError(
            f"the store is damaged: {path!r} has no valid LMDB meta page (its first pages are not LMDB's)"
        )
    if meta.bytes_needed > size:
        raise StoreFormatError(
            f"the store is damaged: {path!r} is truncated: it holds {size:,} bytes, and its meta page "
            f"(transaction {meta.txnid}) names pages up to {meta.last_page}, {meta.bytes_needed:,} bytes "
            f"of {meta.page_size}-byte pages"
        )
    return meta
