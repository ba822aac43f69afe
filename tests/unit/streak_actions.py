"""A step action for the streak tests: each call takes :data:`STEP_S` of fake time.

The test binds its engine's :class:`~engine.core.clock.FakeClock` as ``BOARD.bound["clock"]``
(tests/unit/gates.py, reset after every test), so a streak of these steps spends its time budget
exactly as real steps would spend real time, with no wall clock involved."""

from __future__ import annotations

from engine.core.strategy import StepContext
from tests.unit.gates import BOARD

__all__ = ["STEP_S", "Done", "busy", "done"]

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
