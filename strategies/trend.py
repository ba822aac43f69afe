"""Trend workflow steps: ``collect_trend_data`` -> ``calculate_trend``.

Bars are built from the tick window (time buckets by default, or N ticks per bar). On their
closes:

* ``gap = (ema(fast) - ema(slow)) / ema(slow)``: the crossover, as a fraction of price so one
  threshold serves a $5 and a $5,000 stock.
* ``slope``: least-squares slope of the last ``slope_window`` closes per bar, divided by their
  mean (again a fraction of price).
* ``UP`` when ``gap > flat_band`` and ``slope > 0``; ``DOWN`` when ``gap < -flat_band`` and
  ``slope < 0``; otherwise ``FLAT``. Requiring both to agree filters the whipsaw right after a
  crossover, when the averages have crossed but prices are already turning back.
* Strengths ``|gap| / full_gap`` and ``|slope| / full_slope`` are clamped to ``[0, 1]``.
  Confidence in UP/DOWN is their mean; confidence in FLAT is ``1 - max(strengths)``, i.e. high
  only when neither measure shows any trend. Too few bars give FLAT with confidence 0.
* The action is ``BUY``/``SELL`` for UP/DOWN with ``confidence >= min_confidence``, else ``HOLD``.

Params (validated at load into the structs below; defaults in brackets):
``collect_trend_data``: ``window`` [256] ticks, ``bar_seconds`` [1.0] or ``bar_ticks`` (unset).
``calculate_trend``: ``fast`` [5], ``slow`` [20], ``slope_window`` [10], ``min_bars`` [5],
``flat_band`` [0.0005], ``full_gap`` [0.005], ``full_slope`` [0.001], ``min_confidence`` [0.5].
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from engine.core.strategy import Context, Tick, cheap, strategy_params

from .common import Action, Params, clamp, find_input
from .indicators import Bar, bars_by_count, bars_by_time, ema_series, mean, slope

__all__ = [
    "CollectTrendParams",
    "Direction",
    "TrendData",
    "TrendParams",
    "TrendSignal",
    "calculate_trend",
    "collect_trend_data",
]

Direction = Literal["UP", "DOWN", "FLAT"]

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Positive = Annotated[float, msgspec.Meta(gt=0.0)]


class CollectTrendParams(Params, frozen=True):
    window: PositiveInt = 256
    """Ticks cut into bars."""
    bar_seconds: Positive | None = None
    """Time bars of this many seconds (1.0 unless ``bar_ticks`` is set)."""
    bar_ticks: PositiveInt | None = None
    """Bars of this many ticks instead of time bars."""

    def __post_init__(self) -> None:
        if self.bar_seconds is not None and self.bar_ticks is not None:
            raise ValueError("set either `bar_seconds` or `bar_ticks`, not both")


class TrendParams(Params, frozen=True):
    fast: PositiveInt = 5
    slow: PositiveInt = 20
    slope_window: Annotated[int, msgspec.Meta(ge=2)] = 10
    min_bars: Annotated[int, msgspec.Meta(ge=2)] = 5
    flat_band: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0005
    full_gap: Positive = 0.005
    full_slope: Positive = 0.001
    min_confidence: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 0.5

    def __post_init__(self) -> None:
        if self.fast >= self.slow:
            raise ValueError(f"`fast` ({self.fast}) must be smaller than `slow` ({self.slow})")


class TrendData(msgspec.Struct, frozen=True):
    """Bars of one symbol's recent window (oldest first) plus the triggering tick.

    ``as_of`` is the newest tick timestamp in the window. Exactly one of ``bar_seconds`` /
    ``bar_ticks`` is set: how the bars were cut.
    """

    symbol: str
    tick: Tick
    bars: tuple[Bar, ...]
    as_of: float
    bar_seconds: float | None = None
    bar_ticks: int | None = None


class TrendSignal(msgspec.Struct, frozen=True):
    """The trend call, the action it implies, and the measurements behind it."""

    symbol: str
    direction: Direction
    action: Action
    confidence: float
    fast_ema: float
    slow_ema: float
    gap: float
    slope: float
    crossed: bool
    bars: int
    price: float
    ts: float
    reason: str


@cheap
@strategy_params(CollectTrendParams)
def collect_trend_data(ctx: Context[CollectTrendParams]) -> TrendData:
    """Cut the last ``window`` ticks into OHLCV bars."""
    p = ctx.params
    ticks = ctx.market.window(ctx.symbol, p.window) or (ctx.tick,)
    as_of = max(t.ts for t in ticks)
    if p.bar_ticks is not None:
        n = p.bar_ticks
        bars = tuple(bars_by_count(ticks, n))
        return TrendData(ctx.symbol, ctx.tick, bars, as_of, bar_ticks=n)
    seconds = 1.0 if p.bar_seconds is None else p.bar_seconds
    bars = tuple(bars_by_time(ticks, seconds))
    return TrendData(ctx.symbol, ctx.tick, bars, as_of, bar_seconds=seconds)


@cheap
@strategy_params(TrendParams)
def calculate_trend(ctx: Context[TrendParams]) -> TrendSignal:
    """Classify the trend of the ``collect_trend_data`` bars as UP/DOWN/FLAT with an action."""
    data = find_input(ctx, "collect_trend_data", TrendData)
    p = ctx.params
    fast, slow = p.fast, p.slow
    slope_window, min_bars = p.slope_window, p.min_bars
    flat_band, full_gap, full_slope = p.flat_band, p.full_gap, p.full_slope
    min_confidence = p.min_confidence

    closes = [b.close for b in data.bars]
    price = closes[-1] if closes else data.tick.price
    ts = data.as_of

    if len(closes) < min_bars:
        return TrendSignal(
            symbol=data.symbol,
            direction="FLAT",
            action="HOLD",
            confidence=0.0,
            fast_ema=price,
            slow_ema=price,
            gap=0.0,
            slope=0.0,
            crossed=False,
            bars=len(closes),
            price=price,
            ts=ts,
            reason="insufficient_data",
        )

    fast_series = ema_series(closes, fast)
    slow_series = ema_series(closes, slow)
    fast_ema, slow_ema = fast_series[-1], slow_series[-1]
    gap = (fast_ema - slow_ema) / slow_ema if slow_ema > 0.0 else 0.0

    recent = closes[-slope_window:]
    level = mean(recent)
    rel_slope = slope(recent) / level if level else 0.0

    prev_diff = fast_series[-2] - slow_series[-2]
    diff = fast_ema - slow_ema
    crossed = (prev_diff <= 0.0 < diff) or (prev_diff >= 0.0 > diff)

    gap_strength = clamp(abs(gap) / full_gap, 0.0, 1.0)
    slope_strength = clamp(abs(rel_slope) / full_slope, 0.0, 1.0)
    direction: Direction
    if gap > flat_band and rel_slope > 0.0:
        direction = "UP"
    elif gap < -flat_band and rel_slope < 0.0:
        direction = "DOWN"
    else:
        direction = "FLAT"

    action: Action = "HOLD"
    if direction == "FLAT":
        confidence = 1.0 - max(gap_strength, slope_strength)
        reason = "flat" if abs(gap) <= flat_band else "ema_slope_disagree"
    else:
        confidence = (gap_strength + slope_strength) / 2.0
        if confidence >= min_confidence:
            action = "BUY" if direction == "UP" else "SELL"
            reason = "crossover" if crossed else "trend"
        else:
            reason = "low_confidence"
    return TrendSignal(
        symbol=data.symbol,
        direction=direction,
        action=action,
        confidence=clamp(confidence, 0.0, 1.0),
        fast_ema=fast_ema,
        slow_ema=slow_ema,
        gap=gap,
        slope=rel_slope,
        crossed=crossed,
        bars=len(closes),
        price=price,
        ts=ts,
        reason=reason,
    )
