"""The ``roomstate`` command line: import room histories, read state back, compact, demo.

Exit status: 0 on success; 1 when the store cannot answer (unknown event or room, no
store at ``--db``, a conflict the resolver refused while merging the current state, a
store in use elsewhere that ``compact`` would replace); 2 for bad input (a bad line, a
conflict met while importing, an unreadable file, bad arguments) and for failures of the
OS or of LMDB (permissions, a path that cannot hold a store, a full disk); 3 when
``import --skip-invalid`` skipped lines; 4 when ``import`` left events unstored because
their prev events never arrived; 130 when interrupted.  Errors are one line on stderr,
never a traceback.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import tempfile
import time
from collections import deque
from contextlib import contextmanager
from typing import IO, Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import lmdb

import roomstate

from . import inputs
from ._parse import MEMBERSHIPS
from .errors import ConflictError, MissingEventError, RoomStateError, StorageError

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_SKIPPED, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
DEFAULT_BATCH = 10_000
DEFAULT_MAX_HELD = 100_000
DEFAULT_DEMO_EVENTS = 200_000
DB_ENV = "ROOMSTATE_DB"
RESOLVERS = ("matrix", "newest_event", "raise_on_conflict")

# What the engine raises for an event it will not store.  ValueError and TypeError
# cover bad input that reaches past validation (InvalidEventError is a ValueError).
_EVENT_ERRORS = (RoomStateError, ValueError, TypeError)


class CommandError(Exception):
    """A one-line message for the user, and the exit status that goes with it."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


def _hint(exc: BaseException) -> str:
    if isinstance(exc, ConflictError):
        return f"{exc} (use --resolver matrix or newest_event to resolve conflicts)"
    return str(exc)


# -- import ------------------------------------------------------------------------------


@contextmanager
def _open_input(path: str) -> Iterator[IO[bytes]]:
    """The bytes of a file (or stdin for ``-``), decompressed when they are gzip's."""
    try:
        raw: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb", buffering=1 << 20)
    except OSError as exc:
        raise CommandError(f"roomstate: cannot read {path}: {exc.strerror or exc}", EXIT_BAD_INPUT) from None
    try:
        try:
            stream = inputs.decompressed(raw)
        except OSError as exc:  # the first bytes could not be read
            raise CommandError(f"roomstate: cannot read {path}: {exc.strerror or exc}", EXIT_BAD_INPUT) from None
        yield stream
    finally:
        if path != "-":
            raw.close()


def _count_lines(path: str) -> Optional[int]:
    """Lines of a plain file, for the progress bar's total (a fast pass in C)."""
    if path == "-":
        return None
    try:
        if inputs.is_gzip(path):
            return None
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return None


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _plural(n: int, word: str, plural: Optional[str] = None) -> str:
    """``1 event``, ``2 events``, ``10,000 events``."""
    return f"{n:,} {word if n == 1 else plural or word + 's'}"


# Where an event was read: the file's name, the line, and which value of the line it is
# in the shapes that put several on one line (see roomstate.inputs.read_values).
Place = Tuple[str, int, Optional[str]]


def _where(place: Place) -> str:
    name, line, which = place
    return f"{name}:{line}" if which is None else f"{name}:{line}: {which}"


def _prev_ids(ev: Dict[str, Any]) -> List[str]:
    prevs = ev.get("prev_events") or []
    return [p[0] if isinstance(p, (list, tuple)) and p else p for p in prevs if isinstance(p, (str, list, tuple))]


class Waiting:
    """Events held until a prev event arrives, by the ID of the prev they wait for."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._by_prev: Dict[str, List[Tuple[int, Place, Dict[str, Any]]]] = {}
        self._held = 0  # events held so far: the order they are reported in

    def __bool__(self) -> bool:
        return self.count > 0

    def hold(self, prev_id: str, place: Place, ev: Dict[str, Any]) -> bool:
        """Hold ``ev`` until ``prev_id`` is stored; False when ``limit`` events wait already."""
        if self.count >= self.limit:
            return False
        self._by_prev.setdefault(prev_id, []).append((self._held, place, ev))
        self._held += 1
        self.count += 1
        return True

    def release(self, event_id: Any) -> List[Tuple[Place, Dict[str, Any]]]:
        """The events that waited for ``event_id``, no longer held."""
        ready = self._by_prev.pop(event_id, None) if type(event_id) is str else None
        if not ready:
            return []
        self.count -= len(ready)
        return [(place, ev) for _, place, ev in ready]

    def left(self) -> List[Tuple[Place, Dict[str, Any]]]:
        """The events still held, in the order they were first held."""
        return [(place, ev) for _, place, ev in sorted(
            (held for waiting in self._by_prev.values() for held in waiting), key=lambda held: held[0])]


class Importer:
    """Reads room histories into a store, committing one transaction per batch.

    Events come in the order of the input; one whose prev events are neither stored nor
    read yet is held (at most ``max_held`` of them) and stored once they are.  Re-running
    an import is safe at any point: events stored already with the same fields are
    no-ops, so a killed or failed import resumes where it stopped.
    """

    def __init__(
        self,
        store: "roomstate.StateStore",
        *,
        batch_size: int = DEFAULT_BATCH,
        skip_invalid: bool = False,
        max_held: int = DEFAULT_MAX_HELD,
        on_skip: Optional[Callable[[str], None]] = None,
        on_progress: Optional[Callable[[int], None]] = None,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.skip_invalid = skip_invalid
        self.on_skip = on_skip or (lambda message: print(message, file=sys.stderr))
        self.on_progress = on_progress
        self.waiting = Waiting(max_held)
        self.events = 0  # events stored (or found stored already)
        self.new = 0  # of those, the ones this import wrote
        self.state_events = 0
        self.skipped = 0
        self._lines_reported = 0

    def import_file(self, path: str) -> None:
        name = "<stdin>" if path == "-" else path
        places: List[Place] = []
        events: List[Dict[str, Any]] = []
        self._lines_reported = 0
        with _open_input(path) as f:
            try:
                for line, which, ev in inputs.read_values(f):
                    if type(ev) is not dict:
                        reason = ev.reason if type(ev) is inputs.Bad else f"not a JSON object but {_json_type(ev)}"
                        self._bad_value((name, line, which), reason, places, events)
                        continue
                    places.append((name, line, which))
                    events.append(ev)
                    if len(events) >= self.batch_size:
                        self._store_batch(places, events)
                        places, events = [], []
            except inputs.InputError as exc:
                self._store_batch(places, events)
                raise CommandError(f"{name}:{exc}", EXIT_BAD_INPUT) from None
            self._store_batch(places, events)

    def _bad_value(self, place: Place, reason: str, places: List[Place], events: List[Dict[str, Any]]) -> None:
        if self.skip_invalid:
            self._skip(place, reason)
            return
        # Everything before the bad line is kept.
        self._store_batch(places, events)
        places.clear()
        events.clear()
        raise CommandError(f"{_where(place)}: {reason}", EXIT_BAD_INPUT)

    def _skip(self, place: Place, reason: str) -> None:
        self.skipped += 1
        self.on_skip(f"{_where(place)}: {reason} (skipped)")

    def _store_batch(self, places: List[Place], events: List[Dict[str, Any]]) -> None:
        if not events:
            return
        try:
            new = self.store.add_events(events)
        except StorageError:
            raise
        except _EVENT_ERRORS:
            # The batch was rolled back as a whole; store it event by event, holding
            # the events whose prevs are still to come.
            self._store_each(zip(places, events))
        else:
            self.new += new
            self._count(events)
            if self.waiting:
                ready = [held for ev in events for held in self.waiting.release(ev.get("event_id"))]
                if ready:
                    self._store_each(ready)
        self._progress(places[-1][1])

    def _store_each(self, pending: Iterable[Tuple[Place, Dict[str, Any]]]) -> None:
        """Store events one by one in one transaction, each atomic on its own: a bad one
        leaves no trace.  Stops at the first bad event (committing the others) unless
        skipping; an event stored releases the events that waited for it."""
        with self.store.batch() as b:
            failure = self._store_in(b, deque(pending))
        if failure is not None:
            raise CommandError(failure, EXIT_BAD_INPUT)

    def _store_in(self, b: Any, queue: "deque[Tuple[Place, Dict[str, Any]]]") -> Optional[str]:
        failure: Optional[str] = None
        while queue:
            place, ev = queue.popleft()
            try:
                new = b.add_events([ev])
            except MissingEventError as exc:
                if exc.event_id is None or self.store.has_event(exc.event_id):
                    failure = self._refused(place, exc)
                elif not self.waiting.hold(exc.event_id, place, ev):
                    failure = (
                        f"{_where(place)}: more than {_plural(self.waiting.limit, 'event')} wait for prev events "
                        f"not read yet (--max-held {self.waiting.limit}); put the file in order, oldest first, "
                        "or raise --max-held"
                    )
            except StorageError:
                raise
            except _EVENT_ERRORS as exc:
                failure = self._refused(place, exc)
            else:
                self.new += new
                self._count((ev,))
                if self.waiting:
                    queue.extend(self.waiting.release(ev["event_id"]))
            if failure is not None:
                break
        return failure

    def _refused(self, place: Place, exc: BaseException) -> Optional[str]:
        """The failure message for an event the store refused, or None when skipping it."""
        if not self.skip_invalid:
            return f"{_where(place)}: {_hint(exc)}"
        self._skip(place, _hint(exc))
        return None

    def never_stored(self) -> List[str]:
        """One line per event still held at the end: where it was read and the prevs it lacks."""
        lines = []
        for place, ev in self.waiting.left():
            missing = [p for p in _prev_ids(ev) if not self.store.has_event(p)]
            shown = ", ".join(repr(p) for p in missing)
            lines.append(f"{_where(place)}: {ev.get('event_id')!r} not stored: prev event(s) {shown} never arrived")
        return lines

    def _count(self, events: Sequence[Dict[str, Any]]) -> None:
        self.events += len(events)
        self.state_events += sum("state_key" in ev for ev in events)

    def _progress(self, lineno: int) -> None:
        if self.on_progress is not None:
            self.on_progress(max(0, lineno - self._lines_reported))
        self._lines_reported = lineno


@contextmanager
def _few_gc_passes() -> Iterator[None]:
    """Parsed events are acyclic dicts, yet each batch would set off many collections."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], 100_000), old[1], old[2])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _progress_bar(total: Optional[int], enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    try:
        width = os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        width = 0
    # A terminal that reports no width (some pseudo-terminals) would get an empty bar.
    sizing: Dict[str, Any] = {"dynamic_ncols": True} if width > 0 else {"ncols": 80, "nrows": 24}
    return tqdm(total=total, unit="ev", unit_scale=True, desc="import", file=sys.stderr, **sizing)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def run_import(
    store: "roomstate.StateStore",
    paths: Sequence[str],
    *,
    batch_size: int = DEFAULT_BATCH,
    skip_invalid: bool = False,
    max_held: int = DEFAULT_MAX_HELD,
    progress: bool = False,
    out: Optional[IO[str]] = None,
) -> Importer:
    """Import ``paths`` into ``store`` and print the summary line on ``out`` (stdout)."""
    total: Optional[int] = None
    if progress:
        counts = [_count_lines(p) for p in paths]
        # No total for stdin, gzip, or a file of values on one line (its line count is 0).
        total = None if None in counts else sum(c for c in counts if c is not None) or None
    bar = _progress_bar(total, progress)

    def report(message: str) -> None:
        if bar is not None:
            bar.write(message, file=sys.stderr)  # above the bar, not through it
        else:
            print(message, file=sys.stderr)

    importer = Importer(
        store,
        batch_size=batch_size,
        skip_invalid=skip_invalid,
        max_held=max_held,
        on_skip=report,
        on_progress=bar.update if bar is not None else None,
    )
    start = time.perf_counter()
    try:
        with _few_gc_passes():
            for path in paths:
                importer.import_file(path)
        never_stored = importer.never_stored()
        for message in never_stored:
            report(message)
    except KeyboardInterrupt:
        raise CommandError(
            f"roomstate: interrupted after {_plural(importer.events, 'event')}; the same command resumes the import",
            EXIT_INTERRUPTED,
        ) from None
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    stats = store.stats()
    extra = ""
    if skip_invalid:
        extra += f", {_plural(importer.skipped, 'invalid line')} skipped"
    if never_stored:
        extra += f", {_plural(len(never_stored), 'event')} never stored: prev events missing"
    rate = importer.events / seconds if seconds > 0 else 0.0
    print(
        f"imported {_plural(importer.events, 'event')} ({importer.new:,} new, "
        f"{_plural(importer.state_events, 'state event')}{extra}) in {seconds:.2f} s, {rate:,.0f} events/s; "
        f"store: {_plural(stats['events'], 'event')}, {_plural(stats['snapshots'], 'snapshot')}, "
        f"{_size(stats['file_bytes'])} on disk",
        file=out or sys.stdout,
    )
    return importer


def cmd_import(args: argparse.Namespace) -> int:
    if any(os.path.isdir(path) for path in args.files):  # what Synapse's admin_cmd export-data writes
        from .synapse import export

        return export.cmd_import(args)
    for path in args.files:
        if path != "-" and not os.path.isfile(path):
            why = "not a file" if os.path.exists(path) else "no such file"
            raise CommandError(f"roomstate: cannot read {path}: {why}", EXIT_BAD_INPUT)
    progress = not args.quiet and sys.stderr.isatty()
    with _open_store(
        args.db, resolver=args.resolver, create=True, durable=not args.no_sync, check_auth=args.check_auth
    ) as store:
        importer = run_import(
            store, args.files, batch_size=args.batch, skip_invalid=args.skip_invalid,
            max_held=args.max_held, progress=progress,
        )
    if importer.waiting:
        return EXIT_INCOMPLETE
    if importer.skipped:
        return EXIT_SKIPPED
    return EXIT_OK


# -- reads -------------------------------------------------------------------------------


def _failure(exc: RoomStateError) -> CommandError:
    """The one line and the exit status for an error of the engine."""
    status = EXIT_BAD_INPUT if isinstance(exc, StorageError) else EXIT_ERROR
    return CommandError(f"roomstate: {_hint(exc)}", status)


@contextmanager
def _open_store(
    db: str, *, resolver: Optional[str] = None, create: bool = False, durable: bool = True, check_auth: bool = True
) -> Iterator["roomstate.StateStore"]:
    try:
        store = roomstate.open(db, resolver=resolver, readonly=not create, durable=durable, check_auth=check_auth)
    except RoomStateError as exc:
        raise _failure(exc) from None
    with store:
        try:
            yield store
        except RoomStateError as exc:
            raise _failure(exc) from None


def _entries(mapping: Any) -> List[Dict[str, str]]:
    return [{"type": t, "state_key": k, "event_id": e} for (t, k), e in sorted(mapping.items())]


def _dumps(value: Any, **options: Any) -> str:
    """JSON as UTF-8 text, not \\u escapes; escaped only where a string is not valid
    Unicode (a lone surrogate, which the store keeps as given)."""
    text = json.dumps(value, ensure_ascii=False, **options)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, **options)
    return text


def _json_list(items: Sequence[Any], indent: str = "") -> str:
    """A JSON array with one compact item per line: readable, and greppable."""
    if not items:
        return "[]"
    inner = ",\n".join(f"{indent}  {_dumps(item)}" for item in items)
    return f"[\n{inner}\n{indent}]"


def _types(args: argparse.Namespace) -> Optional[List[Tuple[str, Optional[str]]]]:
    if args.type is None:
        return None
    return [(args.type, args.state_key)]


def cmd_state(args: argparse.Namespace) -> int:
    with _open_store(args.db) as store:
        read = store.state_after if args.after else store.state_before
        print(_json_list(_entries(read(args.event_id, types=_types(args)))))
    return EXIT_OK


def cmd_current(args: argparse.Namespace) -> int:
    with _open_store(args.db, resolver=args.resolver) as store:
        print(_json_list(_entries(store.current_state(args.room_id, types=_types(args)))))
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    with _open_store(args.db) as store:
        diff = store.state_diff(args.event_a, args.event_b)
    added, removed = _json_list(_entries(diff.added), "  "), _json_list(_entries(diff.removed), "  ")
    print(f'{{\n  "added": {added},\n  "removed": {removed}\n}}')
    return EXIT_OK


def cmd_event(args: argparse.Namespace) -> int:
    with _open_store(args.db) as store:
        info = store.event(args.event_id)
    print(_dumps(dataclasses.asdict(info), indent=2))
    return EXIT_OK


def cmd_resets(args: argparse.Namespace) -> int:
    with _open_store(args.db) as store:
        resets = store.state_resets(args.room_id)
    for reset in resets:
        print(_dumps(dataclasses.asdict(reset)))
    print(f"{_plural(len(resets), 'state reset')} in {args.room_id}", file=sys.stderr)
    return EXIT_OK


def cmd_members(args: argparse.Namespace) -> int:
    with _open_store(args.db) as store:
        print(_json_list(sorted(store.members(args.event_id, args.membership, after=args.after))))
    return EXIT_OK


# Labels for the counts the engine reports, in the order they are shown; keys the engine
# adds later are shown after these, named after their key.
_STATS_LABELS = {
    "events": "events",
    "state_events": "state events",
    "rooms": "rooms",
    "snapshots": "snapshots",
    "blocks": "blocks",
    "block_entries": "block entries",
    "state_resets": "state resets",
    "file_bytes": "bytes on disk",
    "bytes_in_use": "bytes in use",
    "free_bytes": "bytes free",
    "bytes_per_event": "bytes per event",
    "bytes_per_state_event": "bytes per state event",
    "state_bytes": "state bytes",
    "state_bytes_per_state_event": "state bytes per state event",
}


def _stat_value(key: str, value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if "bytes" in key and isinstance(value, int) and value >= 1000:
        return f"{value:,} ({_size(value)})"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _stats_text(stats: Dict[str, Any]) -> str:
    keys = [k for k in _STATS_LABELS if k in stats]
    keys += [k for k, v in stats.items() if k not in _STATS_LABELS and not isinstance(v, dict)]
    rows = [(_STATS_LABELS.get(k, k.replace("_", " ")), _stat_value(k, stats[k])) for k in keys]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    tables = stats.get("tables") or {}
    if tables:
        tw = max(len(name) for name in tables)
        lines.append("")
        lines.append(f"{'table':<{tw}}  {'entries':>12}  {'bytes':>14}")
        for name, t in tables.items():
            lines.append(f"{name:<{tw}}  {t.get('entries', 0):>12,}  {t.get('bytes', 0):>14,}")
    return "\n".join(lines)


def cmd_stats(args: argparse.Namespace) -> int:
    with _open_store(args.db) as store:
        stats = store.stats()
    print(_dumps(stats, indent=2) if args.json else _stats_text(stats))
    return EXIT_OK


def cmd_rooms(args: argparse.Namespace) -> int:
    with _open_store(args.db) as store:
        counts = store.room_counts()
        rooms = [{"room_id": r, "events": counts.get(r, (0, 0))[0], "state_events": counts.get(r, (0, 0))[1]}
                 for r in store.rooms()]
    if args.json:
        print(_json_list(rooms))
    elif rooms:
        width = max(len("room"), *(len(r["room_id"]) for r in rooms))
        print(f"{'room':<{width}}  {'events':>12}  {'state events':>12}")
        for r in rooms:
            print(f"{r['room_id']:<{width}}  {r['events']:>12,}  {r['state_events']:>12,}")
    return EXIT_OK


def cmd_compact(args: argparse.Namespace) -> int:
    from . import compact

    try:
        if args.to is None:
            before, after = compact.compact_in_place(args.db)
            where = "in place"
        else:
            before, after = compact.compact_to(args.db, args.to)
            where = f"into {args.to}"
    except RoomStateError as exc:
        raise _failure(exc) from None
    saved = f", {(before - after) / before:.0%} smaller" if before else ""
    print(f"compacted {args.db} {where}: {before:,} bytes before, {after:,} after{saved}")
    return EXIT_OK


# -- demo --------------------------------------------------------------------------------


class _Recorder:
    """Passes events through, keeping the room and the IDs the demo asks about."""

    def __init__(self, events: Iterator[Dict[str, Any]], keep: Sequence[int]) -> None:
        self._events = events
        self._keep = set(keep)
        self.kept: Dict[int, str] = {}
        self.room_id = ""
        self.last = ""
        self.count = 0

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        for ev in self._events:
            if self.count in self._keep:
                self.kept[self.count] = ev["event_id"]
            self.count += 1
            self.room_id = ev["room_id"]
            self.last = ev["event_id"]
            yield ev


def _timed(fn: Callable[[], Any]) -> Tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - start) * 1000


def _short(event_id: str) -> str:
    return event_id if len(event_id) <= 15 else event_id[:12] + "..."


def _demo_answers(store: "roomstate.StateStore", rec: _Recorder, n: int) -> None:
    room, last = rec.room_id, rec.last
    mid_i, near_i = n // 2, max(0, n - 1000)
    mid, near = rec.kept.get(mid_i), rec.kept.get(near_i)

    current, ms = _timed(lambda: store.current_state(room))
    print(f"  current state of {room}: {len(current):,} keys ({ms:.1f} ms)")
    joined, ms = _timed(lambda: store.members(last, "join", after=True))
    print(f"  joined members after the last event: {len(joined):,} ({ms:.1f} ms)")
    pl, ms = _timed(lambda: store.get_state(last, "m.room.power_levels", "", after=True))
    print(f"  m.room.power_levels after the last event: {pl} ({ms:.1f} ms)")
    if mid is not None:
        state, ms = _timed(lambda: store.state_before(mid))
        print(f"  state before event #{mid_i:,} {_short(mid)}: {len(state):,} keys ({ms:.1f} ms)")
    if near is not None and near != last:
        diff, ms = _timed(lambda: store.state_diff(near, last))
        print(
            f"  diff from event #{near_i:,} to the last event: {len(diff.added):,} keys added or changed, "
            f"{len(diff.removed):,} removed or replaced ({ms:.1f} ms)"
        )
        for (t, k), e in sorted(diff.added.items())[:3]:
            print(f"    + {t} {k!r} -> {_short(e)}")


def cmd_demo(args: argparse.Namespace) -> int:
    from . import workloads

    n = args.events
    progress = not args.quiet and sys.stderr.isatty()
    with tempfile.TemporaryDirectory(prefix="roomstate-demo-") as tmp:
        db = args.db or os.path.join(tmp, "store")
        jsonl = os.path.join(tmp, "hq.jsonl")
        print(f"roomstate demo: a room shaped like Matrix HQ, {n:,} events (seed {args.seed})")
        rec = _Recorder(workloads.hq(n, seed=args.seed), keep=(n // 2, max(0, n - 1000)))
        _, ms = _timed(lambda: workloads.write_jsonl(rec, jsonl))
        print(f"generated {rec.count:,} events in {ms / 1000:.2f} s: {_size(os.path.getsize(jsonl))} of JSON lines")
        where = db if args.db else "a temporary directory (deleted at exit)"
        # newest_event: the Matrix resolution walks auth chains at every merge (no stored
        # index yet), which would make the demo minutes long on HQ's state.
        print(f"importing into {where} with the newest_event resolver")
        with _open_store(db, resolver="newest_event", create=True) as store:
            run_import(store, [jsonl], progress=progress)
            if rec.count:
                print("answers:")
                _demo_answers(store, rec, rec.count)
            print("stats:")
            for line in _stats_text(store.stats()).splitlines():
                print(f"  {line}" if line else "")
    return EXIT_OK


# -- entry point -------------------------------------------------------------------------


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _natural(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def cmd_check(args: argparse.Namespace) -> int:
    from . import check

    report = check.check(args.db)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(check.format_report(report)))
    return EXIT_OK if report["ok"] else EXIT_ERROR


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roomstate",
        description="Store the state of Matrix rooms compactly in LMDB and answer state questions.",
        epilog=_examples(
            "roomstate import room.jsonl --db room.db --resolver newest_event",
            "roomstate --db room.db rooms",
            f"{DB_ENV}=room.db roomstate current '!room:example.org'",
        ) + f"\n\nThe store is --db PATH, given before or after the command, or ${DB_ENV}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-V", "--version", action="version", version=f"roomstate {roomstate.__version__}")
    parser.add_argument("--db", dest="global_db", metavar="PATH", help=f"the store directory (default: ${DB_ENV})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str, *examples: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, epilog=_examples(*examples),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func, parser=p)
        return p

    def db(p: argparse.ArgumentParser, help: str = "the store directory") -> None:
        p.add_argument("--db", metavar="PATH", help=f"{help} (default: the --db before the command, or ${DB_ENV})")

    def type_filter(p: argparse.ArgumentParser) -> None:
        p.add_argument("--type", metavar="T", help="only this event type")
        p.add_argument("--state-key", metavar="K", help="only this state key (with --type)")

    p = command(
        "import", cmd_import,
        "import room histories: JSON lines, a JSON array of events, or JSON objects one after another",
        "roomstate import room.jsonl --db room.db --resolver newest_event",
        "cat export.json.gz | roomstate import - --db room.db --no-sync   # gzip is detected, any name",
        "roomstate import messy.jsonl --db room.db --skip-invalid; echo $?   # 3 when lines were skipped",
    )
    p.epilog += (
        "\n\nexit status: 0 done; 2 bad input or a failure of the OS or LMDB; 3 lines skipped with\n"
        "--skip-invalid; 4 events not stored because their prev events never arrived; 130 interrupted"
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="a file (gzip-compressed or not), or - for stdin")
    db(p, "the store directory, created when missing")
    p.add_argument("--resolver", choices=RESOLVERS, default="matrix",
                   help="how conflicted state keys are merged at forks: matrix, the Matrix specification's "
                        "state resolution (the default), newest_event or raise_on_conflict")
    p.add_argument("--batch", type=_positive, default=DEFAULT_BATCH, metavar="N",
                   help=f"events per write transaction (default: {DEFAULT_BATCH:,})")
    p.add_argument("--skip-invalid", action="store_true",
                   help=f"report bad lines on stderr and go on; exit status {EXIT_SKIPPED} when any were skipped")
    p.add_argument("--max-held", type=_natural, default=DEFAULT_MAX_HELD, metavar="N",
                   help="events held in memory while their prev events have not arrived, at most "
                        f"(default: {DEFAULT_MAX_HELD:,}; 0: the input must be in order)")
    p.add_argument("--no-sync", action="store_true",
                   help="no fsync at commits (the store's durable=False): faster; a crash of the "
                        "machine, not of the process, may lose the last commits, or damage the store on a "
                        "file system that does not keep the order of writes")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--check-auth", dest="check_auth", action="store_true", default=True,
                      help="apply the Matrix authorization rules to every event, the default (each must "
                           "carry sender and auth_events); one that fails is stored rejected, with the rule "
                           "it broke")
    auth.add_argument("--no-check-auth", dest="check_auth", action="store_false",
                      help="take events as given: only event_id, room_id and type are required, and an "
                           "event's own \"rejected\" field is trusted")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    p = command("state", cmd_state, "the state before (or after) an event, as JSON",
                "roomstate state --db room.db '$hello'",
                "roomstate state --db room.db '$hello' --after --type m.room.member",
                "roomstate state --db room.db '$hello' --type m.room.topic --state-key ''")
    db(p)
    p.add_argument("event_id", metavar="EVENT_ID")
    p.add_argument("--after", action="store_true", help="the state after the event, not before")
    type_filter(p)

    p = command("current", cmd_current, "the current state of a room, as JSON",
                "roomstate current --db room.db '!room:example.org'",
                "roomstate current --db room.db '!room:example.org' --resolver newest_event --type m.room.member")
    db(p)
    p.add_argument("room_id", metavar="ROOM_ID")
    p.add_argument("--resolver", choices=RESOLVERS, default="matrix",
                   help="how the states of several forward extremities merge (default: matrix)")
    type_filter(p)

    p = command("diff", cmd_diff, "the change from the state after EVENT_A to the state after EVENT_B",
                "roomstate diff --db room.db '$alice' '$alice_leaves'")
    db(p)
    p.add_argument("event_a", metavar="EVENT_A")
    p.add_argument("event_b", metavar="EVENT_B")

    p = command("event", cmd_event, "what the store keeps of an event (sender, auth events, rejection and "
                "its reason, ...), as JSON",
                "roomstate event --db room.db '$hello'")
    db(p)
    p.add_argument("event_id", metavar="EVENT_ID")

    p = command("members", cmd_members, "the members of a room at an event, as a JSON list of user IDs",
                "roomstate members --db room.db '$alice_leaves'",
                "roomstate members --db room.db '$alice_leaves' --after --membership leave")
    db(p)
    p.add_argument("event_id", metavar="EVENT_ID")
    p.add_argument("--membership", choices=MEMBERSHIPS, default="join", help="(default: join)")
    p.add_argument("--after", action="store_true", help="after the event, not before")

    p = command("resets", cmd_resets, "the state resets of a room's merges: keys where the merged state holds an "
                "event no prev state held there, or nothing where each held one; one JSON line each",
                "roomstate resets --db room.db '!room:example.org'")
    db(p)
    p.add_argument("room_id", metavar="ROOM_ID")

    p = command("rooms", cmd_rooms, "the rooms of a store, with their counts of events and of state events",
                "roomstate rooms --db room.db",
                "roomstate rooms --db room.db --json")
    db(p)
    p.add_argument("--json", action="store_true", help="as JSON")

    p = command("stats", cmd_stats, "counts and bytes per structure",
                "roomstate stats --db room.db",
                "roomstate stats --db room.db --json")
    db(p)
    p.add_argument("--json", action="store_true", help="as JSON")

    p = command("check", cmd_check, "check a store's integrity: every table, record and invariant; exit "
                "status 0 only when it is healthy, 1 when damaged (each problem named by table and key)",
                "roomstate check --db room.db",
                "roomstate check --db room.db --json")
    db(p)
    p.add_argument("--json", action="store_true", help="the report as JSON")

    p = command(
        "compact", cmd_compact,
        "rewrite a store without its free pages (LMDB's compacting copy)",
        "roomstate compact --db room.db --to room-compact.db   # a copy; safe while others read and write",
        "roomstate compact --db room.db                        # in place; needs the store to itself",
    )
    db(p)
    p.add_argument("--to", metavar="PATH",
                   help="write the compacted copy to this new directory and leave the store as it is; without it, "
                        "the store is replaced in place, which is refused while another process has it open")

    p = command("demo", cmd_demo, "generate an HQ-shaped room history, import it, and answer a few questions",
                "roomstate demo",
                "roomstate demo --events 20000 --db demo.db && roomstate rooms --db demo.db")
    p.add_argument("--db", metavar="PATH",
                   help=f"keep the store here (default: a temporary directory; ${DB_ENV} is not used)")
    p.add_argument("--events", type=_natural, default=DEFAULT_DEMO_EVENTS, metavar="N",
                   help=f"events to generate (default: {DEFAULT_DEMO_EVENTS:,})")
    p.add_argument("--seed", type=int, default=0, help="the generator's seed (default: 0)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    from .synapse.cli import add_command as add_synapse_command  # the synapse subcommands

    add_synapse_command(sub, command, db)
    return parser


def _resolve_db(args: argparse.Namespace) -> None:
    """``--db`` after the command wins over ``--db`` before it, which wins over $ROOMSTATE_DB
    (except for ``demo``, whose default is a temporary store)."""
    db = args.db or args.global_db
    if db is None and args.command != "demo":
        db = os.environ.get(DB_ENV) or None
        if db is None:
            args.parser.error(f"--db is required (before or after the command, or ${DB_ENV})")
    args.db = db


def _utf8_stdout() -> None:
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    if encoding != "utf8" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    if getattr(args, "state_key", None) is not None and args.type is None:
        args.parser.error("--state-key needs --type")
    _resolve_db(args)
    _utf8_stdout()
    try:
        return args.func(args)
    except CommandError as exc:
        print(exc, file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("roomstate: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RoomStateError as exc:
        return _report(_failure(exc))
    except lmdb.Error as exc:  # disk full, a damaged file
        return _report(CommandError(f"roomstate: LMDB: {exc}", EXIT_BAD_INPUT))
    except BrokenPipeError:
        # The reader went away (`roomstate state ... | head`): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:  # permissions, a full disk, a path that cannot be a directory
        where = f" {exc.filename}" if exc.filename else ""
        return _report(CommandError(f"roomstate:{where}: {exc.strerror or exc}", EXIT_BAD_INPUT))


def _report(error: CommandError) -> int:
    print(error, file=sys.stderr)
    return error.status
