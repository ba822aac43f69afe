"""Small shared helpers for tests that drive a whole :class:`engine.service.daemon.Engine`
in-process.

Everything here is deterministic: time is a :class:`engine.core.clock.FakeClock` the test advances,
and waiting for something to happen means yielding to the event loop a *bounded number of
turns* -- never sleeping for a duration. Keep this module small and stable (other test modules
import it): add helpers, do not change the ones that are here.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable, Coroutine
from typing import Any

from engine.config import loads_config
from engine.core.clock import FakeClock
from engine.core.events import DataReady
from engine.service.daemon import Engine

__all__ = ["TWO_STEP_CONFIG", "data_ready", "make_engine", "run_async", "settle", "wait_for"]

# A safety net for a test that hangs because of a bug: a real-time bound on the whole test,
# never something a test waits for. Every wait inside a test is bounded in loop turns.
RUN_TIMEOUT_S = 10.0


def make_engine(toml: str, *, clock: FakeClock | None = None) -> tuple[Engine, FakeClock]:
    """An engine for config ``toml`` (dedented) on a fake clock, with no sources."""
    config = loads_config(textwrap.dedent(toml))
    clock = clock if clock is not None else FakeClock()
    return Engine(config, clock=clock, sources=[]), clock


def data_ready(symbol: str, priority: int | None = None, price: float = 100.0) -> DataReady:
    """A ``DATA_READY`` for ``symbol`` (``priority`` registers/re-prioritises the symbol)."""
    return DataReady(symbol=symbol, ts=1_700_000_000.0, price=price, priority=priority)


async def settle(turns: int = 20) -> None:
    """Yield to the event loop ``turns`` times, so queued callbacks and woken tasks run."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def wait_for(
    predicate: Callable[[], bool], what: str = "condition", turns: int = 500
) -> None:
    """Yield until ``predicate()`` holds; fail after ``turns`` loop turns without it."""
    for _ in range(turns):
        if predicate():
            return
        await asyncio.sleep(0)
    if not predicate():
        raise AssertionError(f"gave up after {turns} loop turns waiting for {what}")


def run_async(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main()`` in a fresh event loop, with :data:`RUN_TIMEOUT_S` as a safety net."""

    async def bounded() -> None:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            await main()

    asyncio.run(bounded())


# One workflow of two steps (a -> b) on the quick gated actions, for storage tests.
TWO_STEP_CONFIG = """
[workflows.wf]
priority = 1
max_concurrent = 1
[[workflows.wf.steps]]
name = "a"
action = "tests.unit.run_actions:quick"
[[workflows.wf.steps]]
name = "b"
action = "tests.unit.run_actions:quick"
depends_on = ["a"]
"""
