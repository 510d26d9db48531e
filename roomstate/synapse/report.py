"""Synapse's state tables against the store, in rows and bytes (``roomstate synapse report``).

Synapse keeps a room's state in four tables: ``state_groups`` (one row per group),
``state_groups_state`` (the groups' deltas, one row per key), ``state_group_edges`` (each
group's previous group) and ``event_to_state_groups`` (each event's group).  Their rows
are counted per room; their bytes are the tables' own (SQLite's dbstat, PostgreSQL's
``pg_total_relation_size``: indexes included) split between rooms by the bytes of each
room's rows, or, where the database cannot tell a table's size, the rows' bytes alone.

The store's side: its state tables (blocks, snapshots and their hash indexes) and its
whole size in use (event records, auth data and ID maps too), split between rooms by
their share of the stored events; a store that holds only the imported rooms gives
their exact total.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from .source import Source

TABLES = ("state_groups_state", "state_groups", "state_group_edges", "event_to_state_groups")


def build(source: Source, store: Any, room_ids: Sequence[str]) -> Dict[str, Any]:
    """The report as a dict (what ``--json`` prints)."""
    wanted = set(room_ids)
    per_table = {t: source.payload_by_room(t) for t in TABLES}
    table_bytes: Dict[str, Optional[int]] = {t: source.table_bytes(t) for t in TABLES}
    stats = store.stats()
    counts = store.room_counts()
    total_events = sum(n for n, _ in counts.values()) or 1
    rooms: List[Dict[str, Any]] = []
    for room_id in room_ids:
        synapse: Dict[str, Any] = {}
        for t in TABLES:
            n_rows, payload = per_table[t].get(room_id, (0, 0))
            all_payload = sum(b for _, b in per_table[t].values())
            size = table_bytes[t]
            share = payload if size is None else (round(size * payload / all_payload) if all_payload else 0)
            synapse[t] = {"rows": n_rows, "bytes": share}
        events, state_events = counts.get(room_id, (0, 0))
        part = events / total_events
        mine = {"events": events, "state_events": state_events,
                "state_bytes": round(stats["state_bytes"] * part), "bytes": round(stats["bytes_in_use"] * part)}
        rooms.append({"room_id": room_id, "synapse": _with_totals(synapse), "roomstate": mine})
    total_synapse = _with_totals({t: {"rows": sum(r["synapse"][t]["rows"] for r in rooms),
                                      "bytes": sum(r["synapse"][t]["bytes"] for r in rooms)} for t in TABLES})
    total_mine = {k: sum(r["roomstate"][k] for r in rooms) for k in ("events", "state_events", "state_bytes", "bytes")}
    return {
        "source": source.name,
        "synapse_bytes_method": source.size_method,
        "roomstate_bytes_method": "LMDB pages in use; split between rooms by their share of the store's events"
                                  if len(counts) > 1 else "LMDB pages in use",
        "rooms": rooms,
        "total": {"synapse": total_synapse, "roomstate": total_mine,
                  "ratio": (total_synapse["bytes"] / total_mine["bytes"]) if total_mine["bytes"] else None},
    }


def _with_totals(tables: Dict[str, Dict[str, int]]) -> Dict[str, Any]:
    out: Dict[str, Any] = dict(tables)
    out["rows"] = sum(v["rows"] for v in tables.values())
    out["bytes"] = sum(v["bytes"] for v in tables.values())
    return out


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def text(report: Dict[str, Any]) -> str:
    """The report as a table."""
    lines = [f"Synapse database: {report['source']}",
             f"Synapse bytes: {report['synapse_bytes_method']}",
             f"roomstate bytes: {report['roomstate_bytes_method']}", ""]
    header = ["room", "events", "Synapse state rows", "Synapse state bytes", "roomstate state bytes",
              "roomstate bytes", "Synapse / roomstate"]
    table = []
    for r in report["rooms"] + [{"room_id": "total", **report["total"]}]:
        s, m = r["synapse"], r["roomstate"]
        ratio = f"{s['bytes'] / m['bytes']:.1f}x" if m["bytes"] else "-"
        table.append([r["room_id"], f"{m['events']:,}", f"{s['rows']:,}", _size(s["bytes"]), _size(m["state_bytes"]),
                      _size(m["bytes"]), ratio])
    widths = [max(len(header[i]), *(len(row[i]) for row in table)) for i in range(len(header))]

    def fmt(cells: List[str]) -> str:
        return "  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)).rstrip()

    lines.append(fmt(header))
    lines.extend(fmt(row) for row in table)
    lines.append("")
    lines.append("Synapse's state tables, all rooms of the report:")
    tw = max(len(t) for t in TABLES)
    for t in TABLES:
        v = report["total"]["synapse"][t]
        lines.append(f"  {t:<{tw}}  {v['rows']:>12,} rows  {_size(v['bytes']):>10}")
    return "\n".join(lines)
