"""The ``roomstate`` command line: import JSON-lines room histories, read state back, demo.

Exit status: 0 on success; 1 when the store cannot answer (unknown event or room, no
store at ``--db``, a conflict the resolver refused while merging the current state);
2 for bad input (a bad line, a conflict met while importing, an unreadable file, bad
arguments); 130 when interrupted.  Errors are one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import sys
import tempfile
import time
import zlib
from contextlib import contextmanager
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import lmdb

import roomstate

from .errors import ConflictError, RoomStateError

EXIT_OK, EXIT_ERROR, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_BATCH = 10_000
DEFAULT_DEMO_EVENTS = 200_000
RESOLVERS = ("raise_on_conflict", "newest_event")
MEMBERSHIPS = ("join", "invite", "leave", "ban", "knock")

# What the engine raises for an event it will not store.  ValueError and TypeError
# cover bad input that reaches past validation (InvalidEventError is a ValueError).
_EVENT_ERRORS = (RoomStateError, ValueError, TypeError)
_READ_ERRORS = (OSError, EOFError, zlib.error)


class CommandError(Exception):
    """A one-line message for the user, and the exit status that goes with it."""

    def __init__(self, message: str, status: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.status = status


def _hint(exc: BaseException) -> str:
    if isinstance(exc, ConflictError):
        return f"{exc} (use --resolver newest_event to resolve conflicts)"
    return str(exc)


# -- import ------------------------------------------------------------------------------


class _ReadError(Exception):
    """The file could not be read at a line (a truncated gzip stream, an I/O error)."""


@contextmanager
def _open_input(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        f: IO[bytes] = gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb", buffering=1 << 20)
    except OSError as exc:
        raise CommandError(f"roomstate: cannot read {path}: {exc.strerror or exc}", EXIT_BAD_INPUT) from None
    with f:
        yield f


def _numbered(f: IO[bytes]) -> Iterator[Tuple[int, bytes]]:
    """Lines with their numbers; a read error (truncated gzip, I/O) names the line."""
    lineno = 0
    try:
        for lineno, line in enumerate(f, 1):
            yield lineno, line
    except _READ_ERRORS as exc:
        raise _ReadError(f"{lineno + 1}: cannot read: {exc}") from None


def _count_lines(path: str) -> Optional[int]:
    """Lines of a plain file, for the progress bar's total (a fast pass in C)."""
    if path == "-" or path.endswith(".gz"):
        return None
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return None


def _json_error(line: bytes) -> str:
    """Why a line is not JSON, with the column (the line's own, not the file's)."""
    try:
        json.loads(line.rstrip(b"\r\n").decode("utf-8"))
    except UnicodeDecodeError as exc:
        return f"not UTF-8: byte {exc.start + 1} is {line[exc.start]:#04x}"
    except json.JSONDecodeError as exc:
        return f"not valid JSON: {exc.msg} at column {exc.colno}"
    return "not valid JSON"  # only if the first parse failed for a reason this one does not see


def _json_type(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


class Importer:
    """Reads JSON-lines files into a store, committing one transaction per batch.

    Re-running an import is safe at any point: events stored already with the same
    fields are no-ops, so a killed or failed import resumes where it stopped.
    """

    def __init__(
        self,
        store: "roomstate.StateStore",
        *,
        batch_size: int = DEFAULT_BATCH,
        skip_invalid: bool = False,
        on_skip: Optional[Callable[[str], None]] = None,
        on_progress: Optional[Callable[[int], None]] = None,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.skip_invalid = skip_invalid
        self.on_skip = on_skip or (lambda message: print(message, file=sys.stderr))
        self.on_progress = on_progress
        self.events = 0  # events stored (or found stored already)
        self.state_events = 0
        self.skipped = 0
        self._lines_reported = 0

    def import_file(self, path: str) -> None:
        name = "<stdin>" if path == "-" else path
        loads = json.loads
        linenos: List[int] = []
        events: List[Dict[str, Any]] = []
        self._lines_reported = 0
        with _open_input(path) as f:
            try:
                for lineno, line in _numbered(f):
                    try:
                        ev = loads(line)
                    except ValueError:  # JSONDecodeError, UnicodeDecodeError
                        if not line.strip():
                            continue
                        self._bad_line(name, lineno, _json_error(line), linenos, events)
                        continue
                    if type(ev) is not dict:
                        self._bad_line(name, lineno, f"not a JSON object but {_json_type(ev)}", linenos, events)
                        continue
                    linenos.append(lineno)
                    events.append(ev)
                    if len(events) >= self.batch_size:
                        self._store_batch(name, linenos, events)
                        linenos, events = [], []
            except _ReadError as exc:
                self._store_batch(name, linenos, events)
                raise CommandError(f"{name}:{exc}", EXIT_BAD_INPUT) from None
            self._store_batch(name, linenos, events)

    def _bad_line(self, name: str, lineno: int, reason: str, linenos: List[int], events: List[Dict[str, Any]]) -> None:
        if self.skip_invalid:
            self.skipped += 1
            self.on_skip(f"{name}:{lineno}: {reason} (skipped)")
            return
        # Everything before the bad line is kept.
        self._store_batch(name, linenos, events)
        linenos.clear()
        events.clear()
        raise CommandError(f"{name}:{lineno}: {reason}", EXIT_BAD_INPUT)

    def _store_batch(self, name: str, linenos: List[int], events: List[Dict[str, Any]]) -> None:
        if not events:
            return
        try:
            self.store.add_events(events)
        except _EVENT_ERRORS:
            # The batch was rolled back as a whole; find the bad line event by event.
            self._store_one_by_one(name, linenos, events)
        else:
            self._count(events)
        self._progress(linenos[-1])

    def _store_one_by_one(self, name: str, linenos: List[int], events: List[Dict[str, Any]]) -> None:
        failure: Optional[str] = None
        stored: List[Dict[str, Any]] = []
        # One transaction still, each event atomic inside it: a bad one leaves no trace.
        with self.store.batch() as b:
            for lineno, ev in zip(linenos, events):
                try:
                    b.add_event(ev)
                except _EVENT_ERRORS as exc:
                    if not self.skip_invalid:
                        failure = f"{name}:{lineno}: {_hint(exc)}"
                        break
                    self.skipped += 1
                    self.on_skip(f"{name}:{lineno}: {_hint(exc)} (skipped)")
                else:
                    stored.append(ev)
        self._count(stored)
        if failure is not None:
            raise CommandError(failure, EXIT_BAD_INPUT)

    def _count(self, events: List[Dict[str, Any]]) -> None:
        self.events += len(events)
        self.state_events += sum("state_key" in ev for ev in events)

    def _progress(self, lineno: int) -> None:
        if self.on_progress is not None:
            self.on_progress(lineno - self._lines_reported)
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
    progress: bool = False,
    out: Optional[IO[str]] = None,
) -> Importer:
    """Import ``paths`` into ``store`` and print the summary line on ``out`` (stdout)."""
    before = store.stats()["events"]
    total: Optional[int] = None
    if progress:
        counts = [_count_lines(p) for p in paths]
        total = None if None in counts else sum(c for c in counts if c is not None)
    bar = _progress_bar(total, progress)

    def report_skip(message: str) -> None:
        if bar is not None:
            bar.write(message, file=sys.stderr)  # above the bar, not through it
        else:
            print(message, file=sys.stderr)

    importer = Importer(
        store,
        batch_size=batch_size,
        skip_invalid=skip_invalid,
        on_skip=report_skip,
        on_progress=bar.update if bar is not None else None,
    )
    start = time.perf_counter()
    try:
        with _few_gc_passes():
            for path in paths:
                importer.import_file(path)
    except KeyboardInterrupt:
        raise CommandError(
            f"roomstate: interrupted after {importer.events} events; the same command resumes the import",
            EXIT_INTERRUPTED,
        ) from None
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    stats = store.stats()
    new = stats["events"] - before
    skipped = f", {importer.skipped} invalid lines skipped" if skip_invalid else ""
    rate = importer.events / seconds if seconds > 0 else 0.0
    print(
        f"imported {importer.events} events ({new} new, {importer.state_events} state events{skipped}) "
        f"in {seconds:.2f} s, {rate:,.0f} events/s; store: {stats['events']} events, "
        f"{stats['snapshots']} snapshots, {_size(stats['file_bytes'])} on disk",
        file=out or sys.stdout,
    )
    return importer


def cmd_import(args: argparse.Namespace) -> int:
    for path in args.files:
        if path != "-" and not os.path.isfile(path):
            why = "not a file" if os.path.exists(path) else "no such file"
            raise CommandError(f"roomstate: cannot read {path}: {why}", EXIT_BAD_INPUT)
    progress = not args.quiet and sys.stderr.isatty()
    with _open_store(args.db, resolver=args.resolver, create=True) as store:
        run_import(store, args.files, batch_size=args.batch, skip_invalid=args.skip_invalid, progress=progress)
    return EXIT_OK


# -- reads -------------------------------------------------------------------------------


@contextmanager
def _open_store(db: str, *, resolver: Optional[str] = None, create: bool = False) -> Iterator["roomstate.StateStore"]:
    try:
        store = roomstate.open(db, resolver=resolver, readonly=not create)
    except RoomStateError as exc:
        raise CommandError(f"roomstate: {exc}") from None
    with store:
        try:
            yield store
        except RoomStateError as exc:
            raise CommandError(f"roomstate: {_hint(exc)}") from None


def _entries(mapping: Any) -> List[Dict[str, str]]:
    return [{"type": t, "state_key": k, "event_id": e} for (t, k), e in sorted(mapping.items())]


def _json_list(items: Sequence[Any], indent: str = "") -> str:
    """A JSON array with one compact item per line: readable, and greppable."""
    if not items:
        return "[]"
    inner = ",\n".join(f"{indent}  {json.dumps(item)}" for item in items)
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
    print(json.dumps(stats, indent=2) if args.json else _stats_text(stats))
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="roomstate",
        description="Store the state of Matrix rooms compactly in LMDB and answer state questions.",
    )
    parser.add_argument("--version", action="version", version=f"roomstate {roomstate.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    def db(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", required=True, metavar="PATH", help="the store directory")

    def type_filter(p: argparse.ArgumentParser) -> None:
        p.add_argument("--type", metavar="T", help="only this event type")
        p.add_argument("--state-key", metavar="K", help="only this state key (with --type)")

    p = command("import", cmd_import, "import JSON-lines room histories (one event per line)")
    p.add_argument("files", nargs="+", metavar="FILE", help="a .jsonl file, a .jsonl.gz file, or - for stdin")
    p.add_argument("--db", required=True, metavar="PATH", help="the store directory (created when missing)")
    p.add_argument("--resolver", choices=RESOLVERS, default="raise_on_conflict",
                   help="how conflicted state keys are merged at forks (default: raise_on_conflict)")
    p.add_argument("--batch", type=_positive, default=DEFAULT_BATCH, metavar="N",
                   help=f"events per write transaction (default: {DEFAULT_BATCH:,})")
    p.add_argument("--skip-invalid", action="store_true", help="report bad lines on stderr and go on")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    p = command("state", cmd_state, "the state before (or after) an event, as JSON")
    db(p)
    p.add_argument("event_id", metavar="EVENT_ID")
    p.add_argument("--after", action="store_true", help="the state after the event, not before")
    type_filter(p)

    p = command("current", cmd_current, "the current state of a room, as JSON")
    db(p)
    p.add_argument("room_id", metavar="ROOM_ID")
    p.add_argument("--resolver", choices=RESOLVERS, default="raise_on_conflict",
                   help="how the states of several forward extremities merge (default: raise_on_conflict)")
    type_filter(p)

    p = command("diff", cmd_diff, "the change from the state after EVENT_A to the state after EVENT_B")
    db(p)
    p.add_argument("event_a", metavar="EVENT_A")
    p.add_argument("event_b", metavar="EVENT_B")

    p = command("members", cmd_members, "the members of a room at an event, as a JSON list of user IDs")
    db(p)
    p.add_argument("event_id", metavar="EVENT_ID")
    p.add_argument("--membership", choices=MEMBERSHIPS, default="join", help="(default: join)")
    p.add_argument("--after", action="store_true", help="after the event, not before")

    p = command("stats", cmd_stats, "counts and bytes per structure")
    db(p)
    p.add_argument("--json", action="store_true", help="as JSON")

    p = command("demo", cmd_demo, "generate an HQ-shaped room history, import it, and answer a few questions")
    p.add_argument("--db", metavar="PATH", help="keep the store here (default: a temporary directory)")
    p.add_argument("--events", type=_natural, default=DEFAULT_DEMO_EVENTS, metavar="N",
                   help=f"events to generate (default: {DEFAULT_DEMO_EVENTS:,})")
    p.add_argument("--seed", type=int, default=0, help="the generator's seed (default: 0)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    if getattr(args, "state_key", None) is not None and args.type is None:
        parser.error("--state-key needs --type")
    try:
        return args.func(args)
    except CommandError as exc:
        print(exc, file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("roomstate: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except lmdb.Error as exc:  # disk full, permissions, a damaged file
        print(f"roomstate: LMDB: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader went away (`roomstate state ... | head`): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
