"""Trend workflow steps: ``collect_trend_data`` -> ``calculate_trend``.

Bars are built from the symbol's ticks (time buckets by default, or N ticks per bar) and kept
from run to run: each run folds in only the ticks that arrived since the previous one
(:mod:`strategies.bars`, :mod:`strategies.stepstate`), so the bars cover every tick since the
step's state started -- the newest ``max_bars`` of them -- however few ticks fit in the market
window. The state is per engine, workflow, step and symbol; it restarts from the market window
when the step sees it for the first time, when more than ``window`` ticks arrived since its
previous run (it never builds on ticks it did not see), or when its params change. A retry
folds nothing twice. On the bars' closes:

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

The EMAs are those of the bars handed over, seeded with the first one's close (as
:func:`strategies.indicators.ema_series`); ``calculate_trend`` carries them over the closed bars
from run to run and applies only the forming bar on top, recomputing when the closed bars are
not the previous run's plus new ones (a bar dropped out of the front, a late tick changed one).
The result is the from-scratch one to the bit.

Params (validated at load into the structs below; defaults in brackets):
``collect_trend_data``: ``window`` [256] ticks, ``bar_seconds`` [1.0] or ``bar_ticks`` (unset),
``max_bars`` [128].
``calculate_trend``: ``fast`` [5], ``slow`` [20], ``slope_window`` [10], ``min_bars`` [5],
``flat_band`` [0.0005], ``full_gap`` [0.005], ``full_slope`` [0.001], ``min_confidence`` [0.5].
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from engine.core.strategy import Context, Tick, cheap, strategy_params

from .bars import BarSeries
from .common import Action, Params, clamp, find_input
from .indicators import Bar, mean, slope
from .stepstate import StepState, StepStates

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
    """Ticks a run reads to catch up (and a restarted state starts from): more than this many
    since the previous run and the bars restart from the latest ``window`` ticks."""
    max_bars: Annotated[int, msgspec.Meta(ge=2)] = 128
    """Bars kept (the oldest drops out); the EMAs are seeded at the first one kept."""
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
    """Bars of one symbol's ticks since the step's state (re)started -- the newest ``max_bars``,
    oldest first, the last one still forming -- plus the triggering tick.

    ``as_of`` is the newest tick timestamp in the bars. Exactly one of ``bar_seconds`` /
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


class _Bars(StepState):
    __slots__ = ("series",)

    def __init__(self) -> None:
        super().__init__()
        self.series: BarSeries | None = None


_collect_states: StepStates[_Bars] = StepStates(_Bars)


@cheap
@strategy_params(CollectTrendParams)
def collect_trend_data(ctx: Context[CollectTrendParams]) -> TrendData:
    """Fold the ticks since the previous run into the symbol's OHLCV bars."""
    p = ctx.params
    ticks = ctx.market.window(ctx.symbol, p.window) or (ctx.tick,)
    state = _collect_states.get(ctx)
    with state.lock:
        series = state.series
        if series is None or state.changed(p):
            seconds = None if p.bar_ticks is not None else (p.bar_seconds or 1.0)
            series = state.series = BarSeries(
                seconds=seconds, per_bar=p.bar_ticks, max_bars=p.max_bars
            )
            state.key = p
            start = -1
        else:
            start = state.cursor.find(ticks)
        if start < 0:  # first run, a gap longer than the window, or new params: restart
            series.reset()
            series.fold(ticks)
        elif start < len(ticks):
            series.fold(ticks[start:])
        state.cursor.consumed(ticks)
        return TrendData(
            ctx.symbol, ctx.tick, series.bars(), series.as_of,
            bar_seconds=series.seconds, bar_ticks=series.per_bar,
        )


class _Emas(StepState):
    """The EMAs over a run of closed bars, and those bars."""

    __slots__ = ("closed", "fast", "slow")

    def __init__(self) -> None:
        super().__init__()
        self.closed: tuple[Bar, ...] = ()
        self.fast = self.slow = 0.0


_trend_states: StepStates[_Emas] = StepStates(_Emas)


def _closed_emas(ctx: Context[TrendParams], data: TrendData) -> tuple[float, float]:
    """The fast and slow EMAs over ``data.bars[:-1]`` (the closed bars), carried over from the
    previous run when those bars only grew at the end since."""
    p = ctx.params
    bars = data.bars
    closed = len(bars) - 1
    state = _trend_states.get(ctx)
    with state.lock:
        n = len(state.closed)
        # The same bars as last time, compared by value (identity first, so normally a pointer
        # check each): a bar dropped out of the front, a late tick that changed a closed bar,
        # a restarted series or another engine's data all fail it and recompute.
        if state.changed(p) or not 0 < n <= closed or bars[:n] != state.closed:
            n = 0
        fast_a = 2.0 / (p.fast + 1.0)
        slow_a = 2.0 / (p.slow + 1.0)
        fast_k, slow_k = 1.0 - fast_a, 1.0 - slow_a
        if n == 0:
            fast = slow = bars[0].close
            n = 1
        else:
            fast, slow = state.fast, state.slow
        for i in range(n, closed):
            # ema_series' convex-combination form, so the carried value is the same float.
            c = bars[i].close
            fast = fast_a * c + fast_k * fast
            slow = slow_a * c + slow_k * slow
        state.key = p
        state.closed = bars[:closed]
        state.fast, state.slow = fast, slow
        return fast, slow


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

    bars = data.bars
    count = len(bars)
    price = bars[-1].close if bars else data.tick.price
    ts = data.as_of

    if count < min_bars:
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
            bars=count,
            price=price,
            ts=ts,
            reason="insufficient_data",
        )

    # min_bars >= 2, so there is at least one closed bar under the forming one.
    prev_fast, prev_slow = _closed_emas(ctx, data)
    fast_a = 2.0 / (fast + 1.0)
    slow_a = 2.0 / (slow + 1.0)
    fast_ema = fast_a * price + (1.0 - fast_a) * prev_fast
    slow_ema = slow_a * price + (1.0 - slow_a) * prev_slow
    gap = (fast_ema - slow_ema) / slow_ema if slow_ema > 0.0 else 0.0

    recent = [b.close for b in bars[-slope_window:]]
    level = mean(recent)
    rel_slope = slope(recent) / level if level else 0.0

    prev_diff = prev_fast - prev_slow
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
        bars=count,
        price=price,
        ts=ts,
        reason=reason,
    )
