"""Shared fixtures: the heap implementations every fastpath test runs against."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest
from hypothesis import settings

from fastpath.heap import NO_EXTENSIONS

# Property tests check properties, not speed: no per-example deadline (a wall-clock assertion
# that fails on a busy shared machine), and derandomized so every run explores the same cases.
settings.register_profile("tickflow", deadline=None, derandomize=True)
settings.load_profile("tickflow")

# With TICKFLOW_NO_EXTENSIONS set the compiled heap is deliberately out of play; otherwise it
# must be importable -- a missing extension fails the suite instead of silently testing less.
HEAP_IMPLEMENTATIONS = ["python"] if NO_EXTENSIONS else ["python", "cython"]
_MODULES = {"python": "fastpath._heap_py", "cython": "fastpath._heap"}


@pytest.fixture(params=HEAP_IMPLEMENTATIONS)
def heap_module(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(_MODULES[request.param])


_LATENCY_MODULES = {"python": "fastpath._latency_py", "cython": "fastpath._latency"}


@pytest.fixture(params=HEAP_IMPLEMENTATIONS)
def latency_module(request: pytest.FixtureRequest) -> ModuleType:
    """The compiled latency histogram and its twin, like ``heap_module``."""
    return importlib.import_module(_LATENCY_MODULES[request.param])


_CORO_MODULES = {"python": "fastpath._coro_py", "cython": "fastpath._coro"}


@pytest.fixture(params=HEAP_IMPLEMENTATIONS)
def coro_module(request: pytest.FixtureRequest) -> ModuleType:
    """The compiled coroutine starter and its twin, like ``heap_module``."""
    return importlib.import_module(_CORO_MODULES[request.param])


_JSONW_MODULES = {"python": "fastpath._jsonw_py", "cython": "fastpath._jsonw"}


@pytest.fixture(params=HEAP_IMPLEMENTATIONS)
def jsonw_module(request: pytest.FixtureRequest) -> ModuleType:
    """The compiled JSON writer and its twin, like ``heap_module``."""
    return importlib.import_module(_JSONW_MODULES[request.param])
