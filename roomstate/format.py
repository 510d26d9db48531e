"""The on-disk format's names, each defined once (docs/FORMAT.md documents them).

Backends create these tables; the table modules (ids, events, blocks,
snapshots, rooms) own their key encodings and value layouts.
"""
import struct

#: Bumped on any change a stored value's reader would misread.  Version 2 added the
#: auth section of event records (flag ``HAS_AUTH``, docs/FORMAT.md §4.5).
FORMAT_VERSION = 2
#: The versions this code reads.  Version 1 is version 2 without auth sections: a
#: writable open marks such a store version 2 before it writes one.
READS = (1, 2)

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

#: Keys of the ``meta`` table (values: big-endian u64).
META_FORMAT = b"format"
META_COUNT_EVENTS = b"count:events"
META_COUNT_STATE = b"count:state_events"

#: ``rooms`` values: the forward extremities' event NIDs, little-endian u64 each
#: (unlike every other integer of the format; kept so that stores of version 1 read).
EXTREMITIES_DTYPE = "<u8"

#: Big-endian u64: integer keys whose byte order is numeric order.
U64 = struct.Struct(">Q")
