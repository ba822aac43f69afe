"""Indicator maths against hand-computed values, edge cases and a few invariants."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.errors import TickflowError
from engine.core.events import Tick
from strategies.indicators import (
    Bar,
    IndicatorError,
    bars_by_count,
    bars_by_time,
    ema,
    ema_series,
    flow_imbalance,
    mean,
    quote_imbalance,
    slope,
    stdev,
    zscore,
)

prices = st.floats(min_value=0.01, max_value=1e6, allow_nan=False, allow_infinity=False)


def tick(ts: float, price: float, volume: float = 0.0) -> Tick:
    return Tick("T", ts, price, volume)


# -- mean / stdev / z-score -----------------------------------------------------------------


def test_mean_and_stdev_known_values() -> None:
    data = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]  # classic: mean 5, population sd 2
    assert mean(data) == 5.0
    assert stdev(data) == 2.0


def test_mean_of_empty_is_none_and_stdev_of_short_is_zero() -> None:
    assert mean([]) is None
    assert stdev([]) == 0.0
    assert stdev([42.0]) == 0.0


def test_zscore_known_values() -> None:
    data = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]
    assert zscore(data) == pytest.approx(2.0)  # (9 - 5) / 2
    # window [5, 7, 9]: mean 7, population sd sqrt(8/3); z = 2 / sqrt(8/3) = sqrt(1.5)
    assert zscore(data, window=3) == pytest.approx(math.sqrt(1.5))


@pytest.mark.parametrize(
    "values",
    [[], [100.0], [100.0] * 10, [0.1] * 3, [1e6 + 0.1] * 7],
    ids=["empty", "single", "flat", "rounding-0.1", "rounding-large"],
)
def test_zscore_is_zero_without_variance(values: list[float]) -> None:
    assert zscore(values) == 0.0


def test_zscore_rejects_bad_window() -> None:
    with pytest.raises(IndicatorError):
        zscore([1.0, 2.0], window=0)


@given(st.lists(prices, min_size=1, max_size=60))
def test_zscore_bounded_by_sqrt_n_minus_one(values: list[float]) -> None:
    # With a population stdev no single point can be more than sqrt(n-1) deviations out.
    z = zscore(values)
    assert math.isfinite(z)
    assert abs(z) <= math.sqrt(len(values) - 1) + 1e-9


# -- EMA --------------------------------------------------------------------------------------


def test_ema_series_known_values() -> None:
    # span 3 -> alpha 0.5: 1, 1 + 0.5*(2-1) = 1.5, 1.5 + 0.5*(3-1.5) = 2.25
    assert ema_series([1.0, 2.0, 3.0], 3) == [1.0, 1.5, 2.25]
    assert ema([1.0, 2.0, 3.0], 3) == 2.25


def test_ema_span_one_is_identity_and_empty_is_none() -> None:
    assert ema_series([3.0, 1.0, 4.0], 1) == [3.0, 1.0, 4.0]
    assert ema_series([], 5) == []
    assert ema([], 5) is None


def test_ema_rejects_bad_span() -> None:
    with pytest.raises(IndicatorError):
        ema_series([1.0], 0)


@given(st.lists(prices, min_size=1, max_size=60), st.integers(min_value=1, max_value=50))
def test_ema_stays_within_input_range(values: list[float], span: int) -> None:
    for v in ema_series(values, span):
        assert min(values) * (1 - 1e-12) <= v <= max(values) * (1 + 1e-12)


# -- slope ------------------------------------------------------------------------------------


def test_slope_known_values() -> None:
    assert slope([1.0, 3.0, 5.0, 7.0]) == pytest.approx(2.0)
    # x mean 1, y mean 7/3, sxx 2, sxy 3 -> 1.5
    assert slope([1.0, 2.0, 4.0]) == pytest.approx(1.5)
    assert slope([2.0, 4.0, 6.0], xs=[0.0, 2.0, 4.0]) == pytest.approx(1.0)


def test_slope_degenerate_inputs_are_zero() -> None:
    assert slope([]) == 0.0
    assert slope([5.0]) == 0.0
    assert slope([1.0, 2.0], xs=[3.0, 3.0]) == 0.0


def test_slope_rejects_mismatched_xs() -> None:
    with pytest.raises(IndicatorError):
        slope([1.0, 2.0], xs=[1.0])


# -- imbalance --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "bid", "ask", "expected"),
    [
        (101.5, 100.0, 102.0, 0.5),
        (101.0, 100.0, 102.0, 0.0),
        (102.0, 100.0, 102.0, 1.0),
        (100.0, 100.0, 102.0, -1.0),
        (101.0, 100.0, 101.0, 1.0),  # at the ask of a 1-wide book
        (103.0, 100.0, 102.0, 1.0),  # through the ask clamps
        (100.0, 100.0, 100.0, 0.0),  # locked book, print at the quote
        (100.5, 100.0, 100.0, 1.0),  # locked book, print above it
        (101.0, None, 102.0, None),
        (101.0, 100.0, None, None),
        (101.0, 102.0, 100.0, None),  # crossed book: bad data, no opinion
    ],
)
def test_quote_imbalance(
    price: float, bid: float | None, ask: float | None, expected: float | None
) -> None:
    got = quote_imbalance(price, bid, ask)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)


def test_flow_imbalance_is_volume_weighted() -> None:
    # signs +1 (at ask), -1 (at bid), 0 (mid); weights 3, 1, 0 -> (3 - 1) / 4
    got = flow_imbalance([102.0, 100.0, 101.0], [100.0] * 3, [102.0] * 3, volumes=[3.0, 1.0, 0.0])
    assert got == pytest.approx(0.5)


def test_flow_imbalance_skips_unquoted_ticks_and_falls_back_to_equal_weights() -> None:
    got = flow_imbalance([102.0, 50.0, 101.0], [100.0, None, 100.0], [102.0, None, 102.0])
    assert got == pytest.approx(0.5)  # (1 + 0) / 2; the unquoted tick is ignored
    zero_volume = flow_imbalance([102.0, 100.0], [100.0] * 2, [102.0] * 2, volumes=[0.0, 0.0])
    assert zero_volume == pytest.approx(0.0)


def test_flow_imbalance_without_quotes_is_none() -> None:
    assert flow_imbalance([], [], []) is None
    assert flow_imbalance([1.0, 2.0], [None, None], [None, 3.0]) is None


def test_flow_imbalance_rejects_ragged_columns() -> None:
    with pytest.raises(IndicatorError):
        flow_imbalance([1.0, 2.0], [None], [None, None])


@given(
    st.lists(
        st.tuples(prices, prices, st.floats(min_value=0, max_value=10), prices),
        min_size=1,
        max_size=30,
    )
)
def test_flow_imbalance_is_bounded(rows: list[tuple[float, float, float, float]]) -> None:
    ps = [r[0] for r in rows]
    bids = [r[1] for r in rows]
    asks = [r[1] + r[2] for r in rows]
    vols = [r[3] for r in rows]
    got = flow_imbalance(ps, bids, asks, vols)
    assert got is not None
    assert -1.0 <= got <= 1.0


# -- bars -------------------------------------------------------------------------------------


def test_bars_by_time_known_values_and_gaps() -> None:
    ticks = [
        tick(0.5, 12.0, 2.0),
        tick(0.1, 10.0, 1.0),  # out of order: still the bar's open
        tick(0.9, 9.0, 1.0),
        tick(1.2, 11.0, 5.0),
        tick(3.0, 13.0, 1.0),  # bucket [2, 3) is empty and produces no bar
    ]
    assert bars_by_time(ticks, 1.0) == [
        Bar(start=0.0, end=1.0, open=10.0, high=12.0, low=9.0, close=9.0, volume=4.0, ticks=3),
        Bar(start=1.0, end=2.0, open=11.0, high=11.0, low=11.0, close=11.0, volume=5.0, ticks=1),
        Bar(start=3.0, end=4.0, open=13.0, high=13.0, low=13.0, close=13.0, volume=1.0, ticks=1),
    ]


def test_bars_by_time_edges() -> None:
    assert bars_by_time([], 5.0) == []
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(IndicatorError):
            bars_by_time([tick(0.0, 1.0)], bad)


def test_bars_by_count_keeps_partial_last_bar() -> None:
    ticks = [tick(float(i), p, 1.0) for i, p in enumerate([5.0, 7.0, 6.0, 8.0, 4.0])]
    assert bars_by_count(ticks, 2) == [
        Bar(start=0.0, end=1.0, open=5.0, high=7.0, low=5.0, close=7.0, volume=2.0, ticks=2),
        Bar(start=2.0, end=3.0, open=6.0, high=8.0, low=6.0, close=8.0, volume=2.0, ticks=2),
        Bar(start=4.0, end=4.0, open=4.0, high=4.0, low=4.0, close=4.0, volume=1.0, ticks=1),
    ]
    assert bars_by_count([], 3) == []


def test_bars_by_count_rejects_bad_size() -> None:
    with pytest.raises(IndicatorError):
        bars_by_count([tick(0.0, 1.0)], 0)


def test_indicator_error_is_a_tickflow_value_error() -> None:
    assert issubclass(IndicatorError, TickflowError)
    assert issubclass(IndicatorError, ValueError)


@given(
    st.lists(st.tuples(st.floats(0, 100), prices, st.floats(0, 10)), min_size=1, max_size=50),
    st.sampled_from([0.5, 1.0, 7.0]),
)
def test_time_bars_conserve_ticks_and_volume(
    rows: list[tuple[float, float, float]], seconds: float
) -> None:
    ticks = [tick(ts, p, v) for ts, p, v in rows]
    bars = bars_by_time(ticks, seconds)
    assert sum(b.ticks for b in bars) == len(ticks)
    assert math.fsum(b.volume for b in bars) == pytest.approx(math.fsum(t.volume for t in ticks))
    assert all(b.low <= min(b.open, b.close) <= max(b.open, b.close) <= b.high for b in bars)
    assert [b.start for b in bars] == sorted({b.start for b in bars})


def _stdev_by_generator(values: list[float]) -> float:
    # The textbook two-pass form, as a generator: the reference.
    n = len(values)
    m = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - m) * (v - m) for v in values) / n)
    return 0.0 if sd <= 1e-12 * abs(m) or not math.isfinite(sd) else sd


@given(st.lists(st.floats(min_value=0.01, max_value=1e6), min_size=2, max_size=80))
def test_stdev_and_zscore_are_the_two_pass_formula(values: list[float]) -> None:
    sd = _stdev_by_generator(values)
    assert stdev(values) == sd
    m = math.fsum(values) / len(values)
    assert zscore(values) == (0.0 if sd == 0.0 else (values[-1] - m) / sd)


def _slope_by_generator(values: list[float]) -> float:
    # The textbook least-squares form, as generators: the reference.
    n = len(values)
    xs = range(n)
    mx, my = math.fsum(xs) / n, math.fsum(values) / n
    sxx = math.fsum((x - mx) * (x - mx) for x in xs)
    if sxx <= 1e-12 * max(1.0, abs(mx)):
        return 0.0
    b = math.fsum((x - mx) * (y - my) for x, y in zip(xs, values, strict=True)) / sxx
    return b if math.isfinite(b) else 0.0


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=2, max_size=40))
def test_slope_is_the_least_squares_formula(values: list[float]) -> None:
    assert slope(values) == _slope_by_generator(values)


def _flow_by_quote_imbalance(
    ps: list[float], bids: list[float | None], asks: list[float | None], vols: list[float]
) -> float | None:
    # flow_imbalance written plainly on top of quote_imbalance: the reference for its inlined loop.
    pairs = [(s, v) for p, b, a, v in zip(ps, bids, asks, vols, strict=True)
             if (s := quote_imbalance(p, b, a)) is not None]
    if not pairs:
        return None
    weights = [v if math.isfinite(v) and v > 0.0 else 0.0 for _, v in pairs]
    total = math.fsum(weights)
    if total <= 0.0:
        return math.fsum(s for s, _ in pairs) / len(pairs)
    weighted = math.fsum(s * w for (s, _), w in zip(pairs, weights, strict=True)) / total
    return max(-1.0, min(1.0, weighted))


quotes = st.one_of(st.none(), st.floats(min_value=0.5, max_value=2.0))


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.1, max_value=3.0), quotes, quotes,
            st.one_of(st.floats(min_value=0.0, max_value=100.0), st.just(math.nan)),
        ),
        max_size=20,
    )
)
def test_flow_imbalance_is_the_mean_of_quote_imbalances(
    rows: list[tuple[float, float | None, float | None, float]],
) -> None:
    columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[], [], [], []]
    ps, bids, asks, vols = columns
    assert flow_imbalance(ps, bids, asks, vols) == _flow_by_quote_imbalance(ps, bids, asks, vols)
