"""Shared fixtures for bench/: baseline stores that are closed after each test."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator

import pytest

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
