"""Reading what Synapse's ``admin_cmd export-data`` writes (``roomstate import DIR``).

The export of a user's data is a directory: ``rooms/ROOM_ID/events`` holds the room's
events that the user could see, as PDUs written one after another (JSON objects, no
separator), in topological order; ``rooms/ROOM_ID/state/EVENT_ID`` holds, for each of
those events whose prev events the user could not see, the room's state at that event
(the state *after* it, as Synapse's state groups hold it), as PDUs the same way.

The PDUs of room versions 3 and later carry no ``event_id``: it is computed (the
reference hash of the room version, :func:`roomstate.matrix.compute_event_id`).  An
event with a state file is stored with that state as given state: the state after it,
its own key put back to ``unsigned.replaces_state`` (dropped when there is none or that
event is not in the export).  The state's events that are not stored yet are stored
first, as outliers; auth events of theirs that the export lacks are left out of them
(a store that checks the authorization rules refuses such an outlier, and says so).

Either the export's top directory or one of its room directories can be given.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, Iterator, List, Tuple

from .. import inputs
from ..errors import InvalidEventError, MissingEventError, RoomStateError, StorageError
from ..matrix import compute_event_id

EVENTS = "events"
STATE = "state"


def is_export(path: str) -> bool:
    """True for an export's top directory (``rooms/``) or one of its room directories (``events``)."""
    return os.path.isdir(os.path.join(path, "rooms")) or os.path.isfile(os.path.join(path, EVENTS))


def room_dirs(path: str) -> List[str]:
    if os.path.isfile(os.path.join(path, EVENTS)):
        return [path]
    rooms = os.path.join(path, "rooms")
    return [os.path.join(rooms, name) for name in sorted(os.listdir(rooms))
            if os.path.isfile(os.path.join(rooms, name, EVENTS))]


def _pdus(path: str) -> Iterator[Tuple[int, Dict[str, Any]]]:
    with open(path, "rb") as raw:
        for line, which, value in inputs.read_values(inputs.decompressed(raw)):
            if type(value) is not dict:
                reason = value.reason if type(value) is inputs.Bad else "not a JSON object"
                raise InvalidEventError("event", f"{path}:{line}: {reason}")
            yield line, value


class ExportImport:
    """Imports an export's rooms into a store."""

    def __init__(self, store: Any, *, on_problem: Any = None) -> None:
        self.store = store
        self._writer: Any = store  # the room's batch while a room is imported
        self.on_problem = on_problem or (lambda message: print(message, file=sys.stderr))
        self.events = 0
        self.new = 0
        self.outliers = 0
        self.given = 0
        self.refused = 0

    # -- room version and event IDs --------------------------------------------------------
    def _room_version(self, room_dir: str) -> str:
        room_id = os.path.basename(os.path.normpath(room_dir))
        for _, ev in _pdus(os.path.join(room_dir, EVENTS)):
            if ev.get("type") == "m.room.create" and ev.get("state_key") == "":
                return str((ev.get("content") or {}).get("room_version", "1"))
            break
        state_dir = os.path.join(room_dir, STATE)
        if os.path.isdir(state_dir):
            for name in sorted(os.listdir(state_dir)):
                for _, ev in _pdus(os.path.join(state_dir, name)):
                    if ev.get("type") == "m.room.create" and ev.get("state_key") == "":
                        return str((ev.get("content") or {}).get("room_version", "1"))
        try:
            return self.store.room_version(room_id)
        except MissingEventError:
            raise InvalidEventError("room_version", f"{room_dir}: no create event in the export, and the store "
                                                    f"does not hold room {room_id!r}") from None

    @staticmethod
    def _with_id(ev: Dict[str, Any], version: str) -> Dict[str, Any]:
        if "event_id" not in ev:
            ev = dict(ev, event_id=compute_event_id(ev, version))
        return ev

    # -- a room -----------------------------------------------------------------------
    def import_room(self, room_dir: str) -> None:
        version = self._room_version(room_dir)
        state_dir = os.path.join(room_dir, STATE)
        with_state = set(os.listdir(state_dir)) if os.path.isdir(state_dir) else set()
        known: Dict[str, Dict[str, Any]] = {}  # the state files' events, by ID (the states are small)
        with self.store.batch() as b:  # one transaction per room; each event atomic on its own
            self._writer = b
            try:
                self._events(room_dir, version, state_dir, with_state, known)
            finally:
                self._writer = self.store

    def _events(self, room_dir: str, version: str, state_dir: str, with_state: "set[str]",
                known: Dict[str, Dict[str, Any]]) -> None:
        for line, ev in _pdus(os.path.join(room_dir, EVENTS)):
            ev = self._with_id(ev, version)
            self.events += 1
            eid = ev["event_id"]
            try:
                if eid in with_state:
                    given = self._given_state(os.path.join(state_dir, eid), ev, version, known)
                    self._add(ev, state_before=given)
                    self.given += 1
                else:
                    self._add(ev)
            except StorageError:
                raise
            except (RoomStateError, ValueError, TypeError) as exc:
                self.refused += 1
                self.on_problem(f"{os.path.join(room_dir, EVENTS)}:{line}: {eid}: {exc}")

    def _add(self, ev: Dict[str, Any], **options: Any) -> None:
        stored = self.store.has_event(ev["event_id"])
        self._writer.add_event(ev, **options)
        self.new += not stored

    def _given_state(self, path: str, ev: Dict[str, Any], version: str,
                     known: Dict[str, Dict[str, Any]]) -> Dict[Tuple[str, str], str]:
        after: Dict[Tuple[str, str], str] = {}
        for _, sev in _pdus(path):
            sev = self._with_id(sev, version)
            known[sev["event_id"]] = sev
            after[(sev["type"], sev["state_key"])] = sev["event_id"]
        for sid in sorted(set(after.values()) - {ev["event_id"]}, key=lambda e: known[e].get("depth", 0)):
            self._outlier(known[sid])
        before = dict(after)
        key = (ev.get("type"), ev.get("state_key"))
        if "state_key" in ev and before.get(key) == ev["event_id"]:  # type: ignore[arg-type]
            replaced = (ev.get("unsigned") or {}).get("replaces_state")
            if isinstance(replaced, str) and replaced in known:
                self._outlier(known[replaced])
                before[key] = replaced  # type: ignore[index]
            else:
                del before[key]  # type: ignore[arg-type]
        return before  # type: ignore[return-value]

    def _outlier(self, ev: Dict[str, Any]) -> None:
        if self.store.has_event(ev["event_id"]):
            return
        auth = ev.get("auth_events")
        if isinstance(auth, list):
            kept = [a for a in auth if self.store.has_event(a[0] if isinstance(a, list) and a else a)]
            if len(kept) != len(auth):
                ev = dict(ev, auth_events=kept)
        self._writer.add_event(ev, outlier=True)
        self.new += 1
        self.outliers += 1


def cmd_import(args: Any) -> int:
    """``roomstate import DIR ...`` for export directories (called by :mod:`roomstate.cli`)."""
    from .. import cli as base

    for path in args.files:
        if not (os.path.isdir(path) and is_export(path)):
            raise base.CommandError(
                f"roomstate: {path}: not a directory that Synapse's export-data wrote (no rooms/ nor events); "
                "give export directories and files in separate commands", base.EXIT_BAD_INPUT)
    start = time.perf_counter()
    with base._open_store(args.db, resolver=args.resolver, create=True, durable=not args.no_sync,
                          check_auth=args.check_auth) as store:
        job = ExportImport(store)
        try:
            for path in args.files:
                for room_dir in room_dirs(path):
                    job.import_room(room_dir)
        except (OSError, inputs.InputError) as exc:
            raise base.CommandError(f"roomstate: {exc}", base.EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            raise base.CommandError(f"roomstate: interrupted after {job.events:,} events; the same command resumes "
                                    "the import", base.EXIT_INTERRUPTED) from None
    seconds = time.perf_counter() - start
    print(f"imported {base._plural(job.events, 'event')} of an export ({job.new:,} new, "
          f"{base._plural(job.outliers, 'outlier')} from state files, {job.given:,} with the exported state given, "
          f"{job.refused:,} refused) in {seconds:.2f} s")
    return base.EXIT_BAD_INPUT if job.refused else base.EXIT_OK
