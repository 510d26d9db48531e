"""Draw bench/results.png (and print Markdown tables) from pytest-benchmark JSON files.

    pytest bench/ --benchmark-only --benchmark-json=bench/results.json
    python bench/plot.py bench/results.json [more.json ...] [-o bench/results.png] [--markdown]

Reads the ``extra_info`` every bench/test_bench_*.py figure records (``figure``,
``design``, ``size`` and the numbers). Several files may be given, e.g. a full run and a
separate ROOMSTATE_BENCH_BIG=1 run; a figure present in several files is taken from the
last one. Needs matplotlib for the image (``pip install matplotlib``); ``--markdown``
alone does not. The tests never import this script.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

DESIGNS = ("roomstate", "synapse", "dendrite")
MERGE_DESIGNS = ("roomstate", "roomstate-nosync", "synapse", "dendrite")
COLOURS = {
    "roomstate": "#1b7837",
    "roomstate-nosync": "#7fbf7b",
    "synapse": "#2166ac",
    "dendrite": "#b2182b",
}
READ_OPS = ("full_nids", "full_strings", "get_state", "members", "state_diff", "current_state")


def load(paths: Iterable[Path]) -> tuple[list[dict], dict]:
    """The figures of every file (later files win) and the first file's run metadata."""
    figures: dict[tuple, dict] = {}
    meta: dict = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        measured = (data.get("machine_info") or {}).get("roomstate") or {}
        meta = meta or {
            "commit": measured.get("commit") or (data.get("commit_info") or {}).get("id", "")[:7],
            "cpu": (data.get("machine_info") or {}).get("cpu", {}).get("brand_raw", ""),
            "python": (data.get("machine_info") or {}).get("python_version", ""),
            "datetime": data.get("datetime", ""),
        }
        for bench in data.get("benchmarks", []):
            info = bench.get("extra_info") or {}
            if "figure" not in info:
                continue
            key = tuple(
                info.get(k) for k in ("figure", "design", "size", "op", "mode", "how", "branches")
            )
            figures[key] = info
    return list(figures.values()), meta


def select(figures: list[dict], figure: str, **match) -> list[dict]:
    return [
        f for f in figures
        if f["figure"] == figure and all(f.get(k) == v for k, v in match.items())
    ]


def by_size(figures: list[dict], figure: str, design: str, value: str) -> tuple[list, list]:
    rows = sorted(select(figures, figure, design=design), key=lambda f: f["size"])
    return [f["size"] for f in rows], [f[value] for f in rows]


# -- the image ---------------------------------------------------------------------------


def grouped_bars(ax, rows: list[dict], designs, groups, group_key: str, value: str, width: float) -> None:
    """One bar per design in each group, side by side around the group's tick."""
    for i, design in enumerate(designs):
        xs, ys = [], []
        for j, group in enumerate(groups):
            for f in rows:
                if f["design"] == design and f[group_key] == group:
                    xs.append(j + (i - (len(designs) - 1) / 2) * width)
                    ys.append(f[value])
        if xs:
            ax.bar(xs, ys, width, color=COLOURS[design], label=design)




def draw(figures: list[dict], meta: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    (ax_bytes, ax_rate), (ax_read, ax_merge) = axes

    for design in DESIGNS:
        colour = COLOURS[design]
        x, y = by_size(figures, "bytes", design, "bytes_per_event")
        if x:
            ax_bytes.plot(x, y, "o-", color=colour, label=f"{design}: all bytes / event")
        x, y = by_size(figures, "bytes", design, "state_bytes_per_state_event")
        if x:
            ax_bytes.plot(x, y, "s--", color=colour, label=f"{design}: state bytes / state event")
        x, y = by_size(figures, "import", design, "events_per_s")
        if x:
            ax_rate.plot(x, y, "o-", color=colour, label=f"{design}: add_events")
    x, y = by_size(figures, "cli_import", "roomstate", "events_per_s")
    if x:
        ax_rate.plot(x, y, "^:", color=COLOURS["roomstate"], label="roomstate: `roomstate import`")
    for ax, level, label in (
        (ax_bytes, 160, " target: 160 B/event at 5·10^4"),
        (ax_rate, 100_000, " target: 10^5 events/s"),
    ):
        ax.axhline(level, color="grey", lw=0.8, ls=":")
        # x in axes fraction, y in data: stays put whatever the scales
        ax.text(0.01, level, label, transform=ax.get_yaxis_transform(), va="bottom",
                fontsize=8, color="grey")
    for ax, title, ylabel in (
        (ax_bytes, "Bytes on disk (hq)", "bytes"),
        (ax_rate, "Import rate (hq, one call into an empty store)", "events / s"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events in the room history")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)

    reads = select(figures, "read", mode="warm")
    if reads:
        size = max(f["size"] for f in reads)
        reads = [f for f in reads if f["size"] == size]
        keys = reads[0].get("state_keys_mean", 0)
        grouped_bars(ax_read, reads, DESIGNS, READ_OPS, "op", "p50_us", 0.27)
        ax_read.set_xticks(range(len(READ_OPS)), READ_OPS, rotation=20, fontsize=8)
        ax_read.set_yscale("log")
        ax_read.set_ylabel("p50, µs (log)")
        ax_read.set_title(f"Warm read latency p50, hq n={size:,} (~{keys:,.0f} state keys)")
        ax_read.grid(True, axis="y", which="both", alpha=0.3)
        ax_read.legend(fontsize=8)

    merges = select(figures, "merge")
    if merges:
        branches = sorted({f["branches"] for f in merges})
        grouped_bars(ax_merge, merges, MERGE_DESIGNS, branches, "branches", "ms_min", 0.2)
        labels = []
        for b in branches:
            f = next(f for f in merges if f["branches"] == b)
            labels.append(f"{b} branches\n{f['conflicted_keys']:,} conflicted keys")
        ax_merge.set_xticks(range(len(branches)), labels, fontsize=8)
        ax_merge.set_ylabel("ms (fastest round)")
        ax_merge.set_title("fork_storm: time to add the merge event")
        ax_merge.grid(True, axis="y", alpha=0.3)
        ax_merge.legend(fontsize=8)

    stamp = f"roomstate {meta.get('commit', '?')}"
    fig.suptitle(
        f"roomstate vs the Synapse and Dendrite state-storage designs — {stamp}, "
        f"{meta.get('cpu', '')}, Python {meta.get('python', '')}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


# -- Markdown ----------------------------------------------------------------------------


def _n(v: float, digits: int = 0) -> str:
    return f"{v:,.{digits}f}"


def markdown(figures: list[dict]) -> str:
    lines: list[str] = []
    sizes = sorted({f["size"] for f in select(figures, "bytes")})
    if sizes:
        lines += [
            "### Bytes on disk (hq)", "",
            "| events | design | disk B/event | disk B/state event | state B/state event "
            "| roomstate smaller: total / state |",
            "|---:|---|---:|---:|---:|---:|",
        ]
        for size in sizes:
            rs = select(figures, "bytes", design="roomstate", size=size)
            for design in DESIGNS:
                for f in select(figures, "bytes", design=design, size=size):
                    ratio = ""
                    if design != "roomstate" and rs:
                        ratio = (
                            f"{f['bytes_per_event'] / rs[0]['bytes_per_event']:.1f}× / "
                            f"{f['state_bytes_per_state_event'] / rs[0]['state_bytes_per_state_event']:.1f}×"
                        )
                    lines.append(
                        f"| {size:,} | {design} | {_n(f['bytes_per_event'])} "
                        f"| {_n(f['bytes_per_state_event'])} "
                        f"| {_n(f['state_bytes_per_state_event'])} | {ratio} |"
                    )
        lines.append("")
    sizes = sorted({f["size"] for f in select(figures, "import")})
    if sizes:
        lines += [
            "### Import rate (hq, events/s, fastest round)", "",
            "| events | roomstate add_events | `roomstate import` | Synapse | Dendrite "
            "| roomstate / Synapse |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for size in sizes:
            row = {}
            for design in DESIGNS:
                got = select(figures, "import", design=design, size=size)
                row[design] = got[0]["events_per_s"] if got else None
            cli = select(figures, "cli_import", size=size)
            row["cli"] = cli[0]["events_per_s"] if cli else None
            cells = [_n(row[k]) if row[k] else "—" for k in ("roomstate", "cli", "synapse", "dendrite")]
            ratio = f"{row['roomstate'] / row['synapse']:.1f}×" if row["roomstate"] and row["synapse"] else "—"
            lines.append(f"| {size:,} | " + " | ".join(cells) + f" | {ratio} |")
        lines.append("")
    reads = select(figures, "read")
    if reads:
        size = max(f["size"] for f in reads)
        keys = reads[0].get("state_keys_mean", 0)
        lines += [
            f"### Read latency, hq n={size:,} (~{keys:,.0f} state keys), µs p50 / p99", "",
            "| read | mode | roomstate | Synapse | Dendrite |",
            "|---|---|---:|---:|---:|",
        ]
        for op in READ_OPS:
            for mode in ("warm", "cold"):
                cells = []
                for design in DESIGNS:
                    got = select(figures, "read", design=design, op=op, mode=mode, size=size)
                    cells.append(
                        f"{_n(got[0]['p50_us'], 1)} / {_n(got[0]['p99_us'], 1)}" if got else "—"
                    )
                if any(c != "—" for c in cells):
                    lines.append(f"| {op} | {mode} | " + " | ".join(cells) + " |")
        lines.append("")
    merges = select(figures, "merge")
    if merges:
        lines += [
            "### fork_storm merge (ms, fastest round)", "",
            "| branches | conflicted keys | roomstate | roomstate, no fsync | Synapse | Dendrite |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for b in sorted({f["branches"] for f in merges}):
            row = [select(figures, "merge", design=d, branches=b) for d in MERGE_DESIGNS]
            conflicted = next(r[0]["conflicted_keys"] for r in row if r)
            cells = [_n(r[0]["ms_min"], 1) if r else "—" for r in row]
            lines.append(f"| {b} | {conflicted:,} | " + " | ".join(cells) + " |")
        lines.append("")
    rss = select(figures, "rss")
    if rss:
        lines += [
            "### Peak RSS of an import (child process)", "",
            "| events | how | peak RSS MiB | floor MiB | events/s |",
            "|---:|---|---:|---:|---:|",
        ]
        for f in sorted(rss, key=lambda f: (f["size"], f["how"])):
            lines.append(
                f"| {f['size']:,} | {f['how']} | {_n(f['max_rss_bytes'] / 2**20)} "
                f"| {_n(f['floor_rss_bytes'] / 2**20)} | {_n(f['events_per_s'])} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", nargs="+", type=Path, help="pytest-benchmark JSON files")
    parser.add_argument("-o", "--output", type=Path,
                        default=Path(__file__).with_name("results.png"))
    parser.add_argument("--markdown", action="store_true",
                        help="print the tables as Markdown instead of drawing")
    args = parser.parse_args(argv)
    figures, meta = load(args.json)
    if not figures:
        print("no bench figures in the given files", file=sys.stderr)
        return 1
    if args.markdown:
        print(markdown(figures))
        return 0
    draw(figures, meta, args.output)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
