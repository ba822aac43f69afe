"""Step actions for the run/scheduler tests: gated (the test decides when they finish) and
recording (every call is kept with what the step saw).

A gated action waits on the ``asyncio.Event`` of its *gate key* -- by default
``"<workflow>.<step>.<symbol>"``, or ``params.gate`` when the step sets one. Gates live in a
module-level registry that :func:`reset` clears (a fixture calls it around every test, so no
event outlives the loop it was bound to). A released gate stays open: later runs of the same
key pass straight through.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from engine.core.events import Tick
from engine.core.strategy import StepContext

__all__ = [
    "CALLS",
    "Call",
    "blocked",
    "calls",
    "gate",
    "gate_key",
    "gated",
    "quick",
    "release",
    "release_all",
    "reset",
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


CALLS: list[Call] = []  # every attempt, in the order the actions were entered
_FINISHED: set[int] = set()  # indices into CALLS of attempts that left their action
_GATES: dict[str, asyncio.Event] = {}
_all_open = False


def reset() -> None:
    """Forget every call and gate (and close gates again)."""
    global _all_open
    CALLS.clear()
    _FINISHED.clear()
    _GATES.clear()
    _all_open = False


def gate_key(ctx: StepContext) -> str:
    key = ctx.params.get("gate")
    if isinstance(key, str):
        return key
    return f"{ctx.workflow}.{ctx.step}.{ctx.symbol}"


def gate(key: str) -> asyncio.Event:
    event = _GATES.get(key)
    if event is None:
        event = _GATES[key] = asyncio.Event()
        if _all_open:
            event.set()
    return event


def release(*keys: str) -> None:
    for key in keys:
        gate(key).set()


def release_all() -> None:
    """Open every gate, present and future."""
    global _all_open
    _all_open = True
    for event in _GATES.values():
        event.set()


def calls(step: str | None = None, symbol: str | None = None) -> list[Call]:
    return [
        c
        for c in CALLS
        if (step is None or c.step == step) and (symbol is None or c.symbol == symbol)
    ]


def started(key: str) -> int:
    """How many attempts have entered the gate ``key``."""
    return sum(1 for c in CALLS if c.key == key)


def blocked() -> list[str]:
    """Gate keys of attempts that entered and have not finished (in entry order)."""
    return [c.key for i, c in enumerate(CALLS) if i not in _FINISHED]


def _record(ctx: StepContext) -> int:
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
    CALLS.append(call)
    return len(CALLS) - 1


def _output(ctx: StepContext) -> dict[str, Any]:
    return {"step": ctx.step, "symbol": ctx.symbol, "run_id": ctx.run_id, "price": ctx.tick.price}


async def gated(ctx: StepContext) -> dict[str, Any]:
    """Record the call, wait for the gate, return a small output naming what was seen."""
    index = _record(ctx)
    try:
        await gate(CALLS[index].key).wait()
    finally:
        _FINISHED.add(index)
    return _output(ctx)


async def quick(ctx: StepContext) -> dict[str, Any]:
    """Record the call and finish at once."""
    _FINISHED.add(_record(ctx))
    return _output(ctx)
