"""The per-step path of the engine: starting and ending runs, and running steps on agents.

Compiled in place like :mod:`engine.core.runs` (typed by ``flow.pxd``). It holds only what
every run and every step goes through; :class:`engine.core.coordinator.Coordinator` and
:class:`engine.core.dispatcher.Dispatcher` subclass these cores and add the rest (recovery,
re-prioritisation, operator cancel, retries and preemption bookkeeping, the agents'
coroutine bodies).

A step that returns without suspending -- an inline step, or a coroutine that never awaits
anything pending -- is run start to finish here, and its agent takes the next step straight
from the heap (a *streak*, bounded in steps and time so intake, timers and the other agents get
the loop). Only a step that suspends, or runs in a thread, goes back to the agent's coroutine.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

from engine.core import records as _records
from engine.core import runs as _runs
from engine.core.errors import StepTimeout
from engine.core.fsm import Interrupt, RunState, StepState
from engine.core.workflow import ExecKind
from fastpath import coro as _coro

__all__ = ["STREAK_SECONDS", "STREAK_STEPS", "Agent", "CoordinatorCore", "DispatcherCore"]

log = logging.getLogger("tickflow.engine")

# An agent takes up to this many steps in a row straight from the heap, for at most this long,
# before it gives the loop a turn: a step that never suspends would otherwise starve intake,
# timers and the other agents.
STREAK_STEPS = 32
STREAK_SECONDS = 0.0002

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
_INLINE = ExecKind.INLINE
_ASYNC = ExecKind.ASYNC
_PREEMPT = Interrupt.PREEMPT
_TIMEOUT = Interrupt.TIMEOUT
_TERMINAL_RUN = frozenset({_RUN_COMPLETED, _RUN_FAILED, _RUN_CANCELLED})


class Agent:
    """One slot of the bounded pool; its coroutine is :meth:`Dispatcher.run_agent`."""

    __slots__ = (
        "inbox",
        "index",
        "interrupt",
        "reserved",
        "reserved_lane",
        "start_seq",
        "step",
        "streak",
        "streak_until",
        "task",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.task: asyncio.Task[None] | None = None
        self.inbox: asyncio.Future[None] | None = None
        self.step: Any = None  # the StepRun it runs (or has claimed)
        self.reserved: Any = None  # handed over by a dispatch pass or a preemption, runs next
        self.reserved_lane: Any = None
        self.interrupt: Interrupt | None = None
        self.start_seq = 0  # orders starts even when the clock reads the same instant
        self.streak = 0  # steps taken straight from the heap since the agent last idled
        self.streak_until = 0.0


class CoordinatorCore:
    """Runs from trigger to end; the hooks the dispatcher calls for every step."""

    def __init__(
        self,
        *,
        workflows: dict[str, Any],
        symbols: Any,
        market: Any,
        queue: Any,
        clock: Any,
        counters: Any,
        rng: Any,
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
        self.dispatcher: Any = None
        self._now = clock.now  # the callable itself: read on every step
        self._wall = clock.wall
        self.stopping = False  # set by the engine's drain: no new follow-ups, work stays pending
        self._ids = itertools.count(first_run_id)
        self.runs: dict[int, Any] = {}  # live runs by id
        self._pending: dict[tuple[str, str], Any] = {}
        self._active: dict[tuple[str, str], Any] = {}
        self._route_cache: dict[int, tuple[Any, ...]] = {}
        # Storage's change log of runs (track_runs; see "the change log" below).
        self._run_log: list[Any] | None = None
        self._on_runs_changed: Any = None  # called when the log stops being empty
        self._marked: dict[int, Any] = {}  # live runs changed since the last take, by id
        self.last_run_id = 0  # storage keeps it: run ids are never reused, stored or not
        # Completed runs skip the log: their records are made as they end (FinishedRuns), so
        # the run is freed at once. ``record_offset``: wall minus monotonic time, kept by the
        # storage writer.
        self.finished: Any = None
        self.record_offset = 0.0
        # Observers; None costs one attribute test.
        self.on_run_finished: Any = None  # a run ended
        self.on_order_finished: Any = None  # a step whose action sends orders finished
        # The engine's idle flag: called when the first run is made after none was in flight,
        # and when the last one ends (a follow-up it started counts as in flight).
        self.on_busy: Any = None
        self.on_idle: Any = None

    # -- routes and triggers ----------------------------------------------------------------

    def routes(self, priority: int) -> tuple[Any, ...]:
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

    def accept_data(self, event: Any, received_at: float, default_priority: int) -> None:
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

    def reprioritise(self, symbol: Any, priority: int) -> int:
        """HIGH_PRIORITY_ARRIVED: re-key the symbol's queued work now; returns entries moved."""
        old_routes = self.routes(symbol.priority)
        self.symbols.set_priority(symbol, priority)
        new_routes = self.routes(priority)
        moved = 0
        for run in list(symbol.runs):
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

    def on_data(self, symbol: Any, tick: Any, received_at: float) -> None:
        """A DATA_READY for ``symbol`` was accepted: record it and trigger its workflows."""
        self.market.record(tick)
        self.symbols.mark_data_ready(symbol, tick)
        for wf in self.routes(symbol.priority):
            self.trigger(wf, symbol, tick, received_at)

    def trigger(self, wf: Any, symbol: Any, tick: Any, at: float) -> Any:
        if self.stopping:
            return None  # shutting down: the symbol stays data_ready + pending for the next start
        counters = wf.counters
        counters.triggered += 1
        key = (wf.name, symbol.name)
        pending = self._pending.get(key)
        if pending is not None:
            pending.tick = tick  # latest tick wins; the run keeps its place (and age) in line
            counters.conflated += 1
            if self._run_log is not None:
                self._log_shared(pending)
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

    def _start_run(self, wf: Any, symbol: Any, tick: Any, at: float) -> Any:
        run = _runs.Run(next(self._ids), wf, symbol, tick, wf.run_priority(symbol.priority), at)
        self.last_run_id = run.id
        self._register(run)
        self._pending[run.key] = run
        if self._run_log is not None:
            self._log_shared(run)
        steps = run.steps
        for index in wf.roots:
            if run.outcome is not None:
                break  # enqueuing an earlier root shed the run itself
            self._enqueue(steps[index], at)
        return run

    def _register(self, run: Any) -> None:
        """A run made (triggered, follow-up, or adopted by recovery) is live from now on."""
        runs = self.runs
        if not runs and self.on_busy is not None:
            self.on_busy()
        runs[run.id] = run
        run.symbol.runs.add(run)

    # -- the change log ---------------------------------------------------------------------
    # What storage must write, kept at the cost of a flag test per change (a run changes five
    # or six times) and without holding finished runs:
    # * a live run that changed is marked (``run.logged``) and kept by id until it ends: a
    #   finished run is dropped from the marks, so they never hold it (thousands of finished
    #   runs a commit window can see), and taking them never walks the runs in flight (tens of
    #   thousands when a burst is queued);
    # * a run that ended other than completed (failed, cancelled, cut by the drain) is logged;
    # * a completed run's record is made as it ends (FinishedRuns) and the run is freed.

    def track_runs(self, wake: Any) -> None:
        """Keep the change log from now on; ``wake()`` is called when it stops being empty."""
        if self._run_log is None:
            self._run_log = []
            self.finished = _records.FinishedRuns()
        self._on_runs_changed = wake

    def take_finished(self) -> Any:
        """The records of the runs completed since the last call (a FinishedRuns)."""
        finished = self.finished
        self.finished = _records.FinishedRuns()
        return finished

    def take_changed_runs(self) -> list[Any]:
        """The runs changed since the last call and not completed (each once)."""
        log = self._run_log
        if log is None:
            return []
        self._run_log = []
        marked = self._marked
        if marked:
            self._marked = {}
            log.extend(marked.values())
        for run in log:
            run.logged = False
        return log

    @property
    def changed_runs(self) -> int:
        """How many runs the change log holds: ended, marked live, and completed."""
        if self._run_log is None:
            return 0
        finished: int = self.finished.count
        return len(self._run_log) + len(self._marked) + finished

    def _record_finished(self, run: Any) -> None:
        finished = self.finished
        finished.add(run, self.record_offset)
        if finished.count == 1:
            self._wake_storage()

    def _log_ended(self, run: Any) -> None:
        log = self._run_log
        assert log is not None  # callers test it
        run.logged = True  # a step still running when it ended logs it again only after a take
        log.append(run)
        if len(log) == 1:
            self._wake_storage()

    def _log_shared(self, run: Any) -> None:
        """Mark a run that has done nothing yet only where routes overlap or its row is stored
        already (a run adopted at start): on a symbol routed to its workflow alone, storage has
        no use for it (see engine.core.records.run_record)."""
        if run.stored or len(self.routes(run.symbol.priority)) > 1:
            self._log_run(run)

    def _log_run(self, run: Any) -> None:
        if run.logged:
            return
        if run.state in _TERMINAL_RUN:
            # A step that was still running when its run ended: the run has left the marks
            # (they hold live runs only), so it goes to the log of ended runs.
            self._log_ended(run)
            return
        run.logged = True
        marked = self._marked
        marked[run.id] = run
        if len(marked) == 1:
            self._wake_storage()

    def _wake_storage(self) -> None:
        wake = self._on_runs_changed
        if wake is not None:
            wake()

    # -- the queue --------------------------------------------------------------------------

    def _enqueue(self, step: Any, now: float) -> None:
        step.ready_at = now
        shed = self.queue.push(step)
        if shed is not None:
            self._shed(shed)
        if self.dispatcher is not None:
            self.dispatcher.schedule()

    def _shed(self, step: Any) -> None:
        run = step.run
        run.workflow.counters.shed += 1
        step.advance(_STEP_CANCELLED)
        step.error = "shed: ready queue full"
        self._end_run(run, _RUN_CANCELLED, "shed", "shed: ready queue full")

    def _unqueue(self, run: Any, cancel: bool) -> None:
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

    def make_context(self, step: Any) -> Any:
        return step.context(self.market, self.broker, self.risk, self._wall)

    def step_started(self, step: Any, now: float) -> None:
        run = step.run
        step.advance(_STEP_RUNNING)
        step.started_at = now
        run.running += 1
        if step.spec.sends_orders and self._run_log is not None:
            # An order goes out: the run is stored (with its id, hence its client order ids)
            # at the next commit, so a restart resumes it instead of sending a new order.
            self._log_run(run)
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
            if self._run_log is not None:
                self._log_shared(run)

    def step_succeeded(self, step: Any, output: Any, now: float) -> None:
        run = step.run
        run.running -= 1
        step.attempts += 1
        step.output = output
        step.finished_at = now
        step.advance(_STEP_COMPLETED)
        spec = step.spec
        sc = spec.counters
        sc.outcomes["completed"] += 1
        sc.duration.record(now - step.started_at)
        if self._run_log is not None:
            self._log_run(run)
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

    def _settle_cancel(self, run: Any) -> bool:
        """After a step of a cancel-requested run ended: finish the run once nothing runs."""
        if run.cancel_reason is None or run.state in _TERMINAL_RUN:
            return False
        if run.running == 0:
            self._end_run(run, _RUN_CANCELLED, "cancelled", run.cancel_reason)
        return True

    # -- ending runs ------------------------------------------------------------------------

    def _end_run(
        self, run: Any, state: RunState, outcome: str, error: str | None, now: float = -1.0
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
                self._start_run(wf, symbol, follow_up, run.follow_up_at)
        # A run cut by the shutdown drain is not recorded as over: storage keeps it in flight,
        # with its completed steps, so the next start resumes it under the same id (its order
        # step keeps its client order id) instead of starting the work over.
        if self.stopping and outcome == "cancelled":
            run.suspended = True
        if self._run_log is not None:
            if run.logged:
                self._marked.pop(run.id, None)
            if state is _RUN_COMPLETED:
                self._record_finished(run)
            else:
                self._log_ended(run)
        if self.on_run_finished is not None:
            self.on_run_finished(run)
        if not self.runs and self.on_idle is not None:
            self.on_idle()
        if run.running == 0:
            run.release()

    def _update_symbol(self, run: Any, state: RunState, error: str | None) -> None:
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


class DispatcherCore:
    """Hands ready steps to agents and runs the steps that complete without suspending."""

    def __init__(
        self, queue: Any, agents: int, clock: Any, hooks: Any, executor: Any = None
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.hooks = hooks
        self.executor = executor
        self._now = clock.now  # the callable itself: read several times per step
        self.agents = [Agent(i) for i in range(agents)]
        self._idle: list[Any] = []
        self._scheduled = False
        self._loop: Any = None
        self.dispatched = 0
        self.preemptions = 0
        self.timeouts = 0
        self.overruns = 0  # inline steps that returned after their timeout (kept, counted)
        self.passes = 0
        self._starts = 0
        self._ended_at = 0.0  # when the last step run by run_step() ended (streak budget)
        # Preemption latency observer (urgent step ready -> running), set by the engine.
        self.on_preemption_latency: Any = None

    @property
    def busy(self) -> int:
        return sum(1 for a in self.agents if a.step is not None)

    def schedule(self) -> None:
        """Ask for a dispatch pass at the end of this loop turn (coalesced)."""
        if not self._scheduled:
            self._scheduled = True
            loop = self._loop
            if loop is None:
                loop = asyncio.get_running_loop()
            loop.call_soon(self._dispatch)

    # -- the dispatch pass ------------------------------------------------------------------

    def _dispatch(self) -> None:
        self._scheduled = False
        self.passes += 1
        queue = self.queue
        idle = self._idle
        while True:
            lane = queue.best_lane()
            if lane is None:
                return
            if idle:
                agent = idle.pop()
                inbox = agent.inbox
                if inbox is None or inbox.done():
                    continue  # a cancelled (shut down) agent: never hand it work
                step = queue.pop_from(lane)
                lane.running += 1
                self.dispatched += 1
                agent.inbox = None
                agent.step = step  # claimed now, so a second pass cannot pick it as idle
                agent.reserved = step
                agent.reserved_lane = lane
                inbox.set_result(None)
                continue
            priority = lane.heap.peek_key()[0]
            victim = self._pick_victim(priority)
            if victim is None:
                return
            step = queue.pop_from(lane)
            lane.running += 1
            self.dispatched += 1
            step.urgent_at = step.ready_at
            victim.reserved = step
            victim.reserved_lane = lane
            self._interrupt(victim, _PREEMPT)
            self.preemptions += 1

    def _pick_victim(self, priority: int) -> Any:
        """The running preemptible step with the largest priority number above ``priority``;
        ties go to the one started last (least work lost)."""
        best: Any = None
        best_q = 0
        for agent in self.agents:
            step = agent.step
            if (
                step is None
                or agent.interrupt is not None
                or agent.reserved is not None
                or step.state is not _STEP_RUNNING
                or not step.spec.preemptible
            ):
                continue
            q = step.run.priority
            if q <= priority:
                continue
            if best is None or q > best_q or (q == best_q and agent.start_seq > best.start_seq):
                best = agent
                best_q = q
        return best

    def _interrupt(self, agent: Any, reason: Interrupt) -> bool:
        if agent.interrupt is not None or agent.task is None:
            return False
        agent.interrupt = reason
        agent.task.cancel()
        return True

    def _on_timeout(self, agent: Any, step: Any) -> None:
        if (
            agent.step is step
            and step.state is _STEP_RUNNING
            and self._interrupt(agent, _TIMEOUT)
        ):
            self.timeouts += 1

    # -- running steps ----------------------------------------------------------------------

    def _take(self, agent: Any) -> Any:
        queue = self.queue
        lane = queue.best_lane()
        if lane is None:
            return None
        step = queue.pop_from(lane)
        lane.running += 1
        self.dispatched += 1
        agent.step = step
        return step

    def streak(self, agent: Any, step: Any) -> Any:
        """Run ``step`` (None: take one from the heap) and then steps straight from the heap,
        while each completes without suspending and the streak's budget lasts.

        Returns None when the agent has nothing more to run now; or, for a step that suspended
        (or runs in a thread), ``(step, lane, ctx, coro, yielded)`` for the agent's
        coroutine to finish (``coro`` None: a thread step that has not started yet).
        """
        while True:
            if step is None:
                # The time the last step ended stands for now: one clock read less per step.
                if agent.streak >= STREAK_STEPS or self._ended_at >= agent.streak_until:
                    return None
                step = self._take(agent)
                if step is None:
                    return None
                agent.streak += 1
            pending = self.run_step(agent, step)
            if pending is not None:
                return pending
            if agent.reserved is not None:
                return None  # handed a step by a preemption it caused itself: run that first
            step = None

    def run_step(self, agent: Any, step: Any) -> Any:
        """Start ``step`` on ``agent`` and run it as far as it goes without suspending."""
        hooks = self.hooks
        clock_now = self._now
        spec = step.spec
        lane = step.run.workflow.lane
        now = clock_now()
        agent.step = step
        self._starts += 1
        agent.start_seq = self._starts
        hooks.step_started(step, now)
        if step.urgent_at is not None and self.on_preemption_latency is not None:
            self.on_preemption_latency(step, now - step.urgent_at)
            step.urgent_at = None
        try:
            ctx = hooks.make_context(step)
            kind = spec.kind
            if kind is _INLINE:
                # Never timed out: it cannot be interrupted, and once it has returned its result
                # exists -- for an order step, the fill exists. Failing it would lose that.
                output = spec.fn(ctx)
                if clock_now() - now > spec.timeout_s:
                    self.overruns += 1
            elif kind is _ASYNC:
                coro = spec.fn(ctx)
                # Run it until it first suspends: one that returns at once needs no timer.
                suspended, output = _coro.start(coro)
                if suspended:
                    return (step, lane, ctx, coro, output)
            else:
                return (step, lane, ctx, None, None)
        except asyncio.CancelledError:
            if self._cancelled(agent, step, lane, None):
                raise
        except Exception as exc:
            self._settle(agent, step, lane, None, None, exc)
        else:
            self._settle(agent, step, lane, None, output, None)
        return None

    def _settle(
        self, agent: Any, step: Any, lane: Any, timer: Any, output: Any, error: Any
    ) -> None:
        """``step`` returned ``output`` or raised ``error`` (an Exception): free its agent,
        report it, and ask for a dispatch pass if other agents are idle."""
        self._finish(agent, lane, timer)
        ended = self._ended_at = self._now()  # also the streak's "now" (one clock read less)
        if error is None:
            self.hooks.step_succeeded(step, output, ended)
        else:
            self.hooks.step_failed(step, error, ended, isinstance(error, StepTimeout))
        if self._idle and self.queue:
            self.schedule()  # work for the idle agents too (this one pulls its own next step)

    def _cancelled(self, agent: Any, step: Any, lane: Any, timer: Any) -> bool:
        """A CancelledError reached ``step``: settle it by the agent's interrupt reason.
        Returns True for a shutdown, which the caller lets propagate."""
        hooks = self.hooks
        now = self._now
        reason = agent.interrupt
        task = agent.task
        if reason is not None and task is not None:
            agent.interrupt = None
            task.uncancel()
        if reason is None or (task is not None and task.cancelling()):
            # Shutdown (possibly on top of an interrupt): record it and let it propagate.
            self._finish(agent, lane, timer)
            hooks.step_cancelled(step, now(), "shutdown")
            self._release_handed(agent)
            return True
        self._finish(agent, lane, timer)
        if reason is _PREEMPT:
            hooks.step_preempted(step, now())
        elif reason is _TIMEOUT:
            hooks.step_failed(
                step,
                StepTimeout(f"{step.label} timed out after {step.spec.timeout_s:.6f}s"),
                now(),
                True,
            )
        else:
            hooks.step_cancelled(step, now(), "cancelled")
        if self._idle and self.queue:
            self.schedule()
        return False

    def _finish(self, agent: Any, lane: Any, timer: Any) -> None:
        if timer is not None:
            timer.cancel()
        if agent.interrupt is not None and agent.task is not None:
            # The step ended before the interrupt reached it (or swallowed the CancelledError):
            # withdraw the cancellation so it cannot hit the agent's next step.
            agent.interrupt = None
            agent.task.uncancel()
        agent.step = None
        lane.running -= 1

    def _release_handed(self, agent: Any) -> None:
        """Shutdown caught an agent holding a handed-over step it never started."""
        step = agent.reserved
        lane = agent.reserved_lane
        agent.reserved = None
        agent.reserved_lane = None
        agent.step = None
        if step is None or lane is None:
            return
        lane.running -= 1
        if step.state is _STEP_PENDING:  # not already cancelled with its run
            self.hooks.step_cancelled(step, self.clock.now(), "shutdown")
