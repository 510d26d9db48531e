"""The public classes say what each method does, what ``types=`` accepts and what is raised,
in the built modules (a compiled store.py keeps its docstrings)."""
import inspect

import pytest

import roomstate
from roomstate import aio

CLASSES = [roomstate.StateStore, aio.AsyncStateStore, aio.AsyncBatch]


def public(cls):
    return sorted(name for name in vars(cls) if not name.startswith("_"))


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_public_method_has_a_docstring(cls):
    assert public(cls)
    undocumented = [name for name in public(cls) if not inspect.getdoc(getattr(cls, name))]
    assert not undocumented


@pytest.mark.parametrize("cls", [roomstate.StateStore, aio.AsyncStateStore], ids=lambda c: c.__name__)
def test_types_and_errors_are_documented(cls):
    with_types = [n for n in public(cls) if callable(getattr(cls, n)) and "types" in inspect.signature(getattr(cls, n)).parameters]
    assert set(with_types) == {"state_before", "state_after", "current_state"}
    for name in with_types:
        assert "types" in inspect.getdoc(getattr(cls, name)), name
    # The full statement once, where the others point to.
    doc = inspect.getdoc(cls.state_before)
    assert "(type, state_key)" in doc and "None" in doc and "MissingEventError" in doc


def test_the_sync_reads_and_writes_say_what_they_raise():
    store = roomstate.StateStore
    raising = ["add_event", "add_events", "state_before", "state_after", "current_state", "forward_extremities",
               "get_state", "state_diff", "members", "is_outlier", "event_depth"]
    silent = [name for name in raising if "raise" not in inspect.getdoc(getattr(store, name)).lower()]
    assert not silent
