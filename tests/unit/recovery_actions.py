"""Step actions for the recovery tests: they record every call on
:data:`tests.unit.gates.BOARD` as ``(action, run_id, price, inputs)``."""

from __future__ import annotations

from typing import Any

from engine.core.strategy import StepContext, cheap
from tests.unit.gates import BOARD

__all__ = ["GATE", "STARTED", "calls", "fail_now", "first", "gated", "nothing", "second"]

GATE = "recovery"  # the gate :func:`gated` waits on
STARTED = "recovery.started"  # set by :func:`gated` as it starts


class RecoveryCall(tuple[str, int, float, dict[str, Any]]):
    """``(action, run_id, price, inputs)``: a tuple, so tests compare it with one."""

    __slots__ = ()


def calls() -> list[RecoveryCall]:
    return BOARD.records(RecoveryCall)


def _record(action: str, ctx: StepContext) -> None:
    BOARD.log.append(RecoveryCall((action, ctx.run_id, ctx.tick.price, dict(ctx.inputs))))


@cheap
def first(ctx: StepContext) -> dict[str, Any]:
    _record("first", ctx)
    return {"value": ctx.tick.price * 2}


@cheap
def second(ctx: StepContext) -> dict[str, Any]:
    _record("second", ctx)
    return {"seen": ctx.inputs["first"]["value"]}


async def gated(ctx: StepContext) -> str:
    """Sets the STARTED gate, then waits on GATE (``BOARD.release_all()`` opens both)."""
    _record("gated", ctx)
    BOARD.release(STARTED)
    await BOARD.gate(GATE).wait()
    return "done"


@cheap
def fail_now(ctx: StepContext) -> None:
    _record("fail_now", ctx)
    raise RuntimeError("fails at once")


@cheap
def nothing(ctx: StepContext) -> None:
    """A step without output."""
    _record("nothing", ctx)
