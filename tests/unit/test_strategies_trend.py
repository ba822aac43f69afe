"""Trend steps driven through real StepContexts and MarketData."""

from __future__ import annotations

import pickle
import random
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.config.params import decode_params
from engine.core.errors import ConfigError
from engine.core.events import Tick
from engine.core.strategy import StepContext, is_cheap, sends_orders_flag
from engine.core.symbols import MarketData
from strategies.broker import PaperBroker
from strategies.indicators import Bar, bars_by_count, bars_by_time, ema_series
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


# -- incremental state ------------------------------------------------------------------------


class Feed:
    """One engine's market for one symbol, fed in chunks, with the steps' params decoded once
    (as the loader does: every run of a step gets the same params object)."""

    def __init__(
        self,
        collect: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        *,
        depth: int = 512,
        spacing: float = 0.3,
    ) -> None:
        self.market = MarketData(depth)
        self.spacing = spacing
        self.fed: list[Tick] = []
        self.collect_params = decode_params(collect_trend_data, collect)
        self.trend_params = decode_params(calculate_trend, params or {})

    def feed(self, prices: Sequence[float]) -> None:
        for p in prices:
            tick = Tick(SYM, 1_000.0 + len(self.fed) * self.spacing, p, float(len(self.fed) % 7))
            self.market.record(tick)
            self.fed.append(tick)

    def ctx(
        self, step: str, *, workflow: str = "trend_trading", market: MarketData | None = None,
        inputs: Mapping[str, Any] | None = None,
    ) -> StepContext:
        market = market or self.market
        return StepContext(
            run_id=1, workflow=workflow, step=step, symbol=SYM,
            tick=market.latest(SYM) or Tick(SYM, 0.0, 10.0), inputs=inputs or {}, attempt=1,
            params=self.collect_params if step == "collect_trend_data" else self.trend_params,
            market=market, broker=PaperBroker(), risk=RiskManager(RiskLimits(), lambda: 0.0),
            clock=lambda: 0.0,
        )

    def collect(self, workflow: str = "trend_trading") -> TrendData:
        return collect_trend_data(self.ctx("collect_trend_data", workflow=workflow))

    def trend(self, data: TrendData, market: MarketData | None = None) -> TrendSignal:
        return calculate_trend(
            self.ctx("calculate_trend", market=market, inputs={"collect_trend_data": data})
        )


def from_scratch_bars(ticks: Sequence[Tick], params: Any) -> tuple[Bar, ...]:
    if params.bar_ticks is not None:
        return tuple(bars_by_count(ticks, params.bar_ticks)[-params.max_bars :])
    return tuple(bars_by_time(ticks, params.bar_seconds or 1.0)[-params.max_bars :])


def from_scratch_emas(data: TrendData, params: Any) -> tuple[float, float, bool]:
    closes = [b.close for b in data.bars]
    fast, slow = ema_series(closes, params.fast), ema_series(closes, params.slow)
    prev, now = fast[-2] - slow[-2], fast[-1] - slow[-1]
    return fast[-1], slow[-1], (prev <= 0.0 < now) or (prev >= 0.0 > now)


def test_bars_outlive_the_window() -> None:
    # The regression this state exists for: bars built from a 4-tick window alone could never
    # reach min_bars at 2 ticks a bar; kept from run to run, they do.
    feed = Feed({"window": 4, "bar_ticks": 2, "max_bars": 3}, {"fast": 1, "slow": 2})
    feed.feed([10.0, 11.0, 12.0])
    data = feed.collect()
    assert [b.close for b in data.bars] == [11.0, 12.0]
    feed.feed([13.0, 14.0, 15.0])
    data = feed.collect()
    # All six ticks in 2-tick bars; a 4-tick window alone would give [12, 14] -> [13, 15].
    assert [(b.open, b.close, b.ticks) for b in data.bars] == [
        (10.0, 11.0, 2), (12.0, 13.0, 2), (14.0, 15.0, 2)
    ]
    assert data.as_of == feed.fed[-1].ts
    feed.feed([16.0])
    data = feed.collect()  # max_bars = 3: the first bar drops out
    assert [b.close for b in data.bars] == [13.0, 15.0, 16.0]


def test_a_repeated_call_folds_nothing_twice() -> None:
    feed = Feed({"window": 8, "bar_ticks": 3})
    feed.feed([10.0, 11.0, 9.0, 12.0, 13.0])
    first = feed.collect()
    again = feed.collect()  # a retry, or a follow-up run with no new tick
    assert again == first
    assert sum(b.ticks for b in again.bars) == 5
    sig = feed.trend(first)
    assert feed.trend(again) == sig == feed.trend(first)


def test_a_gap_longer_than_the_window_restarts_from_the_window() -> None:
    feed = Feed({"window": 4, "bar_ticks": 1})
    feed.feed([1.0, 2.0])
    feed.collect()
    feed.feed([3.0, 4.0, 5.0, 6.0, 7.0])  # the last seen tick (2.0) is out of the window
    data = feed.collect()
    assert [b.close for b in data.bars] == [4.0, 5.0, 6.0, 7.0]


def test_state_is_per_workflow_and_per_engine() -> None:
    feed = Feed({"window": 16, "bar_ticks": 1})
    feed.feed([1.0, 2.0])
    assert len(feed.collect("a").bars) == 2
    feed.feed([3.0])
    assert len(feed.collect("a").bars) == 3
    # Workflow b runs for the first time: it starts from the window, not from a's state.
    assert len(feed.collect("b").bars) == 3
    other = Feed({"window": 16, "bar_ticks": 1})  # another engine, same symbol and workflow
    other.feed([5.0])
    assert [b.close for b in other.collect("a").bars] == [5.0]
    feed.feed([4.0])
    assert [b.close for b in feed.collect("a").bars] == [1.0, 2.0, 3.0, 4.0]


def test_changed_params_restart_the_bars() -> None:
    feed = Feed({"window": 8, "bar_ticks": 1})
    feed.feed([1.0, 2.0, 3.0])
    feed.collect()
    feed.collect_params = decode_params(collect_trend_data, {"window": 8, "bar_ticks": 2})
    data = feed.collect()  # a reload changed the bar size: the bars are cut again
    assert [b.ticks for b in data.bars] == [2, 1]
    assert data.bar_ticks == 2


@settings(max_examples=80, deadline=None)
@given(
    chunks=st.lists(st.integers(min_value=0, max_value=14), min_size=1, max_size=25),
    window=st.integers(min_value=2, max_value=12),
    shape=st.sampled_from([{"bar_ticks": 1}, {"bar_ticks": 3}, {"bar_seconds": 1.0}]),
    max_bars=st.integers(min_value=5, max_value=12),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_incremental_equals_from_scratch(
    chunks: list[int], window: int, shape: dict[str, Any], max_bars: int, seed: int
) -> None:
    """Fed in random chunks (some longer than the window, some empty: a retry), the kept bars
    are the from-scratch bars of every tick since the last restart, and the carried EMAs are
    the from-scratch EMAs of those bars, to the bit."""
    rng = random.Random(seed)
    feed = Feed({"window": window, "max_bars": max_bars, **shape},
                {"fast": 2, "slow": 4, "slope_window": 3, "min_bars": 2})
    price = 100.0
    since: list[Tick] = []  # the ticks the state must have folded
    for size in chunks:
        fed_before = len(feed.fed)
        prices = []
        for _ in range(size):
            price *= 1.0 + rng.gauss(0.0, 0.01)
            prices.append(price)
        feed.feed(prices)
        new = feed.fed[fed_before:]
        if not since or len(new) >= window:  # first run, or the last seen tick fell out
            since = feed.fed[-window:]
        else:
            since += new
        if not feed.fed:
            continue
        data = feed.collect()
        assert data.bars == from_scratch_bars(since, feed.collect_params)
        assert data.as_of == max(t.ts for t in since)
        sig = feed.trend(data)
        fresh = feed.trend(data, market=MarketData())  # no carried state: recomputed
        assert sig == fresh
        if len(data.bars) >= 2:
            assert (sig.fast_ema, sig.slow_ema, sig.crossed) == from_scratch_emas(
                data, feed.trend_params
            )


def test_a_changed_closed_bar_is_not_carried_over() -> None:
    # The same step sees bars whose closed part changed (decoded from storage after a restart,
    # say): the carried EMAs must not be reused.
    feed = Feed({"bar_ticks": 1}, {"fast": 2, "slow": 4, "min_bars": 2})
    feed.feed([10.0, 11.0, 12.0, 13.0])
    data = feed.collect()
    feed.trend(data)
    bars = list(data.bars)
    bars[1] = msgspec.structs.replace(bars[1], close=20.0)
    changed = msgspec.structs.replace(data, bars=tuple(bars))
    assert feed.trend(changed) == feed.trend(changed, market=MarketData())
    assert (feed.trend(changed).fast_ema, feed.trend(changed).slow_ema) == from_scratch_emas(
        changed, feed.trend_params
    )[:2]


@pytest.mark.parametrize(
    ("params", "message"),
    [({"max_bars": 1}, r"max_bars: Expected `int` >= 2, got 1"),
     ({"window": 0}, r"window: Expected `int` >= 1, got 0"),
     ({"max_bar": 10}, r"unknown param `max_bar` .*did you mean `max_bars`")],
)  # fmt: skip
def test_bad_collect_params_are_load_errors(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        decode_params(collect_trend_data, params)
