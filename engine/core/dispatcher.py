"""The dispatcher and its bounded pool of agents.

Agents are long-lived coroutines on the event loop (no Task per step). Work always comes from
the ready queue in a *dispatch pass*: one pass per loop turn, scheduled with ``call_soon`` and
coalesced, so everything that arrived in the same turn is in the heap before anything is handed
out -- an idle agent never takes low-priority work ahead of an urgent event that arrived with it.
A woken agent then takes its next steps straight from the heap in a bounded streak.

All of it -- the dispatch pass, starting a step and running it as far as it goes without
suspending, the streak, and the agents' coroutine bodies that finish a step that suspended --
is compiled in place as one class (``dispatcher.pxd``); what it reports goes to
:class:`StepHooks`, which the coordinator implements.

Preemption and timeouts interrupt an agent the same way: set ``agent.interrupt`` to the reason,
then cancel the agent's task. The agent catches the ``CancelledError`` at the step's await,
``uncancel()``s itself and reports the reason; a cancellation with no reason is shutdown and
propagates. Inline steps never suspend, so neither can reach them mid-way (their timeout is
checked when they return); thread steps are never preemptible and a timeout abandons the
thread's result.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
from collections.abc import Callable
from typing import Any

from engine.core.clock import Clock
from engine.core.errors import StepTimeout
from engine.core.fsm import Interrupt, StepState
from engine.core.ready import ReadyQueue
from engine.core.runs import Lane, StepContext, StepRun
from engine.core.stats import DispatcherStatistics
from engine.core.workflow import ExecKind
from fastpath import coro as _coro

__all__ = [
    "STREAK_SECONDS",
    "STREAK_STEPS",
    "Agent",
    "Dispatcher",
    "DispatcherStatistics",
    "Interrupt",
    "StepHooks",
]

# An agent takes up to this many steps in a row straight from the heap, for at most this long,
# before it gives the loop a turn: a step that never suspends would otherwise starve intake,
# timers and the other agents. An event arriving meanwhile waits for the streak to end (it is
# not in the heap until the loop reads it), so the time bound is what streaks add to the
# dispatch tail. A spent streak with work left yields the loop one turn and goes on
# (_yield_turn) instead of going idle to be woken by a dispatch pass (a future made, a pass, a
# wake-up), so a short bound costs little.
STREAK_STEPS = 32
STREAK_SECONDS = 0.00005

# Module constants: one global lookup instead of a global plus an attribute per use.
_STEP_PENDING = StepState.PENDING
_STEP_RUNNING = StepState.RUNNING
_INLINE = ExecKind.INLINE
_ASYNC = ExecKind.ASYNC
_PREEMPT = Interrupt.PREEMPT
_TIMEOUT = Interrupt.TIMEOUT
_NO_DEADLINE = math.inf
_Resume = _coro.Resume
_sleep = asyncio.sleep
_coro_start = _coro.start  # a module global is cached; an attribute of a module is looked up

# A step that suspended (or runs in a thread), for its agent's coroutine to finish:
# (step, lane, ctx, coro, yielded); coro None for a thread step not started yet.
Pending = tuple[StepRun, Lane, StepContext, Any, Any]


class StepHooks:
    """What the dispatcher reports for every step; the coordinator implements it.

    A base class rather than a protocol so that the compiled build calls the coordinator's
    overrides through a C vtable, exactly as the pure build calls them by name."""

    def make_context(self, step: StepRun) -> StepContext:
        raise NotImplementedError

    def step_started(self, step: StepRun, now: float) -> None:
        raise NotImplementedError

    def step_succeeded(self, step: StepRun, output: Any, now: float) -> None:
        raise NotImplementedError

    def step_failed(self, step: StepRun, error: BaseException, now: float, timeout: bool) -> None:
        raise NotImplementedError

    def step_preempted(self, step: StepRun, now: float) -> None:
        raise NotImplementedError

    def step_cancelled(self, step: StepRun, now: float, reason: str) -> None:
        raise NotImplementedError


class Agent:
    """One slot of the bounded pool; its coroutine is :meth:`Dispatcher.run_agent`."""

    __slots__ = (
        "deadline",
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
        self.step: StepRun | None = None  # the step it runs (or has claimed)
        # Handed over by a dispatch pass or a preemption, runs next.
        self.reserved: StepRun | None = None
        self.reserved_lane: Lane | None = None
        self.interrupt: Interrupt | None = None
        self.start_seq = 0  # orders starts even when the clock reads the same instant
        self.streak = 0  # steps taken straight from the heap since the agent last idled
        self.streak_until = 0.0
        # When the step it runs times out, while that step is suspended (or in a thread).
        self.deadline = _NO_DEADLINE


class Dispatcher:
    """Hands ready steps to agents and runs the steps that complete without suspending; a
    step that suspends (or runs in a thread) is finished by its agent's coroutine."""

    def __init__(
        self,
        queue: ReadyQueue,
        agents: int,
        clock: Clock,
        hooks: StepHooks,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.hooks = hooks
        self.executor = executor
        self._now = clock.now  # the callable itself: read several times per step
        self.agents = [Agent(i) for i in range(agents)]
        self._idle: list[Agent] = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dispatched = 0
        self.preemptions = 0
        self.timeouts = 0
        self.overruns = 0  # inline steps that returned after their timeout (kept, counted)
        self.passes = 0
        self._starts = 0
        self._ended_at = 0.0  # when the last step run by run_step() ended (streak budget)
        # One timer watches every agent's step deadline (see _watch_deadline).
        self._watch: Any = None
        self._watch_at = _NO_DEADLINE
        self._yielding = 0  # agents that spent their streak with work left, back next turn
        self._reporting = False  # an agent is reporting the end of its step (see schedule)
        # Preemption latency observer (urgent step ready -> running), set by the engine.
        self.on_preemption_latency: Callable[[StepRun, float], None] | None = None

    @property
    def busy(self) -> int:
        return sum(1 for a in self.agents if a.step is not None)

    def schedule(self) -> None:
        """Ask for a dispatch pass at the end of this loop turn (coalesced); or, when no agent
        is idle or about to come back to the heap, preempt at once.

        With every agent busy, all a pass could do is preempt, and deciding it here instead
        of in a pass a loop turn later takes a loop turn (a poll, the callbacks and timers
        due) out of the urgent step's wait: the victim's task still needs one turn to be
        thrown its cancellation. The pass stays for idle agents, so that an idle agent never
        takes low-priority work ahead of an urgent event arriving later in the same turn.
        Not while an agent reports a step it ended (``_reporting``): that agent takes its next
        step from the heap itself in this turn, so a step its report made ready is not worth a
        preemption, exactly as the pass a turn later would find."""
        if (
            not self._idle
            and not self._yielding
            and not self._reporting
            and self._preempt(True)
        ):
            return
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
            if not self._yielding:
                # (An agent back next turn takes the best step: no need to preempt.)
                self._preempt(False)
            return

    def _preempt(self, eager: bool) -> int:
        """No agent is idle: while the best eligible step outranks a running preemptible
        step, hand it to that step's agent and interrupt the agent. Returns how many.

        ``eager`` (from :meth:`schedule`, in the call that made the step ready): stop at a
        victim whose task is already due to run this turn -- a step that yielded without a
        future, or whose future is done: it may end its step and take the urgent one itself
        before a pass, as the pass a turn later lets it (a step that suspends for a moment,
        like ``asyncio.sleep(0)``, would otherwise be cancelled and redone for nothing)."""
        queue = self.queue
        count = 0
        while True:
            lane = queue.best_lane()
            if lane is None:
                return count
            priority = lane.heap.peek_key()[0]
            victim = self._pick_victim(priority)
            if victim is None:
                return count
            if eager:
                # Task's documented states (asyncio/tasks.py): waiting only while its
                # _fut_waiter is a pending future.
                waiter = getattr(victim.task, "_fut_waiter", None)
                if waiter is None or waiter.done():
                    return count
            step = queue.pop_from(lane)
            lane.running += 1
            self.dispatched += 1
            step.urgent_at = step.ready_at
            victim.reserved = step
            victim.reserved_lane = lane
            self._interrupt(victim, _PREEMPT)
            self.preemptions += 1
            count += 1

    def _pick_victim(self, priority: int) -> Agent | None:
        """The running preemptible step with the largest priority number above ``priority``;
        ties go to the one started last (least work lost)."""
        best: Agent | None = None
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

    def _interrupt(self, agent: Agent, reason: Interrupt) -> bool:
        if agent.interrupt is not None or agent.task is None:
            return False
        agent.interrupt = reason
        agent.task.cancel()
        return True

    def _on_timeout(self, agent: Agent, step: StepRun) -> None:
        if (
            agent.step is step
            and step.state is _STEP_RUNNING
            and self._interrupt(agent, _TIMEOUT)
        ):
            self.timeouts += 1

    # -- running steps ----------------------------------------------------------------------

    def _take(self, agent: Agent) -> StepRun | None:
        queue = self.queue
        lane = queue.best_lane()
        if lane is None:
            return None
        step = queue.pop_from(lane)
        lane.running += 1
        self.dispatched += 1
        agent.step = step
        return step

    def streak(self, agent: Agent, step: StepRun | None) -> Pending | None:
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

    def run_step(self, agent: Agent, step: StepRun) -> Pending | None:
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
                suspended, output = _coro_start(coro)
                if suspended:
                    self._watch_deadline(agent, now + spec.timeout_s)
                    return (step, lane, ctx, coro, output)
            else:
                self._watch_deadline(agent, now + spec.timeout_s)
                return (step, lane, ctx, None, None)
        except asyncio.CancelledError:
            if self._cancelled(agent, step, lane):
                raise
        except Exception as exc:
            self._settle(agent, step, lane, None, exc)
        else:
            self._settle(agent, step, lane, output, None)
        return None

    # -- timeouts -----------------------------------------------------------------------------

    def _watch_deadline(self, agent: Agent, deadline: float) -> None:
        """``agent``'s step suspended: it times out at ``deadline`` (its start + timeout).

        One timer for all agents, armed at the earliest deadline, instead of one per step: a
        timer per suspending step (made, started, cancelled) cost ~4,500 instructions, a third
        of what the dispatcher spends on such a step. Deadlines of steps started later with the
        same timeout come later, so the timer is rarely re-armed; when it fires it times out
        the agents whose deadline has passed and re-arms for the next one."""
        agent.deadline = deadline
        if deadline < self._watch_at:
            watch = self._watch
            if watch is not None:
                watch.cancel()
            self._watch_at = deadline
            self._watch = self.clock.call_later(deadline - self._now(), self._on_watch)

    def _on_watch(self) -> None:
        self._watch = None
        self._watch_at = _NO_DEADLINE
        now = self._now()
        nearest = _NO_DEADLINE
        for agent in self.agents:
            deadline = agent.deadline
            if deadline <= now:
                agent.deadline = _NO_DEADLINE
                step = agent.step
                if step is not None:
                    self._on_timeout(agent, step)
            elif deadline < nearest:
                nearest = deadline
        if nearest != _NO_DEADLINE:
            self._watch_at = nearest
            self._watch = self.clock.call_later(nearest - now, self._on_watch)

    # -- ending steps -------------------------------------------------------------------------

    def _settle(
        self, agent: Agent, step: StepRun, lane: Lane, output: Any, error: Exception | None
    ) -> None:
        """``step`` returned ``output`` or raised ``error`` (an Exception): free its agent,
        report it, and ask for a dispatch pass if other agents are idle."""
        self._finish(agent, lane)
        ended = self._ended_at = self._now()  # also the streak's "now" (one clock read less)
        self._reporting = True  # what the report makes ready, this agent takes (schedule)
        try:
            if error is None:
                self.hooks.step_succeeded(step, output, ended)
            else:
                self.hooks.step_failed(step, error, ended, isinstance(error, StepTimeout))
        finally:
            self._reporting = False
        if self._idle and self.queue:
            self.schedule()  # work for the idle agents too (this one pulls its own next step)

    def _cancelled(self, agent: Agent, step: StepRun, lane: Lane) -> bool:
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
            self._finish(agent, lane)
            hooks.step_cancelled(step, now(), "shutdown")
            self._release_handed(agent)
            return True
        self._finish(agent, lane)
        self._reporting = True  # as in _settle: this agent takes its next step itself
        try:
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
        finally:
            self._reporting = False
        if self._idle and self.queue:
            self.schedule()
        return False

    def _finish(self, agent: Agent, lane: Lane) -> None:
        agent.deadline = _NO_DEADLINE  # the watch timer, if armed for it, finds nothing due
        if agent.interrupt is not None and agent.task is not None:
            # The step ended before the interrupt reached it (or swallowed the CancelledError):
            # withdraw the cancellation so it cannot hit the agent's next step.
            agent.interrupt = None
            agent.task.uncancel()
        agent.step = None
        lane.running -= 1

    def _release_handed(self, agent: Agent) -> None:
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

    # -- lifecycle --------------------------------------------------------------------------

    async def run_agent(self, agent: Agent) -> None:
        """The body of one agent; the engine's task group owns the task that runs it."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        agent.task = asyncio.current_task()
        now = self.clock.now
        while True:
            step: StepRun | None = None
            handed = agent.reserved
            if handed is not None:
                # Handed over by a dispatch pass or a preemption, in an earlier loop turn: its
                # run may have been cancelled or shed since, so check before running it.
                lane = agent.reserved_lane
                agent.reserved = agent.reserved_lane = None
                assert lane is not None
                if handed.state is not StepState.PENDING:
                    lane.running -= 1
                    agent.step = None
                    continue
                step = handed
            pending = self.streak(agent, step)
            if pending is not None:
                # A step that suspended (coro) or runs in a thread (coro None): finished here,
                # in the agent's own coroutine (no coroutine of its own per step).
                step, lane, ctx, coro, yielded = pending
                try:
                    if coro is not None:
                        resumed = _Resume(coro, yielded)
                        await resumed
                        output = resumed.result
                    else:
                        output = await loop.run_in_executor(self.executor, step.spec.fn, ctx)
                except asyncio.CancelledError:
                    if self._cancelled(agent, step, lane):
                        raise
                except Exception as exc:
                    self._settle(agent, step, lane, None, exc)
                else:
                    self._settle(agent, step, lane, output, None)
                # The step suspended, so the loop has had its turn: a new streak starts. Else
                # a streak's budget, spent across the suspension, cost an extra loop turn
                # (_yield_turn) per step or two of steps that each suspend anyway.
                agent.streak = 0
                agent.streak_until = self._ended_at + STREAK_SECONDS
                continue
            if agent.reserved is not None:
                continue
            if (
                agent.streak >= STREAK_STEPS or self._ended_at >= agent.streak_until
            ) and self.queue.best_lane() is not None:
                # The streak is spent and there is work it could take: give the loop one turn
                # (intake, timers, the other agents) and go on, without going idle.
                await self._yield_turn(agent)
                agent.streak = 0
                agent.streak_until = now() + STREAK_SECONDS
                continue
            # Nothing more for this agent now: wait to be handed a step by a dispatch pass.
            agent.streak = 0
            fut: asyncio.Future[None] = loop.create_future()
            agent.inbox = fut
            self._idle.append(agent)
            if self.queue:
                self.schedule()
            try:
                await fut
            except asyncio.CancelledError:
                task = agent.task
                if task is None or task.cancelling():
                    self._release_handed(agent)
                    raise  # shutdown
                # An interrupt withdrawn with uncancel() can still land here on 3.11
                # (it cannot retract a cancellation already scheduled): go on.
                if agent in self._idle:
                    self._idle.remove(agent)
                continue
            agent.streak_until = now() + STREAK_SECONDS

    async def _yield_turn(self, agent: Agent) -> None:
        """Stay away from the heap for one loop turn (a shutdown's cancellation propagates)."""
        self._yielding += 1
        try:
            await _sleep(0)
        except asyncio.CancelledError:
            task = agent.task
            if task is None or task.cancelling():
                self._release_handed(agent)
                raise  # shutdown
            # A withdrawn interrupt's late cancellation (see run_agent): go on.
        finally:
            self._yielding -= 1

    # -- reading and operator actions -------------------------------------------------------

    def statistics(self) -> DispatcherStatistics:
        return DispatcherStatistics(
            agents=len(self.agents),
            busy=self.busy,
            dispatched=self.dispatched,
            preemptions=self.preemptions,
            timeouts=self.timeouts,
            dispatch_passes=self.passes,
        )

    def interrupt_step(self, step: StepRun, reason: Interrupt) -> bool:
        """Interrupt a running step (operator cancel); False if it cannot be interrupted now."""
        for agent in self.agents:
            if agent.step is step:
                return self._interrupt(agent, reason)
        return False
