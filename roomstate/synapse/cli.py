"""``roomstate synapse import|verify|report SOURCE --db PATH``: the commands over a Synapse database.

SOURCE is the path of Synapse's SQLite file or a ``postgresql://`` URL; it is only ever
read.  Exit status: as the rest of the command line (:mod:`roomstate.cli`), and for
``verify`` 5 when it found disagreements; ``import`` exits 4 when some events could not
be stored (each is named on stderr).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, List, Sequence

import roomstate

from .. import cli as base
from .load import DEFAULT_BATCH, DEFAULT_MAX_HELD, Loader, TooManyHeld, default_resolver
from .report import build as build_report, text as report_text
from .source import Source, SourceError, open_source
from .verify import Verifier, summary_line

EXIT_DISAGREE = 5
_SHOWN_NOT_STORED = 20


def add_command(sub: Any, command: Callable[..., argparse.ArgumentParser],
                db: Callable[..., None]) -> None:
    """Add ``synapse`` and its subcommands to the command line's subparsers."""
    p = command("synapse", _no_subcommand, "import, verify and weigh a Synapse homeserver's database (read-only)",
                "roomstate synapse import homeserver.db --db room.db",
                "roomstate synapse verify postgresql://synapse@localhost/synapse --db room.db",
                "roomstate synapse report homeserver.db --db room.db --json")
    p.set_defaults(db="-")  # no store is needed to print the subcommands (a subcommand's --db replaces it)
    inner = p.add_subparsers(dest="synapse_command", metavar="SUBCOMMAND")

    def sub_command(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        q = inner.add_parser(name, help=help, description=help)
        q.set_defaults(func=func, parser=q)
        q.add_argument("source", metavar="SOURCE", help="Synapse's SQLite file, or a postgresql:// URL (read-only)")
        db(q)
        q.add_argument("--room", action="append", metavar="ROOM_ID", help="only this room (repeatable; default: every room)")
        return q

    q = sub_command("import", cmd_import, "import the rooms' events in DAG order, outliers as outliers; resumable")
    q.add_argument("--batch", type=base._positive, default=DEFAULT_BATCH, metavar="N",
                   help=f"events per write transaction (default: {DEFAULT_BATCH:,})")
    q.add_argument("--max-held", type=base._natural, default=DEFAULT_MAX_HELD, metavar="N",
                   help=f"events held while their prev or auth events are not stored yet (default: {DEFAULT_MAX_HELD:,})")
    q.add_argument("--resolver", default=None, metavar="NAME",
                   help="how forks merge (default: matrix where available, else newest_event)")
    q.add_argument("--no-sync", action="store_true", help="no fsync at commits (faster; see roomstate import)")
    q.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    q = sub_command("verify", cmd_verify, "the state before every event, the store's against Synapse's: one JSON "
                    f"line per disagreement, a summary on stderr; exit {EXIT_DISAGREE} when there is any")
    q.add_argument("--quiet", "-q", action="store_true", help="no progress bar")

    q = sub_command("report", cmd_report, "rows and bytes of Synapse's state tables against the store's bytes")
    q.add_argument("--json", action="store_true", help="as JSON")


def _no_subcommand(args: argparse.Namespace) -> int:
    args.parser.print_help(sys.stderr)
    return base.EXIT_BAD_INPUT


def _source(spec: str) -> Source:
    try:
        return open_source(spec)
    except SourceError as exc:
        raise base.CommandError(f"roomstate: {exc}", base.EXIT_BAD_INPUT) from None


def _rooms(source: Source, wanted: Sequence[str] | None) -> List[str]:
    known = [r for r, _ in source.rooms()]
    if not wanted:
        return known
    unknown = [r for r in wanted if r not in set(known)]
    if unknown:
        raise base.CommandError(f"roomstate: {source.name} has no room {unknown[0]!r}", base.EXIT_ERROR)
    return list(dict.fromkeys(wanted))


def _bar(total: int, enabled: bool, desc: str) -> Any:
    bar = base._progress_bar(total, enabled)
    if bar is not None:
        bar.set_description(desc)
    return bar


def cmd_import(args: argparse.Namespace) -> int:
    resolver = args.resolver or default_resolver()
    with _source(args.source) as source:
        rooms = _rooms(source, args.room)
        progress = not args.quiet and sys.stderr.isatty()
        bar = _bar(sum(source.event_count(r) for r in rooms) if progress else 0, progress, "import")
        try:
            store = roomstate.open(args.db, resolver=resolver, check_auth=True, durable=not args.no_sync)
        except ValueError as exc:  # an unknown resolver
            raise base.CommandError(f"roomstate: {exc}", base.EXIT_BAD_INPUT) from None
        except roomstate.RoomStateError as exc:
            raise base._failure(exc) from None
        loader = Loader(source, store, batch=args.batch, max_held=args.max_held,
                        on_progress=bar.update if bar is not None else None)
        try:
            with store:
                loader.load(rooms)
                res = loader.result
        except KeyboardInterrupt:
            raise base.CommandError(
                f"roomstate: interrupted after {loader.result.new:,} new events; the same command resumes the import",
                base.EXIT_INTERRUPTED) from None
        except (SourceError, TooManyHeld) as exc:
            raise base.CommandError(f"roomstate: {exc}", base.EXIT_BAD_INPUT) from None
        finally:
            if bar is not None:
                bar.close()
    for event_id, why in res.not_stored[:_SHOWN_NOT_STORED]:
        print(f"roomstate: {event_id} not stored: {why}", file=sys.stderr)
    if len(res.not_stored) > _SHOWN_NOT_STORED:
        print(f"roomstate: ... and {len(res.not_stored) - _SHOWN_NOT_STORED:,} more not stored", file=sys.stderr)
    rate = res.events / res.seconds if res.seconds > 0 else 0.0
    merged = resolver
    print(f"imported {base._plural(res.rooms, 'room')} from {source.kind} {source.name}: "
          f"{base._plural(res.events, 'event')} ({res.new:,} new, {res.already:,} stored before; "
          f"{base._plural(res.outliers, 'outlier')}, "
          f"{res.given_state:,} with Synapse's state given) in {res.seconds:.2f} s, {rate:,.0f} events/s; "
          f"rejected: Synapse {res.synapse_rejected:,}, roomstate {res.roomstate_rejected:,}, "
          f"{res.rejections_differ:,} differ; forks merged with {merged}")
    return base.EXIT_INCOMPLETE if res.not_stored else base.EXIT_OK


def _open_store(db: str) -> Any:
    try:
        return roomstate.open(db, readonly=True)
    except roomstate.RoomStateError as exc:
        raise base._failure(exc) from None


def cmd_verify(args: argparse.Namespace) -> int:
    with _source(args.source) as source, _open_store(args.db) as store:
        rooms = _rooms(source, args.room)
        stored = set(store.rooms())
        rooms = [r for r in rooms if r in stored] if not args.room else rooms
        progress = not args.quiet and sys.stderr.isatty()
        bar = _bar(sum(source.event_count(r) for r in rooms) if progress else 0, progress, "verify")
        verifier = Verifier(source, store, on_progress=bar.update if bar is not None else None)
        try:
            for d in verifier.verify(rooms):
                line = base._dumps(d.to_json())
                if bar is not None:
                    bar.write(line, file=sys.stdout)
                else:
                    print(line)
        except SourceError as exc:
            raise base.CommandError(f"roomstate: {exc}", base.EXIT_BAD_INPUT) from None
        finally:
            if bar is not None:
                bar.close()
        print(summary_line(verifier.summary, f"{source.kind} {source.name}"), file=sys.stderr)
    return EXIT_DISAGREE if verifier.summary.disagreements else base.EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    with _source(args.source) as source, _open_store(args.db) as store:
        rooms = _rooms(source, args.room)
        stored = set(store.rooms())
        rooms = [r for r in rooms if r in stored] if not args.room else rooms
        try:
            report = build_report(source, store, rooms)
        except SourceError as exc:
            raise base.CommandError(f"roomstate: {exc}", base.EXIT_BAD_INPUT) from None
    print(json.dumps(report, indent=2) if args.json else report_text(report))
    return base.EXIT_OK
