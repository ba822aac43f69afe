"""Paper broker: fills, fees, position accounting, idempotency, snapshots."""

from __future__ import annotations

import math
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.errors import TickflowError
from engine.core.strategy import Broker, BrokerBooks
from strategies.broker import (
    BrokerError,
    BrokerStatistics,
    DuplicateOrderError,
    Fill,
    PaperBroker,
    Position,
    Side,
)

CASH = 100_000.0


def assert_position(pos: Position, qty: float, avg_cost: float, realized: float) -> None:
    assert pos.qty == pytest.approx(qty)
    assert pos.avg_cost == pytest.approx(avg_cost)
    assert pos.realized_pnl == pytest.approx(realized)


def frictionless() -> PaperBroker:
    return PaperBroker(CASH, slippage_bps=0.0, fee_bps=0.0, default_qty=10.0)


def test_round_trip_with_slippage_and_fees() -> None:
    broker = PaperBroker(CASH, slippage_bps=10.0, fee_bps=5.0, default_qty=10.0)

    buy = broker.submit("o1", "ACME", Side.BUY, 10.0, 100.0, ts=1.0)
    # buy pays up 10 bps: 100.1; notional 1001; fee 5 bps of it: 0.5005
    assert buy.price == pytest.approx(100.1)
    assert buy.notional == pytest.approx(1001.0)
    assert buy.fee == pytest.approx(0.5005)
    assert buy.realized_pnl == 0.0
    assert broker.cash == pytest.approx(CASH - 1001.0 - 0.5005)
    assert_position(broker.position("ACME"), 10.0, 100.1, 0.0)

    sell = broker.submit("o2", "ACME", "SELL", 10.0, 101.0, ts=2.0)
    # sell receives 10 bps less: 100.899; notional 1008.99; fee 0.504495
    assert sell.price == pytest.approx(100.899)
    assert sell.fee == pytest.approx(0.504495)
    assert sell.realized_pnl == pytest.approx(10 * (100.899 - 100.1))  # 7.99, gross of fees

    stats = broker.statistics()
    assert_position(stats.position("ACME"), 0.0, 0.0, 7.99)
    assert stats.realized_pnl == pytest.approx(7.99)
    assert stats.fees_paid == pytest.approx(1.004995)
    assert stats.cash == pytest.approx(CASH + 7.99 - 1.004995)
    assert stats.unrealized_pnl == 0.0
    assert stats.equity == pytest.approx(stats.cash)
    assert (stats.orders, stats.fills, stats.duplicates) == (2, 2, 0)


def test_short_then_cover() -> None:
    broker = frictionless()
    broker.submit("s", "X", Side.SELL, 10.0, 100.0, 0.0)
    assert broker.position("X").qty == -10.0
    assert broker.cash == CASH + 1000.0
    cover = broker.submit("c", "X", Side.BUY, 10.0, 95.0, 1.0)
    assert cover.realized_pnl == pytest.approx(50.0)
    assert broker.cash == pytest.approx(CASH + 50.0)
    assert_position(broker.position("X"), 0.0, 0.0, 50.0)


def test_adding_averages_cost_and_partial_close_keeps_it() -> None:
    broker = frictionless()
    broker.submit("a", "X", Side.BUY, 10.0, 100.0, 0.0)
    broker.submit("b", "X", Side.BUY, 10.0, 110.0, 1.0)
    assert broker.position("X").avg_cost == pytest.approx(105.0)
    fill = broker.submit("c", "X", Side.SELL, 5.0, 120.0, 2.0)
    assert fill.realized_pnl == pytest.approx(75.0)  # 5 * (120 - 105)
    assert_position(broker.position("X"), 15.0, 105.0, 75.0)


def test_flip_opens_remainder_at_fill_price() -> None:
    broker = frictionless()
    broker.submit("a", "X", Side.BUY, 10.0, 100.0, 0.0)
    fill = broker.submit("b", "X", Side.SELL, 15.0, 90.0, 1.0)
    assert fill.realized_pnl == pytest.approx(-100.0)  # 10 closed at -10 each
    assert_position(broker.position("X"), -5.0, 90.0, -100.0)


def test_unrealized_pnl_uses_marks_then_last_price() -> None:
    broker = frictionless()
    broker.submit("a", "X", Side.BUY, 10.0, 100.0, 0.0)
    broker.submit("b", "Y", Side.SELL, 2.0, 50.0, 0.0)
    assert broker.unrealized_pnl({"X": 103.0, "Y": 45.0}) == pytest.approx(30.0 + 10.0)
    # Y unmarked: valued at its last price (50), so it contributes nothing
    assert broker.unrealized_pnl({"X": 103.0}) == pytest.approx(30.0)
    assert broker.equity({"X": 103.0, "Y": 45.0}) == pytest.approx(CASH + 40.0)


def test_retry_with_same_id_returns_original_fill_and_changes_nothing() -> None:
    broker = PaperBroker(CASH, slippage_bps=2.0, fee_bps=1.0, default_qty=10.0)
    first = broker.submit("wf:1:execute_order", "X", Side.BUY, 10.0, 100.0, 1.0)
    books = (broker.cash, broker.position("X"), broker.fees_paid)
    # A retry sees a newer price and clock: still the original fill, no second trade.
    again = broker.submit("wf:1:execute_order", "X", Side.BUY, 10.0, 105.0, 9.0)
    assert again == first
    assert (broker.cash, broker.position("X"), broker.fees_paid) == books
    stats = broker.statistics()
    assert (stats.orders, stats.fills, stats.duplicates) == (2, 1, 1)
    assert broker.fill_for("wf:1:execute_order") == first
    assert broker.fill_for("unknown") is None


@pytest.mark.parametrize(
    ("symbol", "side", "qty"),
    [("Y", Side.BUY, 10.0), ("X", Side.SELL, 10.0), ("X", Side.BUY, 11.0)],
)
def test_reused_id_for_a_different_order_is_an_error(symbol: str, side: Side, qty: float) -> None:
    broker = frictionless()
    broker.submit("id", "X", Side.BUY, 10.0, 100.0, 1.0)
    with pytest.raises(DuplicateOrderError, match="already used"):
        broker.submit("id", symbol, side, qty, 100.0, 1.0)
    stats = broker.statistics()
    assert (stats.orders, stats.fills, stats.duplicates) == (1, 1, 0)


@pytest.mark.parametrize(
    "order",
    [
        ("", "X", "BUY", 1.0, 1.0, 0.0),
        ("id", "", "BUY", 1.0, 1.0, 0.0),
        ("id", "X", "HOLD", 1.0, 1.0, 0.0),
        ("id", "X", "BUY", 0.0, 1.0, 0.0),
        ("id", "X", "BUY", -1.0, 1.0, 0.0),
        ("id", "X", "BUY", math.nan, 1.0, 0.0),
        ("id", "X", "BUY", 1.0, 0.0, 0.0),
        ("id", "X", "BUY", 1.0, math.inf, 0.0),
        ("id", "X", "BUY", 1.0, 1.0, math.nan),
    ],
)
def test_invalid_orders_are_rejected_with_broker_error(
    order: tuple[str, str, str, float, float, float],
) -> None:
    broker = frictionless()
    with pytest.raises(BrokerError):
        broker.submit(*order)
    assert broker.statistics().orders == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_cash": -1.0},
        {"slippage_bps": -0.1},
        {"fee_bps": math.nan},
        {"default_qty": 0.0},
        {"order_memory": 0},
    ],
)
def test_invalid_configuration(kwargs: dict[str, Any]) -> None:
    with pytest.raises(BrokerError):
        PaperBroker(**kwargs)


def test_errors_belong_to_the_tickflow_hierarchy() -> None:
    assert issubclass(BrokerError, TickflowError)
    assert issubclass(BrokerError, ValueError)
    assert issubclass(DuplicateOrderError, BrokerError)


def test_statistics_is_a_frozen_snapshot() -> None:
    broker = frictionless()
    broker.submit("b", "B", Side.BUY, 1.0, 10.0, 0.0)
    broker.submit("a", "A", Side.BUY, 1.0, 10.0, 0.0)
    stats = broker.statistics()
    assert isinstance(stats, BrokerStatistics)
    assert [p.symbol for p in stats.positions] == ["A", "B"]
    with pytest.raises(AttributeError):
        stats.cash = 0.0  # type: ignore[misc]
    broker.submit("c", "A", Side.BUY, 1.0, 10.0, 0.0)
    assert stats.position("A").qty == 1.0  # the snapshot did not move with the broker
    assert stats.position("ZZZ") == Position("ZZZ", 0.0, 0.0, 0.0)


def test_books_survive_json_and_restore_exactly() -> None:
    broker = PaperBroker(CASH, slippage_bps=3.0, fee_bps=1.5, default_qty=7.0)
    broker.submit("a", "X", Side.BUY, 10.0, 100.0, 1.0)
    broker.submit("b", "X", Side.SELL, 4.0, 101.0, 2.0)
    broker.submit("c", "Y", Side.SELL, 3.0, 20.0, 3.0)
    broker.submit("a", "X", Side.BUY, 10.0, 100.0, 4.0)  # duplicate

    books = broker.snapshot()
    assert isinstance(broker, Broker)  # the engine's protocol
    decoded = msgspec.json.decode(msgspec.json.encode(books), type=BrokerBooks)
    assert decoded == books
    # Restored into a broker built from the same config, as the daemon does at start.
    restored = PaperBroker(CASH, slippage_bps=3.0, fee_bps=1.5, default_qty=7.0)
    restored.restore(decoded)

    marks = {"X": 99.0, "Y": 21.0}
    assert restored.statistics(marks) == broker.statistics(marks)
    assert restored.default_qty == 7.0
    # Idempotency survives a restart: the old id replays, a new id trades.
    assert restored.submit("b", "X", Side.SELL, 4.0, 500.0, 9.0) == broker.fill_for("b")
    assert restored.statistics(marks).cash == broker.cash
    assert restored.snapshot().duplicates == 2


def test_restore_rejects_bad_books_and_keeps_the_old_ones() -> None:
    broker = frictionless()
    broker.submit("a", "X", Side.BUY, 1.0, 10.0, 0.0)
    good = broker.snapshot()
    with pytest.raises(BrokerError, match="must be finite"):
        broker.restore(msgspec.structs.replace(good, cash=math.inf))
    with pytest.raises(BrokerError, match="order counts"):
        broker.restore(msgspec.structs.replace(good, orders=-1))
    with pytest.raises(BrokerError, match="expected BrokerBooks"):
        broker.restore({"cash": 1.0})  # type: ignore[arg-type]
    assert broker.snapshot() == good
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({**msgspec.to_builtins(good), "cash": "lots"}, BrokerBooks)


def test_order_memory_bounds_remembered_ids() -> None:
    broker = PaperBroker(CASH, 0.0, 0.0, 1.0, order_memory=2)
    for i in range(3):
        broker.submit(f"id{i}", "X", Side.BUY, 1.0, 10.0, float(i))
    assert broker.fill_for("id0") is None
    assert broker.fill_for("id2") is not None
    assert broker.statistics().fills == 3
    assert len(broker.snapshot().fills) == 2


def test_fill_is_msgspec_encodable() -> None:
    fill = frictionless().submit("a", "X", Side.BUY, 1.0, 10.0, 0.0)
    assert msgspec.json.decode(msgspec.json.encode(fill), type=Fill) == fill


trades = st.lists(
    st.tuples(
        st.sampled_from(["A", "B"]),
        st.sampled_from([Side.BUY, Side.SELL]),
        st.floats(min_value=0.01, max_value=1_000.0),
        st.floats(min_value=0.5, max_value=500.0),
    ),
    max_size=40,
)


@given(
    trades,
    st.floats(min_value=0.0, max_value=50.0),
    st.floats(min_value=0.0, max_value=20.0),
    st.floats(min_value=0.5, max_value=500.0),
)
def test_value_is_conserved_up_to_fees(
    orders: list[tuple[str, Side, float, float]], slippage: float, fee: float, mark: float
) -> None:
    broker = PaperBroker(CASH, slippage_bps=slippage, fee_bps=fee, default_qty=1.0)
    net = {"A": 0.0, "B": 0.0}
    for i, (symbol, side, qty, price) in enumerate(orders):
        broker.submit(f"o{i}", symbol, side, qty, price, float(i))
        net[symbol] += qty if side is Side.BUY else -qty
    marks = {"A": mark, "B": mark * 1.5}
    stats = broker.statistics(marks)
    # Nothing is created or lost: equity = start + realised + unrealised - fees.
    expected = CASH + stats.realized_pnl + stats.unrealized_pnl - stats.fees_paid
    scale = CASH + sum(q * p for _, _, q, p in orders)
    assert stats.equity == pytest.approx(expected, rel=1e-9, abs=1e-9 * scale)
    for symbol, qty in net.items():
        assert broker.position(symbol).qty == pytest.approx(qty, abs=1e-6)
    assert stats.fees_paid >= 0.0
    assert stats.orders == stats.fills + stats.duplicates == len(orders)


@given(trades)
def test_frictionless_round_trip_at_entry_prices_returns_the_cash(
    orders: list[tuple[str, Side, float, float]],
) -> None:
    broker = frictionless()
    for i, (symbol, side, qty, price) in enumerate(orders):
        broker.submit(f"o{i}", symbol, side, qty, price, 0.0)
        opposite = Side.SELL if side is Side.BUY else Side.BUY
        broker.submit(f"x{i}", symbol, opposite, qty, price, 0.0)
    assert broker.cash == pytest.approx(CASH, rel=1e-9)
    assert broker.realized_pnl == pytest.approx(0.0, abs=1e-6)
