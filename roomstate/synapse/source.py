"""Reading a Synapse database, SQLite or PostgreSQL, without ever writing to it.

SQLite is opened through a ``file:...?mode=ro`` URI: the connection cannot write, and in
WAL mode (Synapse's) a reader never blocks Synapse's writer.  PostgreSQL is read in one
``REPEATABLE READ READ ONLY`` transaction: a consistent snapshot, no locks that Synapse's
writes wait for.  Events are read in pages of ``batch`` rows by keyset pagination over
Synapse's ``(room_id, topological_ordering, stream_ordering)`` index, so memory stays
bounded whatever the room's size.

Synapse's state model, as its tables hold it: each event that is not an outlier has a
state group (``event_to_state_groups``), the state *after* the event; a group is a delta
(``state_groups_state`` rows) over its previous group (``state_group_edges``), the nearest
group's row winning per key.  The state *before* a state event puts back at its key the
event named by ``unsigned.replaces_state`` in its JSON, or drops the key when it names
none (:meth:`Source.state_before`).
"""
from __future__ import annotations

import json
import os
import sqlite3
import urllib.parse
from collections import OrderedDict
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from ..errors import RoomStateError

StateKey = Tuple[str, str]
State = Dict[StateKey, str]

#: Expanded state groups kept (an LRU): consecutive events mostly share or extend one.
GROUP_CACHE = 32


class SourceError(RoomStateError):
    """The Synapse database cannot be opened or read (what it is and why)."""


class Row:
    """One event as Synapse's tables hold it."""

    __slots__ = ("event_id", "room_id", "type", "state_key", "depth", "stream", "outlier", "json", "rejection")

    def __init__(self, event_id: str, room_id: str, type: str, state_key: Optional[str], depth: int, stream: int,
                 outlier: Any, json_text: str, rejection: Optional[str]) -> None:
        self.event_id = event_id
        self.room_id = room_id
        self.type = type
        self.state_key = state_key
        self.depth = depth
        self.stream = stream
        self.outlier = bool(outlier)
        self.json = json_text
        self.rejection = rejection

    def pdu(self) -> Dict[str, Any]:
        """The event as roomstate takes it: Synapse's JSON with the ``event_id`` of the
        ``events`` table (the JSON of room versions 3 and later has none) and its
        ``room_id`` where the JSON lacks one (except the create event of room version 12,
        which has none by the specification)."""
        try:
            ev = json.loads(self.json)
        except ValueError as exc:
            raise SourceError(f"event {self.event_id!r}: event_json.json is not JSON: {exc}") from None
        if type(ev) is not dict:
            raise SourceError(f"event {self.event_id!r}: event_json.json is not a JSON object")
        ev["event_id"] = self.event_id
        if "room_id" not in ev and not (self.type == "m.room.create" and self.state_key == ""):
            ev["room_id"] = self.room_id
        return ev

    def replaces_state(self) -> Optional[str]:
        """``unsigned.replaces_state`` of the JSON: the event this state event replaced."""
        try:
            unsigned = json.loads(self.json).get("unsigned")
        except (ValueError, AttributeError):
            return None
        value = unsigned.get("replaces_state") if isinstance(unsigned, dict) else None
        return value if isinstance(value, str) else None


_EVENT_COLUMNS = ("e.event_id, e.room_id, e.type, e.state_key, e.topological_ordering, e.stream_ordering, "
                  "e.outlier, j.json, {rejection}")


class Source:
    """A Synapse database, read-only.  Open one with :func:`open_source`."""

    kind = ""  # "sqlite" or "postgresql"
    _param = "?"

    def __init__(self, name: str) -> None:
        self.name = name
        self._groups: "OrderedDict[int, State]" = OrderedDict()
        self._event_columns = ""

    # -- the connection ----------------------------------------------------------------
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def query(self, sql: str, params: Sequence[Any] = ()) -> List[Tuple[Any, ...]]:
        try:
            return list(self._execute(sql.replace("?", self._param), params))
        except self._errors as exc:  # type: ignore[misc]
            raise SourceError(f"{self.name}: {str(exc).strip()}") from None

    def columns(self, table: str) -> List[str]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _check_schema(self) -> None:
        tables = ("events", "event_json", "event_edges", "rejections", "rooms", "state_groups",
                  "state_groups_state", "state_group_edges", "event_to_state_groups")
        missing = [t for t in tables if not self.columns(t)]
        if missing:
            raise SourceError(f"{self.name}: not a Synapse database (no table {', '.join(missing)})")
        # Synapse keeps a rejection in `rejections`, and (since 2022) in events.rejection_reason too.
        rejection = "COALESCE(e.rejection_reason, r.reason)" if "rejection_reason" in self.columns("events") else "r.reason"
        self._event_columns = _EVENT_COLUMNS.format(rejection=rejection)

    # -- rooms and events ----------------------------------------------------------------
    def rooms(self) -> List[Tuple[str, Optional[str]]]:
        """``(room_id, room_version)`` of every room with events, in room ID order."""
        return [(r, v) for r, v in self.query(
            "SELECT r.room_id, r.room_version FROM rooms r "
            "WHERE EXISTS (SELECT 1 FROM events e WHERE e.room_id = r.room_id) ORDER BY r.room_id")]

    def event_count(self, room_id: str) -> int:
        return int(self.query("SELECT COUNT(*) FROM events WHERE room_id = ?", (room_id,))[0][0])

    def events(self, room_id: str, batch: int = 1000) -> Iterator[List[Row]]:
        """The room's events in pages of ``batch``, by ``(depth, stream ordering)``: an
        order in which an event's prev events come before it (Synapse gives an event a
        depth above its prevs')."""
        after: Tuple[int, int] = (-(1 << 62), -(1 << 62))
        sql = (f"SELECT {self._event_columns} FROM events e JOIN event_json j ON j.event_id = e.event_id "
               "LEFT JOIN rejections r ON r.event_id = e.event_id "
               "WHERE e.room_id = ? AND (e.topological_ordering > ? OR (e.topological_ordering = ? AND e.stream_ordering > ?)) "
               "ORDER BY e.topological_ordering, e.stream_ordering LIMIT ?")
        while True:
            rows = [Row(*r) for r in self.query(sql, (room_id, after[0], after[0], after[1], batch))]
            if not rows:
                return
            yield rows
            after = (rows[-1].depth, rows[-1].stream)

    def event_rows(self, event_ids: Sequence[str]) -> Dict[str, Row]:
        """The rows of the events named (those Synapse holds)."""
        out: Dict[str, Row] = {}
        for chunk in _chunks(list(event_ids), 500):
            marks = ",".join("?" * len(chunk))
            for r in self.query(
                f"SELECT {self._event_columns} FROM events e JOIN event_json j ON j.event_id = e.event_id "
                f"LEFT JOIN rejections r ON r.event_id = e.event_id WHERE e.event_id IN ({marks})", chunk):
                out[r[0]] = Row(*r)
        return out

    def without_prev_state(self, room_id: str) -> List[str]:
        """Events (not outliers) with a prev event that Synapse holds only as an outlier or
        not at all: the first events after a join over federation, or after a gap.  Their
        state before is Synapse's, given to the store."""
        return [r[0] for r in self.query(
            "SELECT DISTINCT ed.event_id FROM event_edges ed JOIN events e ON e.event_id = ed.event_id "
            "LEFT JOIN events p ON p.event_id = ed.prev_event_id "
            "WHERE e.room_id = ? AND NOT e.outlier AND (p.event_id IS NULL OR p.outlier)", (room_id,))]

    # -- state groups ------------------------------------------------------------------------
    def state_groups(self, event_ids: Sequence[str]) -> Dict[str, int]:
        """``event_id -> state group`` (the state after the event) for the events that have one."""
        out: Dict[str, int] = {}
        for chunk in _chunks(list(event_ids), 500):
            marks = ",".join("?" * len(chunk))
            for eid, group in self.query(
                    f"SELECT event_id, state_group FROM event_to_state_groups WHERE event_id IN ({marks})", chunk):
                out[eid] = int(group)
        return out

    def group_state(self, group: int) -> State:
        """The whole state of a state group: its chain of deltas, the nearest winning per key.

        The returned dict is shared with the cache: copy it before changing it.
        """
        cached = self._groups.get(group)
        if cached is not None:
            self._groups.move_to_end(group)
            return cached
        chain = [int(g) for (g,) in self.query(
            "WITH RECURSIVE chain(sg, n) AS (SELECT CAST(? AS BIGINT), 0 UNION ALL "
            "SELECT e.prev_state_group, chain.n + 1 FROM state_group_edges e JOIN chain ON e.state_group = chain.sg) "
            "SELECT sg FROM chain ORDER BY n", (group,))]
        # Start from the nearest ancestor already expanded, then lay the nearer deltas on it.
        base: State = {}
        for i, g in enumerate(chain):
            hit = self._groups.get(g)
            if hit is not None:
                base, chain = dict(hit), chain[:i]
                break
        for g in reversed(chain):
            for type_, state_key, event_id in self.query(
                    "SELECT type, state_key, event_id FROM state_groups_state WHERE state_group = ?", (g,)):
                base[(type_, state_key)] = event_id
        self._groups[group] = base
        while len(self._groups) > GROUP_CACHE:
            self._groups.popitem(last=False)
        return base

    def state_before(self, row: Row, group: int) -> State:
        """Synapse's state before the event of ``row``, whose state group is ``group``.

        The group is the state after the event.  An event Synapse accepted that sets a
        key had put it there: the key goes back to ``unsigned.replaces_state`` (dropped
        when there is none).  A rejected event set nothing: its group is the state before.
        """
        after = self.group_state(group)
        if row.state_key is None or row.rejection is not None:
            return after
        key = (row.type, row.state_key)
        if after.get(key) != row.event_id:
            return after
        before = dict(after)
        replaced = row.replaces_state()
        if replaced is None:
            del before[key]
        else:
            before[key] = replaced
        return before

    def rejections(self, event_ids: Sequence[str]) -> Dict[str, str]:
        """``event_id -> Synapse's rejection reason`` for those of the events it rejected."""
        return {eid: row.rejection for eid, row in self.event_rows(event_ids).items() if row.rejection is not None}

    # -- sizes (report) ------------------------------------------------------------------
    def payload_by_room(self, table: str) -> Dict[str, Tuple[int, int]]:
        """``room_id -> (rows, bytes of the rows' values)`` of one of the state tables."""
        size = self._row_size
        sql = {
            "state_groups_state": f"SELECT room_id, COUNT(*), SUM({size('t', ('state_group', 'room_id', 'type', 'state_key', 'event_id'))}) "
                                  "FROM state_groups_state t GROUP BY room_id",
            "state_groups": f"SELECT room_id, COUNT(*), SUM({size('t', ('id', 'room_id', 'event_id'))}) "
                            "FROM state_groups t GROUP BY room_id",
            "state_group_edges": f"SELECT g.room_id, COUNT(*), SUM({size('t', ('state_group', 'prev_state_group'))}) "
                                 "FROM state_group_edges t JOIN state_groups g ON g.id = t.state_group GROUP BY g.room_id",
            "event_to_state_groups": f"SELECT e.room_id, COUNT(*), SUM({size('t', ('event_id', 'state_group'))}) "
                                     "FROM event_to_state_groups t JOIN events e ON e.event_id = t.event_id GROUP BY e.room_id",
        }[table]
        return {room: (int(n), int(b or 0)) for room, n, b in self.query(sql)}

    def table_bytes(self, table: str) -> Optional[int]:
        """Bytes on disk of a table with its indexes, or None when the database cannot say."""
        raise NotImplementedError

    #: How :meth:`table_bytes` measures (for the report).
    size_method = ""

    def _row_size(self, alias: str, columns: Sequence[str]) -> str:
        raise NotImplementedError


def _chunks(items: List[Any], n: int) -> Iterator[List[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


class SqliteSource(Source):
    kind = "sqlite"
    _errors = (sqlite3.Error,)

    def __init__(self, path: str) -> None:
        super().__init__(path)
        if not os.path.isfile(path):
            raise SourceError(f"{path}: {'not a file' if os.path.exists(path) else 'no such file'}")
        uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
        try:
            self._conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            wal = self._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            if wal:
                # One read transaction: a consistent snapshot, which in WAL mode blocks no writer.
                # (In the other journal modes a long read would hold Synapse's writes back:
                # each query there is its own short transaction.)
                self._conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise SourceError(f"{path}: cannot open as SQLite: {exc}") from None
        self._check_schema()
        self._dbstat: Optional[bool] = None

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql, tuple(params))

    def columns(self, table: str) -> List[str]:
        return [r[1] for r in self.query(f"PRAGMA table_info({table})")]

    def close(self) -> None:
        self._conn.close()

    def _has_dbstat(self) -> bool:
        if self._dbstat is None:
            try:
                self._conn.execute("SELECT 1 FROM dbstat LIMIT 1").fetchall()
                self._dbstat = True
            except sqlite3.Error:
                self._dbstat = False
        return self._dbstat

    @property
    def size_method(self) -> str:  # type: ignore[override]
        if self._has_dbstat():
            return "SQLite dbstat: the pages of each table and its indexes, split between rooms by their rows' bytes"
        return "estimated from row sizes (the bytes of the values; no page, index or record overhead)"

    def table_bytes(self, table: str) -> Optional[int]:
        if not self._has_dbstat():
            return None
        names = [table] + [n for (n,) in self.query(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?", (table,))]
        total = 0
        for name in names:
            (n,), = self.query("SELECT COALESCE(SUM(pgsize), 0) FROM dbstat WHERE name = ?", (name,))
            total += int(n)
        return total

    def _row_size(self, alias: str, columns: Sequence[str]) -> str:
        # Integers as SQLite stores them take up to 8 bytes; text its UTF-8 bytes.
        parts = [f"(CASE WHEN typeof({alias}.{c}) = 'integer' THEN 8 ELSE length(CAST({alias}.{c} AS BLOB)) END)"
                 for c in columns]
        return " + ".join(parts)


class PostgresSource(Source):
    kind = "postgresql"
    _param = "%s"
    size_method = ("PostgreSQL pg_total_relation_size (table, indexes and TOAST), split between rooms by "
                   "pg_column_size of their rows")

    def __init__(self, url: str) -> None:
        super().__init__(_without_password(url))
        try:
            import psycopg
        except ImportError:
            raise SourceError("reading PostgreSQL needs psycopg 3: pip install 'roomstate[postgres]'") from None
        self._errors = (psycopg.Error,)
        try:
            self._conn = psycopg.connect(url, autocommit=False)
            self._conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            self._conn.read_only = True
        except psycopg.Error as exc:
            raise SourceError(f"{self.name}: cannot connect: {str(exc).strip()}") from None
        self._check_schema()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(sql, tuple(params)).fetchall()  # type: ignore[arg-type]

    def columns(self, table: str) -> List[str]:
        return [r[0] for r in self.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? AND table_schema = current_schema() "
            "ORDER BY ordinal_position", (table,))]

    def close(self) -> None:
        try:
            self._conn.rollback()  # a read-only transaction: nothing to commit
        finally:
            self._conn.close()

    def table_bytes(self, table: str) -> Optional[int]:
        (n,), = self.query("SELECT pg_total_relation_size(CAST(? AS regclass))", (table,))
        return int(n)

    def _row_size(self, alias: str, columns: Sequence[str]) -> str:
        return f"pg_column_size({alias}.*)"


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def is_postgres(spec: str) -> bool:
    return spec.startswith(("postgresql://", "postgres://"))


def open_source(spec: str) -> Source:
    """A Synapse database: a ``postgresql://`` URL, or the path of a SQLite file."""
    if is_postgres(spec):
        return PostgresSource(spec)
    return SqliteSource(spec)


__all__ = ["Row", "Source", "SourceError", "State", "is_postgres", "open_source"]
