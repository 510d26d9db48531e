"""The on-disk format's names, each defined once (docs/FORMAT.md documents them).

Backends create these tables; the table modules (ids, events, blocks,
snapshots, rooms) own their key encodings and value layouts.
"""
import struct

#: Bumped on any change a stored value's reader would misread.  Version 2 added the
#: auth section of event records (flag ``HAS_AUTH``, docs/FORMAT.md §4.5); version 3 a
#: checksum at the end of every value of ``CHECKED_TABLES`` (docs/FORMAT.md §3).
FORMAT_VERSION = 3
#: The versions this code reads.  Versions 1 and 2 are read without checksums; a
#: writable open first upgrades such a store to version 3 (``Tables.upgrade``).
READS = (1, 2, 3)

#: Every table of a store, in the order a backend opens them.
TABLES = (
    "meta",
    "ids",
    "names_r",
    "names_t",
    "names_k",
    "events",
    "event_ids",
    "flags",
    "blocks",
    "block_hashes",
    "snapshots",
    "snapshot_hashes",
    "rooms",
)
#: The tables that hold state (blocks and snapshots): ``stats()["state_bytes"]``.
STATE_TABLES = ("blocks", "block_hashes", "snapshots", "snapshot_hashes")

#: The tables whose values end with a checksum (version 3; ``roomstate.checksum``): all
#: but the per-event tables (``events``, ``event_ids``: 4 bytes per event would break the
#: size budget) and the digest and string indexes (``ids``, ``*_hashes``), which only
#: map to NIDs.  In ``meta``, every value but ``format`` (which every version reads).
#: The first format version whose CHECKED_TABLES values end with a checksum.
CHECKSUMS_SINCE = 3
CHECKED_TABLES = ("meta", "names_r", "names_t", "names_k", "flags", "blocks", "snapshots", "rooms")
#: The checksum's bytes at the end of a value, and the CRC-32 of every checked value
#: (key, body and checksum together: CRC-32's residue).
CHECKSUM_BYTES = 4
CHECKSUM_RESIDUE = 0x2144DF1C
#: ``flags`` chunks keep only the CRC-32's low 2 bytes, so that four chunks of
#: ``CHUNK`` bytes still fill one 4 KiB page (4 bytes would make it three).
SHORT_CHECKSUM_BYTES = 2

#: Keys of the ``meta`` table (values: big-endian u64).
META_FORMAT = b"format"
META_COUNT_EVENTS = b"count:events"
META_COUNT_STATE = b"count:state_events"
#: The state resets of the merges the store made as events were stored (stores made
#: before the key existed do not hold it: their resets are not counted).
META_COUNT_RESETS = b"count:state_resets"

#: ``rooms`` values: the forward extremities' event NIDs, little-endian u64 each
#: (unlike every other integer of the format; kept so that stores of version 1 read).
EXTREMITIES_DTYPE = "<u8"

#: Big-endian u64: integer keys whose byte order is numeric order.
U64 = struct.Struct(">Q")
