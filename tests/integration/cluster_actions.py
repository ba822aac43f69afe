"""Step actions of the cluster node tests (imported by the daemons)."""

from __future__ import annotations

from engine.core.orders import OrderResult
from engine.core.runs import StepContext
from engine.core.strategy import sends_orders


@sends_orders
async def buy(ctx: StepContext) -> OrderResult:
    """One unit per run: a symbol's position is its number of filled runs."""
    return ctx.submit_order("BUY", 1.0)
