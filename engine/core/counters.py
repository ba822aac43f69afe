"""The hot path's counters: per workflow and per step, bound to the compiled definitions.

Compiled in place like :mod:`engine.core.runs` (typed by ``counters.pxd``). The compiled build
types the histogram fields, so the seven latencies recorded per run are C calls.

Counting is plain attribute arithmetic; exporters (the summary, the Prometheus collector, the
status API) read them through :meth:`engine.core.stats.EngineCounters.snapshot`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastpath import latency as _latency

if TYPE_CHECKING:
    _TallyBase = dict[str, int]
else:  # a plain base at run time: the compiled build subclasses the type, not an alias
    _TallyBase = dict

__all__ = ["StepCounters", "Tally", "WorkflowCounters"]


class Tally(_TallyBase):
    """Counts by name: a dict whose missing names read as 0, so ``tally[name] += 1`` works.

    Not :class:`collections.Counter`: Counter defines ``__delitem__`` in Python, which puts a
    Python-level slot behind *every* item assignment -- ~1,000 instructions per ``+= 1``, four
    times per run on the hot path. A subclass that adds only ``__missing__`` keeps dict's C
    assignment (``__missing__`` is consulted on a failed lookup only)."""

    __slots__ = ()

    def __missing__(self, key: str) -> int:
        return 0


class StepCounters:
    """One step of one workflow: outcomes by name, retries, timeouts, run time."""

    __slots__ = ("duration", "outcomes", "retries", "timeouts")

    def __init__(self) -> None:
        self.outcomes = Tally()
        self.retries = 0
        self.timeouts = 0
        self.duration = _latency.LatencyHistogram()


class WorkflowCounters:
    """One workflow: triggers and what became of them, runs by outcome, latencies."""

    __slots__ = (
        "conflated",
        "dispatch_wait",
        "preemptions",
        "run_latency",
        "runs",
        "shed",
        "skipped",
        "steps",
        "triggered",
    )

    def __init__(self, step_names: tuple[str, ...]) -> None:
        self.triggered = 0
        self.conflated = 0
        self.skipped = 0
        self.shed = 0
        self.preemptions = 0
        self.runs = Tally()
        self.dispatch_wait = _latency.LatencyHistogram()
        self.run_latency = _latency.LatencyHistogram()
        self.steps = {name: StepCounters() for name in step_names}

    def step(self, name: str) -> StepCounters:
        counters = self.steps.get(name)
        if counters is None:  # a step added by a reload
            counters = self.steps[name] = StepCounters()
        return counters
