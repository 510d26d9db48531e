"""Shared fixtures for bench/: baseline stores that are closed after each test."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

import pytest

# Subprocesses (``python -m roomstate``, ``python -c ...``) must import the installed
# package, never the checkout's uncompiled source tree: Python 3.11+ leaves the working
# directory off sys.path with PYTHONSAFEPATH set, and the fixtures below also run every
# test from a temporary directory.
os.environ["PYTHONSAFEPATH"] = "1"

# bench/ is a directory of scripts, not a package: make `import baselines` work under
# every pytest import mode (importlib mode does not put test directories on sys.path).
_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
if _BENCH_DIR not in sys.path:
    sys.path.insert(0, _BENCH_DIR)

DESIGNS = {"synapse": "SynapseDesign", "dendrite": "DendriteDesign"}


@pytest.fixture
def open_baseline(tmp_path) -> Iterator[Callable[[str], object]]:
    """``open_baseline("synapse" | "dendrite")`` -> a fresh store in tmp_path, closed at
    teardown (pytest runs with filterwarnings=error, so nothing may leak)."""
    import baselines

    opened: list[object] = []

    def factory(name: str):
        design = getattr(baselines, DESIGNS[name])
        store = design(tmp_path / f"{name}-{len(opened)}.db")
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


# -- benchmark settings, histories, built stores and timing (bench/test_bench_*.py) ------
#
# Sizes come from the environment so that CI runs every figure once, small, and a full
# run measures them at the sizes of issue 4 (see "Running the benchmarks" in bench/README.md):
#   ROOMSTATE_BENCH_SIZES         hq sizes, comma-separated (default "10000")
#   ROOMSTATE_BENCH_BIG=1         adds 10^6 to the sizes and runs the 10^6 peak-RSS imports
#   ROOMSTATE_BENCH_BASELINE_MAX  largest size the SQLite baselines run at (default 100000)
#   ROOMSTATE_BENCH_READ_SIZE     hq size of the read-latency figures (default: the largest
#                                 size of the run that is at most 50000)
#   ROOMSTATE_BENCH_SAMPLES       timed samples per warm read figure (default 1000, or 20
#                                 with --benchmark-disable); cold figures take a fifth
# Tests reach all of it through the session fixture `bench`.

import contextlib  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402

BIG_SIZE = 1_000_000
TARGET_SIZE = 50_000  # the hq size the issue states the byte and latency targets at
RSS_SMALL = 10_000  # the peak-RSS import that CI runs


def _parse_sizes(text: str) -> list[int]:
    return sorted({int(float(part)) for part in text.replace("_", "").split(",") if part.strip()})


@dataclass(frozen=True)
class BenchSettings:
    sizes: list[int]
    big: bool
    baseline_max: int
    read_size: int
    samples: int
    timing: bool  # benchmarks enabled (not --benchmark-disable): timing targets apply


def _settings(config) -> BenchSettings:
    sizes = _parse_sizes(os.environ.get("ROOMSTATE_BENCH_SIZES", "10000"))
    big = os.environ.get("ROOMSTATE_BENCH_BIG", "") not in ("", "0")
    if big and BIG_SIZE not in sizes:
        sizes.append(BIG_SIZE)
    read_default = max([n for n in sizes if n <= TARGET_SIZE] or [min(sizes)])
    timing = not config.getoption("benchmark_disable", False)
    return BenchSettings(
        sizes=sizes,
        big=big,
        baseline_max=int(float(os.environ.get("ROOMSTATE_BENCH_BASELINE_MAX", "100000"))),
        read_size=int(float(os.environ.get("ROOMSTATE_BENCH_READ_SIZE", read_default))),
        samples=int(os.environ.get("ROOMSTATE_BENCH_SAMPLES", 1000 if timing else 20)),
        timing=timing,
    )


def pytest_generate_tests(metafunc):
    """``size``: every hq size of the run; ``rss_size``: 10^4, and 10^6 on demand."""
    settings = _settings(metafunc.config)
    if "size" in metafunc.fixturenames:
        metafunc.parametrize("size", settings.sizes, ids=lambda n: f"n{n}")
    if "rss_size" in metafunc.fixturenames:
        rss = [RSS_SMALL] + ([BIG_SIZE] if settings.big else [])
        metafunc.parametrize("rss_size", rss, ids=lambda n: f"n{n}")


def pytest_report_header(config):
    s = _settings(config)
    return (
        f"roomstate bench: sizes={s.sizes} baseline_max={s.baseline_max} "
        f"read_size={s.read_size} samples={s.samples} big={s.big}"
    )


def open_design(design: str, path: os.PathLike[str] | str):
    """A roomstate store (newest_event resolver) or a baseline, at ``path``.

    "roomstate-nosync" is roomstate with ``durable=False`` (no fsync at commit), the
    durability of the baselines' SQLite in WAL mode with ``synchronous=NORMAL``;
    "roomstate-checked" applies the Matrix authorization rules (the library's default,
    ``check_auth=True``); "roomstate-matrix" also merges forks by the Matrix state
    resolution (``resolver="matrix"``, the library's default); the other roomstate designs take the events as given
    (``check_auth=False``), as the baselines do, so that their answers compare."""
    if design.startswith("roomstate"):
        import roomstate

        return roomstate.open(
            path, resolver="matrix" if design == "roomstate-matrix" else "newest_event",
            durable=design != "roomstate-nosync", check_auth=design in ("roomstate-checked", "roomstate-matrix"),
        )
    import baselines

    return getattr(baselines, DESIGNS[design])(path)


def size_figures(design: str, store) -> dict:
    """Bytes on disk of a store just written: in total, and of its state structures."""
    if design.startswith("roomstate"):
        stats = store.stats()
        # pages of every table plus the meta pages; "pages_used_bytes" before 0e8ef56
        in_use = stats["bytes_in_use"] if "bytes_in_use" in stats else stats["pages_used_bytes"]
        return {
            "events": stats["events"],
            "state_events": stats["state_events"],
            "disk_bytes": in_use,
            "state_bytes": stats["state_bytes"],
            "file_bytes": stats["file_bytes"],
            "free_bytes": stats.get("free_bytes", 0),
            "tables": {name: t["bytes"] for name, t in stats["tables"].items()},
        }
    disk = store.disk_bytes()
    return {
        "disk_bytes": disk,
        "file_bytes": disk,
        "state_bytes": store.state_bytes(),
        "tables": store.table_bytes(),
    }


@dataclass
class Built:
    """A closed store holding the whole hq(n) history."""

    design: str
    n: int
    path: Path
    seconds: float  # the one add_events call that wrote it
    figures: dict = field(default_factory=dict)

    def open(self):
        return open_design(self.design, self.path)


# argv: report file, then the command. Runs the command, then writes its wall time and
# peak RSS (KiB, Linux) to the report file; exits with the command's status.
_LAUNCHER = """
import resource, subprocess, sys, time
start = time.perf_counter()
code = subprocess.call(sys.argv[2:])
seconds = time.perf_counter() - start
with open(sys.argv[1], "w") as report:
    report.write(f"{seconds} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
sys.exit(code)
"""


@dataclass
class ChildRun:
    seconds: float
    max_rss_bytes: int
    stdout: str
    stderr: str


class Bench:
    """Everything the benchmark files share: settings, hq histories (generated once per
    session; lists of the two latest sizes kept, JSON-lines files on demand), stores
    built once per session for the size and read figures, and timing helpers."""

    def __init__(self, settings: BenchSettings, directory: Path):
        self.settings = settings
        self.directory = directory
        self._lists: dict[int, list[dict]] = {}
        self._files: dict[int, Path] = {}
        self._built: dict[tuple[str, int], Built] = {}

    open_design = staticmethod(open_design)
    size_figures = staticmethod(size_figures)

    def skip_baseline(self, design: str, n: int) -> None:
        if not design.startswith("roomstate") and n > self.settings.baseline_max:
            pytest.skip(f"{design} above ROOMSTATE_BENCH_BASELINE_MAX={self.settings.baseline_max}")

    # -- histories -----------------------------------------------------------------------

    def hq(self, n: int) -> list[dict]:
        from roomstate import workloads

        if n not in self._lists:
            while len(self._lists) >= 2:
                self._lists.pop(next(iter(self._lists)))
            self._lists[n] = list(workloads.hq(n, seed=0))
        return self._lists[n]

    def hq_jsonl(self, n: int) -> Path:
        from roomstate import workloads

        if n not in self._files:
            path = self.directory / f"hq-{n}.jsonl"
            workloads.write_jsonl(self._lists.get(n) or workloads.hq(n, seed=0), path)
            self._files[n] = path
        return self._files[n]

    def fresh_path(self, stem: str) -> Path:
        """A path nothing exists at yet, for a store of one round."""
        return Path(tempfile.mkdtemp(prefix=f"{stem}-", dir=self.directory)) / "store"

    # -- stores --------------------------------------------------------------------------

    def built(self, design: str, n: int) -> Built:
        """The store of ``design`` holding hq(n), built by one ``add_events`` call."""
        self.skip_baseline(design, n)
        key = (design, n)
        if key not in self._built:
            events = self.hq(n)
            path = self.fresh_path(f"{design}-{n}")
            store = open_design(design, path)
            try:
                start = time.perf_counter()
                store.add_events(events)
                seconds = time.perf_counter() - start
                figures = size_figures(design, store)
            finally:
                store.close()
            figures.setdefault("events", len(events))
            figures.setdefault("state_events", sum("state_key" in ev for ev in events))
            self._built[key] = Built(design, n, path, seconds, figures)
        return self._built[key]

    # -- timing --------------------------------------------------------------------------

    @staticmethod
    def percentiles(samples_ns: list[int]) -> dict[str, float]:
        """p50, p99 (nearest rank), mean and count of nanosecond samples, in µs."""
        ordered = sorted(samples_ns)
        n = len(ordered)

        def rank(q: float) -> float:
            return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))] / 1000

        return {
            "p50_us": rank(0.50),
            "p99_us": rank(0.99),
            "mean_us": sum(ordered) / n / 1000,
            "samples": n,
        }

    @staticmethod
    def seeded_sample(population: list, k: int, seed: str) -> list:
        return random.Random(seed).sample(population, min(k, len(population)))

    def run_child(self, argv: list[str]) -> ChildRun:
        """Run a command to completion: its wall time and its own peak RSS.

        The command runs under a small Python launcher that reads RUSAGE_CHILDREN after
        it exits. Measuring the child of this process directly would report at least
        this process's own peak: subprocess starts children with vfork, and Linux
        carries the RSS high-water mark of the address space exec replaces into
        ``ru_maxrss``.
        """
        with tempfile.TemporaryDirectory(dir=self.directory) as tmp:
            report = Path(tmp) / "usage"
            out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
            with out.open("w") as fout, err.open("w") as ferr:
                code = subprocess.call(
                    [sys.executable, "-c", _LAUNCHER, str(report), *argv],
                    stdout=fout, stderr=ferr,
                )
            stdout, stderr = out.read_text(), err.read_text()
            if code != 0:
                raise AssertionError(
                    f"{argv} exited with {code}\n"
                    f"stdout:\n{stdout[-2000:]}\nstderr:\n{stderr[-4000:]}"
                )
            seconds, max_rss_kib = report.read_text().split()
        return ChildRun(float(seconds), int(max_rss_kib) * 1024, stdout, stderr)

    @staticmethod
    def cli() -> list[str]:
        """The `roomstate` console script; skips the test while ``roomstate.cli`` is missing."""
        import importlib.util

        if importlib.util.find_spec("roomstate.cli") is None:
            pytest.skip("roomstate.cli is missing: no `roomstate import` yet")
        script = Path(sys.executable).with_name("roomstate")
        if script.exists():
            return [str(script)]
        return [sys.executable, "-c", "import sys; from roomstate.cli import main; sys.exit(main())"]


@pytest.fixture(scope="session")
def bench(pytestconfig, tmp_path_factory) -> Iterator[Bench]:
    directory = tmp_path_factory.mktemp("bench")
    yield Bench(_settings(pytestconfig), directory)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def closing() -> Iterator[Callable[[object], object]]:
    """``closing(store)`` returns the store and closes it at teardown: pedantic rounds
    open fresh stores in ``setup``, and --benchmark-disable skips ``teardown``."""
    opened: list[object] = []

    def register(store):
        opened.append(store)
        return store

    yield register
    for store in opened:
        store.close()


def pytest_benchmark_update_machine_info(config, machine_info):
    """What RESULTS.md needs beside the figures: which roomstate was measured (its
    checkout may be a snapshot without git: ROOMSTATE_BENCH_COMMIT names it), the CPU
    count and model, and the load when the run started."""
    import roomstate

    package = Path(roomstate.__file__).parent
    commit = os.environ.get("ROOMSTATE_BENCH_COMMIT", "")
    if not commit:
        try:
            commit = subprocess.run(
                ["git", "-C", str(package), "rev-parse", "--short", "HEAD"],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(package), "status", "--porcelain", "--", "."],
                capture_output=True, text=True, check=True,
            ).stdout.strip()
            if dirty:
                commit += "+dirty"
        except (OSError, subprocess.CalledProcessError):
            commit = "unknown"
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo
                      if line.startswith("model name")), "")
    machine_info["roomstate"] = {
        "path": str(package),
        "commit": commit,
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "loadavg_at_start": os.getloadavg(),
        "settings": str(_settings(config)),
    }


@pytest.fixture(autouse=True)
def _outside_the_source_tree(tmp_path, monkeypatch):
    """Run every benchmark (and the processes it starts) outside the checkout: ``python -c``
    and ``python -m`` put the working directory first on sys.path, and from the checkout
    that would import the uncompiled source tree instead of the installed package."""
    monkeypatch.chdir(tmp_path)
