import os

import pytest

# Subprocesses (``python -m roomstate``, ``python -c ...``) must import the installed
# package, never the checkout's uncompiled source tree: Python 3.11+ leaves the working
# directory off sys.path with PYTHONSAFEPATH set, and the fixtures below also run every
# test from a temporary directory.
os.environ["PYTHONSAFEPATH"] = "1"

import roomstate
from roomstate import snapshots


@pytest.fixture(autouse=True)
def _outside_the_source_tree(tmp_path, monkeypatch):
    """Run every test (and the subprocesses it starts) outside the checkout.

    ``python -m ...`` puts the working directory first on sys.path; from the
    checkout that would import the uncompiled source tree instead of the
    installed package.
    """
    monkeypatch.chdir(tmp_path)


@pytest.fixture(params=["lmdb", "memory"])
def store(request, tmp_path):
    """A store on each backend: LMDB in a temporary directory, and ``":memory:"``."""
    path = ":memory:" if request.param == "memory" else tmp_path / "store"
    with roomstate.open(path, resolver="newest_event", check_auth=False) as s:
        yield s


@pytest.fixture
def tiny_tiers(monkeypatch):
    """Snapshot constants small enough that a few events exercise chains, flushes and tier merges."""
    monkeypatch.setattr(snapshots, "MAX_HOPS", 3)
    monkeypatch.setattr(snapshots, "MAX_WEIGHT", 5)
    monkeypatch.setattr(snapshots, "FANOUT", 2)
    monkeypatch.setattr(snapshots, "TIER_BASE", 2)


def pytest_report_header(config):
    from roomstate import _core

    return f"roomstate: {roomstate.__file__} (bounds-checked build: {_core.DEBUG_BUILD})"
