"""Step actions for the engine load benchmark, shared by tickflow and the baseline pool.

Both designs call these very functions, so a difference in the figures is the scheduler's, not
the work's. An action reads only ``ctx.params`` and ``ctx.tick``: tickflow hands it a
:class:`engine.core.strategy.StepContext`, the baseline its job object, which has both too.

* :func:`noop` returns at once (it never suspends): the cost measured is pure scheduling.
* :func:`yield_once` awaits ``asyncio.sleep(0)``: a no-op that suspends once, as any step doing
  real I/O would -- so a worker cannot run step after step without giving the loop back.
* :func:`sleep` awaits ``asyncio.sleep(params["sleep_s"])``: a step that holds its agent for a
  while without using the CPU (an I/O wait), so the pool can be saturated cheaply and a
  preemption has something to cancel.
* :func:`probe` is a no-op that records ``perf_counter() - tick.ts`` in :data:`PROBE`: put it
  first in a workflow and stamp the event's ``ts`` with ``time.perf_counter()`` when it is
  submitted, and it measures event arrival -> first step running, the wait an urgent event
  sees, identically in both designs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any, Protocol

from fastpath.latency import LatencyHistogram

__all__ = ["PROBE", "HasParams", "Probe", "noop", "probe", "sleep", "yield_once"]


class _HasTs(Protocol):
    @property
    def ts(self) -> float: ...


class HasParams(Protocol):
    @property
    def params(self) -> Mapping[str, Any]: ...

    @property
    def tick(self) -> _HasTs: ...


class Probe:
    """The samples :func:`probe` records; a scenario calls :meth:`reset` after its warm-up."""

    __slots__ = ("hist",)

    def __init__(self) -> None:
        self.hist = LatencyHistogram()

    def reset(self) -> None:
        self.hist = LatencyHistogram()


PROBE = Probe()


async def noop(ctx: HasParams) -> None:
    """Do nothing and return without suspending."""
    return None


async def yield_once(ctx: HasParams) -> None:
    """Suspend once (one trip through the event loop), then return."""
    await asyncio.sleep(0)


async def probe(ctx: HasParams) -> None:
    """A no-op that records how long ago its event was stamped (``tick.ts``, perf_counter)."""
    PROBE.hist.record(time.perf_counter() - ctx.tick.ts)


async def sleep(ctx: HasParams) -> None:
    """Hold the agent for ``params["sleep_s"]`` seconds (an I/O wait, cancellable)."""
    await asyncio.sleep(ctx.params["sleep_s"])
