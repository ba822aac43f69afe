"""Step actions for the run/scheduler tests: gated (the test decides when they finish) and
recording (every call is kept with what the step saw).

A gated action waits on the gate of its *gate key* -- by default
``"<workflow>.<step>.<symbol>"``, or ``params.gate`` when the step sets one. The gates and the
calls live on :data:`tests.unit.gates.BOARD`, reset around every test. A released gate stays
open: later runs of the same key pass straight through.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from engine.core.events import Tick
from engine.core.strategy import StepContext
from tests.unit.gates import BOARD

__all__ = [
    "Call",
    "blocked",
    "calls",
    "gate",
    "gate_key",
    "gated",
    "quick",
    "release",
    "release_all",
    "started",
]


@dataclass(frozen=True)
class Call:
    """One attempt of one step, as the action saw it."""

    workflow: str
    step: str
    symbol: str
    run_id: int
    tick: Tick
    inputs: dict[str, Any]
    attempt: int
    key: str


def gate_key(ctx: StepContext) -> str:
    key = ctx.params.get("gate")
    if isinstance(key, str):
        return key
    return f"{ctx.workflow}.{ctx.step}.{ctx.symbol}"


def gate(key: str) -> asyncio.Event:
    return BOARD.gate(key)


def release(*keys: str) -> None:
    BOARD.release(*keys)


def release_all() -> None:
    """Open every gate, present and future."""
    BOARD.release_all()


def calls(step: str | None = None, symbol: str | None = None) -> list[Call]:
    """Every attempt (optionally of one step/symbol), in the order the actions were entered."""
    return [
        c
        for c in BOARD.records(Call)
        if (step is None or c.step == step) and (symbol is None or c.symbol == symbol)
    ]


def started(key: str) -> int:
    """How many attempts have entered the gate ``key``."""
    return sum(1 for c in calls() if c.key == key)


def blocked() -> list[str]:
    """Gate keys of attempts that entered and have not finished (in entry order)."""
    return [c.key for c in calls() if id(c) not in BOARD.finished]


def _record(ctx: StepContext) -> Call:
    call = Call(
        workflow=ctx.workflow,
        step=ctx.step,
        symbol=ctx.symbol,
        run_id=ctx.run_id,
        tick=ctx.tick,
        inputs=dict(ctx.inputs),  # the run's outputs dict keeps growing; keep what was seen
        attempt=ctx.attempt,
        key=gate_key(ctx),
    )
    BOARD.log.append(call)
    return call


def _output(ctx: StepContext) -> dict[str, Any]:
    return {"step": ctx.step, "symbol": ctx.symbol, "run_id": ctx.run_id, "price": ctx.tick.price}


async def gated(ctx: StepContext) -> dict[str, Any]:
    """Record the call, wait for the gate, return a small output naming what was seen."""
    call = _record(ctx)
    try:
        await gate(call.key).wait()
    finally:
        BOARD.finished.add(id(call))
    return _output(ctx)


async def quick(ctx: StepContext) -> dict[str, Any]:
    """Record the call and finish at once."""
    BOARD.finished.add(id(_record(ctx)))
    return _output(ctx)
