"""Trend steps driven through real StepContexts and MarketData."""

from __future__ import annotations

import pickle
import random
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.config.params import decode_params
from engine.core.errors import ConfigError
from engine.core.events import Tick
from engine.core.strategy import StepContext, is_cheap, sends_orders_flag
from engine.core.symbols import MarketData
from strategies.broker import PaperBroker
from strategies.indicators import Bar
from strategies.risk import RiskLimits, RiskManager
from strategies.trend import TrendData, TrendSignal, calculate_trend, collect_trend_data

SYM = "TRND"
ACTIONS = {"collect_trend_data": collect_trend_data, "calculate_trend": calculate_trend}


def make_ctx(
    market: MarketData,
    step: str,
    *,
    inputs: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> StepContext:
    return StepContext(
        run_id=1,
        workflow="trend_trading",
        step=step,
        symbol=SYM,
        tick=market.latest(SYM) or Tick(SYM, 0.0, 10.0),
        inputs=inputs or {},
        attempt=1,
        # Decoded as the loader does at load time: the action gets its params struct.
        params=decode_params(ACTIONS[step], params or {}),
        market=market,
        broker=PaperBroker(),
        risk=RiskManager(RiskLimits(), lambda: 0.0),
        rng=random.Random(3),
        clock=lambda: 0.0,
        sends_orders=sends_orders_flag(ACTIONS[step]),
    )


def market_of(prices: Sequence[float], *, spacing: float = 1.0) -> MarketData:
    market = MarketData()
    for i, p in enumerate(prices):
        market.record(Tick(SYM, 1_000.0 + i * spacing, p, 1.0))
    return market


def trend(
    prices: Sequence[float],
    params: Mapping[str, Any] | None = None,
    collect: Mapping[str, Any] | None = None,
) -> TrendSignal:
    market = market_of(prices)
    data = collect_trend_data(
        make_ctx(market, "collect_trend_data", params=collect or {"bar_ticks": 1})
    )
    return calculate_trend(
        make_ctx(market, "calculate_trend", inputs={"collect_trend_data": data}, params=params)
    )


def test_actions_are_cheap_and_send_no_orders() -> None:
    assert is_cheap(collect_trend_data)
    assert is_cheap(calculate_trend)
    assert not sends_orders_flag(calculate_trend)


# -- collect_trend_data -----------------------------------------------------------------------


def test_collect_time_bars_by_default() -> None:
    market = market_of([10.0, 11.0, 9.0, 12.0], spacing=0.5)  # ts 1000, 1000.5, 1001, 1001.5
    data = collect_trend_data(make_ctx(market, "collect_trend_data"))
    assert data.bar_seconds == 1.0
    assert data.bar_ticks is None
    assert data.as_of == 1_001.5
    assert data.bars == (
        Bar(1_000.0, 1_001.0, 10.0, 11.0, 10.0, 11.0, 2.0, 2),
        Bar(1_001.0, 1_002.0, 9.0, 12.0, 9.0, 12.0, 2.0, 2),
    )


def test_collect_count_bars_and_window() -> None:
    market = market_of([1.0, 2.0, 3.0, 4.0, 5.0])
    data = collect_trend_data(
        make_ctx(market, "collect_trend_data", params={"bar_ticks": 2, "window": 4})
    )
    assert data.bar_ticks == 2
    assert [b.close for b in data.bars] == [3.0, 5.0]
    assert pickle.loads(pickle.dumps(data)) == data


def test_collect_rejects_both_bar_kinds() -> None:
    market = market_of([1.0])
    with pytest.raises(ConfigError, match="either"):
        make_ctx(market, "collect_trend_data", params={"bar_ticks": 2, "bar_seconds": 1.0})
    with pytest.raises(ConfigError, match=r"bar_seconds: Expected `float` > 0.0, got 0"):
        make_ctx(market, "collect_trend_data", params={"bar_seconds": 0})


def test_collect_on_empty_market_uses_the_trigger_tick() -> None:
    data = collect_trend_data(make_ctx(MarketData(), "collect_trend_data"))
    assert [b.close for b in data.bars] == [10.0]


# -- calculate_trend --------------------------------------------------------------------------

BREAKOUT = [100.0, 100.0, 100.0, 100.0, 110.0]
# fast=1 -> fast EMA 110; slow=3 (alpha 0.5) -> 100, 100, 100, 100, 105
# gap = 5 / 105; least-squares slope of BREAKOUT = 20 / 10 = 2, relative 2 / 102
HAND = {"fast": 1, "slow": 3, "slope_window": 5}


def test_breakout_hand_computed() -> None:
    sig = trend(BREAKOUT, HAND)
    assert sig.fast_ema == pytest.approx(110.0)
    assert sig.slow_ema == pytest.approx(105.0)
    assert sig.gap == pytest.approx(5 / 105)
    assert sig.slope == pytest.approx(2 / 102)
    assert sig.crossed  # fast == slow on the previous bar, above it now
    assert (sig.direction, sig.action, sig.reason) == ("UP", "BUY", "crossover")
    assert sig.confidence == pytest.approx(1.0)  # both strengths saturate at the defaults
    assert (sig.bars, sig.price, sig.ts) == (5, 110.0, 1_004.0)


def test_confidence_is_the_mean_of_the_strengths() -> None:
    # gap strength (5/105) / 0.1 = 0.47619; slope strength (2/102) / 0.04 = 0.49020
    sig = trend(BREAKOUT, {**HAND, "full_gap": 0.1, "full_slope": 0.04})
    assert sig.confidence == pytest.approx(((5 / 105) / 0.1 + (2 / 102) / 0.04) / 2)
    assert (sig.direction, sig.action, sig.reason) == ("UP", "HOLD", "low_confidence")
    sig = trend(BREAKOUT, {**HAND, "full_gap": 0.1, "full_slope": 0.04, "min_confidence": 0.4})
    assert sig.action == "BUY"


def test_breakdown_sells() -> None:
    sig = trend([100.0 - i for i in range(30)])
    assert (sig.direction, sig.action) == ("DOWN", "SELL")
    assert sig.gap < 0.0
    assert sig.slope < 0.0
    assert not sig.crossed
    assert sig.reason == "trend"


def test_steady_rise_buys() -> None:
    sig = trend([100.0 + 0.5 * i for i in range(30)])
    assert (sig.direction, sig.action) == ("UP", "BUY")


def test_flat_market_is_confidently_flat() -> None:
    sig = trend([50.0] * 30)
    assert (sig.direction, sig.action, sig.reason) == ("FLAT", "HOLD", "flat")
    assert (sig.gap, sig.slope) == (0.0, 0.0)
    assert sig.confidence == 1.0


def test_averages_and_slope_disagreeing_is_flat() -> None:
    # fast (span 2) is above slow (span 5) after the spike, but the last 3 closes fall
    sig = trend(
        [100.0, 100.0, 100.0, 130.0, 125.0, 120.0], {"fast": 2, "slow": 5, "slope_window": 3}
    )
    assert sig.gap > 0.0
    assert sig.slope < 0.0
    assert (sig.direction, sig.action, sig.reason) == ("FLAT", "HOLD", "ema_slope_disagree")
    assert sig.confidence == 0.0


def test_too_few_bars_is_flat_with_no_confidence() -> None:
    sig = trend([100.0, 120.0, 140.0])
    assert (sig.direction, sig.action, sig.confidence, sig.reason) == (
        "FLAT",
        "HOLD",
        0.0,
        "insufficient_data",
    )
    assert sig.bars == 3


@pytest.mark.parametrize(
    "params",
    [{"fast": 20, "slow": 20}, {"fast": 0}, {"min_confidence": 2.0}, {"full_gap": 0.0},
     {"slope_window": 1}],
)  # fmt: skip
def test_bad_params_are_load_errors(params: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        trend(BREAKOUT, params)


def test_trend_accepts_decoded_input() -> None:
    market = market_of(BREAKOUT)
    data = collect_trend_data(make_ctx(market, "collect_trend_data", params={"bar_ticks": 1}))
    decoded = msgspec.json.decode(msgspec.json.encode(data))
    assert msgspec.convert(decoded, TrendData) == data
    a = calculate_trend(make_ctx(market, "calculate_trend", inputs={"x": data}, params=HAND))
    b = calculate_trend(
        make_ctx(market, "calculate_trend", inputs={"collect_trend_data": decoded}, params=HAND)
    )
    assert a == b


@given(st.lists(st.floats(min_value=1.0, max_value=1_000.0), min_size=1, max_size=120))
def test_any_window_gives_a_consistent_bounded_call(prices: list[float]) -> None:
    sig = trend(prices)
    assert 0.0 <= sig.confidence <= 1.0
    assert sig.direction in ("UP", "DOWN", "FLAT")
    if sig.action == "BUY":
        assert sig.direction == "UP"
    elif sig.action == "SELL":
        assert sig.direction == "DOWN"
    if sig.direction == "UP":
        assert sig.gap > 0.0
        assert sig.slope > 0.0
