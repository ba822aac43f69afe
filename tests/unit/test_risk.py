"""Risk checks: each rejection reason, the sliding rate window on an injected clock, limits."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.errors import TickflowError
from strategies.broker import PaperBroker, Side
from strategies.risk import RiskDecision, RiskError, RiskLimits, RiskManager


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(
    max_position: float = 100.0, max_notional: float = 10_000.0, rate: float = 3
) -> tuple[RiskManager, PaperBroker, FakeClock]:
    clock = FakeClock()
    limits = RiskLimits(
        max_position=max_position, max_notional=max_notional, max_orders_per_sec=rate
    )
    broker = PaperBroker(1_000_000.0, slippage_bps=0.0, fee_bps=0.0, default_qty=10.0)
    return RiskManager(limits, clock), broker, clock


def test_order_within_limits_is_allowed() -> None:
    risk, broker, _ = make()
    assert risk.check("X", Side.BUY, 10.0, 100.0, broker) == RiskDecision(True)


def test_max_notional_limits_the_resulting_position_value() -> None:
    risk, broker, _ = make(max_notional=1_000.0)
    assert risk.check("X", Side.BUY, 10.0, 100.0, broker).allowed  # exactly at the limit
    decision = risk.check("X", "SELL", 10.0, 100.01, broker)
    assert not decision.allowed
    assert decision.reason == "max_notional"
    assert "1000.10" in decision.detail
    broker.submit("a", "X", Side.BUY, 6.0, 100.0, 0.0)
    # 6 held + 5 more at 100 = 1100 > 1000, although the order alone is only 500
    assert risk.check("X", Side.BUY, 5.0, 100.0, broker).reason == "max_notional"
    assert risk.check("X", Side.BUY, 4.0, 100.0, broker).allowed
    # the same units are worth more after a rally: adding is refused at the new price
    assert risk.check("X", Side.BUY, 1.0, 150.0, broker).reason == "max_notional"


def test_max_position_counts_the_existing_position() -> None:
    risk, broker, _ = make(max_position=100.0, max_notional=1e9)
    broker.submit("a", "X", Side.BUY, 95.0, 10.0, 0.0)
    assert risk.check("X", Side.BUY, 5.0, 10.0, broker).allowed  # lands exactly on 100
    decision = risk.check("X", Side.BUY, 6.0, 10.0, broker)
    assert (decision.allowed, decision.reason) == (False, "max_position")
    assert risk.check("X", Side.SELL, 195.0, 10.0, broker).allowed  # to -100
    short = risk.check("X", Side.SELL, 196.0, 10.0, broker)
    assert (short.allowed, short.reason) == (False, "max_position")
    assert risk.check("OTHER", Side.BUY, 100.0, 10.0, broker).allowed  # limits are per symbol


def test_reducing_orders_pass_even_above_a_lowered_limit() -> None:
    risk, broker, _ = make(max_position=1_000.0, max_notional=1e9)
    broker.submit("a", "X", Side.BUY, 500.0, 10.0, 0.0)
    risk.set_limits(RiskLimits(max_position=100.0, max_notional=1e9, max_orders_per_sec=3))
    assert risk.limits.max_position == 100.0
    assert risk.check("X", Side.SELL, 300.0, 10.0, broker).allowed  # 500 -> 200: reducing
    assert risk.check("X", Side.SELL, 500.0, 10.0, broker).allowed  # to flat
    assert not risk.check("X", Side.BUY, 1.0, 10.0, broker).allowed  # adding
    flip = risk.check("X", Side.SELL, 700.0, 10.0, broker)  # 500 -> -200: a new short too big
    assert flip.reason == "max_position"


def test_reducing_orders_pass_the_notional_limit_after_a_rally() -> None:
    risk, broker, _ = make(max_position=1e6, max_notional=1_000.0)
    broker.submit("a", "X", Side.BUY, 10.0, 100.0, 0.0)
    # the price doubled: 9 units left would be worth 1800 > 1000, but selling lowers exposure
    assert risk.check("X", Side.SELL, 1.0, 200.0, broker).allowed


def test_position_is_reported_before_notional_and_rate() -> None:
    risk, broker, _ = make(max_position=1.0, max_notional=1.0, rate=1)
    risk.record("X")
    assert risk.check("X", Side.BUY, 5.0, 10.0, broker).reason == "max_position"
    assert risk.check("X", Side.BUY, 1.0, 10.0, broker).reason == "max_notional"
    assert risk.check("X", Side.BUY, 0.05, 10.0, broker).reason == "order_rate"


def test_order_rate_sliding_window_on_injected_clock() -> None:
    risk, broker, clock = make(rate=3)
    for dt in (0.0, 0.2, 0.4):
        clock.now = 1_000.0 + dt
        assert risk.check("X", Side.BUY, 1.0, 1.0, broker).allowed
        risk.record("X")
    clock.now = 1_000.9
    decision = risk.check("X", Side.BUY, 1.0, 1.0, broker)
    assert (decision.allowed, decision.reason) == (False, "order_rate")
    assert risk.check("Y", Side.BUY, 1.0, 1.0, broker).allowed  # windows are per symbol
    clock.now = 1_001.0  # the order at t=1000.0 is now a full second old and slides out
    assert risk.check("X", Side.BUY, 1.0, 1.0, broker).allowed
    assert risk.recent_orders("X") == 2
    clock.now = 1_001.5
    assert risk.recent_orders("X") == 0


def test_fractional_rates() -> None:
    risk, broker, clock = make(rate=0.5)
    assert (risk.limits.rate_burst, risk.limits.rate_window) == (1, 2.0)
    risk.record("X")
    clock.now += 1.5
    assert risk.check("X", Side.BUY, 1.0, 1.0, broker).reason == "order_rate"
    clock.now += 0.5
    assert risk.check("X", Side.BUY, 1.0, 1.0, broker).allowed
    # above one per second a fraction rounds down, towards the safe side
    limits = RiskLimits(max_orders_per_sec=2.5)
    assert (limits.rate_burst, limits.rate_window) == (2, 1.0)
    limits = RiskLimits(max_orders_per_sec=20)
    assert (limits.rate_burst, limits.rate_window) == (20, 1.0)


def test_check_alone_does_not_consume_the_rate_budget() -> None:
    risk, broker, _ = make(rate=1)
    for _ in range(5):
        assert risk.check("X", Side.BUY, 1.0, 1.0, broker).allowed
    risk.record("X")
    assert risk.check("X", Side.BUY, 1.0, 1.0, broker).reason == "order_rate"


def test_clock_stepping_backwards_does_not_block_the_symbol() -> None:
    risk, broker, clock = make(rate=1)
    risk.record("X")
    clock.now -= 3_600.0  # NTP stepped the wall clock back an hour
    assert risk.check("X", Side.BUY, 1.0, 1.0, broker).allowed


@pytest.mark.parametrize(
    ("qty", "price", "side"),
    [(0.0, 1.0, "BUY"), (-1.0, 1.0, "BUY"), (math.nan, 1.0, "BUY"), (1.0, 0.0, "BUY"),
     (1.0, math.inf, "SELL"), (1.0, 1.0, "HOLD")],
)  # fmt: skip
def test_impossible_orders_raise(qty: float, price: float, side: str) -> None:
    risk, broker, _ = make()
    with pytest.raises(RiskError):
        risk.check("X", side, qty, price, broker)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_position": 0.0},
        {"max_position": math.inf},
        {"max_notional": -5.0},
        {"max_notional": math.nan},
        {"max_orders_per_sec": 0},
        {"max_orders_per_sec": -1.0},
        {"max_orders_per_sec": math.inf},
        {"max_orders_per_sec": True},
        {"max_orders_per_sec": "10"},
    ],
)
def test_invalid_limits(kwargs: dict[str, Any]) -> None:
    with pytest.raises(RiskError):
        RiskLimits(**kwargs)


def test_defaults_and_error_hierarchy() -> None:
    limits = RiskLimits()
    # the same defaults as [risk] in config/default.toml
    assert (limits.max_position, limits.max_notional, limits.max_orders_per_sec) == (
        1_000.0,
        250_000.0,
        20.0,
    )
    assert issubclass(RiskError, TickflowError)
    assert issubclass(RiskError, ValueError)


@given(
    st.lists(st.floats(min_value=0.0, max_value=0.5), min_size=1, max_size=80),
    st.one_of(st.integers(min_value=1, max_value=5), st.floats(min_value=0.2, max_value=6.0)),
)
def test_no_window_ever_holds_more_than_the_limit(gaps: list[float], rate: float) -> None:
    risk, broker, clock = make(rate=rate)
    window = risk.limits.rate_window
    sent: list[float] = []
    for gap in gaps:
        clock.now += gap
        if risk.check("X", Side.BUY, 1.0, 1.0, broker).allowed:
            risk.record("X")
            sent.append(clock.now)
    for t in sent:
        in_window = sum(1 for s in sent if t - window < s <= t)
        assert in_window <= risk.limits.rate_burst
        # never more orders in any second than the configured rate (at least one is allowed)
        assert sum(1 for s in sent if t - 1.0 < s <= t) <= max(1.0, rate)
