"""The backtest's latency model: how much virtual time each step takes, and the wrappers that
charge it (docs/backtest.md, "The latency model").

* an **inline** step holds the event loop, as it does live: its action runs at its start, and
  the clock is charged its duration before anything else runs (ticks that "arrive" meanwhile
  are delivered after it, timers due meanwhile fire late -- conflation follows from that);
* an **async** step runs its action on the loop (its own awaits take their virtual time) and
  then keeps its agent busy for its duration while the loop goes on;
* a **thread** step runs its action on the loop thread at its start, in dispatch order (so
  thread steps are deterministic), then keeps its agent busy for its duration.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

import msgspec

from engine.core.clock import VirtualClock
from engine.core.errors import TickflowError
from engine.core.runs import StepDef, WorkflowDef
from engine.core.workflow import ExecKind

__all__ = [
    "BacktestError",
    "LatencyModel",
    "StepMeter",
    "install_latency",
    "parse_duration",
    "parse_latency",
]

_UNITS: Final = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(s|ms|us|µs|ns)?\s*$")


class BacktestError(TickflowError, ValueError):
    """A backtest cannot run as asked (bad latency spec, unreadable data, unknown format)."""


class LatencyModel(msgspec.Struct, frozen=True, kw_only=True):
    """Virtual seconds a step takes, by how it runs; ``steps`` overrides one step
    (``"workflow.step"``). The defaults are in the range the live engine measures for the
    shipped strategies on a 2-vCPU VM (an inline step 10-30 µs)."""

    inline_s: float = 20e-6
    async_s: float = 200e-6
    thread_s: float = 1e-3
    steps: dict[str, float] = {}

    def duration(self, workflow: str, step: StepDef) -> float:
        override = self.steps.get(f"{workflow}.{step.name}")
        if override is not None:
            return override
        kind = step.kind
        if kind is ExecKind.INLINE:
            return self.inline_s
        return self.async_s if kind is ExecKind.ASYNC else self.thread_s


def parse_duration(text: str) -> float:
    """``"20us"``, ``"1.5ms"``, ``"0.002s"`` or plain seconds -> seconds (finite, >= 0)."""
    match = _DURATION.match(text)
    if match is None:
        raise BacktestError(f"{text!r} is not a duration (e.g. 20us, 1.5ms, 0.002s)")
    value = float(match.group(1)) * _UNITS[match.group(2) or ""]
    if not math.isfinite(value):
        raise BacktestError(f"{text!r} is not a finite duration")
    return value


def parse_latency(specs: Sequence[str], workflows: dict[str, WorkflowDef] | None = None) -> (
    LatencyModel
):
    """``KIND=DURATION`` (inline, async, thread) or ``WORKFLOW.STEP=DURATION`` items."""
    kinds: dict[str, float] = {}
    steps: dict[str, float] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise BacktestError(f"--latency {spec!r}: expected KIND=DURATION or WF.STEP=DURATION")
        seconds = parse_duration(value)
        if key in ("inline", "async", "thread"):
            kinds[f"{key}_s"] = seconds
            continue
        wf_name, dot, step_name = key.partition(".")
        if not dot:
            raise BacktestError(
                f"--latency {spec!r}: {key!r} is neither inline, async, thread nor WORKFLOW.STEP"
            )
        if workflows is not None:
            wf = workflows.get(wf_name)
            if wf is None or all(s.name != step_name for s in wf.steps):
                raise BacktestError(f"--latency {spec!r}: no step {key!r} in the config")
        steps[key] = seconds
    return LatencyModel(**kinds, steps=steps)


class StepMeter(Protocol):
    """Takes the real time each step's action took (the report's wall-clock figures)."""

    def step_done(self, run_id: int, step: str, seconds: float) -> None: ...


def install_latency(
    workflows: dict[str, WorkflowDef],
    clock: VirtualClock,
    model: LatencyModel,
    meter: StepMeter | None = None,
) -> None:
    """Wrap every step's action so that it takes its modelled virtual time (see the module
    doc); thread steps become loop steps. ``meter``, when given, is told the real time spent
    in each action."""
    for wf in workflows.values():
        for spec in wf.steps:
            seconds = model.duration(wf.name, spec)
            key = f"{wf.name}.{spec.name}"
            if spec.kind is ExecKind.INLINE:
                spec.fn = _inline(spec.fn, seconds, clock, meter, key)
            else:
                spec.fn = _awaited(spec.fn, seconds, spec.kind is ExecKind.ASYNC, meter, key)
                spec.kind = ExecKind.ASYNC


def _inline(
    fn: Callable[[Any], Any], seconds: float, clock: VirtualClock,
    meter: StepMeter | None, key: str,
) -> Callable[[Any], Any]:
    if meter is None:
        def step(ctx: Any) -> Any:
            try:
                return fn(ctx)
            finally:
                clock.t += seconds
        return step
    done = meter.step_done
    perf = time.perf_counter

    def measured(ctx: Any) -> Any:
        t0 = perf()
        try:
            return fn(ctx)
        finally:
            clock.t += seconds
            done(ctx.run_id, key, perf() - t0)
    return measured


def _awaited(
    fn: Callable[[Any], Any], seconds: float, is_async: bool, meter: StepMeter | None, key: str
) -> Callable[[Any], Any]:
    perf = time.perf_counter

    async def step(ctx: Any) -> Any:
        t0 = perf()
        out = (await fn(ctx)) if is_async else fn(ctx)
        if meter is not None:
            meter.step_done(ctx.run_id, key, perf() - t0)
        await asyncio.sleep(seconds)
        return out
    return step
