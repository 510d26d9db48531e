"""Importing a Synapse database's rooms into a store (``roomstate synapse import``).

Each room's events are read in pages by ``(depth, stream ordering)`` and stored one
write transaction per page, so an interrupted import keeps every page it committed and
the same command resumes it: events stored already are skipped before their JSON is
read.  Outliers are stored as outliers.  An event whose prev events Synapse holds only as
outliers, or not at all (the first events after a join over federation), is stored with
Synapse's state before it as given state.  An event whose prev or auth events come later
in that order is held until they are stored (at most ``max_held`` events).

The store decides rejections itself (it is opened with ``check_auth=True``); Synapse's
rejections are read beside them and the two are counted side by side.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..errors import InvalidEventError, MissingEventError, RoomStateError, StorageError
from .source import Row, Source

DEFAULT_BATCH = 1000
DEFAULT_MAX_HELD = 100_000


def default_resolver() -> str:
    """How forks merge on import: the Matrix state resolution."""
    return "matrix"


@dataclass
class LoadResult:
    rooms: int = 0
    events: int = 0  # events of the rooms read
    new: int = 0  # stored by this import
    already: int = 0  # stored before it (a resumed import)
    outliers: int = 0
    given_state: int = 0  # stored with Synapse's state before them
    synapse_rejected: int = 0
    roomstate_rejected: int = 0
    rejections_differ: int = 0
    not_stored: List[Tuple[str, str]] = field(default_factory=list)  # (event_id, why)
    seconds: float = 0.0


class TooManyHeld(RoomStateError):
    """More events wait for prev or auth events than the import may hold."""


class Loader:
    """Imports rooms of a :class:`Source` into a store (opened with ``check_auth=True``)."""

    def __init__(self, source: Source, store: Any, *, batch: int = DEFAULT_BATCH, max_held: int = DEFAULT_MAX_HELD,
                 on_progress: Optional[Callable[[int], None]] = None) -> None:
        self.source = source
        self.store = store
        self.batch = batch
        self.max_held = max_held
        self.on_progress = on_progress
        self.result = LoadResult()
        self._held: Dict[str, List[Tuple[Row, str]]] = {}  # missing event ID -> (row, the error's text)
        self._held_count = 0

    def load(self, room_ids: Sequence[str]) -> LoadResult:
        start = time.perf_counter()
        try:
            for room_id in room_ids:
                self.load_room(room_id)
                self.result.rooms += 1
        finally:
            self.result.seconds = time.perf_counter() - start
        return self.result

    def load_room(self, room_id: str) -> None:
        given = set(self.source.without_prev_state(room_id))
        for rows in self.source.events(room_id, self.batch):
            self._page(rows, given)
            if self.on_progress is not None:
                self.on_progress(len(rows))
        for waiting in self._held.values():
            for row, why in waiting:
                self.result.not_stored.append((row.event_id, why))
        self._held.clear()
        self._held_count = 0

    def _page(self, rows: List[Row], given: "set[str]") -> None:
        store, res = self.store, self.result
        res.events += len(rows)
        todo = []
        for row in rows:
            if store.has_event(row.event_id):
                res.already += 1
                self._tally(row.event_id, row.rejection)
            else:
                todo.append(row)
        if not todo:
            return
        stored: List[Row] = []
        with store.batch() as b:
            for row in todo:
                self._add(b, row, given, stored)
        res.new += len(stored)
        for row in stored:
            res.outliers += row.outlier
            res.given_state += row.event_id in given
            self._tally(row.event_id, row.rejection)

    def _add(self, b: Any, row: Row, given: "set[str]", stored: List[Row]) -> None:
        queue = [row]
        while queue:
            row = queue.pop()
            try:
                ev = row.pdu()
                if row.outlier:
                    b.add_event(ev, outlier=True)
                elif row.event_id in given:
                    b.add_event(ev, state_before=self._synapse_state_before(row))
                else:
                    b.add_event(ev)
            except MissingEventError as exc:
                if exc.event_id is None:
                    self.result.not_stored.append((row.event_id, str(exc)))
                else:
                    self._hold(exc.event_id, row, str(exc))
            except StorageError:
                raise
            except (InvalidEventError, RoomStateError, ValueError, TypeError) as exc:
                self.result.not_stored.append((row.event_id, str(exc)))
            else:
                stored.append(row)
                waiting = self._held.pop(row.event_id, None)
                if waiting:
                    self._held_count -= len(waiting)
                    queue.extend(r for r, _ in waiting)

    def _hold(self, missing: str, row: Row, why: str) -> None:
        if self._held_count >= self.max_held:
            raise TooManyHeld(
                f"more than {self.max_held:,} events of room {row.room_id!r} wait for prev or auth events not read "
                f"yet (the last: {row.event_id!r}, {why}); raise --max-held")
        self._held.setdefault(missing, []).append((row, why))
        self._held_count += 1

    def _synapse_state_before(self, row: Row) -> Dict[Tuple[str, str], str]:
        group = self.source.state_groups([row.event_id]).get(row.event_id)
        if group is None:
            raise InvalidEventError("state_before", "Synapse has no state group for it", row.event_id)
        return self.source.state_before(row, group)

    def _tally(self, event_id: str, synapse_rejection: Optional[str]) -> None:
        res = self.result
        mine = self.store.event(event_id).rejected
        theirs = synapse_rejection is not None
        res.roomstate_rejected += mine
        res.synapse_rejected += theirs
        res.rejections_differ += mine != theirs
