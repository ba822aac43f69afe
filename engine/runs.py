"""Runs (DAG instances of a workflow for one symbol) and their step runs, as state machines."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .clock import TimerHandle
from .events import Tick
from .fsm import RUN_TRANSITIONS, STEP_TRANSITIONS, RunState, StepState, check_transition
from .workflow import StepDef, WorkflowDef

if TYPE_CHECKING:
    from .symbols import SymbolState

__all__ = ["Run", "StepRun"]


class StepRun:
    """One step of one run: its state, attempts and timings."""

    __slots__ = (
        "attempts",
        "error",
        "finished_at",
        "handle",
        "output",
        "preemptions",
        "ready_at",
        "run",
        "seq",
        "spec",
        "started_at",
        "state",
        "timer",
        "urgent_at",
        "waiting",
    )

    def __init__(self, run: Run, spec: StepDef) -> None:
        self.run = run
        self.spec = spec
        self.state = StepState.PENDING
        self.waiting = len(spec.deps)  # dependencies not yet completed
        self.attempts = 0  # finished attempts (success or failure); a preemption is not one
        self.preemptions = 0
        self.handle: int | None = None  # heap handle while queued
        self.seq = -1  # queue age, kept across preemption so it returns at the head
        self.timer: TimerHandle | None = None  # retry backoff
        self.ready_at = 0.0
        self.urgent_at: float | None = None  # set when this step triggered a preemption
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.output: Any = None
        self.error: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def advance(self, new: StepState) -> None:
        if new not in STEP_TRANSITIONS[self.state]:
            check_transition(STEP_TRANSITIONS, self.state, new, f"step {self.label}")
        self.state = new

    @property
    def label(self) -> str:
        return f"{self.run.workflow.name}[{self.run.id}].{self.spec.name}"

    def __repr__(self) -> str:
        return f"<StepRun {self.label} {self.state.value} attempts={self.attempts}>"


class Run:
    """A workflow's DAG instantiated for one symbol and one (conflated) tick."""

    __slots__ = (
        "cancel_reason",
        "completed",
        "deadline",
        "error",
        "finished_at",
        "follow_up",
        "follow_up_at",
        "id",
        "key",
        "outcome",
        "outputs",
        "priority",
        "running",
        "started_at",
        "state",
        "steps",
        "suspended",
        "symbol",
        "tick",
        "trigger_at",
        "workflow",
    )

    def __init__(
        self,
        run_id: int,
        workflow: WorkflowDef,
        symbol: SymbolState,
        tick: Tick,
        priority: int,
        trigger_at: float,
    ) -> None:
        self.id = run_id
        self.workflow = workflow
        self.symbol = symbol
        self.key = (workflow.name, symbol.name)  # its conflation slot: (workflow, symbol)
        self.tick = tick
        self.priority = priority
        self.trigger_at = trigger_at
        self.deadline = trigger_at + workflow.deadline_s
        self.state = RunState.PENDING
        self.steps = [StepRun(self, spec) for spec in workflow.steps]
        self.outputs: dict[str, Any] = {}
        self.completed = 0
        self.running = 0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.error: str | None = None
        self.outcome: str | None = None
        self.follow_up: Tick | None = None
        self.follow_up_at = 0.0
        self.cancel_reason: str | None = None  # set by a cancel waiting on a running order step
        self.suspended = False  # cut by the shutdown drain: stored as still in flight

    def release(self) -> None:
        """Break the run <-> step reference cycle once the run is over and none of its steps
        runs: reference counting then frees a finished run at once. Left to the cyclic garbage
        collector, finished runs cost more than a third of the engine's time in pauses."""
        for step in self.steps:
            step.run = None  # type: ignore[assignment]

    def advance(self, new: RunState) -> None:
        if new not in RUN_TRANSITIONS[self.state]:
            check_transition(RUN_TRANSITIONS, self.state, new, f"run {self.label}")
        self.state = new

    @property
    def label(self) -> str:
        return f"{self.workflow.name}[{self.id}] {self.symbol.name}"


    def __repr__(self) -> str:
        return f"<Run {self.label} {self.state.value}>"
