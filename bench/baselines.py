"""The state-storage designs of Synapse and Dendrite, over SQLite, for side-by-side benchmarks.

Both classes store a room history the way the homeserver does (its tables, its rules for
when a delta is written and when the full state is copied) and compute state with plain
Python dicts. They take the same event dicts as ``roomstate`` and answer the same
questions, so a benchmark can drive all three identically:

    with SynapseDesign(tmp_path / "synapse.db") as db:
        db.add_events(events)                    # one transaction
        db.state_after(event_id)                 # {(type, state_key): event_id}
        db.state_before(event_id)
        db.get_state(event_id, "m.room.member", "@u1:example.org")
        db.disk_bytes(), db.state_bytes(), db.table_bytes()

Merges (several prev_events) resolve with roomstate's ``newest_event`` rule: per key
whose entry differs between the prev states (a key missing from some counts), the
candidate with the largest (depth, event_id). The rule never drops a key, so the result
is the union of the prev states with those keys resolved. Rejected events are stored but
do not change the state. Unknown events (or prevs) raise ``KeyError``.

No application-level caches: Synapse's state-group DictionaryCaches and Dendrite's NID
caches are left out so that the storage designs are compared, not cache sizes; SQLite's
page cache is the only cache (the "warm" case). See ``bench/README.md`` for the
constants and the source files they come from.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from array import array
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import (
    Any,
    TypeVar,
)

__all__ = [
    "MAX_STATE_BLOCK_NIDS",
    "MAX_STATE_DELTA_HOPS",
    "DendriteDesign",
    "SynapseDesign",
    "resolve_newest",
]

# synapse/storage/databases/state/store.py (and bg_updates.py): a new state group is a
# delta against its predecessor only while the predecessor's chain counts fewer groups.
MAX_STATE_DELTA_HOPS = 100
# dendrite roomserver/state/state.go `maxStateBlockNIDs`: a snapshot gains one-entry
# blocks while it has fewer than this many blocks, then the full state is copied.
MAX_STATE_BLOCK_NIDS = 64

StateKey = tuple[str, str]
StateMap = dict[StateKey, str]
Event = Mapping[str, Any]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=Hashable)

_INT64 = "q"
assert array(_INT64).itemsize == 8


def _prev_ids(event: Event) -> list[str]:
    """prev_events as IDs; room versions 1-2 give [event_id, hashes] pairs."""
    return [p if isinstance(p, str) else p[0] for p in event.get("prev_events") or ()]


def resolve_newest(
    states: Sequence[Mapping[K, V]],
    rank: Callable[[Iterable[V]], Mapping[V, Any]],
) -> dict[K, V]:
    """Merge the states after several prev events with the ``newest_event`` rule.

    ``rank(candidates)`` returns a sort key per candidate, (depth, event_id); the
    largest wins each conflicted key. Keys agreeing (present with the same value) in all
    states, or present in only some of them with one value, keep that value.
    """
    if not states:
        return {}
    merged = dict(states[0])
    candidates: dict[K, set] = {}
    for state in states[1:]:
        # items-view difference runs in C: only the differing entries reach Python.
        for key, value in state.items() - merged.items():
            current = merged.get(key)
            if current is None:
                merged[key] = value
            elif key in candidates:
                candidates[key].add(value)
            else:
                candidates[key] = {current, value}
    if candidates:
        ranks = rank(set().union(*candidates.values()))
        for key, values in candidates.items():
            merged[key] = max(values, key=ranks.__getitem__)
    return merged


class _SQLiteDesign:
    """One SQLite file, transactions and size accounting shared by both designs."""

    SCHEMA = ""
    STATE_TABLES: tuple[str, ...] = ()

    def __init__(self, path: os.PathLike[str] | str, *, synchronous: str = "NORMAL"):
        self.path = os.fspath(path)
        self._db = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.executescript(self.SCHEMA)
            self._load_counters()
        except BaseException:
            self._db.close()
            raise

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _load_counters(self) -> None:
        """Reload in-memory counters and caches from the database (after a rollback)."""

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            self._load_counters()
            raise
        self._db.execute("COMMIT")

    # -- writes --------------------------------------------------------------------------

    def add_event(self, event: Event) -> None:
        """Store one event and the state before (and after) it, in one transaction."""
        with self._transaction():
            self._add(event)

    def add_events(self, events: Iterable[Event]) -> int:
        """Store events in topological order in one transaction; returns the count."""
        count = 0
        with self._transaction():
            for event in events:
                self._add(event)
                count += 1
        return count

    def _add(self, event: Event) -> None:
        raise NotImplementedError

    # -- sizes ---------------------------------------------------------------------------

    def disk_bytes(self) -> int:
        """Size of the database file after a WAL checkpoint (page_count * page_size)."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (pages,) = self._db.execute("PRAGMA page_count").fetchone()
        (page_size,) = self._db.execute("PRAGMA page_size").fetchone()
        return pages * page_size

    def table_bytes(self) -> dict[str, int]:
        """Bytes of the pages of each table, its indexes included (SQLite's dbstat)."""
        rows = self._db.execute(
            "SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize)"
            " FROM dbstat AS d LEFT JOIN sqlite_master AS m ON m.name = d.name"
            " GROUP BY 1"
        )
        return {name: size for name, size in rows}

    def state_bytes(self) -> int:
        """Bytes of the state tables and their indexes (see ``STATE_TABLES``)."""
        sizes = self.table_bytes()
        return sum(sizes.get(name, 0) for name in self.STATE_TABLES)


class SynapseDesign(_SQLiteDesign):
    """Synapse's state groups: delta chains of at most ``MAX_STATE_DELTA_HOPS``.

    - A state event makes a new group holding a one-row delta against the group before
      it; once the chain below that group counts ``MAX_STATE_DELTA_HOPS`` groups, the
      full state is written instead (no edge).
    - Non-state and rejected events reuse the group before them.
    - A merge whose prevs sit in different groups resolves their full states; it reuses
      an input group whose state equals the result, else stores a delta against the
      input group with the smallest delta among those whose keys the result keeps,
      else (or past the hop limit) a full copy.
    - Reads walk ``state_group_edges`` with a recursive CTE, as Synapse does on
      PostgreSQL, and overlay the rows, newest group winning.

    ``state_group_before`` in ``events`` is a shortcut Synapse lacks (it re-resolves
    the prevs' groups, through its caches); it costs no state-table bytes.
    """

    # Tables and indexes as synapse/storage/schema/state/full_schemas/72/full.sql.sqlite
    # (event_to_state_groups from the main schema); `events` is this baseline's own.
    SCHEMA = """
        CREATE TABLE IF NOT EXISTS events (
            event_id TEXT NOT NULL UNIQUE,
            room_id TEXT NOT NULL,
            type TEXT NOT NULL,
            state_key TEXT,
            depth BIGINT NOT NULL,
            rejected BOOLEAN NOT NULL,
            state_group_before BIGINT NOT NULL
        );
        CREATE TABLE IF NOT EXISTS event_to_state_groups (
            event_id TEXT NOT NULL,
            state_group BIGINT NOT NULL,
            UNIQUE (event_id)
        );
        CREATE TABLE IF NOT EXISTS state_groups (
            id BIGINT PRIMARY KEY,
            room_id TEXT NOT NULL,
            event_id TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS state_groups_room_id_idx ON state_groups (room_id);
        CREATE TABLE IF NOT EXISTS state_groups_state (
            state_group BIGINT NOT NULL,
            room_id TEXT NOT NULL,
            type TEXT NOT NULL,
            state_key TEXT NOT NULL,
            event_id TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS state_groups_state_type_idx
            ON state_groups_state (state_group, type, state_key);
        CREATE TABLE IF NOT EXISTS state_group_edges (
            state_group BIGINT NOT NULL,
            prev_state_group BIGINT NOT NULL
        );
        CREATE UNIQUE INDEX IF NOT EXISTS state_group_edges_unique_idx
            ON state_group_edges (state_group, prev_state_group);
        CREATE INDEX IF NOT EXISTS state_group_edges_prev_idx
            ON state_group_edges (prev_state_group);
    """
    STATE_TABLES = (
        "state_groups",
        "state_groups_state",
        "state_group_edges",
        "event_to_state_groups",
    )

    _CHAIN = (
        "WITH RECURSIVE chain(state_group, hop) AS ("
        " VALUES (?, 0)"
        " UNION ALL"
        " SELECT e.prev_state_group, c.hop + 1"
        " FROM state_group_edges AS e JOIN chain AS c ON e.state_group = c.state_group"
        ")"
    )
    _SQL_HOPS = _CHAIN + " SELECT count(*) FROM chain"
    _SQL_GROUP_STATE = (
        _CHAIN + " SELECT s.type, s.state_key, s.event_id"
        " FROM chain AS c JOIN state_groups_state AS s ON s.state_group = c.state_group"
        " ORDER BY c.hop DESC"
    )
    _SQL_GROUP_KEY = (
        _CHAIN + " SELECT s.event_id"
        " FROM chain AS c JOIN state_groups_state AS s ON s.state_group = c.state_group"
        " WHERE s.type = ? AND s.state_key = ?"
        " ORDER BY c.hop LIMIT 1"
    )

    def _load_counters(self) -> None:
        (last,) = self._db.execute("SELECT coalesce(max(id), 0) FROM state_groups").fetchone()
        self._next_group = last + 1

    # -- writes --------------------------------------------------------------------------

    def _add(self, event: Event) -> None:
        db = self._db
        event_id = event["event_id"]
        if db.execute("SELECT 1 FROM events WHERE event_id = ?", (event_id,)).fetchone():
            return
        room_id = event["room_id"]
        groups: list[int] = []
        max_depth = 0
        for prev in _prev_ids(event):
            row = db.execute(
                "SELECT e.depth, g.state_group FROM events AS e"
                " JOIN event_to_state_groups AS g USING (event_id) WHERE e.event_id = ?",
                (prev,),
            ).fetchone()
            if row is None:
                raise KeyError(prev)
            max_depth = max(max_depth, row[0])
            groups.append(row[1])
        depth = event.get("depth") or max_depth + 1
        groups = list(dict.fromkeys(groups))

        if not groups:
            before = self._store_group(event_id, room_id, None, {}, {})
        elif len(groups) == 1:
            before = groups[0]
        else:
            before = self._store_merge(event_id, room_id, groups)

        state_key = event.get("state_key")
        rejected = bool(event.get("rejected"))
        if state_key is not None and not rejected:
            delta = {(event["type"], state_key): event_id}
            after = self._store_group(event_id, room_id, before, delta, None)
        else:
            after = before
        db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
            (event_id, room_id, event["type"], state_key, depth, rejected, before),
        )
        db.execute("INSERT INTO event_to_state_groups VALUES (?, ?)", (event_id, after))

    def _store_merge(self, event_id: str, room_id: str, groups: list[int]) -> int:
        states = {group: self._group_state(group) for group in groups}
        merged = resolve_newest(list(states.values()), self._ranks)
        for group, state in states.items():
            if state == merged:
                return group
        prev_group: int | None = None
        delta: StateMap | None = None
        for group, state in states.items():
            if state.keys() - merged.keys():
                continue  # Synapse stores no deltas that remove keys
            candidate = dict(merged.items() - state.items())
            if delta is None or len(candidate) < len(delta):
                prev_group, delta = group, candidate
        return self._store_group(event_id, room_id, prev_group, delta, merged)

    def _store_group(
        self,
        event_id: str,
        room_id: str,
        prev_group: int | None,
        delta: StateMap | None,
        full: StateMap | None,
    ) -> int:
        """Synapse's store_state_group: a delta while the chain allows, else full state."""
        db = self._db
        group = self._next_group
        self._next_group += 1
        db.execute("INSERT INTO state_groups VALUES (?, ?, ?)", (group, room_id, event_id))
        hops = MAX_STATE_DELTA_HOPS
        if prev_group is not None:
            # counts prev_group itself, like Synapse's recursive CTE on PostgreSQL
            (hops,) = db.execute(self._SQL_HOPS, (prev_group,)).fetchone()
        if hops < MAX_STATE_DELTA_HOPS:
            assert delta is not None
            db.execute("INSERT INTO state_group_edges VALUES (?, ?)", (group, prev_group))
            rows = delta
        else:
            if full is None:
                full = self._group_state(prev_group) if prev_group is not None else {}
                full.update(delta or {})
            rows = full
        db.executemany(
            "INSERT INTO state_groups_state VALUES (?, ?, ?, ?, ?)",
            [(group, room_id, etype, skey, eid) for (etype, skey), eid in rows.items()],
        )
        return group

    def _ranks(self, event_ids: Iterable[str]) -> dict[str, tuple[int, str]]:
        ids = list(event_ids)
        rows = self._db.execute(
            "SELECT event_id, depth FROM events WHERE event_id IN"
            " (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        )
        return {eid: (depth, eid) for eid, depth in rows}

    # -- reads ---------------------------------------------------------------------------

    def _group_state(self, group: int) -> StateMap:
        rows = self._db.execute(self._SQL_GROUP_STATE, (group,))
        return {(etype, skey): eid for etype, skey, eid in rows}

    def _group_of(self, event_id: str, after: bool) -> int:
        if after:
            sql = "SELECT state_group FROM event_to_state_groups WHERE event_id = ?"
        else:
            sql = "SELECT state_group_before FROM events WHERE event_id = ?"
        row = self._db.execute(sql, (event_id,)).fetchone()
        if row is None:
            raise KeyError(event_id)
        return row[0]

    def state_after(self, event_id: str) -> StateMap:
        return self._group_state(self._group_of(event_id, True))

    def state_before(self, event_id: str) -> StateMap:
        return self._group_state(self._group_of(event_id, False))

    def get_state(
        self, event_id: str, type: str, state_key: str, *, after: bool = False
    ) -> str | None:
        group = self._group_of(event_id, after)
        row = self._db.execute(self._SQL_GROUP_KEY, (group, type, state_key)).fetchone()
        return row[0] if row else None


class DendriteDesign(_SQLiteDesign):
    """Dendrite's roomserver after its 2021 state-blocks refactor.

    - Strings become numeric IDs (rooms, event types, state keys, events), with the
      well-known types and the empty state key preassigned.
    - ``roomserver_state_block`` rows hold the sorted event NIDs of a block (packed
      int64) and ``roomserver_state_snapshots`` rows the block NIDs of a snapshot, both
      deduplicated by a BLAKE2b-256 hash. Each event row records the snapshot of the
      state before it.
    - An event after a single prev shares the prev's snapshot if that prev is not a
      state event (or was rejected); after a state event it gets the prev's blocks plus
      a one-entry block while those are fewer than ``MAX_STATE_BLOCK_NIDS``; otherwise,
      and at every merge, the full state is written as one block.
    - Reads fetch the snapshot, then one query per block to turn event NIDs into
      (type, state key, event) entries; later blocks override earlier ones.
    """

    # roomserver/storage/sqlite3/*_table.go, blobs of int64 in place of JSON text arrays
    # (as PostgreSQL's bigint[]); columns the state design does not use are left out.
    SCHEMA = """
        CREATE TABLE IF NOT EXISTS roomserver_rooms (
            room_nid INTEGER PRIMARY KEY AUTOINCREMENT,
            room_id TEXT NOT NULL UNIQUE
        );
        CREATE TABLE IF NOT EXISTS roomserver_event_types (
            event_type_nid INTEGER PRIMARY KEY AUTOINCREMENT,
            event_type TEXT NOT NULL UNIQUE
        );
        INSERT OR IGNORE INTO roomserver_event_types (event_type_nid, event_type) VALUES
            (1, 'm.room.create'), (2, 'm.room.power_levels'), (3, 'm.room.join_rules'),
            (4, 'm.room.third_party_invite'), (5, 'm.room.member'),
            (6, 'm.room.redaction'), (7, 'm.room.history_visibility');
        CREATE TABLE IF NOT EXISTS roomserver_event_state_keys (
            event_state_key_nid INTEGER PRIMARY KEY AUTOINCREMENT,
            event_state_key TEXT NOT NULL UNIQUE
        );
        INSERT OR IGNORE INTO roomserver_event_state_keys VALUES (1, '');
        CREATE TABLE IF NOT EXISTS roomserver_events (
            event_nid INTEGER PRIMARY KEY AUTOINCREMENT,
            room_nid INTEGER NOT NULL,
            event_type_nid INTEGER NOT NULL,
            event_state_key_nid INTEGER NOT NULL,
            state_snapshot_nid INTEGER NOT NULL DEFAULT 0,
            depth INTEGER NOT NULL,
            event_id TEXT NOT NULL UNIQUE,
            is_rejected BOOLEAN NOT NULL DEFAULT FALSE
        );
        CREATE TABLE IF NOT EXISTS roomserver_state_block (
            state_block_nid INTEGER PRIMARY KEY AUTOINCREMENT,
            state_block_hash BLOB UNIQUE,
            event_nids BLOB NOT NULL
        );
        CREATE TABLE IF NOT EXISTS roomserver_state_snapshots (
            state_snapshot_nid INTEGER PRIMARY KEY AUTOINCREMENT,
            state_snapshot_hash BLOB UNIQUE,
            room_nid INTEGER NOT NULL,
            state_block_nids BLOB NOT NULL
        );
    """
    STATE_TABLES = ("roomserver_state_block", "roomserver_state_snapshots")

    _SQL_BLOCK_ENTRIES = (
        "SELECT e.event_type_nid, e.event_state_key_nid, e.event_nid"
        " FROM json_each(?) AS j JOIN roomserver_events AS e ON e.event_nid = j.value"
    )
    _SQL_BLOCK_STRINGS = (
        "SELECT t.event_type, k.event_state_key, e.event_id"
        " FROM json_each(?) AS j"
        " JOIN roomserver_events AS e ON e.event_nid = j.value"
        " JOIN roomserver_event_types AS t ON t.event_type_nid = e.event_type_nid"
        " JOIN roomserver_event_state_keys AS k"
        "   ON k.event_state_key_nid = e.event_state_key_nid"
    )
    _SQL_BLOCK_KEY = (
        "SELECT e.event_id FROM json_each(?) AS j"
        " JOIN roomserver_events AS e ON e.event_nid = j.value"
        " WHERE e.event_type_nid = ? AND e.event_state_key_nid = ?"
    )
    _SQL_EVENT = (
        "SELECT event_nid, room_nid, event_type_nid, event_state_key_nid,"
        " state_snapshot_nid, depth, is_rejected FROM roomserver_events WHERE event_id = ?"
    )

    def _load_counters(self) -> None:
        # string -> NID, as Dendrite's in-process caches; dropped on rollback
        self._nids: dict[str, dict[str, int]] = {
            "roomserver_rooms": {},
            "roomserver_event_types": {},
            "roomserver_event_state_keys": {},
        }

    def _nid(self, table: str, column: str, value: str) -> int:
        cache = self._nids[table]
        nid = cache.get(value)
        if nid is None:
            nid_column = {
                "roomserver_rooms": "room_nid",
                "roomserver_event_types": "event_type_nid",
                "roomserver_event_state_keys": "event_state_key_nid",
            }[table]
            row = self._db.execute(
                f"SELECT {nid_column} FROM {table} WHERE {column} = ?", (value,)
            ).fetchone()
            if row is None:
                row = self._db.execute(
                    f"INSERT INTO {table} ({column}) VALUES (?) RETURNING {nid_column}",
                    (value,),
                ).fetchone()
            nid = cache[value] = row[0]
        return nid

    def _lookup_nid(self, table: str, column: str, value: str) -> int | None:
        """The NID of a string if it has one; never assigns."""
        nid = self._nids[table].get(value)
        if nid is None:
            nid_column = {
                "roomserver_event_types": "event_type_nid",
                "roomserver_event_state_keys": "event_state_key_nid",
            }[table]
            row = self._db.execute(
                f"SELECT {nid_column} FROM {table} WHERE {column} = ?", (value,)
            ).fetchone()
            nid = row[0] if row else None
        return nid

    # -- writes --------------------------------------------------------------------------

    def _add(self, event: Event) -> None:
        db = self._db
        event_id = event["event_id"]
        if db.execute("SELECT 1 FROM roomserver_events WHERE event_id = ?", (event_id,)).fetchone():
            return
        prevs = []
        for prev in _prev_ids(event):
            row = db.execute(self._SQL_EVENT, (prev,)).fetchone()
            if row is None:
                raise KeyError(prev)
            prevs.append(row)
        room_nid = self._nid("roomserver_rooms", "room_id", event["room_id"])
        type_nid = self._nid("roomserver_event_types", "event_type", event["type"])
        state_key = event.get("state_key")
        key_nid = (
            0
            if state_key is None
            else self._nid("roomserver_event_state_keys", "event_state_key", state_key)
        )
        depth = event.get("depth") or 1 + max((p[5] for p in prevs), default=0)
        snapshot = self._snapshot_after(room_nid, prevs)
        db.execute(
            "INSERT INTO roomserver_events (room_nid, event_type_nid, event_state_key_nid,"
            " state_snapshot_nid, depth, event_id, is_rejected) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (room_nid, type_nid, key_nid, snapshot, depth, event_id, bool(event.get("rejected"))),
        )

    def _snapshot_after(self, room_nid: int, prevs: list[tuple[Any, ...]]) -> int:
        """Dendrite's CalculateAndStoreStateAfterEvents over (event_nid, room_nid,
        type_nid, key_nid, snapshot_nid, depth, rejected) rows of the prev events."""
        if not prevs:
            return self._add_state(room_nid, [], [])
        if len(prevs) == 1:
            event_nid, _, _, key_nid, snapshot, _, rejected = prevs[0]
            if key_nid == 0 or rejected:
                return snapshot
            blocks = self._snapshot_blocks(snapshot)
            if len(blocks) < MAX_STATE_BLOCK_NIDS:
                return self._add_state(room_nid, blocks, [event_nid])
        states = [self._nid_state_after(p) for p in prevs]
        merged = resolve_newest(states, self._ranks)
        return self._add_state(room_nid, [], list(merged.values()))

    def _add_state(self, room_nid: int, blocks: Sequence[int], event_nids: list[int]) -> int:
        """Dendrite's AddState: the entries (if any) become one more block."""
        db = self._db
        block_nids = array(_INT64, blocks)
        if event_nids:
            packed = array(_INT64, sorted(set(event_nids))).tobytes()
            digest = hashlib.blake2b(packed, digest_size=32).digest()
            row = db.execute(
                "SELECT state_block_nid FROM roomserver_state_block WHERE state_block_hash = ?",
                (digest,),
            ).fetchone()
            if row is None:
                row = db.execute(
                    "INSERT INTO roomserver_state_block (state_block_hash, event_nids)"
                    " VALUES (?, ?) RETURNING state_block_nid",
                    (digest, packed),
                ).fetchone()
            block_nids.append(row[0])
        packed = block_nids.tobytes()
        digest = hashlib.blake2b(packed, digest_size=32).digest()
        row = db.execute(
            "SELECT state_snapshot_nid FROM roomserver_state_snapshots"
            " WHERE state_snapshot_hash = ?",
            (digest,),
        ).fetchone()
        if row is None:
            row = db.execute(
                "INSERT INTO roomserver_state_snapshots"
                " (state_snapshot_hash, room_nid, state_block_nids)"
                " VALUES (?, ?, ?) RETURNING state_snapshot_nid",
                (digest, room_nid, packed),
            ).fetchone()
        return row[0]

    def _ranks(self, event_nids: Iterable[int]) -> dict[int, tuple[int, str]]:
        rows = self._db.execute(
            "SELECT event_nid, depth, event_id FROM roomserver_events"
            " WHERE event_nid IN (SELECT value FROM json_each(?))",
            (json.dumps(list(event_nids)),),
        )
        return {nid: (depth, eid) for nid, depth, eid in rows}

    # -- reads ---------------------------------------------------------------------------

    def _snapshot_blocks(self, snapshot: int) -> array:
        row = self._db.execute(
            "SELECT state_block_nids FROM roomserver_state_snapshots"
            " WHERE state_snapshot_nid = ?",
            (snapshot,),
        ).fetchone()
        blocks = array(_INT64)
        blocks.frombytes(row[0])
        return blocks

    def _block_nids_json(self, block: int) -> str:
        (packed,) = self._db.execute(
            "SELECT event_nids FROM roomserver_state_block WHERE state_block_nid = ?",
            (block,),
        ).fetchone()
        nids = array(_INT64)
        nids.frombytes(packed)
        return json.dumps(nids.tolist())

    def _nid_state(self, snapshot: int) -> dict[tuple[int, int], int]:
        state: dict[tuple[int, int], int] = {}
        for block in self._snapshot_blocks(snapshot):
            rows = self._db.execute(self._SQL_BLOCK_ENTRIES, (self._block_nids_json(block),))
            state.update(((t, k), e) for t, k, e in rows)
        return state

    def _nid_state_after(self, prev: tuple[Any, ...]) -> dict[tuple[int, int], int]:
        event_nid, _, type_nid, key_nid, snapshot, _, rejected = prev
        state = self._nid_state(snapshot)
        if key_nid and not rejected:
            state[(type_nid, key_nid)] = event_nid
        return state

    def _event_row(self, event_id: str) -> tuple[Any, ...]:
        row = self._db.execute(
            "SELECT e.state_snapshot_nid, e.is_rejected, e.event_state_key_nid,"
            " t.event_type, k.event_state_key"
            " FROM roomserver_events AS e"
            " JOIN roomserver_event_types AS t ON t.event_type_nid = e.event_type_nid"
            " LEFT JOIN roomserver_event_state_keys AS k"
            "   ON k.event_state_key_nid = e.event_state_key_nid"
            " WHERE e.event_id = ?",
            (event_id,),
        ).fetchone()
        if row is None:
            raise KeyError(event_id)
        return row

    def _string_state(self, snapshot: int) -> StateMap:
        state: StateMap = {}
        for block in self._snapshot_blocks(snapshot):
            rows = self._db.execute(self._SQL_BLOCK_STRINGS, (self._block_nids_json(block),))
            state.update(((t, k), e) for t, k, e in rows)
        return state

    def state_before(self, event_id: str) -> StateMap:
        return self._string_state(self._event_row(event_id)[0])

    def state_after(self, event_id: str) -> StateMap:
        snapshot, rejected, key_nid, etype, state_key = self._event_row(event_id)
        state = self._string_state(snapshot)
        if key_nid and not rejected:
            state[(etype, state_key)] = event_id
        return state

    def get_state(
        self, event_id: str, type: str, state_key: str, *, after: bool = False
    ) -> str | None:
        snapshot, rejected, key_nid, etype, skey = self._event_row(event_id)
        if after and key_nid and not rejected and (etype, skey) == (type, state_key):
            return event_id
        type_nid = self._lookup_nid("roomserver_event_types", "event_type", type)
        key = self._lookup_nid("roomserver_event_state_keys", "event_state_key", state_key)
        if type_nid is None or key is None:
            return None
        found = None
        for block in self._snapshot_blocks(snapshot):
            row = self._db.execute(
                self._SQL_BLOCK_KEY, (self._block_nids_json(block), type_nid, key)
            ).fetchone()
            if row is not None:
                found = row[0]
        return found
