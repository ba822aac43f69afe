"""Shared fixtures: each fastpath primitive in both builds, the compiled one and its twin."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import settings

from fastpath.heap import NO_EXTENSIONS
from tests.nats_support import NatsServer, require_nats_server

# Property tests check properties, not speed: no per-example deadline (a wall-clock assertion
# that fails on a busy shared machine), and derandomized so every run explores the same cases.
settings.register_profile("tickflow", deadline=None, derandomize=True)
settings.load_profile("tickflow")

# With TICKFLOW_NO_EXTENSIONS set the compiled builds are deliberately out of play; otherwise
# they must be importable -- a missing extension fails the suite instead of silently testing less.
HEAP_IMPLEMENTATIONS = ["python"] if NO_EXTENSIONS else ["python", "cython"]


def twin_fixture(name: str) -> Callable[[pytest.FixtureRequest], ModuleType]:
    """A fixture giving ``fastpath._<name>_py`` and ``fastpath._<name>`` in turn, as aiohttp
    and uvloop parametrise their C and Python parsers: one suite, both builds."""

    @pytest.fixture(params=HEAP_IMPLEMENTATIONS, name=f"{name}_module")
    def module(request: pytest.FixtureRequest) -> ModuleType:
        suffix = "_py" if request.param == "python" else ""
        return importlib.import_module(f"fastpath._{name}{suffix}")

    return module


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A test that sets the daemon's logging up in-process (setup_logging) configures the root
    logger; put it back, or later tests log into a stream pytest has closed."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    filters = root.filters[:]
    yield
    root.handlers[:] = handlers
    root.filters[:] = filters
    root.setLevel(level)


heap_module = twin_fixture("heap")
latency_module = twin_fixture("latency")
coro_module = twin_fixture("coro")
jsonw_module = twin_fixture("jsonw")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A real JetStream server on a free loopback port, its store under the test's tmp dir."""
    binary = require_nats_server()
    with NatsServer(tmp_path / "nats", binary=binary) as server:
        yield server
