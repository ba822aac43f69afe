"""Step actions for the dispatcher tests: the test decides exactly when each step finishes.

Every attempt is recorded (:func:`log`) as it enters and as it leaves its action, with the
attempt number the engine gave it. :func:`gated` waits on the ``(symbol, step)`` gate. The
gates and the log live on :data:`tests.unit.gates.BOARD`, reset around every test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from engine.core.strategy import StepContext, cheap
from tests.unit.gates import BOARD

__all__ = [
    "Record",
    "boom",
    "boom_inline",
    "ended",
    "gate",
    "gated",
    "instant",
    "log",
    "peak_running",
    "release",
    "running",
    "set_probe",
    "starts",
]

Kind = Literal["start", "finish", "cancel", "error"]


@dataclass(frozen=True)
class Record:
    """One moment of one attempt: it started, finished, was cancelled or raised."""

    kind: Kind
    workflow: str
    step: str
    symbol: str
    attempt: int
    probe: object = None  # what the probe returned when the attempt started (see set_probe)


def log() -> list[Record]:
    """Every record of these actions, in order."""
    return BOARD.records(Record)


def set_probe(probe: Callable[[], object] | None) -> None:
    """Call ``probe()`` whenever an attempt starts and keep the value in its start record."""
    BOARD.probe = probe


def gate(symbol: str, step: str) -> asyncio.Event:
    return BOARD.gate((symbol, step))


def release(symbol: str, step: str = "work") -> None:
    BOARD.release((symbol, step))


# -- reading the log ------------------------------------------------------------------------


def starts(symbol: str | None = None) -> list[tuple[str, str, int]]:
    """``(symbol, step, attempt)`` of every started attempt, in start order."""
    return [
        (r.symbol, r.step, r.attempt)
        for r in log()
        if r.kind == "start" and (symbol is None or r.symbol == symbol)
    ]


def ended(symbol: str | None = None) -> list[tuple[Kind, str, str, int]]:
    """``(kind, symbol, step, attempt)`` of every attempt that left its action, in order."""
    return [
        (r.kind, r.symbol, r.step, r.attempt)
        for r in log()
        if r.kind != "start" and (symbol is None or r.symbol == symbol)
    ]


def running(workflow: str | None = None) -> int:
    """Attempts inside their action right now (optionally of one workflow)."""
    n = 0
    for r in log():
        if workflow is None or r.workflow == workflow:
            n += 1 if r.kind == "start" else -1
    return n


def peak_running(workflow: str | None = None) -> int:
    """The most attempts that were ever inside their action at once."""
    n = peak = 0
    for r in log():
        if workflow is None or r.workflow == workflow:
            n += 1 if r.kind == "start" else -1
            peak = max(peak, n)
    return peak


# -- actions --------------------------------------------------------------------------------


def _record(kind: Kind, ctx: StepContext) -> None:
    probe = BOARD.probe() if kind == "start" and BOARD.probe is not None else None
    BOARD.log.append(Record(kind, ctx.workflow, ctx.step, ctx.symbol, ctx.attempt, probe))


async def gated(ctx: StepContext) -> str:
    """Wait for the gate of ``(ctx.symbol, ctx.step)``; preemption/timeouts cancel the wait."""
    _record("start", ctx)
    try:
        await gate(ctx.symbol, ctx.step).wait()
    except asyncio.CancelledError:
        _record("cancel", ctx)
        raise
    _record("finish", ctx)
    return f"{ctx.symbol}.{ctx.step}#{ctx.attempt}"


async def instant(ctx: StepContext) -> str:
    """Finish at once (async, but never suspends)."""
    _record("start", ctx)
    _record("finish", ctx)
    return f"{ctx.symbol}.{ctx.step}#{ctx.attempt}"


async def boom(ctx: StepContext) -> str:
    """Raise on every attempt (async)."""
    _record("start", ctx)
    _record("error", ctx)
    raise RuntimeError(f"boom {ctx.symbol} attempt {ctx.attempt}")


@cheap
def boom_inline(ctx: StepContext) -> str:
    """Raise on every attempt (a plain ``@cheap`` function: runs inline on the loop)."""
    _record("start", ctx)
    _record("error", ctx)
    raise RuntimeError(f"boom {ctx.symbol} attempt {ctx.attempt}")
