"""Counters and latency histograms of the engine, and the frozen snapshots read from them.

The per-workflow and per-step counters live in :mod:`engine.core.counters` (compiled, with a
pure-Python twin): plain attribute arithmetic on the hot path. Exporters (the summary, the
Prometheus collector and the status API) read :meth:`EngineCounters.snapshot`.
"""

from __future__ import annotations

import msgspec

from engine.core.counters import StepCounters, Tally, WorkflowCounters
from fastpath.latency import LatencyHistogram

__all__ = [
    "DispatcherStatistics",
    "EngineCounters",
    "EngineSnapshot",
    "QueueStatistics",
    "StepCounters",
    "WorkflowCounters",
]

RUN_OUTCOMES = ("completed", "failed", "cancelled", "shed")
STEP_OUTCOMES = ("completed", "failed", "cancelled", "preempted", "retried", "timeout")


class QueueStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """The ready queue's snapshot."""

    size: int
    capacity: int
    depth_by_priority: dict[int, int]
    depth_by_workflow: dict[str, int]
    running_by_workflow: dict[str, int]
    shed: int


class DispatcherStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """The dispatcher's snapshot."""

    agents: int
    busy: int
    dispatched: int
    preemptions: int
    timeouts: int
    dispatch_passes: int


class EngineSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    events_received: dict[str, int]
    events_rejected: dict[str, int]
    events_conflated: int
    events_shed: int
    runs: dict[str, dict[str, int]]
    steps: dict[str, dict[str, int]]
    preemptions: int
    retries: int
    timeouts: int
    dispatch_wait: dict[str, dict[str, float | int]]
    run_latency: dict[str, dict[str, float | int]]
    preemption_latency: dict[str, float | int]
    runs_in_flight: int


class EngineCounters:
    def __init__(self, workflows: dict[str, tuple[str, ...]]) -> None:
        self.received = Tally()
        self.rejected = Tally()
        self.workflows = {name: WorkflowCounters(steps) for name, steps in workflows.items()}
        self.preemption_latency = LatencyHistogram()

    def workflow(self, name: str, steps: tuple[str, ...] = ()) -> WorkflowCounters:
        counters = self.workflows.get(name)
        if counters is None:
            counters = self.workflows[name] = WorkflowCounters(steps)
        return counters

    def snapshot(self, runs_in_flight: int) -> EngineSnapshot:
        wfs = self.workflows
        steps: dict[str, dict[str, int]] = {}
        for wf_name, wf in wfs.items():
            for step_name, sc in wf.steps.items():
                steps[f"{wf_name}.{step_name}"] = {
                    **{o: sc.outcomes.get(o, 0) for o in STEP_OUTCOMES},
                }
        return EngineSnapshot(
            events_received=dict(self.received),
            events_rejected=dict(self.rejected),
            events_conflated=sum(w.conflated + w.skipped for w in wfs.values()),
            events_shed=sum(w.shed for w in wfs.values()),
            runs={n: {o: w.runs.get(o, 0) for o in RUN_OUTCOMES} for n, w in wfs.items()},
            steps=steps,
            preemptions=sum(w.preemptions for w in wfs.values()),
            retries=sum(sc.retries for w in wfs.values() for sc in w.steps.values()),
            timeouts=sum(sc.timeouts for w in wfs.values() for sc in w.steps.values()),
            dispatch_wait={n: w.dispatch_wait.summary() for n, w in wfs.items()},
            run_latency={n: w.run_latency.summary() for n, w in wfs.items()},
            preemption_latency=self.preemption_latency.summary(),
            runs_in_flight=runs_in_flight,
        )
