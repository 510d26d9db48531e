"""The state before every event, roomstate's against Synapse's (``roomstate synapse verify``).

For each event of the rooms (outliers have no state in either), Synapse's state before
it (:meth:`Source.state_before`) is compared key by key with the store's
``state_before``.  Each difference is one :class:`Disagreement`: the event, the key, the
event each side holds there (``None``: the key is absent), and whether the two sides'
authorization checks account for it (roomstate rejected the event Synapse holds, or
Synapse rejected the one roomstate holds).  An event that one side rejected and the other
accepted is a disagreement of its own (kind ``"rejection"``); an event the store lacks,
kind ``"missing"``.

Those lines are Synapse's state resets, or roomstate's: both worth knowing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from ..cli import _plural as plural
from ..errors import MissingEventError
from .source import Row, Source


@dataclass
class Disagreement:
    kind: str  # "state", "rejection" or "missing"
    room_id: str
    event_id: str
    type: Optional[str] = None  # the key (kind "state")
    state_key: Optional[str] = None
    synapse: Optional[str] = None  # the event Synapse holds at the key, None when absent
    roomstate: Optional[str] = None
    # Whether the authorization checks explain it: roomstate rejected the event that
    # Synapse holds at the key (Synapse accepted it), or the reverse.
    roomstate_rejected_synapse_event: bool = False
    synapse_rejected_roomstate_event: bool = False
    # kind "rejection": each side's reason, None where it accepted the event.
    synapse_rejection: Optional[str] = None
    roomstate_rejection: Optional[str] = None

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        if self.kind != "state":
            for k in ("type", "state_key", "synapse", "roomstate", "roomstate_rejected_synapse_event",
                      "synapse_rejected_roomstate_event"):
                d.pop(k)
        if self.kind != "rejection":
            d.pop("synapse_rejection")
            d.pop("roomstate_rejection")
        return d


@dataclass
class Summary:
    rooms: int = 0
    events: int = 0  # events compared (not outliers, with a state group)
    outliers: int = 0
    no_state_group: int = 0  # events Synapse keeps no state for (not outliers)
    disagreements: int = 0
    by_kind: Dict[str, int] = field(default_factory=dict)
    events_disagreeing: int = 0  # events with at least one disagreement


class Verifier:
    def __init__(self, source: Source, store: Any, *, batch: int = 1000,
                 on_progress: Optional[Callable[[int], None]] = None) -> None:
        self.source = source
        self.store = store
        self.batch = batch
        self.on_progress = on_progress
        self.summary = Summary()
        self._rejected_cache: Dict[str, Optional[str]] = {}

    def verify(self, room_ids: Sequence[str]) -> Iterator[Disagreement]:
        for room_id in room_ids:
            yield from self.verify_room(room_id)
            self.summary.rooms += 1

    def verify_room(self, room_id: str) -> Iterator[Disagreement]:
        for rows in self.source.events(room_id, self.batch):
            groups = self.source.state_groups([r.event_id for r in rows if not r.outlier])
            for row in rows:
                found = list(self._event(row, groups.get(row.event_id)))
                if found:
                    self.summary.events_disagreeing += 1
                for d in found:
                    self.summary.disagreements += 1
                    self.summary.by_kind[d.kind] = self.summary.by_kind.get(d.kind, 0) + 1
                    yield d
            if self.on_progress is not None:
                self.on_progress(len(rows))

    def _event(self, row: Row, group: Optional[int]) -> Iterator[Disagreement]:
        s = self.summary
        if row.outlier:
            s.outliers += 1
            return
        if group is None:
            s.no_state_group += 1
            return
        store = self.store
        if not store.has_event(row.event_id):
            yield Disagreement("missing", row.room_id, row.event_id)
            return
        s.events += 1
        info = store.event(row.event_id)
        if info.rejected != (row.rejection is not None):
            yield Disagreement("rejection", row.room_id, row.event_id, synapse_rejection=row.rejection,
                               roomstate_rejection=(info.rejected_reason or "rejected") if info.rejected else None)
        theirs = self.source.state_before(row, group)
        try:
            ours = store.state_before(row.event_id).to_dict()
        except MissingEventError:  # stored as an outlier here: no state to compare
            yield Disagreement("missing", row.room_id, row.event_id)
            return
        if ours == theirs:
            return
        differing = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        synapse_rejected = self.source.rejections(
            [e for e in (ours.get(k) for k in differing) if e is not None])
        for key in differing:
            mine, their = ours.get(key), theirs.get(key)
            yield Disagreement(
                "state", row.room_id, row.event_id, key[0], key[1], synapse=their, roomstate=mine,
                roomstate_rejected_synapse_event=their is not None and self._roomstate_rejected(their) is not None,
                synapse_rejected_roomstate_event=mine is not None and mine in synapse_rejected,
            )

    def _roomstate_rejected(self, event_id: str) -> Optional[str]:
        """roomstate's rejection reason of a stored event, None when it accepted it (or lacks it)."""
        if event_id not in self._rejected_cache:
            reason = None
            if self.store.has_event(event_id):
                info = self.store.event(event_id)
                reason = (info.rejected_reason or "rejected") if info.rejected else None
            self._rejected_cache[event_id] = reason
        return self._rejected_cache[event_id]


def summary_line(summary: Summary, source_name: str) -> str:
    kinds = ", ".join(f"{n:,} {k}" for k, n in sorted(summary.by_kind.items()))
    line = (f"verified {plural(summary.events, 'event')} of {plural(summary.rooms, 'room')} against {source_name}: "
            f"{plural(summary.disagreements, 'disagreement')}")
    if summary.disagreements:
        line += f" ({kinds}) at {plural(summary.events_disagreeing, 'event')}"
    extra: List[str] = []
    if summary.outliers:
        extra.append(plural(summary.outliers, "outlier"))
    if summary.no_state_group:
        extra.append(plural(summary.no_state_group, "event") + " without a state group")
    if extra:
        line += f"; not compared: {', '.join(extra)}"
    return line
