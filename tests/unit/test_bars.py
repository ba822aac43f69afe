"""BarSeries, the incremental bars: equal to bars_by_time / bars_by_count over every tick folded."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.events import Tick
from strategies.bars import BarSeries
from strategies.indicators import Bar, IndicatorError, bars_by_count, bars_by_time


def ticks_of(rows: Sequence[tuple[float, float, float]]) -> list[Tick]:
    return [Tick("B", ts, price, volume) for ts, price, volume in rows]


def fold_in_chunks(series: BarSeries, ticks: Sequence[Tick], cuts: Sequence[int]) -> None:
    start = 0
    for cut in sorted(set(cuts)):
        series.fold(ticks[start:cut])
        start = cut
    series.fold(ticks[start:])


# In order: timestamps only grow (ties allowed), any float volume.
in_order = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=0.7),  # gap to the previous tick
        st.floats(min_value=1.0, max_value=1_000.0),
        st.floats(min_value=0.0, max_value=1_000.0),
    ),
    min_size=1,
    max_size=80,
)
# Out of order: any timestamps in a few seconds; whole-number volumes, so a sum does not
# depend on the order it is taken in (bars.py: the one documented difference).
any_order = st.lists(
    st.tuples(
        st.floats(min_value=100.0, max_value=106.0),
        st.floats(min_value=1.0, max_value=1_000.0),
        st.integers(min_value=0, max_value=500).map(float),
    ),
    min_size=1,
    max_size=80,
)


def cumulative(rows: list[tuple[float, float, float]]) -> list[Tick]:
    ts = 1_000.0
    out = []
    for gap, price, volume in rows:
        ts += gap
        out.append(Tick("B", ts, price, volume))
    return out


@settings(max_examples=150)
@given(
    rows=in_order,
    seconds=st.sampled_from([0.25, 0.5, 1.0, 2.0]),
    max_bars=st.integers(min_value=1, max_value=12),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=10),
)
def test_time_bars_equal_the_from_scratch_bars(
    rows: list[tuple[float, float, float]], seconds: float, max_bars: int, cuts: list[int]
) -> None:
    ticks = cumulative(rows)
    series = BarSeries(seconds=seconds, max_bars=max_bars)
    fold_in_chunks(series, ticks, cuts)
    assert series.bars() == tuple(bars_by_time(ticks, seconds)[-max_bars:])
    assert series.as_of == max(t.ts for t in ticks)


@settings(max_examples=150)
@given(
    rows=any_order,
    seconds=st.sampled_from([0.5, 1.0, 2.0]),
    max_bars=st.integers(min_value=1, max_value=8),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=10),
)
def test_late_ticks_land_where_sorting_puts_them(
    rows: list[tuple[float, float, float]], seconds: float, max_bars: int, cuts: list[int]
) -> None:
    ticks = ticks_of(rows)
    series = BarSeries(seconds=seconds, max_bars=max_bars)
    fold_in_chunks(series, ticks, cuts)
    assert series.bars() == tuple(bars_by_time(ticks, seconds)[-max_bars:])


@settings(max_examples=100)
@given(
    rows=in_order,
    per_bar=st.integers(min_value=1, max_value=7),
    max_bars=st.integers(min_value=1, max_value=12),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=10),
)
def test_count_bars_equal_the_from_scratch_bars(
    rows: list[tuple[float, float, float]], per_bar: int, max_bars: int, cuts: list[int]
) -> None:
    ticks = cumulative(rows)
    series = BarSeries(per_bar=per_bar, max_bars=max_bars)
    fold_in_chunks(series, ticks, cuts)
    assert series.bars() == tuple(bars_by_count(ticks, per_bar)[-max_bars:])


def test_golden_time_bars_with_a_late_tick() -> None:
    series = BarSeries(seconds=1.0, max_bars=3)
    series.fold(ticks_of([(10.2, 5.0, 1.0), (10.7, 6.0, 2.0), (11.1, 4.0, 3.0)]))
    assert series.bars() == (
        Bar(10.0, 11.0, 5.0, 6.0, 5.0, 6.0, 3.0, 2),
        Bar(11.0, 12.0, 4.0, 4.0, 4.0, 4.0, 3.0, 1),
    )
    first = series.bars()
    assert series.bars() is first  # nothing folded: the same tuple, not a rebuild
    # A late tick before the first bar's open becomes its open; the forming bar is untouched.
    series.fold(ticks_of([(10.1, 7.0, 4.0)]))
    assert series.bars() == (
        Bar(10.0, 11.0, 7.0, 7.0, 5.0, 6.0, 7.0, 3),
        Bar(11.0, 12.0, 4.0, 4.0, 4.0, 4.0, 3.0, 1),
    )
    # New buckets: 12 closes 11; 13 pushes 10 out (max_bars = 3).
    series.fold(ticks_of([(12.5, 8.0, 1.0), (13.0, 9.0, 1.0)]))
    assert [b.start for b in series.bars()] == [11.0, 12.0, 13.0]
    # A tick for the bucket that dropped out is outside the kept bars: ignored.
    series.fold(ticks_of([(10.5, 1.0, 1.0)]))
    assert [b.low for b in series.bars()] == [4.0, 8.0, 9.0]


def test_a_late_tick_fills_a_quiet_bucket() -> None:
    series = BarSeries(seconds=1.0, max_bars=4)
    series.fold(ticks_of([(10.5, 5.0, 1.0), (12.5, 6.0, 1.0)]))
    series.fold(ticks_of([(11.5, 7.0, 2.0)]))
    assert [(b.start, b.close) for b in series.bars()] == [(10.0, 5.0), (11.0, 7.0), (12.0, 6.0)]


def test_reset_forgets_the_bars() -> None:
    series = BarSeries(per_bar=2)
    series.fold(ticks_of([(1.0, 5.0, 1.0), (2.0, 6.0, 1.0), (3.0, 7.0, 1.0)]))
    series.reset()
    assert series.bars() == ()
    series.fold(ticks_of([(4.0, 8.0, 1.0)]))
    assert series.bars() == (Bar(4.0, 4.0, 8.0, 8.0, 8.0, 8.0, 1.0, 1),)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"seconds": 1.0, "per_bar": 2}, "exactly one"),
        ({"seconds": 0.0}, "positive number of seconds"),
        ({"seconds": float("inf")}, "positive number of seconds"),
        ({"per_bar": 0}, "ticks per bar"),
        ({"per_bar": 1, "max_bars": 0}, "max_bars"),
    ],
)
def test_bad_shapes_are_errors(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(IndicatorError, match=message):
        BarSeries(**kwargs)  # type: ignore[arg-type]
