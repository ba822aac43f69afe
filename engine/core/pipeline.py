"""The domain facade: one object that takes events and runs workflows on them.

A :class:`Pipeline` owns the symbol table, the market window, the ready queue, the counters,
the broker and risk it was given, and -- once :meth:`Pipeline.build` has run inside an event
loop -- the coordinator and the dispatcher with its agents. Its public API is what the rest of
the daemon needs of the domain: :meth:`submit_nowait`, :meth:`sweep`, :meth:`pause` /
:meth:`resume` / :meth:`cancel_run`, :meth:`apply_workflows`, :meth:`statistics`, and the
drain. It knows nothing of config files, storage, sources, HTTP or systemd: the composition
root (:class:`engine.service.daemon.Engine`) builds one from the config and wires those around
it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import msgspec

from engine.core.clock import Clock, LoopClock
from engine.core.coordinator import Coordinator
from engine.core.dispatcher import Dispatcher, DispatcherStatistics
from engine.core.errors import EventError
from engine.core.events import DATA_READY, KIND_OF, DataReady, Event
from engine.core.orders import Broker, Risk
from engine.core.ready import ReadyQueue
from engine.core.runs import StepRun, WorkflowDef
from engine.core.stats import EngineCounters, EngineSnapshot, QueueStatistics
from engine.core.symbols import MarketData, SymbolTable

__all__ = ["EngineStatistics", "Journal", "Pipeline", "PipelineSettings"]


class PipelineSettings(Protocol):
    """The knobs the domain reads (the config's ``[engine]`` table has them all)."""

    @property
    def agents(self) -> int: ...
    @property
    def heap_capacity(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def default_symbol_priority(self) -> int: ...
    @property
    def market_depth(self) -> int: ...
    @property
    def thread_workers(self) -> int: ...
    @property
    def max_symbols(self) -> int: ...


# Where accepted events are recorded (storage's writer): (tag, event, received_at) -> seq.
Journal = Callable[[str, Event, float], int]


class EngineStatistics(msgspec.Struct, frozen=True, kw_only=True):
    counters: EngineSnapshot
    queue: QueueStatistics
    dispatcher: DispatcherStatistics
    symbols: int
    orders: dict[str, int]
    paused: tuple[str, ...]


class Pipeline:
    def __init__(
        self,
        settings: PipelineSettings,
        workflows: dict[str, WorkflowDef],
        *,
        broker: Broker,
        risk: Risk,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self.symbols = SymbolTable()
        self.market = MarketData(settings.market_depth)
        self.broker = broker
        self.risk = risk
        self.workflows = workflows
        self.queue = ReadyQueue(
            settings.heap_capacity,
            [(name, wf.max_concurrent) for name, wf in workflows.items()],
            spare=settings.agents + 64,
        )
        self.counters = EngineCounters(
            {name: tuple(s.name for s in wf.steps) for name, wf in workflows.items()}
        )
        self.orders: Counter[str] = Counter()
        self.rng = random.Random(settings.seed)
        # Fixed for the process: a reload that changes it reports that a restart is needed.
        self._max_symbols = settings.max_symbols
        self._executor: ThreadPoolExecutor | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.coordinator: Coordinator | None = None
        self.dispatcher: Dispatcher | None = None
        self.journal: Journal | None = None  # set while storage records accepted events

    # -- time -------------------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            self._clock = LoopClock()
        return self._clock

    def _wall(self) -> float:
        return self.clock.wall()

    # -- lifecycle --------------------------------------------------------------------------

    def build(self) -> tuple[Coordinator, Dispatcher]:
        """The coordinator and the dispatcher (inside the event loop that will run them); the
        caller runs ``dispatcher.run_agent`` for each agent and owns those tasks."""
        clock = self.clock
        coordinator = Coordinator(
            workflows=self.workflows,
            symbols=self.symbols,
            market=self.market,
            queue=self.queue,
            clock=clock,
            counters=self.counters,
            rng=self.rng,
            broker=self.broker,
            risk=self.risk,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=self.settings.thread_workers, thread_name_prefix="tickflow-step"
        )
        dispatcher = Dispatcher(
            self.queue, self.settings.agents, clock, coordinator, self._executor
        )
        coordinator.dispatcher = dispatcher
        coordinator.on_busy = self._idle.clear
        coordinator.on_idle = self._idle.set
        coordinator.on_order_finished = self._order_finished
        dispatcher.on_preemption_latency = self._preemption_latency
        self.coordinator, self.dispatcher = coordinator, dispatcher
        return coordinator, dispatcher

    def shutdown_threads(self) -> None:
        """Stop the thread pool of thread steps without waiting for them (a thread step that
        outlived its timeout is abandoned, never joined)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def wait_idle(self) -> None:
        """Wait until no run is in flight (bound it with ``asyncio.timeout`` in callers)."""
        await self._idle.wait()

    @property
    def idle(self) -> bool:
        return self._idle.is_set()

    async def drain(self, deadline_s: float) -> None:
        """Let runs in flight finish for up to ``deadline_s``, then cancel what remains (it
        stays in flight in storage: resumed, same run ids, or re-triggered at the next start);
        non-preemptible steps (orders) get up to their own timeout to finish."""
        if deadline_s > 0 and not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline_s):
                    await self._idle.wait()
        coordinator, dispatcher = self.coordinator, self.dispatcher
        if coordinator is None:
            return
        coordinator.stopping = True
        for run_id in list(coordinator.runs):
            coordinator.cancel_run(run_id, "shutdown: drain deadline passed", shutdown=True)
        # An order step is never cut half-way: its result, fill included, gets recorded.
        orders = [
            agent.step for agent in (dispatcher.agents if dispatcher else ())
            if agent.step is not None and not agent.step.spec.preemptible
        ]
        if orders and not self._idle.is_set():
            bound = max(step.spec.timeout_s for step in orders)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(bound):
                    await self._idle.wait()

    def sweep(self) -> int:
        """Trigger workflows for symbols left ``data_ready`` + ``pending``; returns runs made."""
        coordinator = self.coordinator
        if coordinator is None:
            return 0
        now = self.clock.now()
        started = 0
        for symbol in self.symbols.waiting():
            assert symbol.last_tick is not None
            for wf in coordinator.routes(symbol.priority):
                if coordinator.trigger(wf, symbol, symbol.last_tick, now) is not None:
                    started += 1
        return started

    # -- intake -----------------------------------------------------------------------------

    def apply_nowait(self, event: Event) -> int | None:
        """Apply ``event`` now; returns its journal seq (None when nothing journals), the seq
        whose commit is the event's durability point.

        Raises :class:`EventError` (reason ``symbol_limit``, counted) for an event naming a
        new symbol once the table holds ``max_symbols``: nothing of it is journaled or
        applied."""
        coordinator = self.coordinator
        if coordinator is None:
            raise RuntimeError("the engine is not running: use `async with engine.session()`")
        symbols = self.symbols
        if len(symbols) >= self._max_symbols and event.symbol not in symbols:
            self.counters.rejected["symbol_limit"] += 1
            raise EventError(
                "symbol_limit",
                f"{event.symbol!r} would be a new symbol, and the engine already tracks "
                f"engine.max_symbols = {self._max_symbols} symbols",
            )
        now = self.clock.now()
        journal = self.journal
        seq: int | None = None
        if type(event) is DataReady:
            # The common event, applied without the table lookup below (same steps).
            if journal is not None:
                seq = journal(DATA_READY, event, now)
            self.counters.received[DATA_READY] += 1
            coordinator.accept_data(event, now, self.settings.default_symbol_priority)
            return seq
        kind = KIND_OF.get(type(event))
        if kind is None:
            raise TypeError(f"not an event: {event!r}")
        if journal is not None:
            seq = journal(kind.tag, event, now)
        self.counters.received[kind.tag] += 1
        getattr(coordinator, kind.handler)(event, now, self.settings.default_symbol_priority)
        return seq

    # Where input goes: applied here. A composition root may send it elsewhere first (a
    # cluster node publishes it to its partition; the partition's owner applies it).
    submit_nowait = apply_nowait

    def reject(self, reason: str) -> None:
        """Count an event rejected before it reached the engine (intake decoders call this)."""
        self.counters.rejected[reason] += 1

    # -- operator actions -------------------------------------------------------------------

    def pause(self, workflow: str) -> None:
        self.queue.lanes[self._known(workflow)].paused = True

    def resume(self, workflow: str) -> None:
        self.queue.lanes[self._known(workflow)].paused = False
        if self.dispatcher is not None:
            self.dispatcher.schedule()

    def cancel_run(self, run_id: int) -> bool:
        return self.coordinator is not None and self.coordinator.cancel_run(run_id)

    def apply_workflows(self, workflows: dict[str, WorkflowDef]) -> None:
        """New runs use ``workflows``; runs in flight finish on the definition they started
        with. Nothing here may fail on definitions compiled from a validated config."""
        coordinator = self.coordinator
        if coordinator is not None:
            coordinator.set_workflows(workflows)
        else:
            # Not started yet: the coordinator built at start reads self.workflows.
            for name, wf in workflows.items():
                self.queue.add_lane(name, wf.max_concurrent)
                self.counters.workflow(name, tuple(s.name for s in wf.steps))
        self.workflows = workflows
        if self.dispatcher is not None:
            self.dispatcher.schedule()  # a raised max_concurrent may make queued steps eligible

    def _known(self, workflow: str) -> str:
        if workflow not in self.queue.lanes:
            raise KeyError(f"unknown workflow {workflow!r}")
        return workflow

    # -- observers --------------------------------------------------------------------------

    def _order_finished(self, step: StepRun) -> None:
        out = step.output
        status = getattr(out, "status", None) if out is not None else "error"
        side = getattr(out, "side", None)
        self.orders[f"{side or 'none'}:{status}"] += 1

    def _preemption_latency(self, step: StepRun, seconds: float) -> None:
        self.counters.preemption_latency.record(seconds)

    # -- reading ----------------------------------------------------------------------------

    def statistics(self) -> EngineStatistics:
        in_flight = self.coordinator.in_flight() if self.coordinator else 0
        dispatcher = (
            self.dispatcher.statistics()
            if self.dispatcher
            else DispatcherStatistics(
                agents=self.settings.agents, busy=0, dispatched=0, preemptions=0,
                timeouts=0, dispatch_passes=0,
            )
        )
        return EngineStatistics(
            counters=self.counters.snapshot(in_flight),
            queue=self.queue.statistics(),
            dispatcher=dispatcher,
            symbols=len(self.symbols),
            orders=dict(self.orders),
            paused=tuple(n for n, lane in self.queue.lanes.items() if lane.paused),
        )
