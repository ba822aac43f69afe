"""Step actions for the backtest tests: each records what it saw, in the order it ran."""

from __future__ import annotations

import asyncio

from engine.core.strategy import StepContext, cheap

__all__ = ["CALLS", "async_sleeper", "flaky", "inline_probe", "thread_probe"]

# (action, symbol, virtual time the step saw) in call order; tests clear it.
CALLS: list[tuple[str, str, float]] = []


@cheap
def inline_probe(ctx: StepContext) -> float:
    CALLS.append(("inline", ctx.symbol, ctx.clock()))
    return ctx.tick.price


def thread_probe(ctx: StepContext) -> float:
    """A plain function: a thread step live, run on the loop in dispatch order by a backtest."""
    CALLS.append(("thread", ctx.symbol, ctx.clock()))
    return ctx.tick.price * 2


async def async_sleeper(ctx: StepContext) -> None:
    """Sleeps far past its step's timeout: only virtual time can make that quick."""
    CALLS.append(("sleep", ctx.symbol, ctx.clock()))
    await asyncio.sleep(float(ctx.params.get("seconds", 10.0)))


@cheap
def flaky(ctx: StepContext) -> str:
    """Fails its first attempt: the retry comes back after a virtual back-off."""
    CALLS.append(("flaky", ctx.symbol, ctx.clock()))
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return "ok"
