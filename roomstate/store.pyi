from . import transactions as transactions
from .errors import RoomStateError as RoomStateError, StoreFormatError as StoreFormatError
from .format import FORMAT_VERSION as FORMAT_VERSION, READS as READS
from .merger import Merger as Merger
from .reader import Reader as Reader
from .resolvers import Resolver, ResolverContext as ResolverContext, resolver_of as resolver_of
from .statemap import StateDiff as StateDiff, StateMap as StateMap
from .storage import MEMORY as MEMORY, open_backend as open_backend
from .tables import Tables as Tables
from .transactions import Batch as Batch, RelaxedGC as RelaxedGC, Replayable as Replayable, Transactions as Transactions
from .writer import Writer as Writer
from _typeshed import Incomplete
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from os import PathLike
from typing import Any

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

class StateStore:
    path: str
    readonly: bool
    durable: bool
    resolver: Resolver
    backend: Incomplete
    @property
    def env(self) -> Incomplete: ...
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
