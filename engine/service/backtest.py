"""``tickflow backtest``: the live engine on virtual time, as fast as the CPU allows.

The same :class:`~engine.service.daemon.Engine` -- coordinator, dispatcher, ready heap, agents,
strategies, risk checks and paper broker -- runs on a :class:`~engine.core.clock.VirtualClock`
and its :class:`~engine.core.clock.VirtualTimeLoop`: time follows the data's timestamps, steps
take the virtual time of a :class:`LatencyModel`, and every timer (step timeouts, retry
back-off, the sweep, drain deadlines) fires in virtual time. Nothing waits for the wall clock
and nothing depends on how fast the machine is, so the same data and config give the same
fills, positions and P&L on every run: :func:`result_digest` prints that as one sha256.

The latency model is in :mod:`engine.service.backtest_latency`.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any, Final, Protocol

import msgspec

from engine.config import Config
from engine.core.clock import VirtualClock, VirtualTimeLoop
from engine.core.errors import EventError, TickflowError
from engine.core.events import DataReady, Event
from engine.service.backtest_latency import (
    BacktestError,
    LatencyModel,
    StepMeter,
    install_latency,
    parse_duration,
    parse_latency,
)
from engine.service.backtest_record import Figures, RecordedFill, Recorder, result_digest
from engine.service.daemon import Engine
from engine.service.trading import build_broker
from engine.sources.base import SourceStats

__all__ = [
    "Backtest",
    "BacktestError",
    "BacktestResult",
    "EventFile",
    "LatencyModel",
    "StepMeter",
    "install_latency",
    "open_data",
    "parse_duration",
    "parse_latency",
]

_PROGRESS_EVERY: Final = 8192
# A gap between ticks longer than this, with nothing in flight, is crossed in one step.
_IDLE_GAP_S: Final = 1.0
class EventFile(Protocol):
    """A data file read synchronously in file order (replay's CSV/JSON lines, DBN)."""

    name: str

    @property
    def position(self) -> int: ...
    def count_lines(self) -> int: ...
    def iter_events(self) -> Iterator[Event]: ...
    def statistics(self) -> SourceStats: ...


def open_data(path: Path, fmt: str = "auto", max_line_bytes: int = 65536) -> EventFile:
    """The reader for ``path``: DBN by ``.dbn``/``.dbn.zst`` (or ``fmt="dbn"``), else replay's."""
    name = path.name.lower()
    if fmt == "dbn" or (fmt == "auto" and (name.endswith(".dbn") or name.endswith(".dbn.zst"))):
        from engine.sources.dbn import DbnFile

        return DbnFile(path)
    from engine.sources import ReplaySource

    if fmt not in ("auto", "csv", "jsonl"):
        raise BacktestError(f"format must be auto, csv, jsonl or dbn, got {fmt!r}")
    return ReplaySource(path, speed=0.0, format=fmt, max_line_bytes=max_line_bytes)  # type: ignore[arg-type]


class BacktestResult(msgspec.Struct, frozen=True, kw_only=True):
    data: str
    digest: str
    events: dict[str, Any]
    runs: dict[str, dict[str, int]]
    figures: Figures
    positions: dict[str, dict[str, float]]
    pnl: dict[str, float]
    virtual_seconds: float  # data time covered, plus the drain
    wall_seconds: float
    ticks_per_second: float  # events fed per wall-clock second
    drained: bool  # every run finished within the drain deadline
    latency: LatencyModel
    fills: list[RecordedFill]


class Backtest:
    """One backtest of ``data`` under ``config``; :meth:`run` once."""

    def __init__(
        self,
        config: Config,
        data: EventFile,
        *,
        latency: LatencyModel | None = None,
        detail: bool = False,
        progress: bool = False,
        drain_timeout_s: float = 60.0,
    ) -> None:
        self.config = config
        self.data = data
        self.latency = latency if latency is not None else LatencyModel()
        self.clock = VirtualClock()
        # The paper broker itself (not just the engine's Broker interface): the report reads
        # its books and P&L.
        self.broker = build_broker(config.broker)
        # Storage stays off: it would tie results to disk speed and adds nothing to them.
        self.engine = Engine(
            config, clock=self.clock, sources=[], persist=False, serve_metrics=False,
            broker=self.broker,
        )
        self.recorder = Recorder(self.broker, self.engine.symbols, detail=detail)
        install_latency(
            self.engine.workflows, self.clock, self.latency, self.recorder if detail else None
        )
        self._record_fills()
        self.progress = progress
        self.drain_timeout_s = drain_timeout_s
        self.drained = True

    def _record_fills(self) -> None:
        # Every order of every strategy ends in the broker's submit: a new client order id
        # there is a fill (a retry's replay returns the original and is not counted again).
        broker = self.engine.broker
        submit = broker.submit
        recorder = self.recorder
        clock = self.clock

        def recording(coid: str, *args: Any, **kwargs: Any) -> Any:
            fresh = broker.fill_for(coid) is None
            fill = submit(coid, *args, **kwargs)
            if fresh:
                recorder.fill(fill, clock.t)
            return fill

        broker.submit = recording  # type: ignore[method-assign,assignment]

    def run(self) -> BacktestResult:
        events = self.data.iter_events()
        first: list[Event] = []
        for event in events:  # the origin of virtual time: the first tick's whole second
            first.append(event)
            if type(event) is DataReady:
                self.clock.origin = math.floor(event.ts)
                break
        total = self.data.count_lines() if self.progress else 0
        started = time.perf_counter()
        loop = self.clock.new_loop()
        try:
            loop.run_until_complete(self._main(chain(first, events), total))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        wall = time.perf_counter() - started
        return self._result(wall)

    async def _main(self, events: Iterator[Event], total: int) -> None:
        engine = self.engine
        failure: BaseException | None = None
        async with engine.session():
            coordinator = engine.coordinator
            assert coordinator is not None
            if self.recorder.detail:  # the report's latency histograms
                coordinator.on_run_finished = self.recorder.run_finished
            try:
                if self.progress:
                    await self._feed_with_progress(events, total)
                else:
                    await self._feed(events, None)
            except (TickflowError, OSError) as exc:
                # The file failed mid-way (a truncated DBN file): re-raised once the session
                # is closed, as itself rather than inside the task group's ExceptionGroup.
                failure = exc
            else:
                try:
                    async with asyncio.timeout(self.drain_timeout_s):  # virtual seconds
                        await engine.wait_idle()
                except TimeoutError:
                    self.drained = False
                self.recorder.sample(self.clock.t)
        if failure is not None:
            raise failure

    async def _feed_with_progress(self, events: Iterator[Event], total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (
            TextColumn("backtest"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rate]} lines/s"), TimeElapsedColumn(), TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=_stderr_console(), transient=False) as bar:
            task = bar.add_task("backtest", total=total or None, rate="-")
            started = time.perf_counter()
            data = self.data

            def show(final: bool = False) -> None:
                done = data.position
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.update(task, completed=done, rate=f"{done / elapsed:,.0f}")

            await self._feed(events, show)
            show(True)

    async def _feed(self, events: Iterator[Event], show: Callable[[], None] | None) -> None:
        """Hand the events to the engine in file order, each at its virtual time.

        When the loop has nothing due before the next tick, the clock moves straight to it (no
        loop turn: that is what makes an unrouted tick cost a few microseconds); otherwise the
        feeder sleeps until then and the loop runs everything due first, in virtual-time order.
        """
        engine, clock, recorder = self.engine, self.clock, self.recorder
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VirtualTimeLoop)
        submit = engine.submit_nowait
        coordinator = engine.coordinator
        assert coordinator is not None
        symbols = engine.symbols
        origin = clock.origin
        tick = recorder.tick if recorder.detail else None
        if show is not None:
            events = _every(events, _PROGRESS_EVERY, show)
        # VirtualTimeLoop.idle_until, inlined: this runs once per tick. The ready deque is the
        # loop's for its life; the timer heap is re-read after every await (the loop may
        # rebuild it then, and only then).
        ready = loop._ready  # type: ignore[attr-defined]
        scheduled = loop._scheduled  # type: ignore[attr-defined]
        next_sample = recorder.next_sample
        for event in events:
            if type(event) is DataReady:
                t = event.ts - origin
                if t > clock.t:
                    if t >= next_sample:
                        recorder.sample(clock.t)
                        next_sample = recorder.next_sample
                    while True:
                        if not ready and (not scheduled or scheduled[0]._when > t):
                            clock.t = t  # nothing is due before the tick
                            break
                        if t - clock.t <= _IDLE_GAP_S:
                            await _sleep_until(loop, t)  # the loop runs what is due first
                            scheduled = loop._scheduled  # type: ignore[attr-defined]
                            break
                        if not coordinator.runs and not symbols.waiting():
                            # Nothing in flight across a long gap (a night, a weekend): only
                            # housekeeping is due -- the sweep, which would find no symbol
                            # waiting, and the loop monitor. Jump; they fire once, late, at
                            # t, instead of every few virtual seconds of the gap.
                            clock.t = t
                            break
                        # Busy at the start of a long gap: let the work finish, then look again.
                        await _sleep_until(loop, clock.t + _IDLE_GAP_S)
                        scheduled = loop._scheduled  # type: ignore[attr-defined]
                if tick is not None:
                    tick(event.symbol, event.price, clock.t)
            # A plain try, not contextlib.suppress: this runs once per tick.
            try:  # noqa: SIM105
                submit(event)
            except EventError:
                pass  # counted by the engine (symbol_limit), like a live source's reject

    def _result(self, wall: float) -> BacktestResult:
        engine = self.engine
        recorder = self.recorder
        stats = engine.statistics()
        c = stats.counters
        broker = self.broker
        marks = recorder.marks()
        pnl = {
            "cash": broker.cash,
            "realized": broker.realized_pnl,
            "unrealized": broker.unrealized_pnl(marks),
            "fees": broker.fees_paid,
            "equity": broker.equity(marks),
        }
        positions = recorder.positions()
        source = self.data.statistics()
        return BacktestResult(
            data=str(self.data.name),
            digest=result_digest(recorder.fills, positions, pnl),
            events={
                "emitted": source.emitted,
                "received": c.events_received,
                "rejected": {k: v for k, v in c.events_rejected.items() if v},
                "conflated": c.events_conflated,
                "shed": c.events_shed,
            },
            runs={wf: {k: v for k, v in o.items() if v} for wf, o in sorted(c.runs.items())},
            figures=recorder.figures(),
            positions=positions,
            pnl=pnl,
            virtual_seconds=self.clock.t,
            wall_seconds=wall,
            ticks_per_second=source.emitted / wall if wall > 0 else 0.0,
            drained=self.drained,
            latency=self.latency,
            fills=recorder.fills,
        )


def _every(events: Iterator[Event], n: int, call: Callable[[], None]) -> Iterator[Event]:
    for i, event in enumerate(events, 1):
        if not i % n:
            call()
        yield event


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _sleep_until(loop: VirtualTimeLoop, t: float) -> None:
    # call_at, not sleep(t - now): the timer lands exactly on the tick's instant.
    fut = loop.create_future()
    loop.call_at(t, _wake, fut)
    await fut


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(file=sys.stderr)
