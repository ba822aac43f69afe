"""A step action for the streak tests: each call takes :data:`STEP_S` of fake time.

The test binds :data:`CLOCK` to its engine's :class:`~engine.core.clock.FakeClock` (and unbinds
it after), so a streak of these steps spends its time budget exactly as real steps would spend
real time, with no wall clock involved."""

from __future__ import annotations

from engine.core.clock import FakeClock
from engine.core.strategy import StepContext

__all__ = ["CLOCK", "DONE", "STEP_S", "busy"]

STEP_S = 0.000_020
CLOCK: list[FakeClock] = []  # the bound clock, or empty
DONE: list[str] = []  # the symbols whose step ran, in order


async def busy(ctx: StepContext) -> None:
    """Take STEP_S of the bound fake clock without suspending."""
    CLOCK[0].advance(STEP_S)
    DONE.append(ctx.symbol)
