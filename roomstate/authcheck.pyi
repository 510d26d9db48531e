from typing import final

from _typeshed import Incomplete

__all__ = ["AuthChecker"]

def strict_json(ev, rv, event_id) -> None: ...

REDACTION_TYPE_NID: int
POWER_LEVELS_TYPE_NID: int
JOIN_RULES_TYPE_NID: int

@final
class AuthChecker:
    ids: Incomplete
    events: Incomplete
    snaps: Incomplete
    memo: Incomplete
    plain: bool
    def __init__(self, tables) -> None: ...
    def event_dict(self, tx, rec): ...
    def forget(self, tx) -> None: ...
    def check(self, tx, ev, p, auth_nids: tuple, before, fields: tuple, prev_nids: list): ...
    def allowed_in_state(self, tx, rec, room_id, state) -> bool | None: ...
