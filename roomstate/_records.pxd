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


# The event ID in the event record ``raw[:n]`` (``n`` > 0); ValueError when it is truncated.
cdef str _record_event_id(const unsigned char* raw, Py_ssize_t n)
