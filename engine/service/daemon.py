"""The composition root: the daemon's :class:`Engine`, the domain pipeline
(:mod:`engine.core.pipeline`) built from a config and wired to sources, storage, metrics,
the admin API, services and reload.

``async with engine.session():`` starts the agents, the sources and the periodic sweep in one
task group (every task has this owner; an error in any of them propagates out of the session),
and on exit stops the sources, drains runs in flight up to ``drain_timeout_s``, then cancels
what remains and records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import msgspec

from engine.config import Config, compile_workflows
from engine.core.clock import Clock
from engine.core.errors import EventError
from engine.core.events import Event
from engine.core.orders import Broker
from engine.core.pipeline import EngineStatistics, Pipeline
from engine.core.runs import WorkflowDef
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

__all__ = ["Engine", "EngineStatistics", "Ingest", "sources_from_config"]

log = logging.getLogger("tickflow.engine")


class Ingest(Protocol):
    """Where accepted input goes instead of straight into the engine's pipeline: a ticket per
    event, and the wait for the moment it counts as accepted (cluster mode: published to its
    partition's subject and acknowledged by JetStream)."""

    def submit_nowait(self, event: Event) -> int | None: ...

    async def wait_capacity(self) -> None: ...

    async def wait_accepted(self, ticket: int | None) -> None: ...


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


class Engine(Pipeline):
    """The daemon: the domain :class:`~engine.core.pipeline.Pipeline` built from a config,
    with the sources, storage, metrics endpoint, admin API, services and reload wired around
    it. Nothing outside assigns to its attributes: :meth:`apply_config`,
    :meth:`attach_intake` and :meth:`attach_reloader` are the ways in."""

    risk: RiskManager

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
        super().__init__(
            config.engine,
            compile_workflows(config),
            # Built once; storage restores the broker's books in place (Persistence.open).
            broker=build_broker(config.broker) if broker is None else broker,
            risk=build_risk(config.risk, self._wall) if risk is None else risk,
            clock=clock,
        )
        self.sources = sources_from_config(config) if sources is None else sources
        for seed in config.symbols:
            self.symbols.register(seed.name, seed.priority)
        for source in self.sources:
            priorities = getattr(source, "symbol_priorities", None)
            if priorities is not None:
                for name, priority in priorities().items():
                    self.symbols.register(name, priority)
        self._stopping: asyncio.Event | None = None
        self._feeders: list[asyncio.Task[None]] = []
        self.running = False
        # The network intake servers, once started (their statistics() feeds the metrics).
        self.intake: Any = None
        # Async context managers run for the session and stopped before the drain (network
        # intake servers, ...): ``engine.services.append(lambda engine: Server(engine))``.
        self.services: list[Callable[[Engine], contextlib.AbstractAsyncContextManager[Any]]] = []
        # Metrics: the collector reads the components' statistics at scrape time. The HTTP
        # endpoint is served by default only by a daemon-style engine (built from its config
        # alone); an engine given its sources or clock (tests, benchmarks) serves only when
        # asked with ``serve_metrics=True``.
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
        self._reject_log = RejectLog()  # events the engine itself refuses (max_symbols)
        self.ingest: Ingest | None = None  # attach_ingest: input goes there, not to apply
        # Operations: the daemon (engine/service/cli.py) sets this so that SIGHUP and POST /reload
        # re-read its config file through one path (engine/service/reload.py).
        self.reloader: Reloader | None = None

    # -- lifecycle --------------------------------------------------------------------------

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

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[Engine]:
        persistence = self.persistence
        if persistence is not None:
            await persistence.open()  # restores symbols and the broker before anything runs
        coordinator, dispatcher = self.build()
        writer = None
        if persistence is not None:
            persistence.attach(coordinator)  # resumes the runs found in flight
            writer = persistence.writer
            # Accepted events go to the journal straight from submit_nowait: one call per event.
            self.journal = None if writer is None else writer.journal_event
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
                monitor = tg.create_task(self.loop_monitor.run(), name="loop-monitor")
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
                    await self.drain(self.config.engine.drain_timeout_s)
                    for task in agents:
                        task.cancel()
                    monitor.cancel()
                    if writer is not None:
                        writer.request_stop()  # finishes its commit; close() takes the rest
        finally:
            self.running = False
            self._reject_log.flush()  # what its rate limit held back, summed up
            if persistence is not None:
                await persistence.close()  # the last commit: everything the drain recorded
            self.shutdown_threads()

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

    async def wait_sources(self) -> None:
        """Wait until every source has run dry (errors surface from the session, not here)."""
        if self._feeders:
            await asyncio.wait(self._feeders)

    async def _sweep_forever(self) -> None:
        interval = self.config.engine.sweep_interval_s
        while True:
            await asyncio.sleep(interval)  # a period, not a wait for a condition
            self.sweep()

    # -- intake -----------------------------------------------------------------------------

    async def submit(self, event: Event) -> int | None:
        """Take one event; waits while the storage writer (or the attached ingest) is behind
        (backpressure). Returns the ticket :meth:`submit_nowait` does."""
        await self.wait_capacity()
        return self.submit_nowait(event)

    async def wait_capacity(self) -> None:
        """Wait while the storage writer's backlog (or the attached ingest's) is full."""
        ingest = self.ingest
        if ingest is not None:
            await ingest.wait_capacity()
            return
        persistence = self.persistence
        if persistence is not None and persistence.writer is not None:
            await persistence.writer.wait_capacity()

    async def wait_accepted(self, seq: int | None) -> None:
        """Wait until the event of ticket ``seq`` counts as accepted: its journal record
        committed (docs/storage.md), or the attached ingest's acknowledgement. Immediate when
        storage is off (``seq`` is None)."""
        ingest = self.ingest
        if ingest is not None:
            await ingest.wait_accepted(seq)
            return
        persistence = self.persistence
        if seq is not None and persistence is not None and persistence.writer is not None:
            await persistence.writer.wait_committed(seq)

    def attach_ingest(self, ingest: Ingest) -> None:
        """Send input (sources, network intake, the admin API) to ``ingest`` instead of
        applying it here; whoever owns the input applies it with :meth:`apply_nowait`."""
        self.ingest = ingest
        # Bound once, not tested per event: the intake's hot path calls submit_nowait.
        self.submit_nowait = ingest.submit_nowait  # type: ignore[method-assign]

    async def _submit_from_source(self, event: Event) -> int | None:
        """A source's :meth:`submit`: an event the engine refuses is counted (by
        :meth:`submit_nowait`) and logged, and the source goes on with the next one."""
        try:
            return await self.submit(event)
        except EventError as exc:
            self._reject_log.log(exc, source="source")
            return None

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
        if risk_limits is not None:
            self.risk.set_limits(risk_limits)
        self.config = config
        self.settings = config.engine
        self.config_version = version
        self.apply_workflows(workflows)

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

    def statistics(self) -> EngineStatistics:
        """The pipeline's snapshot, with the sources' own rejections (e.g. replay's bad rows)."""
        stats = super().statistics()
        rejected: Counter[str] = Counter(stats.counters.events_rejected)
        for source in self.sources:
            rejected.update(source.statistics().rejected)
        counters = msgspec.structs.replace(stats.counters, events_rejected=dict(rejected))
        return msgspec.structs.replace(stats, counters=counters)
