"""The engine: wires config, symbols, sources, coordinator, queue and agents together.

``async with engine.session():`` starts the agents, the sources and the periodic sweep in one
task group (every task has this owner; an error in any of them propagates out of the session),
and on exit stops the sources, drains runs in flight up to ``drain_timeout_s``, then cancels
what remains and records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from engine.config import Config, compile_workflows
from engine.core.clock import Clock, LoopClock
from engine.core.coordinator import Coordinator
from engine.core.dispatcher import Dispatcher, DispatcherStatistics
from engine.core.errors import EventError
from engine.core.events import DATA_READY, KIND_OF, DataReady, Event
from engine.core.orders import Broker
from engine.core.runs import ReadyQueue, StepRun, WorkflowDef
from engine.core.stats import EngineCounters, EngineSnapshot, QueueStatistics
from engine.core.symbols import MarketData, SymbolTable
from engine.intake import RejectLog
from engine.service.admin import AdminApi
from engine.service.gcpolicy import tuned_collector
from engine.service.http import MetricsServer
from engine.service.loopmon import LoopMonitor
from engine.service.metrics import build_registry
from engine.service.persistence import Persistence
from engine.service.reload import Reloader, ReloadReport, apply_config
from engine.service.trading import build_broker, build_risk
from engine.sources import ReplaySource, SimMarket, Source
from strategies.risk import RiskLimits, RiskManager

__all__ = ["Engine", "EngineStatistics", "sources_from_config"]

log = logging.getLogger("tickflow.engine")


class EngineStatistics(msgspec.Struct, frozen=True, kw_only=True):
    counters: EngineSnapshot
    queue: QueueStatistics
    dispatcher: DispatcherStatistics
    symbols: int
    orders: dict[str, int]
    paused: tuple[str, ...]


def sources_from_config(config: Config) -> list[Source]:
    src = config.source
    if src.kind == "sim":
        s = src.sim
        return [
            SimMarket(
                symbols=s.symbols,
                hot_symbols=s.hot_symbols,
                tick_rate_hz=s.tick_rate_hz,
                seed=s.seed,
                start_price=s.start_price,
                volatility=s.volatility,
                spread_bps=s.spread_bps,
                cold_priority=s.cold_priority,
            )
        ]
    if src.kind == "replay":
        assert src.replay is not None  # the loader refuses kind=replay without the table
        r = src.replay
        return [
            ReplaySource(
                r.path, speed=r.speed, format=r.format, max_line_bytes=config.engine.max_line_bytes
            )
        ]
    return []


class Engine:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        sources: list[Source] | None = None,
        config_version: str = "",
        serve_metrics: bool | None = None,
        persist: bool | None = None,
        broker: Broker | None = None,
        risk: RiskManager | None = None,
    ) -> None:
        """``broker`` and ``risk``: given by a caller that drives the engine itself (a
        backtest, tests); by default built from ``config`` (engine/service/trading.py)."""
        self.config = config
        self.config_version = config_version
        self._clock = clock
        settings = config.engine
        self.sources = sources_from_config(config) if sources is None else sources
        self.symbols = SymbolTable()
        for seed in config.symbols:
            self.symbols.register(seed.name, seed.priority)
        for source in self.sources:
            priorities = getattr(source, "symbol_priorities", None)
            if priorities is not None:
                for name, priority in priorities().items():
                    self.symbols.register(name, priority)
        self.market = MarketData(settings.market_depth)
        # Built once; storage restores the broker's books in place (Persistence.open).
        self.broker: Broker = build_broker(config.broker) if broker is None else broker
        self.risk = build_risk(config.risk, self._wall) if risk is None else risk
        self.workflows: dict[str, WorkflowDef] = compile_workflows(config)
        self.queue = ReadyQueue(
            settings.heap_capacity,
            [(name, wf.max_concurrent) for name, wf in self.workflows.items()],
            spare=settings.agents + 64,
        )
        self.counters = EngineCounters(
            {name: tuple(s.name for s in wf.steps) for name, wf in self.workflows.items()}
        )
        self.orders: Counter[str] = Counter()
        self.rng = random.Random(settings.seed)
        self._executor: ThreadPoolExecutor | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping: asyncio.Event | None = None
        self.coordinator: Coordinator | None = None
        self.dispatcher: Dispatcher | None = None
        self._feeders: list[asyncio.Task[None]] = []
        self.running = False
        # The network intake servers, once started (their statistics() feeds the metrics).
        self.intake: Any = None
        # Async context managers run for the session and stopped before the drain (network
        # intake servers, ...): ``engine.services.append(lambda engine: Server(engine))``.
        self.services: list[Callable[[Engine], contextlib.AbstractAsyncContextManager[Any]]] = []
        # --- metrics (issue 5): the collector reads the counters above at scrape time. The
        # HTTP endpoint is served by default only by a daemon-style engine (built from its
        # config alone); an engine given its sources or clock (tests, benchmarks) serves only
        # when asked with ``serve_metrics=True``.
        if serve_metrics is None:
            serve_metrics = sources is None and clock is None
        self.serve_metrics = serve_metrics and config.metrics.enabled
        self.loop_monitor = LoopMonitor()
        self.metrics_registry = build_registry(self, self.loop_monitor)
        self.metrics_server: MetricsServer | None = None
        # Like the metrics endpoint, storage is on by default for a daemon-style engine only;
        # tests and benchmarks that inject their clock or sources opt in with persist=True.
        if persist is None:
            persist = sources is None and clock is None
        self.persistence: Persistence | None = (
            Persistence(self, config.storage) if persist and config.storage.enabled else None
        )
        self._journal: Callable[[str, Event, float], int] | None = None  # set by a session
        self._reject_log = RejectLog()  # events the engine itself refuses (max_symbols)
        # Fixed for the process: a reload that changes it reports that a restart is needed.
        self._max_symbols = config.engine.max_symbols
        # --- end metrics ---
        # Operations: the daemon (engine/service/cli.py) sets this so that SIGHUP and POST /reload
        # re-read its config file through one path (engine/service/reload.py).
        self.reloader: Reloader | None = None

    # -- time -------------------------------------------------------------------------------

    @property
    def clock(self) -> Clock:
        if self._clock is None:
            self._clock = LoopClock()
        return self._clock

    def _wall(self) -> float:
        return self.clock.wall()

    # -- lifecycle --------------------------------------------------------------------------

    def _build(self) -> tuple[Coordinator, Dispatcher]:
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
            max_workers=self.config.engine.thread_workers, thread_name_prefix="tickflow-step"
        )
        dispatcher = Dispatcher(
            self.queue, self.config.engine.agents, clock, coordinator, self._executor
        )
        coordinator.dispatcher = dispatcher
        coordinator.on_busy = self._idle.clear
        coordinator.on_idle = self._idle.set
        coordinator.on_order_finished = self._order_finished
        dispatcher.on_preemption_latency = self._preemption_latency
        self.coordinator, self.dispatcher = coordinator, dispatcher
        return coordinator, dispatcher

    # --- metrics (issue 5) ---
    @property
    def metrics_port(self) -> int | None:
        """The port ``/metrics`` is bound to while the session runs (None when not serving)."""
        return self.metrics_server.port if self.metrics_server is not None else None

    def readiness(self) -> tuple[bool, str]:
        """``/readyz``: running, not draining, and every source still feeding."""
        if not self.running or self._stopping is None:
            return False, "not running"
        if self._stopping.is_set():
            return False, "draining"
        if any(task.done() for task in self._feeders):
            return False, "sources stopped"
        return True, "ready"

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Engine]:
        """Run the engine for the duration of the ``async with`` block.

        The metrics endpoint (when served) is up for the whole session, drain included.
        """
        # Before the first await: a stop() (SIGTERM) while the server starts must not be lost.
        self._stopping = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            settings = self.config.engine
            stack.enter_context(tuned_collector(settings.gc_gen0_threshold, settings.gc_freeze))
            if self.serve_metrics:
                m = self.config.metrics
                server = MetricsServer(
                    self.metrics_registry, host=m.host, port=m.port, ready=self.readiness,
                    loop_monitor=self.loop_monitor, admin=AdminApi(self),
                )
                await stack.enter_async_context(server)
                self.metrics_server = server
                stack.callback(setattr, self, "metrics_server", None)
            async with self._session() as engine:
                yield engine

    # --- end metrics ---

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[Engine]:
        persistence = self.persistence
        if persistence is not None:
            await persistence.open()  # restores symbols and the broker before anything runs
        coordinator, dispatcher = self._build()
        writer = None
        if persistence is not None:
            persistence.attach(coordinator)  # resumes the runs found in flight
            writer = persistence.writer
            # Accepted events go to the journal straight from submit_nowait: one call per event.
            self._journal = None if writer is None else writer.journal_event
        self.running = True
        try:
            async with asyncio.TaskGroup() as tg:
                if writer is not None:
                    tg.create_task(writer.run_forever(), name="storage-writer")
                agents = [
                    tg.create_task(dispatcher.run_agent(a), name=f"agent-{a.index}")
                    for a in dispatcher.agents
                ]
                self.sweep()  # state-driven half: symbols left data_ready + pending
                sweeper = tg.create_task(self._sweep_forever(), name="sweep")
                monitor = tg.create_task(self.loop_monitor.run(), name="loop-monitor")  # metrics
                self._feeders = feeders = [
                    tg.create_task(
                        source.run(self._submit_from_source), name=f"source-{source.name}"
                    )
                    for source in self.sources
                ]
                try:
                    async with contextlib.AsyncExitStack() as services:
                        for factory in self.services:
                            await services.enter_async_context(factory(self))
                        yield self
                    # Services (network intake, ...) stop before the drain: no new input.
                finally:
                    for task in feeders:
                        task.cancel()
                    sweeper.cancel()
                    await self._drain(self.config.engine.drain_timeout_s)
                    for task in agents:
                        task.cancel()
                    monitor.cancel()  # metrics
                    if writer is not None:
                        writer.request_stop()  # finishes its commit; close() takes the rest
        finally:
            self.running = False
            self._reject_log.flush()  # what its rate limit held back, summed up
            if persistence is not None:
                await persistence.close()  # the last commit: everything the drain recorded
            if self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, duration: float | None = None) -> EngineStatistics:
        """Run until ``duration`` elapses, :meth:`stop` is called, or the sources run dry."""
        async with self.session():
            assert self._stopping is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), duration)
        return self.statistics()

    def stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def _drain(self, deadline_s: float) -> None:
        if deadline_s > 0 and not self._idle.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline_s):
                    await self._idle.wait()
        coordinator, dispatcher = self.coordinator, self.dispatcher
        if coordinator is not None:
            # Past the deadline: preemptible steps are interrupted; what is left stays in flight
            # in storage, resumed (same run ids) or re-triggered at the next start.
            coordinator.stopping = True
            for run_id in list(coordinator.runs):
                coordinator.cancel_run(run_id, "shutdown: drain deadline passed", shutdown=True)
            # An order step is never cut half-way: give running non-preemptible steps up to
            # their own timeout to finish (their results, fills included, get recorded).
            orders = [
                agent.step for agent in (dispatcher.agents if dispatcher else ())
                if agent.step is not None and not agent.step.spec.preemptible
            ]
            if orders and not self._idle.is_set():
                bound = max(step.spec.timeout_s for step in orders)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(bound):
                        await self._idle.wait()

    async def wait_sources(self) -> None:
        """Wait until every source has run dry (errors surface from the session, not here)."""
        if self._feeders:
            await asyncio.wait(self._feeders)

    async def wait_idle(self) -> None:
        """Wait until no run is in flight (bound it with ``asyncio.timeout`` in callers)."""
        await self._idle.wait()

    async def _sweep_forever(self) -> None:
        interval = self.config.engine.sweep_interval_s
        while True:
            await asyncio.sleep(interval)  # a period, not a wait for a condition
            self.sweep()

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

    async def submit(self, event: Event) -> int | None:
        """Take one event; waits while the storage writer is behind (backpressure). Returns
        the journal seq, as :meth:`submit_nowait` does."""
        persistence = self.persistence
        if persistence is not None and persistence.writer is not None:
            await persistence.writer.wait_capacity()
        return self.submit_nowait(event)

    async def wait_accepted(self, seq: int | None) -> None:
        """Wait until journal record ``seq`` is committed: the moment an event counts as
        accepted (docs/storage.md). Immediate when storage is off (``seq`` is None)."""
        persistence = self.persistence
        if seq is not None and persistence is not None and persistence.writer is not None:
            await persistence.writer.wait_committed(seq)

    async def _submit_from_source(self, event: Event) -> int | None:
        """A source's :meth:`submit`: an event the engine refuses is counted (by
        :meth:`submit_nowait`) and logged, and the source goes on with the next one."""
        try:
            return await self.submit(event)
        except EventError as exc:
            self._reject_log.log(exc, source="source")
            return None

    def submit_nowait(self, event: Event) -> int | None:
        """Take ``event`` now; returns its journal seq (None when storage is off), which
        ``persistence.writer.wait_committed(seq)`` turns into the event's durability point.

        Raises :class:`EventError` (reason ``symbol_limit``, counted) for an event naming a
        new symbol once the table holds ``engine.max_symbols``: nothing of it is journaled or
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
        journal = self._journal
        seq: int | None = None
        if type(event) is DataReady:
            # The common event, applied without the table lookup below (same steps).
            if journal is not None:
                seq = journal(DATA_READY, event, now)
            self.counters.received[DATA_READY] += 1
            coordinator.accept_data(event, now, self.config.engine.default_symbol_priority)
            return seq
        kind = KIND_OF.get(type(event))
        if kind is None:
            raise TypeError(f"not an event: {event!r}")
        if journal is not None:
            seq = journal(kind.tag, event, now)
        self.counters.received[kind.tag] += 1
        getattr(coordinator, kind.handler)(event, now, self.config.engine.default_symbol_priority)
        return seq

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

    def apply_config(
        self,
        config: Config,
        version: str,
        workflows: dict[str, WorkflowDef],
        risk_limits: RiskLimits | None,
    ) -> None:
        """Make ``config`` (with its compiled ``workflows``) the running one: new runs use it,
        runs in flight finish on the definition they started with; ``risk_limits`` None keeps
        the limits. Prepared by :func:`engine.service.reload.apply_config`, which builds
        everything that can fail first: nothing here may fail on a validated config."""
        coordinator = self.coordinator
        if coordinator is not None:
            coordinator.set_workflows(workflows)
        else:
            # Not started yet: the coordinator built at start reads self.workflows.
            for name, wf in workflows.items():
                self.queue.add_lane(name, wf.max_concurrent)
                self.counters.workflow(name, tuple(s.name for s in wf.steps))
        self.workflows = workflows
        if risk_limits is not None:
            self.risk.set_limits(risk_limits)
        self.config = config
        self.config_version = version
        if self.dispatcher is not None:
            self.dispatcher.schedule()  # a raised max_concurrent may make queued steps eligible

    def attach_reloader(self, reloader: Reloader) -> None:
        """The reload path shared by SIGHUP and ``POST /reload`` (the CLI builds it)."""
        self.reloader = reloader

    def attach_intake(self, intake: Any) -> None:
        """The network intake servers, once listening: the metrics read their statistics()."""
        self.intake = intake

    def reload(self, config: Config, digest: str) -> ReloadReport:
        """Apply a validated config: new runs use it, runs in flight finish on the old one.

        See engine/service/reload.py for what changes live and what needs a restart.
        """
        return apply_config(self, config, digest)

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
                agents=self.config.engine.agents, busy=0, dispatched=0, preemptions=0,
                timeouts=0, dispatch_passes=0,
            )
        )
        counters = self.counters.snapshot(in_flight)
        rejected: Counter[str] = Counter(counters.events_rejected)
        for source in self.sources:
            rejected.update(source.statistics().rejected)  # e.g. replay's bad rows
        counters = msgspec.structs.replace(counters, events_rejected=dict(rejected))
        return EngineStatistics(
            counters=counters,
            queue=self.queue.statistics(),
            dispatcher=dispatcher,
            symbols=len(self.symbols),
            orders=dict(self.orders),
            paused=tuple(n for n, lane in self.queue.lanes.items() if lane.paused),
        )
