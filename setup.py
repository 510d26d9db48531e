"""Build the Cython core.

Compiler directives are set once here.  ``ROOMSTATE_DEBUG=1`` turns bounds,
wraparound and initialisation checks back on, for debug and fuzz builds.

Besides the Cython modules (``CYTHON`` below), the write and read paths (plain
Python modules, listed in ``COMPILED``) are compiled by Cython too: the same source,
about 1.5x faster per event.  ``ROOMSTATE_PURE=1`` leaves them as Python, for
profiling and debugging.
"""
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("ROOMSTATE_DEBUG", "") not in ("", "0")
PURE = os.environ.get("ROOMSTATE_PURE", "") not in ("", "0")
COMPILED = ["ids", "events", "authcheck", "blocks", "snapshots", "statemap", "rooms", "tables", "writer", "merger", "matrixres", "resolvers", "reader", "transactions", "store"]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

# One module per concept; their shared C declarations are the .pxd files beside
# them (_core.pxd: the Entry struct; _records.pxd: the record flag bits;
# _base64.pxd, _varint.pxd, _gc.pxd: inline codecs and helpers; txn.pxd: the write
# transaction and the read-through lookup).  events.pxd and writer.pxd augment the compiled
# events.py and writer.py: their classes become extension types, so the add path's
# per-event calls are C calls.
CYTHON = [
    "_core",  # kernels over state entries, and the entry-record codecs
    "_records",  # event records, event IDs (base64url, BLAKE2b index keys)
    "_names",  # NID -> string caches, a state's strings, fetching names
    "_parse",  # the fast path of event validation
    "_write",  # write-path kernels: pending lookups, chain links, merges
    "txn",  # the write transaction and its pending tables
]
extensions = [
    Extension(
        f"roomstate.{name}",
        [f"roomstate/{name}.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"), ("ROOMSTATE_DEBUG", "1" if DEBUG else "0")],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    )
    for name in CYTHON
]

# Debug builds generate their C elsewhere, so a release build never reuses
# C written with checks on (nor the reverse).
build_dir = "build/cython-debug" if DEBUG else None
ext_modules = cythonize(extensions, compiler_directives=directives, build_dir=build_dir, force=DEBUG)
if not PURE:
    # Python semantics kept whole (negative indices, bounds checks): only the
    # interpreter overhead goes.
    ext_modules += cythonize(
        [Extension(f"roomstate.{name}", [f"roomstate/{name}.py"], extra_compile_args=["-O2"]) for name in COMPILED],
        compiler_directives={"language_level": 3, "binding": True},
        build_dir=build_dir,
    )

setup(ext_modules=ext_modules)
