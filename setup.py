"""Build the Cython core.

Compiler directives are set once here.  ``ROOMSTATE_DEBUG=1`` turns bounds,
wraparound and initialisation checks back on, for debug and fuzz builds.
"""
import os

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("ROOMSTATE_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "embedsignature": True,
}

extensions = [
    Extension(
        "roomstate._core",
        ["roomstate/_core.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O0", "-g"] if DEBUG else ["-O3"],
    )
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
