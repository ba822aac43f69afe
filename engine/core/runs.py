"""Runs and steps: the objects every step of every run goes through.

This file is both the pure-Python build and the source of the compiled one: ``setup.py``
compiles it in place under the same name, and ``runs.pxd`` beside it turns the classes into
extension types with typed fields. One source, so the two builds cannot drift;
``engine.IMPLEMENTATION`` says which one runs.

A workflow's compiled definition (:class:`WorkflowDef`, :class:`StepDef`, built from config by
:mod:`engine.config.compile`) is what the hot path reads for every step; the :class:`StepContext` it
builds for every step attempt is the strategies' view of it.

A run is a workflow's DAG instantiated for one symbol and one (conflated) tick; its steps are
state machines (``engine.core.fsm``). A workflow's :class:`Lane` is its heap of ready steps in
the ready queue (:mod:`engine.core.ready`), kept beside the definitions that point at it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from random import Random as _Random
from typing import TYPE_CHECKING, Any, Protocol

from engine.core.fsm import RUN_TRANSITIONS, STEP_TRANSITIONS, RunState, StepState, check_transition
from engine.core.orders import submit_order as _submit_order
from engine.core.workflow import ExecKind
from fastpath import heap as _heaps

if TYPE_CHECKING:
    import random

    from engine.core.events import Tick
    from engine.core.orders import Broker, OrderResult, Risk, Side
    from engine.core.symbols import MarketData

__all__ = [
    "Lane",
    "Run",
    "StepConfig",
    "StepContext",
    "StepDef",
    "StepRun",
    "WorkflowConfig",
    "WorkflowDef",
]

_STEP_PENDING = StepState.PENDING
_STEP_RUNNING = StepState.RUNNING
_STEP_COMPLETED = StepState.COMPLETED
_RUN_PENDING = RunState.PENDING
_RUN_RUNNING = RunState.RUNNING
_RUN_COMPLETED = RunState.COMPLETED
# advance() takes these moves without a table lookup: they must be legal moves of the tables.
assert _STEP_RUNNING in STEP_TRANSITIONS[_STEP_PENDING]
assert _STEP_COMPLETED in STEP_TRANSITIONS[_STEP_RUNNING]
assert _RUN_RUNNING in RUN_TRANSITIONS[_RUN_PENDING]
assert _RUN_COMPLETED in RUN_TRANSITIONS[_RUN_RUNNING]


class StepConfig(Protocol):
    """What a step's definition is built from: :class:`engine.config.Step` (the core does not
    import the config layer; this names the fields it reads)."""

    @property
    def name(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def timeout_ms(self) -> float: ...
    @property
    def retry(self) -> Any: ...
    @property
    def preemptible(self) -> bool: ...
    @property
    def params(self) -> Mapping[str, Any]: ...


class WorkflowConfig(Protocol):
    """What a workflow's definition is built from: :class:`engine.config.Workflow`."""

    @property
    def priority(self) -> int: ...
    @property
    def route(self) -> Any: ...
    @property
    def max_concurrent(self) -> int: ...
    @property
    def on_busy(self) -> str: ...
    @property
    def deadline_ms(self) -> float: ...
    @property
    def enabled(self) -> bool: ...


class StepDef:
    """One step of a workflow, compiled: its action resolved, its DAG edges as indices.

    Built from the step's config struct, which it keeps (``config``): a new step option is a
    field of :class:`engine.config.Step` read here (or as ``spec.config.<option>`` where it is
    used), not a new constructor argument threaded through the loader."""

    __slots__ = (
        "action",
        "config",
        "counters",
        "dependents",
        "deps",
        "fn",
        "index",
        "kind",
        "name",
        "params",
        "preemptible",
        "retry",
        "seed",
        "sends_orders",
        "timeout_s",
    )

    def __init__(
        self,
        index: int,
        config: StepConfig,
        fn: Callable[..., Any],
        kind: ExecKind,
        params: Any,  # the action's params struct (decoded at load), or a read-only mapping
        deps: tuple[int, ...],
        sends_orders: bool,
        seed: int = 0,
    ) -> None:
        self.index = index
        self.config = config
        self.name = config.name
        self.action = config.action
        self.fn = fn
        self.kind = kind  # decided once at load (the action's kind and the step's run_in)
        self.timeout_s = config.timeout_ms / 1000.0
        self.retry = config.retry
        # Inline steps never suspend, so nothing could interrupt them mid-way anyway.
        self.preemptible = config.preemptible and kind is not ExecKind.INLINE
        self.params = params
        self.deps = deps
        self.sends_orders = sends_orders  # decided once, read for every finished step
        self.seed = seed  # of the step's own rng (StepContext.rng), fixed at compile time
        self.dependents: tuple[int, ...] = ()
        self.counters: Any = None  # the engine's StepCounters, bound once (no lookup per step)

    def __repr__(self) -> str:
        return f"<StepDef {self.name} {self.kind.value}>"


class WorkflowDef:
    """A workflow, compiled: steps in topological order, roots and dependents as indices."""

    __slots__ = (
        "config",
        "counters",
        "deadline_s",
        "enabled",
        "lane",
        "max_concurrent",
        "name",
        "on_busy",
        "priority",
        "roots",
        "route",
        "steps",
    )

    def __init__(self, name: str, config: WorkflowConfig, steps: tuple[StepDef, ...]) -> None:
        self.name = name
        self.config = config
        self.priority = config.priority
        self.route = config.route  # engine.config.Route
        self.max_concurrent = config.max_concurrent
        self.on_busy = config.on_busy
        self.deadline_s = config.deadline_ms / 1000.0
        self.enabled = config.enabled
        self.counters: Any = None  # the engine's WorkflowCounters, bound once
        self.lane: Any = None  # its ready-queue lane, bound by the coordinator
        for step in steps:
            step.dependents = tuple([s.index for s in steps if step.index in s.deps])
        self.steps = steps
        self.roots = tuple([s.index for s in steps if not s.deps])

    def run_priority(self, symbol_priority: int) -> int:
        """A run queues at its symbol's priority, but never less urgently than its workflow's:
        the workflow's priority is a floor, an urgent symbol lifts its runs above it."""
        return min(self.priority, symbol_priority)

    def __repr__(self) -> str:
        return f"<WorkflowDef {self.name} p{self.priority} steps={len(self.steps)}>"


class StepContext:
    """Everything one step attempt may look at, and the one way it sends an order.

    Built by the engine for every attempt (strategy code sees it through
    ``engine.core.strategy``, which types it); read-only by convention. Tests build one by hand
    (``rng`` defaults to the seeded one, ``clock`` to ``time.time``).

    ``rng`` is the step's own generator, made on first use and seeded from ``seed`` (the
    config's ``engine.seed`` mixed with the workflow and step names) and the run id: the same
    run draws the same numbers on every attempt and after a restart, and nothing the engine
    draws (retry jitter) moves it.
    """

    __slots__ = (
        "_rng",
        "attempt",
        "broker",
        "clock",
        "inputs",
        "market",
        "params",
        "risk",
        "run_id",
        "seed",
        "sends_orders",
        "step",
        "symbol",
        "tick",
        "workflow",
    )

    def __init__(  # positional on the hot path; keywords read better everywhere else
        self,
        run_id: int,
        workflow: str,
        step: str,
        symbol: str,
        tick: Tick,
        inputs: Mapping[str, Any],
        attempt: int,
        params: Any,
        market: MarketData,
        broker: Broker,
        risk: Risk,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        *,
        seed: int = 0,
        sends_orders: bool = False,
    ) -> None:
        self.run_id = run_id
        self.workflow = workflow
        self.step = step
        self.symbol = symbol
        self.tick = tick
        self.inputs = inputs
        self.attempt = attempt
        self.params = params
        self.market = market
        self.broker = broker
        self.risk = risk
        self._rng = rng
        self.clock = clock
        self.seed = seed
        self.sends_orders = sends_orders

    @property
    def rng(self) -> random.Random:
        r = self._rng
        if r is None:
            # Made on first use: most steps never draw, and seeding costs microseconds.
            r = self._rng = _Random(self.seed * 18446744073709551616 + self.run_id)
        return r

    @property
    def client_order_id(self) -> str:
        """Stable across retries of this step, so a retried order never fills twice."""
        return f"{self.workflow}:{self.run_id}:{self.step}"

    def submit_order(self, side: Side | str, qty: float | None = None) -> OrderResult:
        """Send one order for this step's symbol through the risk checks to the broker
        (see :func:`engine.core.orders.submit_order` for the rules)."""
        return _submit_order(self, side, qty)


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
        self._init(run, spec)

    def _init(self, run: Run, spec: StepDef) -> None:
        self.run = run
        self.spec = spec
        self.state = _STEP_PENDING
        self.waiting = len(spec.deps)  # dependencies not yet completed
        self.attempts = 0  # finished attempts (success or failure); a preemption is not one
        self.preemptions = 0
        self.handle: int | None = None  # heap handle while queued
        self.seq = -1  # queue age, kept across preemption so it returns at the head
        self.timer: Any = None  # retry backoff (a TimerHandle)
        self.ready_at = 0.0
        self.urgent_at: float | None = None  # set when this step triggered a preemption
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.output: Any = None
        self.error: str | None = None

    @property
    def name(self) -> str:
        return str(self.spec.name)

    def context(
        self,
        market: MarketData,
        broker: Broker,
        risk: Risk,
        clock: Callable[[], float],
    ) -> StepContext:
        """The context of this step's next attempt (built field by field: no argument
        parsing on the hot path)."""
        run = self.run
        spec = self.spec
        ctx = StepContext.__new__(StepContext)
        ctx.run_id = run.id
        ctx.workflow = run.workflow.name
        ctx.step = spec.name
        ctx.symbol = run.symbol.name
        ctx.tick = run.tick
        ctx.inputs = run.outputs
        ctx.attempt = self.attempts + 1
        ctx.params = spec.params
        ctx.market = market
        ctx.broker = broker
        ctx.risk = risk
        ctx.clock = clock
        ctx.seed = spec.seed
        ctx.sends_orders = spec.sends_orders
        ctx._rng = None
        return ctx

    def advance(self, new: StepState) -> None:
        state = self.state
        # The two moves of every step, by identity (both are in the table: asserted below);
        # anything else is looked up in the table.
        if not (
            (state is _STEP_PENDING and new is _STEP_RUNNING)
            or (state is _STEP_RUNNING and new is _STEP_COMPLETED)
        ) and new not in STEP_TRANSITIONS[state]:
            check_transition(STEP_TRANSITIONS, state, new, f"step {self.label}")
        self.state = new

    @property
    def label(self) -> str:
        run: Any = self.run
        if run is None:  # released: the run is over
            return f"?.{self.spec.name}"
        return f"{run.workflow.name}[{run.id}].{self.spec.name}"

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
        "follow_up_seq",
        "id",
        "key",
        "logged",
        "outcome",
        "outputs",
        "priority",
        "running",
        "started_at",
        "state",
        "steps",
        "stored",
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
        symbol: Any,
        tick: Any,
        priority: int,
        trigger_at: float,
    ) -> None:
        self._init(run_id, workflow, symbol, tick, priority, trigger_at)

    def _init(
        self, run_id: int, workflow: WorkflowDef, symbol: Any, tick: Any, priority: int,
        trigger_at: float,
    ) -> None:
        # The hot path makes runs with Run.__new__ + _init: a call through the type with six
        # arguments costs ~2,800 instructions of argument parsing, a third of making the run.
        self.id = run_id
        self.workflow = workflow
        self.symbol = symbol
        self.key = (workflow.name, symbol.name)  # its conflation slot: (workflow, symbol)
        self.tick = tick
        self.priority = priority
        self.trigger_at = trigger_at
        self.deadline = trigger_at + workflow.deadline_s
        self.state = _RUN_PENDING
        self.steps = self._make_steps(workflow)
        self.outputs: dict[str, Any] = {}
        self.completed = 0
        self.running = 0
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self.error: str | None = None
        self.outcome: str | None = None
        self.follow_up: Any = None  # the Tick of the follow-up run, if one is waiting
        self.follow_up_at = 0.0
        self.follow_up_seq: int | None = None  # the event that brought it (Coordinator.id_for)
        self.cancel_reason: str | None = None  # set by a cancel waiting on a running order step
        self.suspended = False  # cut by the shutdown drain: stored as still in flight
        self.logged = False  # in the coordinator's change log (take_changed_runs)
        self.stored = False  # storage wrote a row for it while in flight

    def _make_steps(self, workflow: WorkflowDef) -> list[StepRun]:
        steps = []
        for spec in workflow.steps:
            # Made without a constructor call: no argument parsing, for every step of every run.
            step = StepRun.__new__(StepRun)
            step._init(self, spec)
            steps.append(step)
        return steps

    def release(self) -> None:
        """Break the run <-> step reference cycle once the run is over and none of its steps
        runs: reference counting then frees a finished run at once. Left to the cyclic garbage
        collector, finished runs cost more than a third of the engine's time in pauses."""
        for step in self.steps:
            step.run = None  # type: ignore[assignment]

    def advance(self, new: RunState) -> None:
        state = self.state
        if not (
            (state is _RUN_PENDING and new is _RUN_RUNNING)
            or (state is _RUN_RUNNING and new is _RUN_COMPLETED)
        ) and new not in RUN_TRANSITIONS[state]:
            check_transition(RUN_TRANSITIONS, state, new, f"run {self.label}")
        self.state = new

    @property
    def label(self) -> str:
        return f"{self.workflow.name}[{self.id}] {self.symbol.name}"

    def __repr__(self) -> str:
        return f"<Run {self.label} {self.state.value}>"


class Lane:
    """One workflow's heap of ready steps and the count of its steps running."""

    __slots__ = ("heap", "max_concurrent", "name", "owner", "paused", "running")

    def __init__(self, name: str, max_concurrent: int, capacity: int, owner: object) -> None:
        self.name = name
        self.owner = owner  # the ReadyQueue it belongs to
        self.max_concurrent = max_concurrent
        # Each lane can hold the whole global capacity (plus room for preempted steps coming
        # back), so a lane never refuses; the global bound is enforced by ReadyQueue.
        self.heap = _heaps.PriorityHeap(capacity)
        self.running = 0
        self.paused = False
