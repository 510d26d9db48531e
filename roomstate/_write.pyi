"""Type stubs for the Cython kernels in ``_write.pyx``."""
import numpy as np
import numpy.typing as npt

from ._core import ENTRY_DTYPE as ENTRY_DTYPE, pack_event_id as pack_event_id

def event_id_key(event_id: object, size: int) -> bytes: ...
def uvarint(value: int) -> bytes: ...
def pack_record(
    nid: int, flags: int, membership: int, room: int, type_nid: int, state_key_nid: int,
    depth: int, before: int, after: int, prevs: tuple[int, ...], tail: bytes,
) -> bytes: ...
def pack_event_record(
    nid: int, flags: int, membership: int, room: int, type_nid: int, state_key_nid: int,
    depth: int, before: int, after: int, prevs: tuple[int, ...], event_id: object, hash_flag: int,
) -> bytes: ...
def chain_link(
    kind: int, hops: int, weight: int, parent: int, type_nid: int, state_key_nid: int, event_nid: int,
) -> tuple[bytes, npt.NDArray[np.void]]: ...
