"""The dispatcher and its bounded pool of agents.

Agents are long-lived coroutines on the event loop (no Task per step). Work always comes from
the ready queue in a *dispatch pass*: one pass per loop turn, scheduled with ``call_soon`` and
coalesced, so everything that arrived in the same turn is in the heap before anything is handed
out -- an idle agent never takes low-priority work ahead of an urgent event that arrived with it.
A woken agent then takes its next steps straight from the heap in a bounded streak.

The per-step path (the dispatch pass, starting a step, running it as far as it goes without
suspending, the streak) is :class:`engine.core.flow.DispatcherCore`, compiled; this module adds
what only a step that suspends needs, and the agents' coroutine bodies.

Preemption and timeouts interrupt an agent the same way: set ``agent.interrupt`` to the reason,
then cancel the agent's task. The agent catches the ``CancelledError`` at the step's await,
``uncancel()``s itself and reports the reason; a cancellation with no reason is shutdown and
propagates. Inline steps never suspend, so neither can reach them mid-way (their timeout is
checked when they return); thread steps are never preemptible and a timeout abandons the
thread's result.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Generator
from typing import Any, Protocol

from engine.core.flow import STREAK_SECONDS, STREAK_STEPS, Agent, DispatcherCore
from engine.core.fsm import Interrupt, StepState
from engine.core.runs import StepContext, StepRun
from engine.core.stats import DispatcherStatistics

__all__ = [
    "STREAK_SECONDS",
    "STREAK_STEPS",
    "Agent",
    "DispatchHooks",
    "Dispatcher",
    "DispatcherStatistics",
    "Interrupt",
]


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


class DispatchHooks(Protocol):
    """What the dispatcher reports; implemented by the run coordinator."""

    def make_context(self, step: StepRun) -> StepContext: ...
    def step_started(self, step: StepRun, now: float) -> None: ...
    def step_succeeded(self, step: StepRun, output: Any, now: float) -> None: ...
    def step_failed(self, step: StepRun, error: BaseException, now: float, timeout: bool) -> None:
        ...
    def step_preempted(self, step: StepRun, now: float) -> None: ...
    def step_cancelled(self, step: StepRun, now: float, reason: str) -> None: ...


class Dispatcher(DispatcherCore):
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
                await self._complete(agent, *pending)
                continue
            if agent.reserved is not None:
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

    async def _complete(
        self,
        agent: Agent,
        step: StepRun,
        lane: Any,
        ctx: StepContext,
        coro: Any,
        yielded: Any,
    ) -> None:
        """Finish a step that suspended (``coro``) or runs in a thread (``coro`` None)."""
        spec = step.spec
        timer = self.clock.call_later(spec.timeout_s, lambda: self._on_timeout(agent, step))
        try:
            if coro is not None:
                output = await _resume(coro, yielded)
            else:
                loop = asyncio.get_running_loop()
                output = await loop.run_in_executor(self.executor, spec.fn, ctx)
        except asyncio.CancelledError:
            if self._cancelled(agent, step, lane, timer):
                raise
        except Exception as exc:
            self._settle(agent, step, lane, timer, None, exc)
        else:
            self._settle(agent, step, lane, timer, output, None)

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
