"""Step actions of the cluster node tests and the scaling benchmark (imported by the daemons)."""

from __future__ import annotations

import time

from engine.core.orders import OrderResult
from engine.core.runs import StepContext
from engine.core.strategy import cheap, sends_orders


@sends_orders
async def buy(ctx: StepContext) -> OrderResult:
    """One unit per run: a symbol's position is its number of filled runs."""
    return ctx.submit_order("BUY", 1.0)


@cheap
def burn(ctx: StepContext) -> int:
    """Real CPU for ``params.us`` microseconds (a strategy's own work), counted in loops; run
    on the event loop (``@cheap``), as a CPU-bound step of the node's own core."""
    until = time.perf_counter() + float(ctx.params.get("us", 200)) / 1e6
    loops = 0
    while time.perf_counter() < until:
        loops += 1
    return loops
