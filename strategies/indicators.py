"""Pure indicator maths on sequences of floats and ticks.

Conventions, chosen so that no NaN or ZeroDivisionError can reach a trading decision:

* A *level* (mean, EMA) of an empty input is ``None``: there is no sensible price to make up.
* A *normalised statistic* (z-score, slope) with too little data or zero variance is ``0.0``:
  no evidence reads as "neutral", which every caller already treats as "do nothing".
* Order-flow imbalance is ``None`` when no tick carries a usable quote, because "no quotes" and
  "balanced quotes" must stay distinguishable to the signal that weighs them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import attrgetter

import msgspec

from engine.core.strategy import Tick, TickflowError

__all__ = [
    "Bar",
    "IndicatorError",
    "bars_by_count",
    "bars_by_time",
    "ema",
    "ema_series",
    "flow_imbalance",
    "mean",
    "quote_imbalance",
    "slope",
    "stdev",
    "zscore",
]

# Below this fraction of the mean a standard deviation is rounding noise, not variance:
# [0.1, 0.1, 0.1] has a floating-point stdev of ~1e-17 and would otherwise yield a z of ~±1.
_REL_EPS = 1e-12


_by_ts = attrgetter("ts")


class IndicatorError(TickflowError, ValueError):
    """An indicator was called with an impossible parameter (e.g. a non-positive bar size)."""


class Bar(msgspec.Struct, frozen=True):
    """One OHLCV bar.

    For time bars ``start``/``end`` are the bucket bounds ``[start, end)``; for count bars they are
    the timestamps of the first and last tick in the bar.
    """

    start: float
    end: float
    open: float
    high: float
    low: float
    close: float
    volume: float
    ticks: int


def mean(values: Sequence[float]) -> float | None:
    """Arithmetic mean, ``None`` for an empty input."""
    if not values:
        return None
    # fsum keeps long windows of near-equal prices from drifting by accumulated rounding.
    return math.fsum(values) / len(values)


def stdev(values: Sequence[float]) -> float:
    """Population standard deviation; ``0.0`` for fewer than two values or rounding-level spread.

    Population rather than sample: the window *is* the population the latest price is compared
    with, and it keeps ``|z| <= sqrt(n - 1)`` as a hard bound.
    """
    n = len(values)
    if n < 2:
        return 0.0
    return _stdev(values, n, math.fsum(values) / n)


def _stdev(values: Sequence[float], n: int, m: float) -> float:
    # A list comprehension of products, not a generator of `** 2`: Python 3.11 specialises
    # float arithmetic in the comprehension, and `d * d` is the correctly rounded square where
    # pow() may be an ulp off (about twice as fast on the HFT step's 50 prices).
    var = math.fsum([(v - m) * (v - m) for v in values]) / n
    sd = math.sqrt(var)
    if sd <= _REL_EPS * abs(m) or not math.isfinite(sd):
        return 0.0
    return sd


def zscore(values: Sequence[float], window: int | None = None) -> float:
    """Z-score of the last value against the mean and stdev of the last ``window`` values.

    The latest value is part of its own window (a rolling window that ends now). Returns ``0.0``
    when the window has fewer than two values or no variance.
    """
    if window is not None:
        if window < 1:
            raise IndicatorError(f"window must be >= 1, got {window}")
        values = values[-window:]
    n = len(values)
    if n < 2:
        return 0.0  # no spread to measure against (and mean([]) is undefined)
    m = math.fsum(values) / n
    sd = _stdev(values, n, m)
    if sd == 0.0:
        return 0.0
    z = (values[-1] - m) / sd
    return z if math.isfinite(z) else 0.0


def ema_series(values: Sequence[float], span: int) -> list[float]:
    """Exponential moving average with ``alpha = 2 / (span + 1)``, seeded with the first value.

    Seeding with the first value (rather than an SMA of the first ``span`` values) gives an output
    for every input, so short windows still produce a usable, if less smoothed, average.
    """
    if span < 1:
        raise IndicatorError(f"span must be >= 1, got {span}")
    alpha = 2.0 / (span + 1.0)
    keep = 1.0 - alpha
    out: list[float] = []
    acc = 0.0
    for i, v in enumerate(values):
        # The convex-combination form stays inside [min, max]; `acc + alpha * (v - acc)` loses
        # digits to cancellation when a small price follows a large one.
        acc = v if i == 0 else alpha * v + keep * acc
        out.append(acc)
    return out


def ema(values: Sequence[float], span: int) -> float | None:
    """The last value of :func:`ema_series`, ``None`` for an empty input."""
    series = ema_series(values, span)
    return series[-1] if series else None


def slope(values: Sequence[float], xs: Sequence[float] | None = None) -> float:
    """Ordinary least-squares slope of ``values`` against ``xs`` (default ``0, 1, 2, ...``).

    ``0.0`` for fewer than two points or when all ``xs`` are equal (a vertical line has no slope
    a strategy could act on).
    """
    n = len(values)
    if xs is None:
        xs = range(n)
    elif len(xs) != n:
        raise IndicatorError(f"xs has {len(xs)} points but values has {n}")
    if n < 2:
        return 0.0
    mx = math.fsum(xs) / n
    my = math.fsum(values) / n
    dx = [x - mx for x in xs]
    sxx = math.fsum([d * d for d in dx])  # as in _stdev: exact-rounded squares
    if sxx <= _REL_EPS * max(1.0, abs(mx)):
        return 0.0
    sxy = math.fsum([d * (y - my) for d, y in zip(dx, values, strict=True)])
    b = sxy / sxx
    return b if math.isfinite(b) else 0.0


def quote_imbalance(price: float, bid: float | None, ask: float | None) -> float | None:
    """Where a trade printed inside the spread: ``+1`` at the ask, ``-1`` at the bid, ``0`` mid.

    Ticks carry top-of-book prices but no book sizes, so the classic size imbalance is not
    available; the trade's position in the spread is the standard proxy for who was aggressive
    (buyers lift the ask, sellers hit the bid). ``None`` when a side is missing or the book is
    crossed; prints outside the spread clamp to ``±1``.
    """
    if bid is None or ask is None or ask < bid:
        return None
    half_spread = (ask - bid) / 2.0
    mid = (ask + bid) / 2.0
    if half_spread <= _REL_EPS * abs(mid):
        # A locked book gives no side information unless the print is off the quote.
        if price > mid:
            return 1.0
        if price < mid:
            return -1.0
        return 0.0
    x = (price - mid) / half_spread
    if not math.isfinite(x):
        return None
    return max(-1.0, min(1.0, x))


def flow_imbalance(
    prices: Sequence[float],
    bids: Sequence[float | None],
    asks: Sequence[float | None],
    volumes: Sequence[float] | None = None,
) -> float | None:
    """Volume-weighted mean of :func:`quote_imbalance` over the ticks that have a quote.

    In ``[-1, 1]``: positive means buyers were the aggressors. Falls back to equal weights when the
    quoted ticks carry no volume. ``None`` when no tick has a usable quote.
    """
    n = len(prices)
    if len(bids) != n or len(asks) != n or (volumes is not None and len(volumes) != n):
        raise IndicatorError("prices, bids, asks and volumes must have the same length")
    signs: list[float] = []
    weights: list[float] = []
    isfinite = math.isfinite
    for i in range(n):
        # quote_imbalance, inlined (this runs for every tick of every HFT signal); the property
        # test in tests/unit/test_indicators.py holds the two to the same floats.
        bid, ask = bids[i], asks[i]
        if bid is None or ask is None or ask < bid:
            continue
        price = prices[i]
        half_spread = (ask - bid) / 2.0
        mid = (ask + bid) / 2.0
        if half_spread <= _REL_EPS * abs(mid):
            s = 1.0 if price > mid else (-1.0 if price < mid else 0.0)
        else:
            s = (price - mid) / half_spread
            if not isfinite(s):
                continue
            if s > 1.0:
                s = 1.0
            elif s < -1.0:
                s = -1.0
        signs.append(s)
        w = volumes[i] if volumes is not None else 1.0
        weights.append(w if isfinite(w) and w > 0.0 else 0.0)
    if not signs:
        return None
    total = math.fsum(weights)
    if total <= 0.0:
        return math.fsum(signs) / len(signs)
    weighted = math.fsum([s * w for s, w in zip(signs, weights, strict=True)]) / total
    return max(-1.0, min(1.0, weighted))


def _bar(ticks: Sequence[Tick], start: float, end: float) -> Bar:
    prices = [t.price for t in ticks]
    volume = 0.0
    for t in ticks:  # summed in order, as a bar kept tick by tick (strategies.bars) sums it
        volume += t.volume
    return Bar(
        start=start,
        end=end,
        open=prices[0],
        high=max(prices),
        low=min(prices),
        close=prices[-1],
        volume=volume,
        ticks=len(ticks),
    )


def bars_by_time(ticks: Sequence[Tick], seconds: float) -> list[Bar]:
    """OHLCV bars over aligned buckets ``[k * seconds, (k + 1) * seconds)``, oldest first.

    Ticks are ordered by timestamp first (stable, so equal timestamps keep arrival order): feeds
    deliver slightly out of order and open/close must mean first/last in time. Buckets without a
    tick produce no bar, so a quiet market does not manufacture flat bars that would drag averages.
    The last bar may still be forming.
    """
    if not (seconds > 0.0 and math.isfinite(seconds)):
        raise IndicatorError(f"bar size must be a positive number of seconds, got {seconds}")
    if not ticks:
        return []
    # This runs inline on the event loop over hundreds of ticks, hence one pass with running
    # aggregates rather than grouping into lists first (about 4x faster at 256 ticks).
    ordered = sorted(ticks, key=_by_ts)
    floor = math.floor
    bars: list[Bar] = []
    first = ordered[0]
    key = floor(first.ts / seconds)
    o = h = lo = c = first.price
    vol = first.volume
    n = 1
    for t in ordered[1:]:
        k = floor(t.ts / seconds)
        p = t.price
        if k != key:
            bars.append(Bar(key * seconds, (key + 1) * seconds, o, h, lo, c, vol, n))
            key, o, h, lo, c, vol, n = k, p, p, p, p, t.volume, 1
            continue
        if p > h:
            h = p
        elif p < lo:
            lo = p
        c = p
        vol += t.volume
        n += 1
    bars.append(Bar(key * seconds, (key + 1) * seconds, o, h, lo, c, vol, n))
    return bars


def bars_by_count(ticks: Sequence[Tick], n: int) -> list[Bar]:
    """OHLCV bars of ``n`` consecutive ticks in arrival order; the last bar may be partial.

    The partial bar is kept because it holds the latest price, which a trend decision must see.
    """
    if n < 1:
        raise IndicatorError(f"ticks per bar must be >= 1, got {n}")
    bars: list[Bar] = []
    for i in range(0, len(ticks), n):
        chunk = ticks[i : i + n]
        bars.append(_bar(chunk, chunk[0].ts, chunk[-1].ts))
    return bars
