from collections.abc import Mapping

from . import _core as _core
from .authcheck import AuthChecker as AuthChecker
from .blocks import frozen as frozen
from .damage import damaged as damaged
from .errors import InvalidEventError as InvalidEventError, MissingEventError as MissingEventError
from .events import HAS_AUTH as HAS_AUTH, PLACEHOLDER as PLACEHOLDER
from .ids import CREATE_TYPE_NID as CREATE_TYPE_NID, EMPTY_STATE_KEY_NID as EMPTY_STATE_KEY_NID, STATE_KEY as STATE_KEY, TYPE as TYPE
from .matrix import stateres as stateres
from _typeshed import Incomplete

__all__ = ["AuthClosure", "MatrixResolution", "auth_difference_nids"]

def auth_difference_nids(auth_of, member: dict, full: int, unconflicted_nids=..., everywhere=...) -> set: ...

class AuthClosure:
    state: Incomplete
    count: dict
    def __init__(self) -> None: ...
    def update(self, auth_of, state) -> None: ...

CLOSURES: int
KEPT_EVENTS: str
KEPT_EVENTS_LIMIT: int

class MatrixResolution:
    ids: Incomplete
    events: Incomplete
    checker: AuthChecker
    tables: Incomplete
    def __init__(self, tables) -> None: ...
    def __call__(self, tx, room_id, prefix, al: _core.Aligned, agree, result, rows) -> list: ...
