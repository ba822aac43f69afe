"""Step actions for the backtest tests: each records what it saw, in the order it ran."""

from __future__ import annotations

import asyncio

from engine.core.strategy import StepContext, cheap
from tests.unit.gates import BOARD

__all__ = ["BacktestCall", "async_sleeper", "calls", "flaky", "inline_probe", "thread_probe"]


class BacktestCall(tuple[str, str, float]):
    """``(action, symbol, virtual time the step saw)``, kept on the gates board in call order."""

    __slots__ = ()


def calls() -> list[BacktestCall]:
    return BOARD.records(BacktestCall)


def _record(action: str, ctx: StepContext) -> None:
    BOARD.log.append(BacktestCall((action, ctx.symbol, ctx.clock())))


@cheap
def inline_probe(ctx: StepContext) -> float:
    _record("inline", ctx)
    return ctx.tick.price


def thread_probe(ctx: StepContext) -> float:
    """A plain function: a thread step live, run on the loop in dispatch order by a backtest."""
    _record("thread", ctx)
    return ctx.tick.price * 2


async def async_sleeper(ctx: StepContext) -> None:
    """Sleeps far past its step's timeout: only virtual time can make that quick."""
    _record("sleep", ctx)
    await asyncio.sleep(float(ctx.params.get("seconds", 10.0)))


@cheap
def flaky(ctx: StepContext) -> str:
    """Fails its first attempt: the retry comes back after a virtual back-off."""
    _record("flaky", ctx)
    if ctx.attempt == 1:
        raise RuntimeError("first attempt fails")
    return "ok"
