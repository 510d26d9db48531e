import types
from .blocks import BLOCK_KIND as BLOCK_KIND, BlockStore as BlockStore, empty_entries as empty_entries, entries_from as entries_from, frozen as frozen
from .errors import InvalidEventError as InvalidEventError, MissingEventError as MissingEventError, ReadOnlyError as ReadOnlyError, RoomStateError as RoomStateError, StoreFormatError as StoreFormatError
from .events import EventTable as EventTable, HAS_CHILD as HAS_CHILD, IS_STATE as IS_STATE, MEMBERSHIP_CODE as MEMBERSHIP_CODE, MEMBERSHIP_MASK as MEMBERSHIP_MASK, OUTLIER as OUTLIER, REJECTED as REJECTED, Record as Record, parse as parse, parse_common as parse_common
from .ids import EVENT as EVENT, IdMaps as IdMaps, MEMBER_TYPE_NID as MEMBER_TYPE_NID, ROOM as ROOM, STATE_KEY as STATE_KEY, TYPE as TYPE
from .resolvers import BUILTIN as BUILTIN, ResolverContext as ResolverContext, newest_event as newest_event, raise_on_conflict as raise_on_conflict
from .snapshots import EMPTY_SNAPSHOT as EMPTY_SNAPSHOT, SNAPSHOT_KIND as SNAPSHOT_KIND, SnapshotStore as SnapshotStore
from .statemap import StateDiff as StateDiff, StateMap as StateMap
from ._write import cached_nid as cached_nid, merge_delta as merge_delta, merge_split as merge_split
from .txn import ReadTx as ReadTx, Tx as Tx
from _typeshed import Incomplete
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from os import PathLike
from typing import Any

FORMAT_VERSION: int
DEFAULT_MAP_SIZE: int
REPLAY_LIMIT: int
TRIM_EVERY: int

_Event = Mapping[str, Any]
_Key = tuple[str, str]
_Resolver = Callable[[ResolverContext], Mapping[_Key, str]] | str | None
_Types = Iterable[tuple[str, str | None]] | None

def open(
    path: str | PathLike[str],
    *,
    resolver: _Resolver = None,
    readonly: bool = False,
    durable: bool = True,
    map_size: int | None = None,
) -> StateStore: ...

class _Gate:
    def __init__(self) -> None: ...
    def enter(self) -> None: ...
    def leave(self) -> None: ...
    def resize(self, fn: Callable[[], object]) -> None: ...

class _Reading:
    store: StateStore
    own: bool
    tx: Incomplete
    def __init__(self, store: StateStore) -> None: ...
    def __enter__(self) -> Incomplete: ...
    def __exit__(self, *exc: object) -> None: ...

class _SharedEnv:
    registry: dict[str, _SharedEnv]
    registry_lock: Incomplete
    env: Incomplete
    key: str
    readonly: bool
    refs: int
    gate: _Gate
    write_lock: Incomplete
    def __init__(self, env: Incomplete, key: str, readonly: bool) -> None: ...
    @classmethod
    def acquire(cls, path: str, readonly: bool, opener: Callable[[], Incomplete]) -> _SharedEnv: ...
    def release(self) -> None: ...

class StateStore:
    path: str
    readonly: bool
    durable: bool
    resolver: Callable[[ResolverContext], Mapping[_Key, str]]
    env: Incomplete
    def __init__(
        self,
        path: str | PathLike[str],
        *,
        resolver: _Resolver = None,
        readonly: bool = False,
        durable: bool = True,
        map_size: int | None = None,
    ) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> StateStore: ...
    def __exit__(self, *exc: object) -> None: ...
    def __del__(self) -> None: ...
    def add_event(
        self,
        event: _Event,
        *,
        outlier: bool = False,
        state_before: Mapping[_Key, str] | None = None,
        resolver: _Resolver = None,
    ) -> None: ...
    def add_events(self, events: Iterable[_Event], *, resolver: _Resolver = None, progress: bool = False) -> int: ...
    def batch(self, *, resolver: _Resolver = None) -> AbstractContextManager[Batch]: ...
    def state_before(self, event_id: str, *, types: _Types = None) -> StateMap: ...
    def state_after(self, event_id: str, *, types: _Types = None) -> StateMap: ...
    def current_state(self, room_id: str, *, types: _Types = None) -> StateMap: ...
    def forward_extremities(self, room_id: str) -> list[str]: ...
    def get_state(self, event_id: str, type: str, state_key: str, *, after: bool = False) -> str | None: ...
    def state_diff(self, event_a: str, event_b: str) -> StateDiff: ...
    def members(self, event_id: str, membership: str = "join", *, after: bool = False) -> list[str]: ...
    def has_event(self, event_id: str) -> bool: ...
    def is_outlier(self, event_id: str) -> bool: ...
    def event_depth(self, event_id: str) -> int: ...
    def stats(self) -> dict[str, Any]: ...

class Batch:
    def __init__(self, store: StateStore, resolver: Callable[[ResolverContext], Mapping[_Key, str]]) -> None: ...
    def add_event(
        self,
        event: _Event,
        *,
        outlier: bool = False,
        state_before: Mapping[_Key, str] | None = None,
        resolver: _Resolver = None,
    ) -> None: ...
    def add_events(self, events: Iterable[_Event], *, resolver: _Resolver = None) -> int: ...
