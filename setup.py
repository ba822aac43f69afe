"""Builds the fastpath Cython extension; everything else is in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

# Compiler directives for the hot path. Each one trades a safety net the heap does not need:
COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,  # indices are maintained by the heap itself, never user-supplied
    "wraparound": False,  # no negative indexing anywhere in the .pyx
    "cdivision": True,  # only shifts and non-negative divisions; skip the Python zero check
    "initializedcheck": False,  # no memoryviews
    "embedsignature": True,  # keep signatures visible to help() and IDEs
}

setup(
    ext_modules=cythonize(
        [
            Extension("fastpath._heap", ["fastpath/_heap.pyx"], extra_compile_args=["-O3"]),
            Extension("fastpath._latency", ["fastpath/_latency.pyx"], extra_compile_args=["-O3"]),
        ],
        compiler_directives=COMPILER_DIRECTIVES,
    ),
)
