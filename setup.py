"""Builds the fastpath Cython extension; everything else is in pyproject.toml."""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

# TICKFLOW_NO_EXTENSIONS at build time (as aiohttp's AIOHTTP_NO_EXTENSIONS): install the
# pure-Python twins only, for a machine without a C compiler. The choosers pick them at run time.
NO_EXTENSIONS = os.environ.get("TICKFLOW_NO_EXTENSIONS", "") not in ("", "0")

# Compiler directives for the hot path. Each one trades a safety net the heap does not need:
COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,  # indices are maintained by the heap itself, never user-supplied
    "wraparound": False,  # no negative indexing anywhere in the .pyx
    "cdivision": True,  # only shifts and non-negative divisions; skip the Python zero check
    "initializedcheck": False,  # no memoryviews
    "embedsignature": True,  # keep signatures visible to help() and IDEs
}

# The engine's compiled modules are plain Python (engine/core/runs.py, ...), compiled under their
# own names with a typed .pxd beside each: the .py files' annotations are for mypy and readers,
# the .pxd's declarations are Cython's ("annotation_typing" off), so one source serves as both
# builds (engine.COMPILED_MODULES; engine/__init__.py picks the sources when the extensions are
# missing or TICKFLOW_NO_EXTENSIONS is set).
# These are ordinary Python source, negative indices and all: none of the heap's safety trades.
# nonecheck: a typed variable that is None (a released step's run, say) raises AttributeError
# as in the pure build, instead of crashing the process -- one predictable branch per access.
PURE_DIRECTIVES = {
    "language_level": 3,
    "embedsignature": True,
    "annotation_typing": False,
    "nonecheck": True,
}

# engine.COMPILED_MODULES, in cimport order (kept here too: setup.py must not import the engine).
ENGINE_COMPILED = (
    "core/counters",
    "core/symbols",
    "core/runs",
    "core/ready",
    "core/records",
    "core/runlog",
    "core/dispatcher",
    "core/coordinator",
)

setup(
    ext_modules=[] if NO_EXTENSIONS else [
        *cythonize(
            [
                Extension("fastpath._heap", ["fastpath/_heap.pyx"], extra_compile_args=["-O3"]),
                Extension(
                    "fastpath._latency", ["fastpath/_latency.pyx"], extra_compile_args=["-O3"]
                ),
                Extension("fastpath._coro", ["fastpath/_coro.pyx"], extra_compile_args=["-O3"]),
                Extension("fastpath._jsonw", ["fastpath/_jsonw.pyx"], extra_compile_args=["-O3"]),
            ],
            compiler_directives=COMPILER_DIRECTIVES,
        ),
        *cythonize(
            [
                Extension(f"engine.{m.replace('/', '.')}", [f"engine/{m}.py"],
                          extra_compile_args=["-O3"])
                for m in ENGINE_COMPILED
            ],
            compiler_directives=PURE_DIRECTIVES,
        ),
    ],
)
