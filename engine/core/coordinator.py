"""Run lifecycle: routing triggers to runs, conflation, step outcomes, retries, shedding.

The coordinator owns every live run. It turns a trigger (workflow, symbol, tick) into at most
one *pending* run per (workflow, symbol) -- a newer tick replaces a pending run's input -- and,
while a run is in progress, at most one follow-up, started when the current run ends (so runs of
one workflow for one symbol never overlap and orders for a symbol stay in sequence).
"""

from __future__ import annotations

import functools
import itertools
import logging
import operator
import random
from collections.abc import Callable
from typing import Any

from engine.core import records as _records
from engine.core.clock import Clock
from engine.core.counters import StepCounters, WorkflowCounters
from engine.core.dispatcher import Dispatcher, StepHooks
from engine.core.events import DataReady, HighPriorityArrived, Tick
from engine.core.fsm import Interrupt, RunState, StepState
from engine.core.ready import ReadyQueue
from engine.core.runlog import RunLog
from engine.core.runs import Run, StepContext, StepRun, WorkflowDef
from engine.core.stats import EngineCounters
from engine.core.symbols import MarketData, SymbolState, SymbolTable

__all__ = ["ROUTE_CACHE_PRIORITIES", "Coordinator"]

log = logging.getLogger("tickflow.engine")

_run_id = operator.attrgetter("id")

ROUTE_CACHE_PRIORITIES = 1024

# Module constants: one global lookup instead of a global plus an attribute per use.
_STEP_PENDING = StepState.PENDING
_STEP_RUNNING = StepState.RUNNING
_STEP_COMPLETED = StepState.COMPLETED
_STEP_CANCELLED = StepState.CANCELLED
_RUN_PENDING = RunState.PENDING
_RUN_RUNNING = RunState.RUNNING
_RUN_COMPLETED = RunState.COMPLETED
_RUN_FAILED = RunState.FAILED
_RUN_CANCELLED = RunState.CANCELLED
_TERMINAL_RUN = frozenset({_RUN_COMPLETED, _RUN_FAILED, _RUN_CANCELLED})


class Coordinator(StepHooks):
    """Runs from trigger to end: the hooks the dispatcher calls for every step, recovery's
    adoption of stored runs, retries, preemption bookkeeping and operator cancels."""

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
        self.dispatcher: Dispatcher | None = None
        self._now = clock.now  # the callable itself: read on every step
        self._wall = clock.wall
        self.stopping = False  # set by the engine's drain: no new follow-ups, work stays pending
        self._ids = itertools.count(first_run_id)
        self.runs: dict[int, Run] = {}  # live runs by id
        self._pending: dict[tuple[str, str], Run] = {}
        self._active: dict[tuple[str, str], Run] = {}
        self._route_cache: dict[int, tuple[WorkflowDef, ...]] = {}
        # Storage's change log of runs, once storage asks for it (track_runs).
        self.run_log: RunLog | None = None
        self.last_run_id = 0  # storage keeps it: run ids are never reused, stored or not
        # Run ids derived from the event that made the run, instead of the counter: a cluster
        # node replaying a partition after a takeover must re-derive the ids (and so the client
        # order ids) the previous owner used. ``id_for(workflow, event_seq)`` is called while
        # ``event_seq`` is set (the caller sets it around each event it applies, and a
        # follow-up run keeps the seq of the event that made it, whatever tick it runs on);
        # its ids must not meet the counter's (start them far above it).
        self.id_for: Callable[[WorkflowDef, int], int] | None = None
        self.event_seq: int | None = None
        # Wall minus monotonic time, kept by the storage writer, for the records of runs made
        # as they complete.
        self.record_offset = 0.0
        # Observers; None costs one attribute test.
        self.on_run_finished: Callable[[Run], None] | None = None  # a run ended
        # A step whose action sends orders finished.
        self.on_order_finished: Callable[[StepRun], None] | None = None
        # The engine's idle flag: called when the first run is made after none was in flight,
        # and when the last one ends (a follow-up it started counts as in flight).
        self.on_busy: Callable[[], None] | None = None
        self.on_idle: Callable[[], None] | None = None
        self._bind_counters(workflows)

    # -- routes and triggers ----------------------------------------------------------------

    def routes(self, priority: int) -> tuple[WorkflowDef, ...]:
        wfs = self._route_cache.get(priority)
        if wfs is None:
            matching = []
            for wf in self.workflows.values():
                if wf.enabled and wf.route.matches(priority):
                    matching.append(wf)
            wfs = tuple(matching)
            if priority < ROUTE_CACHE_PRIORITIES:  # clients choose priorities: bound the cache
                self._route_cache[priority] = wfs
        return wfs

    def accept_data(self, event: DataReady, received_at: float, default_priority: int) -> None:
        """A DATA_READY the engine accepted: find or register its symbol, apply the priority
        it carries, record its tick and trigger the symbol's workflows."""
        symbols = self.symbols
        priority = event.priority
        symbol = symbols.get(event.symbol)
        if symbol is None:
            symbol = symbols.register(
                event.symbol, default_priority if priority is None else priority
            )
        elif priority is not None and priority != symbol.priority:
            self.reprioritise(symbol, priority)
        self.on_data(symbol, event.tick(), received_at)

    def accept_priority(
        self, event: HighPriorityArrived, received_at: float, default_priority: int
    ) -> None:
        """A HIGH_PRIORITY_ARRIVED the engine accepted: a new symbol is registered at that
        priority, a known one re-prioritised (its queued work re-keyed now)."""
        symbol = self.symbols.get(event.symbol)
        if symbol is None:
            self.symbols.register(event.symbol, event.priority)
        else:
            self.reprioritise(symbol, event.priority)

    def reprioritise(self, symbol: SymbolState, priority: int) -> int:
        """HIGH_PRIORITY_ARRIVED: re-key the symbol's queued work now; returns entries moved."""
        old_routes = self.routes(symbol.priority)
        self.symbols.set_priority(symbol, priority)
        new_routes = self.routes(priority)
        moved = 0
        # By id, not in the set's order: what this triggers and re-keys must not depend on
        # hashing (a backtest gives the same fills in every process).
        for run in sorted(symbol.runs, key=_run_id):
            if run.follow_up is not None and not run.workflow.route.matches(priority):
                # The waiting tick belongs to the new route now, not after this run ends.
                tick, at = run.follow_up, run.follow_up_at
                run.follow_up = None
                applying = self.event_seq
                self.event_seq = run.follow_up_seq
                try:
                    for wf in new_routes:
                        if wf not in old_routes:
                            self.trigger(wf, symbol, tick, at)
                finally:
                    self.event_seq = applying
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

    def on_data(self, symbol: SymbolState, tick: Tick, received_at: float) -> None:
        """A DATA_READY for ``symbol`` was accepted: record it and trigger its workflows."""
        self.market.record(tick)
        self.symbols.mark_data_ready(symbol, tick)
        for wf in self.routes(symbol.priority):
            self.trigger(wf, symbol, tick, received_at)

    def trigger(self, wf: WorkflowDef, symbol: SymbolState, tick: Tick, at: float) -> Run | None:
        if self.stopping:
            return None  # shutting down: the symbol stays data_ready + pending for the next start
        counters = wf.counters
        counters.triggered += 1
        key = (wf.name, symbol.name)
        pending = self._pending.get(key)
        if pending is not None:
            pending.tick = tick  # latest tick wins; the run keeps its place (and age) in line
            counters.conflated += 1
            runlog = self.run_log
            if runlog is not None:
                self._log_shared(runlog, pending)
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
                # Its id comes from the event that made it, as a pending run keeps its first
                # event's id when later ticks conflate into it.
                active.follow_up_seq = self.event_seq
            active.follow_up = tick
            return None
        return self._start_run(wf, symbol, tick, at)

    def _start_run(self, wf: WorkflowDef, symbol: SymbolState, tick: Tick, at: float) -> Run:
        id_for = self.id_for
        seq = self.event_seq
        run_id = next(self._ids) if id_for is None or seq is None else id_for(wf, seq)
        run = Run.__new__(Run)  # no argument parsing (see Run._init)
        run._init(run_id, wf, symbol, tick, wf.run_priority(symbol.priority), at)
        self.last_run_id = run.id
        self._register(run)
        self._pending[run.key] = run
        runlog = self.run_log
        if runlog is not None:
            self._log_shared(runlog, run)
        steps = run.steps
        for index in wf.roots:
            if run.outcome is not None:
                break  # enqueuing an earlier root shed the run itself
            self._enqueue(steps[index], at)
        return run

    def _register(self, run: Run) -> None:
        """A run made (triggered, follow-up, or adopted by recovery) is live from now on."""
        runs = self.runs
        if not runs and self.on_busy is not None:
            self.on_busy()
        runs[run.id] = run
        run.symbol.runs.add(run)

    # -- storage's change log (engine.core.runlog) -------------------------------------------

    def track_runs(self, wake: Callable[[], None]) -> None:
        """Keep the change log from now on; ``wake()`` is called when it stops being empty."""
        if self.run_log is None:
            self.run_log = RunLog(wake)
        else:
            self.run_log.wake = wake

    def take_finished(self) -> _records.FinishedRuns:
        """The records of the runs completed since the last call."""
        runlog = self.run_log
        return _records.FinishedRuns() if runlog is None else runlog.take_finished()

    def take_changed_runs(self) -> list[Run]:
        """The runs changed since the last call and not completed (each once)."""
        runlog = self.run_log
        return [] if runlog is None else runlog.take_changed()

    @property
    def changed_runs(self) -> int:
        """How many runs the change log holds: ended, marked live, and completed."""
        runlog = self.run_log
        return 0 if runlog is None else runlog.count

    def _log_shared(self, runlog: RunLog, run: Run) -> None:
        """Mark a run that has done nothing yet only where routes overlap or its row is stored
        already (a run adopted at start): on a symbol routed to its workflow alone, storage has
        no use for it (see engine.core.records.run_record)."""
        if run.stored or len(self.routes(run.symbol.priority)) > 1:
            runlog.mark(run)

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
        step.advance(_STEP_CANCELLED)
        step.error = "shed: ready queue full"
        self._end_run(run, _RUN_CANCELLED, "shed", "shed: ready queue full")

    def _unqueue(self, run: Run, cancel: bool) -> None:
        """Take the run's waiting steps out of the queue and off their retry timers."""
        queue = self.queue
        for step in run.steps:
            if step.state is _STEP_PENDING:
                if step.handle is not None:
                    queue.remove(step)
                if step.timer is not None:
                    step.timer.cancel()
                    step.timer = None
                if cancel:
                    step.advance(_STEP_CANCELLED)

    # -- hooks the dispatcher calls for every step ------------------------------------------

    def make_context(self, step: StepRun) -> StepContext:
        return step.context(self.market, self.broker, self.risk, self._wall)

    def step_started(self, step: StepRun, now: float) -> None:
        run = step.run
        step.advance(_STEP_RUNNING)
        step.started_at = now
        run.running += 1
        runlog = self.run_log
        if step.spec.sends_orders and runlog is not None:
            # An order goes out: the run is stored (with its id, hence its client order ids)
            # at the next commit, so a restart resumes it instead of sending a new order.
            runlog.mark(run)
        run.workflow.counters.dispatch_wait.record(now - step.ready_at)
        if run.state is _RUN_PENDING:
            run.advance(_RUN_RUNNING)
            run.started_at = now
            # From here on a new tick for this (workflow, symbol) becomes a follow-up.
            key = run.key
            if self._pending.get(key) is run:
                del self._pending[key]
            self._active[key] = run
            self.symbols.mark_processing(run.symbol)
            if runlog is not None:
                self._log_shared(runlog, run)

    def step_succeeded(self, step: StepRun, output: Any, now: float) -> None:
        run = step.run
        run.running -= 1
        step.attempts += 1
        step.output = output
        step.finished_at = now
        step.advance(_STEP_COMPLETED)
        spec = step.spec
        sc = spec.counters
        sc.outcomes["completed"] += 1
        sc.duration.record(now - step.started_at)  # type: ignore[operator]  # set at start
        runlog = self.run_log
        if runlog is not None:
            runlog.mark(run)
        if spec.sends_orders and self.on_order_finished is not None:
            self.on_order_finished(step)
        if run.state in _TERMINAL_RUN:
            if run.running == 0:
                run.release()  # the last sibling still running when the run ended
            return  # recorded, not used
        if run.cancel_reason is not None:
            self._settle_cancel(run)
            return
        run.outputs[spec.name] = output
        run.completed += 1
        steps = run.steps
        if run.completed == len(steps):
            self._end_run(run, _RUN_COMPLETED, "completed", None, now)
            return
        for index in spec.dependents:
            if run.outcome is not None:
                return  # enqueuing a sibling shed the run itself
            nxt = steps[index]
            nxt.waiting -= 1
            if nxt.waiting == 0:
                self._enqueue(nxt, now)

    def _settle_cancel(self, run: Run) -> bool:
        """After a step of a cancel-requested run ended: finish the run once nothing runs."""
        if run.cancel_reason is None or run.state in _TERMINAL_RUN:
            return False
        if run.running == 0:
            self._end_run(run, _RUN_CANCELLED, "cancelled", run.cancel_reason)
        return True

    # -- ending runs ------------------------------------------------------------------------

    def _end_run(
        self, run: Run, state: RunState, outcome: str, error: str | None, now: float = -1.0
    ) -> None:
        """End ``run``; ``now``: the instant it ended if the caller has read it, else -1."""
        if run.state is _RUN_PENDING and state is not _RUN_CANCELLED:
            run.advance(_RUN_RUNNING)
        run.advance(state)
        if now < 0.0:
            now = self._now()
        run.finished_at = now
        run.outcome = outcome
        run.error = error
        if run.completed + run.running < len(run.steps):  # something may still be queued
            self._unqueue(run, True)
        key = run.key
        if self._pending.get(key) is run:
            del self._pending[key]
        if self._active.get(key) is run:
            del self._active[key]
        self.runs.pop(run.id, None)
        symbol = run.symbol
        symbol.runs.discard(run)
        counters = run.workflow.counters
        counters.runs[outcome] += 1
        if state is _RUN_COMPLETED:
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
                applying = self.event_seq
                self.event_seq = run.follow_up_seq  # its id comes from its own event
                try:
                    self._start_run(wf, symbol, follow_up, run.follow_up_at)
                finally:
                    self.event_seq = applying
        # A run cut by the shutdown drain is not recorded as over: storage keeps it in flight,
        # with its completed steps, so the next start resumes it under the same id (its order
        # step keeps its client order id) instead of starting the work over.
        if self.stopping and outcome == "cancelled":
            run.suspended = True
        runlog = self.run_log
        if runlog is not None:
            if run.logged:
                runlog.forget(run)
            if state is _RUN_COMPLETED:
                runlog.add_completed(run, self.record_offset)
            else:
                runlog.add_ended(run)
        if self.on_run_finished is not None:
            self.on_run_finished(run)
        if not self.runs and self.on_idle is not None:
            self.on_idle()
        if run.running == 0:
            run.release()

    def _update_symbol(self, run: Run, state: RunState, error: str | None) -> None:
        symbol = run.symbol
        if state is _RUN_FAILED or (
            run.outcome == "cancelled" and not self.stopping and not symbol.runs
            and run.follow_up is None
        ):
            # A failure, or an operator's cancel: recorded on the symbol, and not re-run by the
            # sweep (which would undo the cancel). Shed or shutdown work stays pending instead.
            self.symbols.mark_failed(symbol, f"{run.workflow.name}: {error}", self._wall())
        elif not symbol.runs and run.follow_up is None:
            if state is _RUN_COMPLETED:
                self.symbols.mark_completed(symbol, self._wall())
            else:
                self.symbols.mark_pending(symbol)  # shed or cancelled: the sweep picks it up

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

    def install(self, run: Run, now: float) -> None:
        """Make live a run built elsewhere with its progress (engine.core.adoption: a run
        found in flight in storage or in a partition's checkpoint): it takes its conflation
        slot, ends at once if nothing is left to do, else its ready steps are queued."""
        self._register(run)
        symbol = run.symbol
        if run.completed:
            run.advance(RunState.RUNNING)
            run.started_at = now
            self._active[run.key] = run
            self.symbols.mark_processing(symbol)
        else:
            self._pending[run.key] = run
        if run.completed == len(run.steps):
            self._end_run(run, RunState.COMPLETED, "completed", None)
            return
        for step in run.steps:
            if step.state is StepState.PENDING and step.waiting == 0:
                self._enqueue(step, now)

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
            # (a partial, not a lambda: the compiled build allows no closure in this method)
            step.timer = self.clock.call_later(delay, functools.partial(self._retry, step))
            return
        step.finished_at = now
        step.advance(StepState.FAILED)
        sc.outcomes["failed"] += 1
        runlog = self.run_log
        if runlog is not None:
            runlog.mark(run)
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
