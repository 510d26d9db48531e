# The C side of a state entry, shared by every module that reads or writes entry arrays
# (the numpy dtype is roomstate._core.ENTRY_DTYPE: the same 16 bytes).
from libc.stdint cimport uint32_t, uint64_t
cimport numpy as cnp


cdef packed struct Entry:
    uint32_t type
    uint32_t state_key
    uint64_t event  # 0: a tombstone (the key is removed)


cdef inline uint64_t key_of(const Entry* e) noexcept nogil:
    """The sort key of an entry: ``type << 32 | state_key``."""
    return ((<uint64_t>e.type) << 32) | e.state_key


# ``obj`` checked to be a 1-d entry array (TypeError, ValueError), C-contiguous.
cdef cnp.ndarray _entries(object obj)
