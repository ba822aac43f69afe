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
from typing import Any

from engine.core.clock import Clock
from engine.core.events import Tick
from engine.core.flow import CoordinatorCore
from engine.core.fsm import Interrupt, RunState, StepState
from engine.core.runs import ReadyQueue, Run, StepRun, WorkflowDef
from engine.core.stats import EngineCounters, StepCounters, WorkflowCounters
from engine.core.symbols import MarketData, SymbolTable

__all__ = ["Coordinator"]

log = logging.getLogger("tickflow.engine")


class Coordinator(CoordinatorCore):
    """Implements :class:`engine.core.dispatcher.DispatchHooks`; the engine wires it up.

    Triggers, starting and ending runs, and the hooks of a step that starts and succeeds are in
    :class:`engine.core.flow.CoordinatorCore` (compiled); this class adds the rest.
    """

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
        super().__init__(
            workflows=workflows, symbols=symbols, market=market, queue=queue, clock=clock,
            counters=counters, rng=rng, broker=broker, risk=risk, first_run_id=first_run_id,
        )
        self._bind_counters(workflows)

    def set_next_run_id(self, next_id: int) -> None:
        """Continue numbering after the runs already stored (ids are client-order-id stable)."""
        self._ids = itertools.count(next_id)

    # -- workflows ---------------------------------------------------------------------------

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

    def adopt(
        self,
        run_id: int,
        workflow: str,
        symbol_name: str,
        tick: Tick,
        completed: dict[str, tuple[Any, int, int, int | None, int | None]],
        created_at: float | None = None,
    ) -> str:
        """Re-create a run found in flight at start; returns ``resumed``, ``restarted`` or
        ``dropped``. Completed steps (name -> output, attempts, preemptions, started and finished
        in microseconds after the run's creation) keep what was stored of them and are not run
        again; a run whose stored progress does not fit its workflow any more starts over
        (same id, so its order steps keep their client order ids and stay idempotent).

        ``created_at`` is when the run was first triggered, on this process's clock (the stored
        wall-clock time minus one wall-minus-engine offset read for the whole recovery, so runs
        created at the same instant still tie and keep their order): the run keeps that
        instant, so what is stored of it when it ends says when it was created, not when the
        daemon restarted -- and its deadline and its run latency count from then too (the
        outage included: that is how long it took)."""
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
        # Never later than now: the wall clock may have gone back since.
        trigger_at = now if created_at is None else min(now, created_at)
        run = Run(run_id, wf, symbol, tick, wf.run_priority(symbol.priority), trigger_at)
        run.stored = True  # its row is in the database: storage replaces it when the run ends
        names = {st.spec.name: st for st in run.steps}
        outcome = "resumed" if completed else "restarted"
        if completed and not completed.keys() <= names.keys():
            completed, outcome = {}, "restarted"
        for name, (output, attempts, preemptions, started_us, finished_us) in completed.items():
            step = names[name]
            step.advance(StepState.RUNNING)
            step.advance(StepState.COMPLETED)
            step.output = output
            step.attempts = attempts
            step.preemptions = preemptions
            # Half a microsecond over: records truncate to whole microseconds, and the sum's
            # rounding must not take one off at every restart.
            if started_us is not None:
                step.started_at = trigger_at + (started_us + 0.5) / 1e6
            if finished_us is not None:
                step.finished_at = trigger_at + (finished_us + 0.5) / 1e6
            run.outputs[name] = output
            run.completed += 1
        for step in run.steps:
            step.waiting = sum(
                1 for d in step.spec.deps if run.steps[d].state is not StepState.COMPLETED
            )
        self._register(run)
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

    # -- DispatchHooks beyond the per-step path --------------------------------------------

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
        if self._run_log is not None:
            self._log_run(run)
        if step.spec.sends_orders and self.on_order_finished is not None:
            self.on_order_finished(step)
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
        self._unqueue(run, False)
        running = [s for s in run.steps if s.state is StepState.RUNNING]
        if self.dispatcher is not None:
            for step in running:
                if step.spec.preemptible:
                    self.dispatcher.interrupt_step(step, Interrupt.CANCEL)
        if not running:
            self._end_run(run, RunState.CANCELLED, "cancelled", reason)
        return True

    # -- reading ----------------------------------------------------------------------------

    def in_flight(self) -> int:
        return len(self.runs)

    def pending_run(self, workflow: str, symbol: str) -> Run | None:
        return self._pending.get((workflow, symbol))

    def active_run(self, workflow: str, symbol: str) -> Run | None:
        return self._active.get((workflow, symbol))
