"""The obvious alternative to tickflow: an ``asyncio.PriorityQueue`` feeding N worker coroutines.

Every event becomes a job -- a fixed sequence of step functions chosen by the priority of the
event's symbol -- and the pool runs jobs by priority, FIFO within a priority. It has none of
tickflow's machinery: no preemption, no per-workflow limits, no timeouts or retries, no
conflation, no state machines; it only records what the benchmark needs to compare (dispatch
wait and run latency per workflow, with the same histogram class tickflow uses).

Two modes, because the issue leaves the choice open:

``"step"`` (the default, used for every comparison)
    A worker runs *one step* and puts the job back on the queue for its next step. This is the
    fair counterpart of tickflow, which also dispatches each step from its heap: the unit of
    scheduling is the same, so "step ready -> step start" means the same thing in both designs
    and an urgent job can get in between two steps of a long one in both. A re-queued job keeps
    its original sequence number, so within a priority an older job's next step goes before a
    newer job's first step -- the order tickflow gets from its ``(priority, deadline, seq)`` key
    with equal deadlines.

``"job"``
    A worker takes a job and runs all of its steps in order before taking the next: one queue
    operation per job instead of one per step. That is the cheapest design there is, so it is
    reported as the baseline's best-case throughput; but an urgent job then waits behind whole
    jobs, and steps 2..n of a job never wait at all, which is why it is not the latency
    reference.

Note that ``await queue.get()`` on a non-empty queue and ``await`` of a step that never suspends
do not yield to the event loop, so with no-op steps one worker can drain the whole queue in one
go. That is how the naive design behaves, and it only ever helps its throughput.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from engine.core.events import DataReady
from fastpath.latency import LatencyHistogram

__all__ = ["BaselinePool", "Job", "JobSpec", "Mode"]

Mode = Literal["step", "job"]
Action = Callable[[Any], Awaitable[Any]]


@dataclass(eq=False)
class JobSpec:
    """A workflow of the baseline: its steps, their params, and the symbol priorities it takes
    (inclusive bounds, like tickflow's ``route``). Holds the statistics of its jobs."""

    name: str
    steps: tuple[Action, ...]
    min_priority: int = 0
    max_priority: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    dispatch_wait: LatencyHistogram = field(default_factory=LatencyHistogram)
    run_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    completed: int = 0

    def matches(self, priority: int) -> bool:
        return priority >= self.min_priority and (
            self.max_priority is None or priority <= self.max_priority
        )

    def reset_statistics(self) -> None:
        self.dispatch_wait = LatencyHistogram()
        self.run_latency = LatencyHistogram()


class Job:
    """One event's work. Step functions receive the job itself (they read ``params``)."""

    __slots__ = ("index", "params", "priority", "ready_at", "seq", "spec", "tick", "trigger_at")

    def __init__(
        self, spec: JobSpec, tick: DataReady, priority: int, seq: int, now: float
    ) -> None:
        self.spec = spec
        self.params = spec.params
        self.tick = tick
        self.priority = priority
        self.seq = seq
        self.index = 0  # the next step to run
        self.trigger_at = now
        self.ready_at = now


class BaselinePool:
    """``async with pool.running(): pool.submit(event)``; statistics are on the specs."""

    def __init__(
        self,
        specs: Sequence[JobSpec],
        *,
        workers: int = 5,
        mode: Mode = "step",
        default_priority: int = 2,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if mode not in ("step", "job"):
            raise ValueError(f"mode must be 'step' or 'job', got {mode!r}")
        self.specs = {spec.name: spec for spec in specs}
        for spec in specs:
            spec.params = MappingProxyType(dict(spec.params))
        self.workers = workers
        self.mode: Mode = mode
        self.default_priority = default_priority
        self.clock = clock
        self.symbols: dict[str, int] = {}  # symbol -> priority
        self._routes: dict[int, tuple[JobSpec, ...]] = {}
        self._seq = itertools.count()
        self._queue: asyncio.PriorityQueue[tuple[int, int, int, Job]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._idle: asyncio.Event | None = None
        self.in_flight = 0
        self.steps_done = 0
        self.events = 0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._queue = asyncio.PriorityQueue()
        self._idle = asyncio.Event()
        self._idle.set()
        body = self._step_worker if self.mode == "step" else self._job_worker
        self._tasks = [
            asyncio.get_running_loop().create_task(body(self._queue), name=f"baseline-{i}")
            for i in range(self.workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def __aenter__(self) -> BaselinePool:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- intake -----------------------------------------------------------------------------

    def routes(self, priority: int) -> tuple[JobSpec, ...]:
        specs = self._routes.get(priority)
        if specs is None:
            specs = self._routes[priority] = tuple(
                s for s in self.specs.values() if s.matches(priority)
            )
        return specs

    def submit(self, event: DataReady) -> None:
        """Turn one event into one job per workflow routed to its symbol's priority."""
        queue = self._queue
        if queue is None:
            raise RuntimeError("the pool is not running: use `async with pool:`")
        self.events += 1
        priority = event.priority
        if priority is None:
            priority = self.symbols.get(event.symbol)
            if priority is None:
                priority = self.symbols[event.symbol] = self.default_priority
        else:
            self.symbols[event.symbol] = priority
        now = self.clock()
        if self.in_flight == 0 and self._idle is not None:
            self._idle.clear()
        for spec in self.routes(priority):
            seq = next(self._seq)
            job = Job(spec, event, priority, seq, now)
            self.in_flight += 1
            queue.put_nowait((priority, seq, 0, job))

    async def wait_idle(self) -> None:
        """Wait until every job submitted so far has completed."""
        assert self._idle is not None, "the pool is not running"
        await self._idle.wait()

    def queued(self) -> int:
        return 0 if self._queue is None else self._queue.qsize()

    def completed(self) -> int:
        return sum(spec.completed for spec in self.specs.values())

    def reset_statistics(self) -> None:
        for spec in self.specs.values():
            spec.reset_statistics()

    # -- workers ----------------------------------------------------------------------------

    async def _step_worker(self, queue: asyncio.PriorityQueue[tuple[int, int, int, Job]]) -> None:
        clock = self.clock
        while True:
            priority, seq, index, job = await queue.get()
            spec = job.spec
            spec.dispatch_wait.record(clock() - job.ready_at)
            await spec.steps[index](job)
            self.steps_done += 1
            index += 1
            if index < len(spec.steps):
                job.index = index
                job.ready_at = clock()
                queue.put_nowait((priority, seq, index, job))
            else:
                self._finish(job, clock())

    async def _job_worker(self, queue: asyncio.PriorityQueue[tuple[int, int, int, Job]]) -> None:
        clock = self.clock
        while True:
            _, _, _, job = await queue.get()
            spec = job.spec
            wait = spec.dispatch_wait
            wait.record(clock() - job.ready_at)
            for index, fn in enumerate(spec.steps):
                if index:
                    # The next step is ready the moment the previous one returns and starts
                    # right away: record that (near-zero) wait so both designs count every step.
                    job.ready_at = clock()
                    wait.record(clock() - job.ready_at)
                job.index = index
                await fn(job)
                self.steps_done += 1
            self._finish(job, clock())

    def _finish(self, job: Job, now: float) -> None:
        spec = job.spec
        spec.completed += 1
        spec.run_latency.record(now - job.trigger_at)
        self.in_flight -= 1
        if self.in_flight == 0 and self._idle is not None:
            self._idle.set()
