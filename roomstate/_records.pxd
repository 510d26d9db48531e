# Event records (roomstate._records): the flag bits of a record's first
# varint, declared once, and the decoder of a record's event ID that other modules call.

# HASH_ID: the event ID is "$" + the unpadded base64url of the 32 stored bytes (room
# version 4+ IDs shrink from 44 to 32 bytes).
cdef enum:
    _IS_STATE = 1
    _REJECTED = 2
    _OUTLIER = 4
    _HAS_AUTH = 8
    _PLACEHOLDER = 16
    _HASH_ID = 32


from libc.stdint cimport uint64_t


# A stored event record (its fields, declared for the modules that read them per event).
cdef class Record:
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
    # Auth data (flag HAS_AUTH): the sender's NID (a state-key NID: users are the state keys
    # of their member events), origin_server_ts, the auth events' NIDs (ascending), and the
    # NID of the event's extras (what the authorization rules read of its content; 0: none).
    cdef readonly uint64_t sender
    cdef readonly uint64_t ts
    cdef readonly tuple auth_events
    cdef readonly uint64_t extras
    # The state-key NID of the reason the authorization rules rejected the event for (0: none).
    cdef readonly uint64_t reason


# The event ID in the event record ``raw[:n]`` (``n`` > 0); ValueError when it is truncated.
cdef str _record_event_id(const unsigned char* raw, Py_ssize_t n)
