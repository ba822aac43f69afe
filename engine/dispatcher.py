"""The dispatcher and its bounded pool of agents.

Agents are long-lived coroutines on the event loop (no Task per step). Work always comes from
the ready queue in a *dispatch pass*: one pass per loop turn, scheduled with ``call_soon`` and
coalesced, so everything that arrived in the same turn is in the heap before anything is handed
out -- an idle agent never takes low-priority work ahead of an urgent event that arrived with it.

Preemption and timeouts interrupt an agent the same way: set ``agent.interrupt`` to the reason,
then cancel the agent's task. The agent catches the ``CancelledError`` at the step's await,
``uncancel()``s itself and reports the reason; a cancellation with no reason is shutdown and
propagates. Inline steps never suspend, so neither can reach them mid-way (their timeout is
checked when they return); thread steps are never preemptible and a timeout abandons the
thread's result.
"""

from __future__ import annotations

import asyncio
import enum
import types
from collections.abc import Callable, Generator
from concurrent.futures import Executor
from typing import Any, Protocol

import msgspec

from .clock import Clock, TimerHandle
from .context import StepContext
from .errors import StepTimeout
from .fsm import StepState
from .runs import StepRun
from .scheduler import Lane, ReadyQueue
from .workflow import ExecKind

__all__ = ["Agent", "DispatchHooks", "Dispatcher", "DispatcherStatistics", "Interrupt"]


# An agent takes up to this many steps in a row straight from the heap, for at most this long,
# before it gives the loop a turn: a step that never suspends would otherwise starve intake,
# timers and the other agents.
STREAK_STEPS = 32
STREAK_SECONDS = 0.0002


@types.coroutine
def _resume(coro: Any, yielded: Any) -> Generator[Any, Any, Any]:
    """Await the rest of ``coro``, which already ran up to its first suspension (``yielded``).

    The same protocol as ``yield from``: values and exceptions -- a preemption's or timeout's
    CancelledError included -- are passed through to the coroutine until it returns.
    """
    while True:
        try:
            value = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(value)
            except StopIteration as stop:
                return stop.value


class Interrupt(enum.Enum):
    PREEMPT = "preempt"
    TIMEOUT = "timeout"
    CANCEL = "cancel"


class DispatchHooks(Protocol):
    """What the dispatcher reports; implemented by the run coordinator."""

    def make_context(self, step: StepRun) -> StepContext: ...
    def step_started(self, step: StepRun, now: float) -> None: ...
    def step_succeeded(self, step: StepRun, output: Any, now: float) -> None: ...
    def step_failed(self, step: StepRun, error: BaseException, now: float, timeout: bool) -> None:
        ...
    def step_preempted(self, step: StepRun, now: float) -> None: ...
    def step_cancelled(self, step: StepRun, now: float, reason: str) -> None: ...


class Agent:
    __slots__ = (
        "inbox",
        "index",
        "interrupt",
        "reserved",
        "reserved_lane",
        "start_seq",
        "step",
        "task",
    )

    def __init__(self, index: int) -> None:
        self.index = index
        self.task: asyncio.Task[None] | None = None
        self.inbox: asyncio.Future[None] | None = None
        self.step: StepRun | None = None
        self.reserved: StepRun | None = None  # handed over by a preemption, runs next
        self.reserved_lane: Lane | None = None
        self.interrupt: Interrupt | None = None
        self.start_seq = 0  # orders starts even when the clock reads the same instant


class DispatcherStatistics(msgspec.Struct, frozen=True, kw_only=True):
    agents: int
    busy: int
    dispatched: int
    preemptions: int
    timeouts: int
    dispatch_passes: int


class Dispatcher:
    def __init__(
        self,
        queue: ReadyQueue,
        agents: int,
        clock: Clock,
        hooks: DispatchHooks,
        executor: Executor | None = None,
    ) -> None:
        self.queue = queue
        self.clock = clock
        self.hooks = hooks
        self.executor = executor
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
        # Preemption latency observer (urgent step ready -> running), set by the engine.
        self.on_preemption_latency: Callable[[StepRun, float], None] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def run_agent(self, agent: Agent) -> None:
        """The body of one agent; the engine's task group owns the task that runs it."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        agent.task = asyncio.current_task()
        now = self.clock.now
        streak = 0
        streak_until = 0.0
        while True:
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
            else:
                taken = (
                    self._take(agent) if streak < STREAK_STEPS and now() < streak_until else None
                )
                if taken is None:
                    streak = 0
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
                    streak_until = now() + STREAK_SECONDS
                    continue  # the dispatch pass left the step in agent.reserved
                # Straight from the heap, no handoff: the best eligible step at this instant.
                step = taken
                streak += 1
            await self._execute(agent, step)

    def _release_handed(self, agent: Agent) -> None:
        """Shutdown caught an agent holding a handed-over step it never started."""
        step, lane = agent.reserved, agent.reserved_lane
        agent.reserved = agent.reserved_lane = None
        agent.step = None
        if step is None or lane is None:
            return
        lane.running -= 1
        if step.state is StepState.PENDING:  # not already cancelled with its run
            self.hooks.step_cancelled(step, self.clock.now(), "shutdown")

    def _take(self, agent: Agent) -> StepRun | None:
        lane = self.queue.best_lane()
        if lane is None:
            return None
        step = self.queue.pop_from(lane)
        lane.running += 1
        self.dispatched += 1
        agent.step = step
        return step

    def schedule(self) -> None:
        """Ask for a dispatch pass at the end of this loop turn (coalesced)."""
        if not self._scheduled:
            self._scheduled = True
            loop = self._loop or asyncio.get_running_loop()
            loop.call_soon(self._dispatch)

    @property
    def busy(self) -> int:
        return sum(1 for a in self.agents if a.step is not None)

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
                if agent.inbox is None or agent.inbox.done():
                    continue  # a cancelled (shut down) agent: never hand it work
                step = queue.pop_from(lane)
                lane.running += 1
                self.dispatched += 1
                inbox = agent.inbox
                agent.inbox = None
                agent.step = step  # claimed now, so a second pass cannot pick it as idle
                agent.reserved, agent.reserved_lane = step, lane
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
            self._interrupt(victim, Interrupt.PREEMPT)
            self.preemptions += 1

    def _pick_victim(self, priority: int) -> Agent | None:
        """The running preemptible step with the largest priority number above ``priority``;
        ties go to the one started last (least work lost)."""
        best: Agent | None = None
        for agent in self.agents:
            step = agent.step
            if (
                step is None
                or agent.interrupt is not None
                or agent.reserved is not None
                or step.state is not StepState.RUNNING
                or not step.spec.preemptible
            ):
                continue
            q = step.run.priority
            if q <= priority:
                continue
            if best is None:
                best = agent
                continue
            bq = best.step.run.priority  # type: ignore[union-attr]
            if q > bq or (q == bq and agent.start_seq > best.start_seq):
                best = agent
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
            and step.state is StepState.RUNNING
            and self._interrupt(agent, Interrupt.TIMEOUT)
        ):
            self.timeouts += 1

    # -- running one step -------------------------------------------------------------------

    async def _execute(self, agent: Agent, step: StepRun) -> None:
        hooks = self.hooks
        clock = self.clock
        spec = step.spec
        now = clock.now()
        agent.step = step
        self._starts += 1
        agent.start_seq = self._starts
        hooks.step_started(step, now)
        if step.urgent_at is not None and self.on_preemption_latency is not None:
            self.on_preemption_latency(step, now - step.urgent_at)
            step.urgent_at = None
        timer: TimerHandle | None = None
        lane = step.run.workflow.lane
        try:
            ctx = hooks.make_context(step)
            kind = spec.kind
            if kind is ExecKind.INLINE:
                # Never timed out: it cannot be interrupted, and once it has returned its result
                # exists -- for an order step, the fill exists. Failing it would lose that.
                output = spec.fn(ctx)
                if clock.now() - now > spec.timeout_s:
                    self.overruns += 1
            elif kind is ExecKind.ASYNC:
                coro = spec.fn(ctx)
                try:
                    # Run it until it first suspends: one that returns at once needs no timer.
                    yielded = coro.send(None)
                except StopIteration as stop:
                    output = stop.value
                else:
                    timer = clock.call_later(
                        spec.timeout_s, lambda: self._on_timeout(agent, step)
                    )
                    output = await _resume(coro, yielded)
            else:
                timer = clock.call_later(spec.timeout_s, lambda: self._on_timeout(agent, step))
                loop = asyncio.get_running_loop()
                output = await loop.run_in_executor(self.executor, spec.fn, ctx)
        except asyncio.CancelledError:
            reason = agent.interrupt
            task = agent.task
            if reason is not None and task is not None:
                agent.interrupt = None
                task.uncancel()
            if reason is None or (task is not None and task.cancelling()):
                # Shutdown (possibly on top of an interrupt): record it and let it propagate.
                self._finish(agent, lane, timer)
                hooks.step_cancelled(step, clock.now(), "shutdown")
                self._release_handed(agent)
                raise
            self._finish(agent, lane, timer)
            if reason is Interrupt.PREEMPT:
                hooks.step_preempted(step, clock.now())
            elif reason is Interrupt.TIMEOUT:
                hooks.step_failed(
                    step,
                    StepTimeout(f"{step.label} timed out after {spec.timeout_s:.6f}s"),
                    clock.now(),
                    True,
                )
            else:
                hooks.step_cancelled(step, clock.now(), "cancelled")
        except Exception as exc:
            self._finish(agent, lane, timer)
            hooks.step_failed(step, exc, clock.now(), isinstance(exc, StepTimeout))
        else:
            self._finish(agent, lane, timer)
            hooks.step_succeeded(step, output, clock.now())
        if self._idle and self.queue:
            self.schedule()  # work for the idle agents too (this one pulls its own next step)

    def _finish(self, agent: Agent, lane: Any, timer: TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()
        if agent.interrupt is not None and agent.task is not None:
            # The step ended before the interrupt reached it (or swallowed the CancelledError):
            # withdraw the cancellation so it cannot hit the agent's next step.
            agent.interrupt = None
            agent.task.uncancel()
        agent.step = None
        lane.running -= 1
