"""Run lifecycle: routing triggers to runs, conflation, step outcomes, retries, shedding.

The coordinator owns every live run. It turns a trigger (workflow, symbol, tick) into at most
one *pending* run per (workflow, symbol) -- a newer tick replaces a pending run's input -- and,
while a run is in progress, at most one follow-up, started when the current run ends (so runs of
one workflow for one symbol never overlap and orders for a symbol stay in sequence).
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable
from typing import Any

from .clock import Clock
from .context import StepContext
from .dispatcher import Dispatcher, Interrupt
from .events import Tick
from .fsm import RunState, StepState
from .market import MarketData
from .runs import Run, StepRun
from .scheduler import ReadyQueue
from .stats import EngineCounters, StepCounters, WorkflowCounters
from .symbols import SymbolState, SymbolTable
from .workflow import WorkflowDef

__all__ = ["Coordinator"]

log = logging.getLogger("tickflow.engine")

ROUTE_CACHE_PRIORITIES = 1024


class Coordinator:
    """Implements :class:`engine.dispatcher.DispatchHooks`; the engine wires it up."""

    def __init__(
        self,
        *,
        workflows: dict[str, WorkflowDef],
        symbols: SymbolTable,
        market: MarketData,
        queue: ReadyQueue,
        clock: Clock,
        counters: EngineCounters,
        rng: random.Random,
        broker: Any,
        risk: Any,
        first_run_id: int = 1,
    ) -> None:
        self.workflows = workflows
        self.symbols = symbols
        self.market = market
        self.queue = queue
        self.clock = clock
        self.counters = counters
        self.rng = rng
        self.broker = broker
        self.risk = risk
        self._bind_counters(workflows)
        self.dispatcher: Dispatcher | None = None
        self._wall = clock.wall
        self.stopping = False  # set by the engine's drain: no new follow-ups, work stays pending
        self._ids = itertools.count(first_run_id)
        self.runs: dict[int, Run] = {}  # live runs by id
        self._pending: dict[tuple[str, str], Run] = {}
        self._active: dict[tuple[str, str], Run] = {}
        self._by_symbol: dict[str, set[Run]] = {}
        self._route_cache: dict[int, tuple[WorkflowDef, ...]] = {}
        # Observers for storage/metrics; None costs one attribute test.
        self.on_run_finished: Callable[[Run], None] | None = None
        self.on_step_finished: Callable[[StepRun], None] | None = None
        # Called when a run is created, its input replaced, started, or ended (storage).
        self.on_run_update: Callable[[Run], None] | None = None
        # Called once per run made (triggered, follow-up, or resumed by recovery): the engine
        # knows from this alone that it is not idle.
        self.on_run_created: Callable[[Run], None] | None = None

    def set_next_run_id(self, next_id: int) -> None:
        """Continue numbering after the runs already stored (ids are client-order-id stable)."""
        self._ids = itertools.count(next_id)

    # -- workflows and routes ---------------------------------------------------------------

    def set_workflows(self, workflows: dict[str, WorkflowDef]) -> None:
        """New runs use ``workflows``; runs in flight keep the definition they started with."""
        self.workflows = workflows
        self._route_cache.clear()
        for name, wf in workflows.items():
            self.queue.add_lane(name, wf.max_concurrent)
        self._bind_counters(workflows)

    def _bind_counters(self, workflows: dict[str, WorkflowDef]) -> None:
        # Counters live by name in the engine (they survive reloads); the compiled definitions
        # point at them so the hot path never looks them up.
        for name, wf in workflows.items():
            wf.lane = self.queue.add_lane(name, wf.max_concurrent)
            wc = self.counters.workflow(name, tuple(s.name for s in wf.steps))
            wf.counters = wc
            for spec in wf.steps:
                spec.counters = wc.step(spec.name)

    def routes(self, priority: int) -> tuple[WorkflowDef, ...]:
        wfs = self._route_cache.get(priority)
        if wfs is None:
            wfs = tuple(
                wf for wf in self.workflows.values() if wf.enabled and wf.route.matches(priority)
            )
            if priority < ROUTE_CACHE_PRIORITIES:  # clients choose priorities: bound the cache
                self._route_cache[priority] = wfs
        return wfs

    # -- triggers ---------------------------------------------------------------------------

    def on_data(self, symbol: SymbolState, tick: Tick, received_at: float) -> None:
        """A DATA_READY for ``symbol`` was accepted: record it and trigger its workflows."""
        self.market.record(tick)
        self.symbols.mark_data_ready(symbol, tick)
        for wf in self.routes(symbol.priority):
            self.trigger(wf, symbol, tick, received_at)

    def trigger(self, wf: WorkflowDef, symbol: SymbolState, tick: Tick, at: float) -> Run | None:
        if self.stopping:
            return None  # shutting down: the symbol stays data_ready + pending for the next start
        counters: WorkflowCounters = wf.counters
        counters.triggered += 1
        key = (wf.name, symbol.name)
        pending = self._pending.get(key)
        if pending is not None:
            pending.tick = tick  # latest tick wins; the run keeps its place (and age) in line
            counters.conflated += 1
            if self.on_run_update is not None:
                self.on_run_update(pending)
            return None
        active = self._active.get(key)
        if active is not None:
            if wf.on_busy == "skip":
                counters.skipped += 1
                return None
            if active.follow_up is not None:
                counters.conflated += 1
            else:
                active.follow_up_at = at
            active.follow_up = tick
            return None
        return self._start_run(wf, symbol, tick, at)

    def _start_run(self, wf: WorkflowDef, symbol: SymbolState, tick: Tick, at: float) -> Run:
        run = Run(next(self._ids), wf, symbol, tick, wf.run_priority(symbol.priority), at)
        self.runs[run.id] = run
        self._pending[run.key] = run
        self._by_symbol.setdefault(symbol.name, set()).add(run)
        symbol.active_runs += 1
        if self.on_run_created is not None:
            self.on_run_created(run)
        if self.on_run_update is not None:
            self.on_run_update(run)
        for index in wf.roots:
            if run.outcome is not None:
                break  # enqueuing an earlier root shed the run itself
            self._enqueue(run.steps[index], at)
        return run

    def adopt(
        self,
        run_id: int,
        workflow: str,
        symbol_name: str,
        tick: Tick,
        completed: dict[str, tuple[Any, int]],
    ) -> str:
        """Re-create a run found in flight at start; returns ``resumed``, ``restarted`` or
        ``dropped``. Completed steps keep their stored outputs and are not run again; a run
        whose stored progress does not fit its workflow any more starts over (same id, so its
        order steps keep their client order ids and stay idempotent)."""
        wf = self.workflows.get(workflow)
        if wf is None or not wf.enabled:
            return "dropped"
        symbol = self.symbols.get(symbol_name) or self.symbols.register(
            symbol_name, wf.priority
        )
        key = (workflow, symbol_name)
        if key in self._pending or key in self._active:
            return "dropped"
        now = self.clock.now()
        run = Run(run_id, wf, symbol, tick, wf.run_priority(symbol.priority), now)
        names = {st.spec.name: st for st in run.steps}
        outcome = "resumed" if completed else "restarted"
        if completed and not completed.keys() <= names.keys():
            completed, outcome = {}, "restarted"
        for name, (output, attempts) in completed.items():
            step = names[name]
            step.advance(StepState.RUNNING)
            step.advance(StepState.COMPLETED)
            step.output = output
            step.attempts = attempts
            run.outputs[name] = output
            run.completed += 1
        for step in run.steps:
            step.waiting = sum(
                1 for d in step.spec.deps if run.steps[d].state is not StepState.COMPLETED
            )
        self.runs[run.id] = run
        self._by_symbol.setdefault(symbol_name, set()).add(run)
        symbol.active_runs += 1
        if self.on_run_created is not None:
            self.on_run_created(run)
        last = symbol.last_tick
        if last is not None and last.ts >= tick.ts and last != tick:
            # Newer data was accepted before the stop: it gets its follow-up run.
            run.follow_up, run.follow_up_at = symbol.last_tick, now
        if run.completed:
            run.advance(RunState.RUNNING)
            run.started_at = now
            self._active[key] = run
            self.symbols.mark_processing(symbol)
        else:
            self._pending[key] = run
        if run.completed == len(run.steps):
            self._end_run(run, RunState.COMPLETED, "completed", None)
            return outcome
        for step in run.steps:
            if step.state is StepState.PENDING and step.waiting == 0:
                self._enqueue(step, now)
        return outcome

    def reprioritise(self, symbol: SymbolState, priority: int) -> int:
        """HIGH_PRIORITY_ARRIVED: re-key the symbol's queued work now; returns entries moved."""
        old_routes = self.routes(symbol.priority)
        self.symbols.set_priority(symbol, priority)
        new_routes = self.routes(priority)
        moved = 0
        for run in list(self._by_symbol.get(symbol.name, ())):
            if run.follow_up is not None and not run.workflow.route.matches(priority):
                # The waiting tick belongs to the new route now, not after this run ends.
                tick, at = run.follow_up, run.follow_up_at
                run.follow_up = None
                for wf in new_routes:
                    if wf not in old_routes:
                        self.trigger(wf, symbol, tick, at)
            new = run.workflow.run_priority(priority)
            old = run.priority
            if new == old:
                continue
            run.priority = new
            for step in run.steps:
                if step.handle is not None:
                    self.queue.rekey(step, old, new)
                    moved += 1
        if moved and self.dispatcher is not None:
            self.dispatcher.schedule()
        return moved

    # -- the queue --------------------------------------------------------------------------

    def _enqueue(self, step: StepRun, now: float) -> None:
        step.ready_at = now
        shed = self.queue.push(step)
        if shed is not None:
            self._shed(shed)
        if self.dispatcher is not None:
            self.dispatcher.schedule()

    def _shed(self, step: StepRun) -> None:
        run = step.run
        run.workflow.counters.shed += 1
        step.advance(StepState.CANCELLED)
        step.error = "shed: ready queue full"
        self._end_run(run, RunState.CANCELLED, "shed", "shed: ready queue full")

    # -- DispatchHooks ----------------------------------------------------------------------

    def make_context(self, step: StepRun) -> StepContext:
        run = step.run
        spec = step.spec
        return StepContext(
            run.id, run.workflow.name, spec.name, run.symbol.name, run.tick, run.outputs,
            step.attempts + 1, spec.params, self.market, self.broker, self.risk, self.rng,
            self._wall,
        )

    def step_started(self, step: StepRun, now: float) -> None:
        run = step.run
        step.advance(StepState.RUNNING)
        step.started_at = now
        run.running += 1
        counters: WorkflowCounters = run.workflow.counters
        counters.dispatch_wait.record(now - step.ready_at)
        if run.state is RunState.PENDING:
            run.advance(RunState.RUNNING)
            run.started_at = now
            # From here on a new tick for this (workflow, symbol) becomes a follow-up.
            if self._pending.get(run.key) is run:
                del self._pending[run.key]
            self._active[run.key] = run
            self.symbols.mark_processing(run.symbol)
            if self.on_run_update is not None:
                self.on_run_update(run)

    def step_succeeded(self, step: StepRun, output: Any, now: float) -> None:
        run = step.run
        run.running -= 1
        step.attempts += 1
        step.output = output
        step.finished_at = now
        step.advance(StepState.COMPLETED)
        sc: StepCounters = step.spec.counters
        sc.outcomes["completed"] += 1
        if step.started_at is not None:
            sc.duration.record(now - step.started_at)
        if self.on_step_finished is not None:
            self.on_step_finished(step)
        if run.state.terminal:
            if run.running == 0:
                run.release()  # the last sibling still running when the run ended
            return  # recorded, not used
        if self._settle_cancel(run):
            return
        run.outputs[step.spec.name] = output
        run.completed += 1
        if run.completed == len(run.steps):
            self._end_run(run, RunState.COMPLETED, "completed", None)
            return
        for index in step.spec.dependents:
            if run.outcome is not None:
                return  # enqueuing a sibling shed the run itself
            nxt = run.steps[index]
            nxt.waiting -= 1
            if nxt.waiting == 0:
                self._enqueue(nxt, now)

    def step_failed(self, step: StepRun, error: BaseException, now: float, timeout: bool) -> None:
        run = step.run
        run.running -= 1
        step.attempts += 1
        message = f"{type(error).__name__}: {error}"
        step.error = message
        sc: StepCounters = step.spec.counters
        if timeout:
            sc.timeouts += 1
            sc.outcomes["timeout"] += 1
        retry = step.spec.retry
        if run.cancel_reason is None and not run.state.terminal and step.attempts <= retry.count:
            sc.retries += 1
            sc.outcomes["retried"] += 1
            step.advance(StepState.PENDING)
            delay = retry.delay_s(step.attempts, self.rng)
            step.timer = self.clock.call_later(delay, lambda: self._retry(step))
            return
        step.finished_at = now
        step.advance(StepState.FAILED)
        sc.outcomes["failed"] += 1
        if self.on_step_finished is not None:
            self.on_step_finished(step)
        if self._settle_cancel(run):
            return
        if run.state.terminal:
            if run.running == 0:
                run.release()
            return
        if not run.state.terminal:
            log.warning("run %s failed at step %s: %s", run.label, step.spec.name, message)
            self._end_run(run, RunState.FAILED, "failed", f"{step.spec.name}: {message}")

    def _retry(self, step: StepRun) -> None:
        step.timer = None
        if step.state is StepState.PENDING and not step.run.state.terminal:
            self._enqueue(step, self.clock.now())

    def step_preempted(self, step: StepRun, now: float) -> None:
        run = step.run
        run.running -= 1
        step.preemptions += 1
        step.advance(StepState.PENDING)
        counters: WorkflowCounters = run.workflow.counters
        counters.preemptions += 1
        step.spec.counters.outcomes["preempted"] += 1
        if run.state.terminal or run.cancel_reason is not None:
            step.advance(StepState.CANCELLED)
            if not self._settle_cancel(run) and run.running == 0:
                run.release()
            return
        step.ready_at = now
        shed = self.queue.requeue_front(step)
        if shed is not None:
            self._shed(shed)

    def step_cancelled(self, step: StepRun, now: float, reason: str) -> None:
        run = step.run
        if step.state is StepState.RUNNING:
            run.running -= 1
        if not step.state.terminal:
            step.advance(StepState.CANCELLED)
        step.error = reason
        step.finished_at = now
        step.spec.counters.outcomes["cancelled"] += 1
        if self._settle_cancel(run):
            return
        if not run.state.terminal:
            self._end_run(run, RunState.CANCELLED, "cancelled", reason)
        elif run.running == 0:
            run.release()

    # -- operator actions -------------------------------------------------------------------

    def cancel_run(
        self, run_id: int, reason: str = "cancelled by operator", *, shutdown: bool = False
    ) -> bool:
        """Cancel a live run: queued and backing-off steps are dropped, running preemptible steps
        interrupted. A running non-preemptible step (an order) is left to finish -- never cut
        half-way -- and the run ends when it does, keeping its (workflow, symbol) slot until
        then so that no second run's order can overlap it."""
        run = self.runs.get(run_id)
        if run is None or run.state.terminal or run.cancel_reason is not None:
            return False
        run.cancel_reason = reason
        if not shutdown:
            run.follow_up = None
        self._unqueue(run, cancel=False)
        running = [s for s in run.steps if s.state is StepState.RUNNING]
        if self.dispatcher is not None:
            for step in running:
                if step.spec.preemptible:
                    self.dispatcher.interrupt_step(step, Interrupt.CANCEL)
        if not running:
            self._end_run(run, RunState.CANCELLED, "cancelled", reason)
        return True

    def _unqueue(self, run: Run, *, cancel: bool) -> None:
        """Take the run's waiting steps out of the queue and off their retry timers."""
        for step in run.steps:
            if step.state is StepState.PENDING:
                if step.handle is not None:
                    self.queue.remove(step)
                if step.timer is not None:
                    step.timer.cancel()
                    step.timer = None
                if cancel:
                    step.advance(StepState.CANCELLED)

    def _settle_cancel(self, run: Run) -> bool:
        """After a step of a cancel-requested run ended: finish the run once nothing runs."""
        if run.cancel_reason is None or run.state.terminal:
            return False
        if run.running == 0:
            self._end_run(run, RunState.CANCELLED, "cancelled", run.cancel_reason)
        return True

    # -- ending runs ------------------------------------------------------------------------

    def _end_run(self, run: Run, state: RunState, outcome: str, error: str | None) -> None:
        if run.state is RunState.PENDING and state is not RunState.CANCELLED:
            run.advance(RunState.RUNNING)
        run.advance(state)
        now = self.clock.now()
        run.finished_at = now
        run.outcome = outcome
        run.error = error
        self._unqueue(run, cancel=True)
        key = run.key
        if self._pending.get(key) is run:
            del self._pending[key]
        if self._active.get(key) is run:
            del self._active[key]
        self.runs.pop(run.id, None)
        symbol = run.symbol
        runs_of_symbol = self._by_symbol.get(symbol.name)
        if runs_of_symbol is not None:
            runs_of_symbol.discard(run)
            if not runs_of_symbol:
                del self._by_symbol[symbol.name]
        symbol.active_runs -= 1
        counters: WorkflowCounters = run.workflow.counters
        counters.runs[outcome] += 1
        if state is RunState.COMPLETED:
            counters.run_latency.record(now - run.trigger_at)
        if outcome == "shed" or self.stopping:
            run.follow_up = None  # the sweep (or recovery after a restart) re-triggers it
        self._update_symbol(run, state, error)
        # The follow-up starts before observers hear of the end, so "no run in flight" is
        # never reported between a run and its follow-up.
        follow_up = run.follow_up
        if follow_up is not None:
            run.follow_up = None
            wf = self.workflows.get(run.workflow.name, run.workflow)
            if wf.enabled and wf.route.matches(symbol.priority):
                self._start_run(wf, symbol, follow_up, run.follow_up_at)
        # A run cut by the shutdown drain is not recorded as over: storage keeps it in flight,
        # with its completed steps, so the next start resumes it under the same id (its order
        # step keeps its client order id) instead of starting the work over.
        if self.stopping and outcome == "cancelled":
            run.suspended = True
        if self.on_run_update is not None:
            self.on_run_update(run)
        if self.on_run_finished is not None:
            self.on_run_finished(run)
        if run.running == 0:
            run.release()

    def _update_symbol(self, run: Run, state: RunState, error: str | None) -> None:
        symbol = run.symbol
        if state is RunState.FAILED or (
            run.outcome == "cancelled" and not self.stopping and symbol.active_runs == 0
            and run.follow_up is None
        ):
            # A failure, or an operator's cancel: recorded on the symbol, and not re-run by the
            # sweep (which would undo the cancel). Shed or shutdown work stays pending instead.
            self.symbols.mark_failed(symbol, f"{run.workflow.name}: {error}", self.clock.wall())
        elif symbol.active_runs == 0 and run.follow_up is None:
            if state is RunState.COMPLETED:
                self.symbols.mark_completed(symbol, self.clock.wall())
            else:
                self.symbols.mark_pending(symbol)  # shed or cancelled: the sweep picks it up

    # -- reading ----------------------------------------------------------------------------

    def in_flight(self) -> int:
        return len(self.runs)

    def pending_run(self, workflow: str, symbol: str) -> Run | None:
        return self._pending.get((workflow, symbol))

    def active_run(self, workflow: str, symbol: str) -> Run | None:
        return self._active.get((workflow, symbol))
