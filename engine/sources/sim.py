"""The embedded default source: a seeded random-walk market.

Prices follow a log-normal random walk per symbol (``volatility`` is the per-tick standard deviation
of the log return, with the drift that keeps the expected price constant); bid and ask sit
``spread_bps`` apart around the price. The walk itself (:meth:`SimMarket.ticks`) is a pure function
of the seed and needs no clock, so tests and benchmarks replay it exactly; :meth:`SimMarket.run`
adds wall-clock pacing and timestamps on top.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from types import MappingProxyType

from engine.core.events import DataReady

from .base import SourceState, SourceStats, Submit
from .pacing import Pacer, Sleep

__all__ = ["SimMarket", "default_symbol_names"]

# Familiar large-cap tickers read better on a dashboard than SIM007; only the names are borrowed,
# every price is simulated. Past the list, names continue as SIM040, SIM041, ...
_TICKERS = (
    "AAPL", "MSFT", "NVDA", "AMZN", "GOOGL", "META", "TSLA", "JPM", "V", "UNH",
    "XOM", "JNJ", "WMT", "MA", "PG", "HD", "CVX", "LLY", "ABBV", "KO",
    "PEP", "BAC", "COST", "MRK", "AVGO", "ORCL", "ADBE", "CRM", "NFLX", "AMD",
    "INTC", "CSCO", "DIS", "NKE", "MCD", "IBM", "QCOM", "TXN", "GS", "CAT",
)  # fmt: skip


def default_symbol_names(n: int) -> list[str]:
    """``n`` distinct stock-like symbol names, the same for every call."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return [_TICKERS[i] if i < len(_TICKERS) else f"SIM{i:03d}" for i in range(n)]


class _Walk:
    """One pass of the random walk: every instance started from the same seed is identical."""

    __slots__ = ("_drift", "_half_spread", "_names", "_prices", "_rng", "_volatility")

    def __init__(
        self,
        names: Sequence[str],
        seed: int,
        start_price: float,
        volatility: float,
        spread_bps: float,
    ) -> None:
        self._names = names
        self._rng = random.Random(seed)
        self._prices = [start_price] * len(names)
        self._volatility = volatility
        # -sigma^2/2 makes exp(log return) average 1: the expected price stays where it is.
        self._drift = -0.5 * volatility * volatility
        self._half_spread = spread_bps / 20_000.0

    def step(self) -> tuple[str, float, float, float, float]:
        """(symbol, price, bid, ask, volume) of the next tick."""
        rng = self._rng
        i = rng.randrange(len(self._names))
        price = self._prices[i] * math.exp(self._drift + self._volatility * rng.gauss(0.0, 1.0))
        self._prices[i] = price
        half = price * self._half_spread
        volume = float(rng.randint(1, 20) * 100)  # round lots
        return self._names[i], price, price - half, price + half, volume


class SimMarket:
    """A deterministic market for ``symbols`` (a count or explicit names).

    The first ``hot_symbols`` names are priority 0, the rest ``cold_priority`` (all are hot if
    ``hot_symbols`` exceeds the count). Ticks carry no ``priority``: the engine seeds its symbol
    table from :meth:`symbol_priorities`, and a tick that restated the priority would undo every
    ``HIGH_PRIORITY_ARRIVED`` re-prioritisation on the symbol's next tick.

    ``run`` paces ``tick_rate_hz`` ticks per second in total (0: as fast as the consumer takes
    them) and stops after ``max_events`` when given. ``clock`` stamps ``ts``; ``sleep`` and
    ``monotonic`` drive the pacing and exist so tests can run on a fake timeline.
    """

    name: str

    def __init__(
        self,
        *,
        symbols: int | Sequence[str] = 20,
        hot_symbols: int = 4,
        tick_rate_hz: float = 200.0,
        seed: int = 1,
        start_price: float = 100.0,
        volatility: float = 0.001,
        spread_bps: float = 2.0,
        cold_priority: int = 2,
        clock: Callable[[], float] = time.time,
        max_events: int | None = None,
        name: str = "sim",
        sleep: Sleep = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        names = default_symbol_names(symbols) if isinstance(symbols, int) else list(symbols)
        if not names:
            raise ValueError("symbols must name at least one symbol")
        if len(set(names)) != len(names):
            raise ValueError("symbols must be distinct")
        if hot_symbols < 0:
            raise ValueError("hot_symbols must be >= 0")
        if cold_priority < 0:
            raise ValueError("cold_priority must be >= 0")
        if not (math.isfinite(tick_rate_hz) and tick_rate_hz >= 0):
            raise ValueError("tick_rate_hz must be finite and >= 0")
        if not (math.isfinite(start_price) and start_price > 0):
            raise ValueError("start_price must be finite and > 0")
        if not (math.isfinite(volatility) and volatility >= 0):
            raise ValueError("volatility must be finite and >= 0")
        if not (math.isfinite(spread_bps) and 0 <= spread_bps < 20_000):
            raise ValueError("spread_bps must be in [0, 20000)")
        if max_events is not None and max_events < 0:
            raise ValueError("max_events must be >= 0")
        self.name = name
        self._names = tuple(names)
        hot = min(hot_symbols, len(names))
        self._priorities = MappingProxyType(
            {sym: 0 if i < hot else cold_priority for i, sym in enumerate(names)}
        )
        self._tick_rate_hz = tick_rate_hz
        self._seed = seed
        self._start_price = start_price
        self._volatility = volatility
        self._spread_bps = spread_bps
        self._clock = clock
        self._max_events = max_events
        self._sleep = sleep
        self._monotonic = monotonic
        self._state: SourceState = "idle"
        self._emitted = 0
        self._lag_resets = 0

    @property
    def symbols(self) -> tuple[str, ...]:
        return self._names

    @property
    def tick_rate_hz(self) -> float:
        return self._tick_rate_hz

    @property
    def lag_resets(self) -> int:
        """How often ``run`` fell so far behind (backpressure) that it skipped ahead in time."""
        return self._lag_resets

    def symbol_priorities(self) -> dict[str, int]:
        return dict(self._priorities)

    def ticks(
        self, n: int | None = None, *, start_ts: float = 0.0, interval: float | None = None
    ) -> Iterator[DataReady]:
        """The walk as events, without a clock: ``n`` ticks (default ``max_events``; None: endless).

        ``ts`` runs from ``start_ts`` in steps of ``interval`` (default ``1 / tick_rate_hz``, or
        1 ms when the rate is 0). Every call starts the walk afresh from the seed.
        """
        if n is None:
            n = self._max_events
        if interval is None:
            interval = 1.0 / self._tick_rate_hz if self._tick_rate_hz > 0 else 0.001
        walk = self._walk()
        i = 0
        while n is None or i < n:
            symbol, price, bid, ask, volume = walk.step()
            yield DataReady(symbol, start_ts + i * interval, price, volume, bid, ask)
            i += 1

    async def run(self, submit: Submit) -> None:
        """Feed ticks to ``submit`` at the configured rate until ``max_events`` or cancellation."""
        if self._state == "running":
            raise RuntimeError(f"source {self.name!r} is already running")
        self._state = "running"
        walk = self._walk()
        pacer = Pacer(sleep=self._sleep, monotonic=self._monotonic)
        rate = self._tick_rate_hz
        limit = self._max_events
        clock = self._clock
        k = 0
        try:
            while limit is None or k < limit:
                # k / rate from the anchor, not a running sum: rounding cannot drift the schedule.
                await pacer.wait_until(k / rate if rate > 0 else 0.0)
                symbol, price, bid, ask, volume = walk.step()
                await submit(DataReady(symbol, clock(), price, volume, bid, ask))
                k += 1
                self._emitted += 1
            self._state = "finished"
        except asyncio.CancelledError:
            self._state = "cancelled"
            raise
        finally:
            if self._state == "running":
                self._state = "failed"
            self._lag_resets += pacer.lag_resets

    def statistics(self) -> SourceStats:
        return SourceStats(name=self.name, state=self._state, emitted=self._emitted)

    def _walk(self) -> _Walk:
        return _Walk(self._names, self._seed, self._start_price, self._volatility, self._spread_bps)
