"""The hot path's counters: per workflow and per step, bound to the compiled definitions.

Compiled in place like :mod:`engine.core.runs` (typed by ``counters.pxd``). The compiled build
types the histogram fields, so the seven latencies recorded per run are C calls.

Counting is plain attribute arithmetic; exporters (the summary, the Prometheus collector, the
status API) read them through :meth:`engine.core.stats.EngineCounters.snapshot`.
"""

from __future__ import annotations

from collections import Counter

from fastpath import latency as _latency

__all__ = ["StepCounters", "WorkflowCounters"]


class StepCounters:
    """One step of one workflow: outcomes by name, retries, timeouts, run time."""

    __slots__ = ("duration", "outcomes", "retries", "timeouts")

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
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
        self.runs: Counter[str] = Counter()
        self.dispatch_wait = _latency.LatencyHistogram()
        self.run_latency = _latency.LatencyHistogram()
        self.steps = {name: StepCounters() for name in step_names}

    def step(self, name: str) -> StepCounters:
        counters = self.steps.get(name)
        if counters is None:  # a step added by a reload
            counters = self.steps[name] = StepCounters()
        return counters
