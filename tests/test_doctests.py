"""The examples in the docstrings of every roomstate module run, compiled ones included.

The modules are found on the package's path (``.py`` sources and built extension
modules alike) and their docstrings searched by :class:`doctest.DocTestFinder` on the
imported module objects, so a Cython-compiled module is tested as it was built.
"""
import doctest
import importlib
import pkgutil
import types

import pytest

import roomstate

SKIP = {"roomstate.__main__"}  # runs the command line when imported
# Walked with the package's prefix: without it, walk_packages imports a subpackage by its
# bare name to look inside it (``matrix``, ``synapse``: another installed package, or none).
MODULES = sorted(
    {"roomstate"}
    | {m.name for m in pkgutil.walk_packages(roomstate.__path__, "roomstate.") if m.name not in SKIP}
)


def run_doctests(module):
    """``(attempted, failed, report)`` of the module's doctests."""
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    out = []
    seen = set()
    for test in finder.find(module, module.__name__):
        # Cython lists a docstring in __test__ too: run each example set once.
        key = (test.docstring, test.lineno)
        if not test.examples or key in seen:
            continue
        seen.add(key)
        runner.run(test, out=out.append)
    result = runner.summarize(verbose=False)
    return result.attempted, result.failed, "".join(out)


@pytest.mark.parametrize("name", MODULES)
def test_doctests_pass(name):
    _, failed, report = run_doctests(importlib.import_module(name))
    assert not failed, report


@pytest.mark.parametrize("name", ["roomstate", "roomstate.aio", "roomstate.ids", "roomstate.txn"])
def test_known_doctests_are_found(name):
    """The examples we know of are found, in compiled modules as in plain ones."""
    attempted, _, _ = run_doctests(importlib.import_module(name))
    assert attempted > 0


def test_a_broken_doctest_fails():
    module = types.ModuleType("roomstate_doctest_probe")
    exec('def f():\n    """\n    >>> 1 + 1\n    3\n    """\n', module.__dict__)
    module.f.__module__ = module.__name__
    attempted, failed, report = run_doctests(module)
    assert (attempted, failed) == (1, 1) and "Expected:\n    3" in report
