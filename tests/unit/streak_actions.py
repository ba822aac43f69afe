"""A step action for the streak tests: each call takes :data:`STEP_S` of fake time.

The test binds its engine's :class:`~engine.core.clock.FakeClock` as ``BOARD.bound["clock"]``
(tests/unit/gates.py, reset after every test), so a streak of these steps spends its time budget
exactly as real steps would spend real time, with no wall clock involved."""

from __future__ import annotations

import asyncio

from engine.core.strategy import StepContext
from tests.unit.gates import BOARD

__all__ = ["STEP_S", "Done", "busy", "busy_then_suspend", "done"]

STEP_S = 0.000_020


class Done(str):
    """The symbol of a step that ran (on the board's log, in order)."""

    __slots__ = ()


def done() -> list[Done]:
    return BOARD.records(Done)


async def busy(ctx: StepContext) -> None:
    """Take STEP_S of the bound fake clock without suspending."""
    BOARD.bound["clock"].advance(STEP_S)
    BOARD.log.append(Done(ctx.symbol))


async def busy_then_suspend(ctx: StepContext) -> None:
    """Take 3 x STEP_S of fake time (more than a streak's budget), then suspend once, as a
    step that computes and then does I/O."""
    BOARD.bound["clock"].advance(3 * STEP_S)
    await asyncio.sleep(0)
    BOARD.log.append(Done(ctx.symbol))
