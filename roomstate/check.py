"""``roomstate check``: an integrity check of a store, as ``PRAGMA integrity_check`` is for SQLite.

It walks every table, decodes every record and verifies the invariants the readers rely
on, reporting each problem with its table and key:

* every value of a table that has checksums (format 3: ``format.CHECKED_TABLES``) has
  the right one;
* ``meta``: 8-byte values, a format version this code reads, NID counters above every
  NID stored, event counts that match the records;
* the string tables (``ids``, ``names_*``): UTF-8 strings, each mapped both ways;
* ``events`` and ``event_ids``: every record decodes, its strings, prevs, auth events and
  snapshots are stored, and its event ID leads back to it;
* ``blocks`` and ``block_hashes``, ``snapshots`` and ``snapshot_hashes``: blocks whole,
  sorted and unique, digests right, every snapshot's chain acyclic and bounded down to
  its base, its deltas sorted, its base's blocks stored with the sizes it gives;
* ``rooms`` and ``flags``: extremities are stored events of their room with no children,
  mark chunks whole.

LMDB trusts its pages: a damaged B-tree page may crash the process that reads it.  So
:func:`check` reads in a child process (``python -m roomstate.check PATH``), and a child
that dies is a problem in the report, not a crash of the caller.
"""
import hashlib
import json
import signal
import subprocess
import sys

#: At most this many problems are reported (a store damaged all over says so soon enough).
MAX_PROBLEMS = 1000


class Problems:
    def __init__(self, limit=MAX_PROBLEMS):
        self.items = []  # a list: small (MAX_PROBLEMS), and kept in the order found
        self.limit = limit
        self.more = 0

    def add(self, table, key, problem):
        if isinstance(key, (bytes, bytearray, memoryview)):
            key = bytes(key).decode("ascii", "backslashreplace")
        item = {"table": table, "key": key, "problem": problem}
        if item in self.items:  # found again through another record
            return
        if len(self.items) < self.limit:
            self.items.append(item)
        else:
            self.more += 1


def _walk(path, out):
    """Check the store at ``path``, adding to ``out`` (:class:`Problems`); what was checked."""
    import roomstate
    from .blocks import decode_block
    from .checksum import unseal, unseal_short
    from .damage import PREFIX, meta_u64
    from .events import CHUNK, HAS_CHILD, decode_record
    from .format import CHECKSUM_BYTES, META_COUNT_EVENTS, META_COUNT_STATE, META_FORMAT, READS
    from .ids import ROOM, STATE_KEY, TYPE, decode, string_key
    from ._records import IS_STATE, OUTLIER, PLACEHOLDER
    from .rooms import decode_extremities

    def problem(table, key, exc):
        """A damaged() error names its own table and key: where the damage is, which may
        be another record than the one being checked (a snapshot's parent, say)."""
        if getattr(exc, "table", None) is not None:
            out.add(exc.table, exc.key, exc.reason)
        else:
            text = str(exc)
            out.add(table, key, text[len(PREFIX):] if text.startswith(PREFIX) else text)

    try:
        store = roomstate.open(path, readonly=True)
    except roomstate.RoomStateError as exc:
        out.add(None, None, str(exc))
        return {}
    checked = {}
    with store, store._tx.reading() as tx:
        t = store._tables
        txn = tx.txn
        handles = store.backend.tables
        sums = t.checksums  # format 3: every value of CHECKED_TABLES ends with its checksum

        def body(table, nid, key, value):
            """A value without its checksum; None (a problem added) when the checksum is wrong."""
            if not sums:
                return value
            try:
                return bytes((unseal_short if table == "flags" else unseal)(table, nid, key, value))
            except roomstate.RoomStateError as exc:
                problem(table, nid, exc)
                return None

        def rows(table):
            try:
                with txn.cursor(db=handles[table]) as cur:
                    for key, value in cur:
                        yield bytes(key), bytes(value)
            except Exception as exc:  # noqa: BLE001 - an LMDB page error: reported
                out.add(table, None, f"the table cannot be read to its end: {type(exc).__name__}: {exc}")

        def nid_of(table, key):
            if len(key) != 8:
                out.add(table, key, "a NID key is 8 bytes")
                return None
            return int.from_bytes(key, "big")

        # meta
        meta = {}
        for key, value in rows("meta"):
            if key == META_FORMAT or not sums:
                if len(value) != 8:
                    out.add("meta", key, f"a meta value is 8 bytes, this one {len(value)}")
                    continue
            elif len(value) != 8 + CHECKSUM_BYTES:
                out.add("meta", key, f"a meta value is 8 bytes and a 4-byte checksum, this one {len(value)} bytes")
                continue
            try:
                meta[key] = meta_u64(key, value)
            except roomstate.RoomStateError as exc:
                problem("meta", key, exc)
        if meta.get(META_FORMAT) not in READS:
            out.add("meta", META_FORMAT, f"format version {meta.get(META_FORMAT)} is not one this roomstate reads")

        def counter(kind):
            return meta.get(b"next:" + kind, 1)

        def keyed(table, kind=None):
            """``(nid, value)`` of a table keyed by NIDs, each NID below its counter."""
            for key, value in rows(table):
                nid = nid_of(table, key)
                if nid is None:
                    continue
                if kind is not None and nid >= counter(kind):
                    out.add(table, nid, f"the NID is not below the counter next:{kind.decode()} ({counter(kind)})")
                yield nid, value

        # strings, both ways
        kinds = {ROOM: "names_r", TYPE: "names_t", STATE_KEY: "names_k"}
        strings = {}
        for kind, table in kinds.items():
            names = strings[kind] = {}
            for nid, value in keyed(table, kind):
                value = body(table, nid, nid.to_bytes(8, "big"), value)
                if value is None:
                    continue
                try:
                    names[nid] = decode(value)
                except UnicodeDecodeError as exc:
                    out.add(table, nid, f"not a UTF-8 string ({exc.reason})")
                    continue
                forward = txn.get(string_key(kind, value), None, handles["ids"])
                if forward is None or bytes(forward) != nid.to_bytes(8, "big"):
                    out.add("ids", string_key(kind, value), f"does not map the string of {table} NID {nid} to it")
        forward_count = 0
        for key, value in rows("ids"):
            forward_count += 1
            kind = key[:1]
            if kind not in kinds or len(value) != 8:
                out.add("ids", key, "not a string key of a known kind with an 8-byte NID")
                continue
            nid = int.from_bytes(value, "big")
            if nid not in strings[kind]:
                out.add("ids", key, f"maps to {kinds[kind]} NID {nid}, which has no string")
        checked["strings"] = forward_count

        def indexed(table, what, nid, value):
            """The digest index maps a stored value's digest to its NID."""
            digest = hashlib.blake2b(value, digest_size=16).digest()
            hit = txn.get(digest, None, handles[table])
            if hit is None or int.from_bytes(bytes(hit), "big") != nid:
                out.add(table, digest.hex(), f"does not name {what} {nid}, whose digest it is")

        def hashes_name(table, what, stored):
            """Every entry of a digest index names a stored (and readable) value."""
            for key, value in rows(table):
                nid = int.from_bytes(value, "big") if len(value) == 8 else None
                if nid not in stored:
                    out.add(table, key.hex(), f"names {what} {nid}, which is not stored (or is damaged)")

        # blocks
        blocks = {}
        for nid, value in keyed("blocks", b"b"):
            try:
                blocks[nid] = len(decode_block(nid, value, sums))
            except roomstate.RoomStateError as exc:
                problem("blocks", nid, exc)
                continue
            indexed("block_hashes", "block", nid, value[:-CHECKSUM_BYTES] if sums else value)
        hashes_name("block_hashes", "block", blocks)
        checked["blocks"] = len(blocks)

        # snapshots: every chain down to its base
        snapshots = set()
        for nid, value in keyed("snapshots", b"s"):
            snapshots.add(nid)
            try:
                c = t.snaps.components(tx, nid)
                for block, size in zip(c.blocks, c.sizes):
                    if block not in blocks:
                        out.add("snapshots", nid, f"names block {block}, which is not stored (or is damaged)")
                    elif blocks[block] != size:
                        out.add("snapshots", nid, f"gives block {block} {size} entries; it holds {blocks[block]}")
            except roomstate.RoomStateError as exc:
                problem("snapshots", nid, exc)
            value = body("snapshots", nid, nid.to_bytes(8, "big"), value)
            if value is not None and value[:1] == b"\x01":  # bases are indexed by their digest (chain links not always)
                indexed("snapshot_hashes", "snapshot", nid, value)
        hashes_name("snapshot_hashes", "snapshot", snapshots)
        checked["snapshots"] = len(snapshots)

        # events
        records = {}
        events = state_events = 0
        for nid, value in keyed("events", b"e"):
            try:
                rec = decode_record(value, nid)
            except roomstate.RoomStateError as exc:
                problem("events", nid, exc)
                continue
            records[nid] = rec
            if rec.flags & PLACEHOLDER:
                continue
            events += 1
            state_events += bool(rec.flags & IS_STATE)
        for nid, rec in records.items():
            try:
                if store._reader.ids.lookup(tx, roomstate.ids.EVENT, rec.event_id) != nid:
                    out.add("event_ids", None, f"the event ID {rec.event_id!r} of event {nid} does not lead back to it")
            except roomstate.RoomStateError as exc:
                problem("event_ids", None, exc)
            if rec.flags & PLACEHOLDER:
                continue
            for kind, n, what in ((ROOM, rec.room, "room"), (TYPE, rec.type, "type"),
                                  (STATE_KEY, rec.state_key if rec.flags & IS_STATE else 0, "state key"),
                                  (STATE_KEY, rec.sender, "sender"), (STATE_KEY, rec.extras, "extras"),
                                  (STATE_KEY, rec.reason, "rejection reason")):
                if n and n not in strings[kind]:
                    out.add("events", nid, f"its {what} NID {n} has no string")
            for p in rec.prevs:
                if p not in records:
                    out.add("events", nid, f"its prev event {p} has no record")
            for a in rec.auth_events:
                if a not in records or records[a].flags & PLACEHOLDER:
                    out.add("events", nid, f"its auth event {a} is not stored")
            if not rec.flags & OUTLIER:
                for snap in {rec.before, rec.after}:
                    if snap not in snapshots:
                        out.add("events", nid, f"its snapshot {snap} is not stored")
        if meta.get(META_COUNT_EVENTS, 0) != events:
            out.add("meta", META_COUNT_EVENTS, f"says {meta.get(META_COUNT_EVENTS, 0)}; {events} events are stored")
        if meta.get(META_COUNT_STATE, 0) != state_events:
            out.add("meta", META_COUNT_STATE, f"says {meta.get(META_COUNT_STATE, 0)}; {state_events} state events are stored")
        checked["events"] = events

        # mark chunks
        chunks = {}
        for idx, value in keyed("flags"):
            value = body("flags", idx, idx.to_bytes(8, "big"), value)
            if value is None:
                continue
            if len(value) != CHUNK:
                out.add("flags", idx, f"a mark chunk is {CHUNK} bytes, this one {len(value)}")
            else:
                chunks[idx] = value

        # rooms
        rooms = 0
        for room, value in keyed("rooms"):
            rooms += 1
            if room not in strings[ROOM]:
                out.add("rooms", room, "the room NID has no string")
            try:
                ex = decode_extremities(room, value, sums)
            except roomstate.RoomStateError as exc:
                problem("rooms", room, exc)
                continue
            for e in ex:
                rec = records.get(e)
                if rec is None or rec.flags & (PLACEHOLDER | OUTLIER) or rec.room != room:
                    out.add("rooms", room, f"its forward extremity {e} is not a stored event of the room with its state")
                elif e // CHUNK in chunks and chunks[e // CHUNK][e % CHUNK] & HAS_CHILD:
                    out.add("rooms", room, f"its forward extremity {e} has a child")
        checked["rooms"] = rooms
    return checked


def run_child(path):
    """Check in this process and print the report as one JSON object (the child's side)."""
    out = Problems()
    try:
        checked = _walk(path, out)
    except Exception as exc:  # noqa: BLE001 - a problem the walk did not foresee is still a report
        out.add(None, None, f"the check stopped: {type(exc).__name__}: {exc}")
        checked = {}
    print(json.dumps({"problems": out.items, "more": out.more, "checked": checked}), flush=True)


def check(path, timeout=None):
    """Check the store at ``path`` in a child process: ``{"ok", "problems", "more", "checked"}``.

    ``problems`` lists ``{"table", "key", "problem"}`` (table and key None for the
    store as a whole); a child killed by a signal (LMDB reading a damaged page) or
    over ``timeout`` seconds is one such problem.
    """
    try:
        proc = subprocess.run([sys.executable, "-m", "roomstate.check", str(path)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        report = {"problems": [{"table": None, "key": None, "problem": f"the check took more than {timeout} s"}]}
    else:
        lines = proc.stdout.strip().splitlines()
        if proc.returncode == 0 and lines:
            report = json.loads(lines[-1])
        else:
            if proc.returncode < 0:
                why = f"reading the store killed the checker ({signal.Signals(-proc.returncode).name}): " \
                      "LMDB's pages are damaged"
            else:
                why = f"the checker failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}"
            report = {"problems": [{"table": None, "key": None, "problem": why}]}
    report.setdefault("more", 0)
    report.setdefault("checked", {})
    report["ok"] = not report["problems"]
    return report


def format_report(report):
    """The report as lines of text, the last one the verdict."""
    lines = []
    for p in report["problems"]:
        where = "the store" if p["table"] is None else f"table {p['table']!r}" + (
            f", key {p['key']!r}" if p["key"] is not None else "")
        lines.append(f"{where}: {p['problem']}")
    if report.get("more"):
        lines.append(f"... and {report['more']} more problems")
    if report["ok"]:
        counts = ", ".join(f"{n:,} {what}" for what, n in report["checked"].items())
        lines.append(f"ok ({counts})")
    else:
        lines.append(f"{len(report['problems']) + report.get('more', 0)} problem(s): the store is damaged")
    return lines


if __name__ == "__main__":
    run_child(sys.argv[1])
