"""HFT steps driven through real StepContexts, MarketData, PaperBroker and RiskManager."""

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
from strategies.broker import PaperBroker, Side
from strategies.common import StrategyError
from strategies.hft import (
    MarketSnapshot,
    OrderOutcome,
    Signal,
    calculate_signal,
    collect_data,
    execute_order,
)
from strategies.risk import RiskLimits, RiskManager

SYM = "ACME"
ACTIONS = {
    "collect_data": collect_data,
    "calculate_signal": calculate_signal,
    "execute_order": execute_order,
}


class FakeClock:
    def __init__(self, now: float = 5_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Desk:
    """The long-lived objects the engine shares between steps."""

    def __init__(self, *, limits: RiskLimits | None = None, depth: int = 512) -> None:
        self.market = MarketData(depth)
        self.clock = FakeClock()
        self.broker = PaperBroker(1_000_000.0, slippage_bps=10.0, fee_bps=5.0, default_qty=10.0)
        self.risk = RiskManager(limits or RiskLimits(), self.clock)
        self.fed = 0

    def feed(
        self,
        prices: Sequence[float],
        *,
        quotes: Sequence[tuple[float | None, float | None]] = (),
    ) -> Tick:
        last = None
        for i, p in enumerate(prices):
            bid, ask = quotes[i] if quotes else (None, None)
            last = Tick(SYM, 100.0 + self.fed, p, 1.0 + i, bid, ask)
            self.market.record(last)
            self.fed += 1
        assert last is not None
        return last

    def ctx(
        self,
        step: str,
        *,
        inputs: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        run_id: int = 1,
        tick: Tick | None = None,
    ) -> StepContext:
        return StepContext(
            run_id=run_id,
            workflow="high_freq_trading",
            step=step,
            symbol=SYM,
            tick=tick or self.market.latest(SYM) or Tick(SYM, 0.0, 1.0),
            inputs=inputs or {},
            attempt=1,
            # Decoded as the loader does at load time: the action gets its params struct.
            params=decode_params(ACTIONS[step], params or {}),
            market=self.market,
            broker=self.broker,
            risk=self.risk,
            rng=random.Random(7),
            clock=self.clock,
            sends_orders=sends_orders_flag(ACTIONS[step]),
        )

    def run(self, *, run_id: int = 1, signal_params: Mapping[str, Any] | None = None) -> Any:
        snap = collect_data(self.ctx("collect_data", run_id=run_id))
        sig = calculate_signal(
            self.ctx(
                "calculate_signal",
                inputs={"collect_data": snap},
                params=signal_params,
                run_id=run_id,
            )
        )
        return execute_order(
            self.ctx("execute_order", inputs={"calculate_signal": sig}, run_id=run_id)
        )


DIP = [100.0] * 9 + [98.0]  # mean 99.8, population sd 0.6 -> z = -3
SPIKE = [100.0] * 9 + [102.0]  # z = +3


def signal_for(desk: Desk, params: Mapping[str, Any] | None = None) -> Signal:
    snap = collect_data(desk.ctx("collect_data"))
    return calculate_signal(
        desk.ctx("calculate_signal", inputs={"collect_data": snap}, params=params)
    )


def buy_signal(price: float = 100.0) -> Signal:
    return Signal(SYM, "BUY", 1.0, 1.0, -3.0, None, price, 0.0, 10, "reversion")


def test_actions_are_marked_for_the_engine() -> None:
    assert is_cheap(collect_data)
    assert is_cheap(calculate_signal)
    assert is_cheap(execute_order)
    assert sends_orders_flag(execute_order)
    assert not sends_orders_flag(calculate_signal)


# -- collect_data -----------------------------------------------------------------------------


def test_collect_data_snapshots_the_window_in_columns() -> None:
    desk = Desk()
    desk.feed([1.0, 2.0, 3.0, 4.0], quotes=[(0.9, 1.1)] * 3 + [(3.9, 4.2)])
    snap = collect_data(desk.ctx("collect_data", params={"window": 3}))
    assert snap.prices == (2.0, 3.0, 4.0)
    assert snap.ts == (101.0, 102.0, 103.0)
    assert snap.volumes == (2.0, 3.0, 4.0)
    assert snap.bids == (0.9, 0.9, 3.9)
    assert snap.asks == (1.1, 1.1, 4.2)
    assert snap.tick == Tick(SYM, 103.0, 4.0, 4.0, 3.9, 4.2)
    assert snap.size == 3


def test_collect_data_output_is_plain_picklable_data() -> None:
    desk = Desk()
    desk.feed(DIP)
    snap = collect_data(desk.ctx("collect_data"))
    assert pickle.loads(pickle.dumps(snap)) == snap
    assert msgspec.json.decode(msgspec.json.encode(snap), type=MarketSnapshot) == snap


def test_collect_data_on_an_unseen_symbol_falls_back_to_the_trigger_tick() -> None:
    desk = Desk()
    trigger = Tick(SYM, 1.0, 50.0)
    snap = collect_data(desk.ctx("collect_data", tick=trigger))
    assert snap.prices == (50.0,)
    sig = calculate_signal(desk.ctx("calculate_signal", inputs={"collect_data": snap}))
    assert (sig.action, sig.strength, sig.reason) == ("HOLD", 0.0, "insufficient_data")


# -- calculate_signal -------------------------------------------------------------------------


def test_too_few_ticks_hold() -> None:
    desk = Desk()
    desk.feed([100.0, 90.0, 80.0])
    sig = signal_for(desk)
    assert (sig.action, sig.strength, sig.samples, sig.reason) == (
        "HOLD",
        0.0,
        3,
        "insufficient_data",
    )


def test_price_dip_without_quotes_buys_on_reversion_alone() -> None:
    desk = Desk()
    desk.feed(DIP)
    sig = signal_for(desk)
    assert sig.zscore == pytest.approx(-3.0)
    assert sig.imbalance is None
    assert (sig.action, sig.reason) == ("BUY", "reversion")
    assert sig.strength == pytest.approx(1.0)  # |z| beyond z_entry=2 saturates
    assert sig.price == 98.0


def test_price_spike_sells() -> None:
    desk = Desk()
    desk.feed(SPIKE)
    sig = signal_for(desk)
    assert sig.action == "SELL"
    assert sig.score == pytest.approx(-1.0)


def test_flat_window_holds() -> None:
    desk = Desk()
    desk.feed([100.0] * 20)
    sig = signal_for(desk)
    assert (sig.action, sig.zscore, sig.score, sig.reason) == ("HOLD", 0.0, 0.0, "below_threshold")


def test_flow_confirms_a_moderate_dip() -> None:
    # prices 102, 100: mean 101, sd 1, z = -1 -> reversion 0.5; both prints at the ask -> flow +1
    # score = 0.7 * 0.5 + 0.3 * 1 = 0.65
    desk = Desk()
    desk.feed([102.0, 100.0], quotes=[(101.0, 102.0), (99.0, 100.0)])
    sig = signal_for(desk, {"min_ticks": 2})
    assert sig.zscore == pytest.approx(-1.0)
    assert sig.imbalance == pytest.approx(1.0)
    assert sig.score == pytest.approx(0.65)
    assert (sig.action, sig.reason) == ("BUY", "reversion+flow")
    assert sig.strength == pytest.approx(0.65)


def test_opposing_flow_vetoes_a_moderate_dip() -> None:
    # same dip, but both prints hit the bid: 0.7 * 0.5 + 0.3 * -1 = 0.05 -> HOLD
    desk = Desk()
    desk.feed([102.0, 100.0], quotes=[(102.0, 103.0), (100.0, 101.0)])
    sig = signal_for(desk, {"min_ticks": 2})
    assert sig.score == pytest.approx(0.05)
    assert (sig.action, sig.strength) == ("HOLD", 0.0)


def test_thresholds_come_from_params() -> None:
    desk = Desk()
    desk.feed([102.0, 100.0])  # z = -1, no quotes -> score = 1 / z_entry
    assert signal_for(desk, {"min_ticks": 2}).action == "BUY"  # 0.5 >= 0.5
    assert signal_for(desk, {"min_ticks": 2, "z_entry": 4.0}).action == "HOLD"  # 0.25
    assert signal_for(desk, {"min_ticks": 2, "z_entry": 4.0, "threshold": 0.2}).action == "BUY"


@pytest.mark.parametrize(
    "params",
    [{"z_entry": 0}, {"threshold": 1.5}, {"flow_weight": -0.1}, {"min_ticks": True},
     {"imbalance_window": "ten"}],
)  # fmt: skip
def test_bad_params_are_load_errors(params: dict[str, Any]) -> None:
    desk = Desk()
    desk.feed(DIP)
    with pytest.raises(ConfigError, match=rf"at \$\.params\.{next(iter(params))}: "):
        signal_for(desk, params)


def test_signal_accepts_renamed_and_decoded_inputs() -> None:
    desk = Desk()
    desk.feed(DIP)
    snap = collect_data(desk.ctx("collect_data"))
    direct = calculate_signal(desk.ctx("calculate_signal", inputs={"collect_data": snap}))
    renamed = calculate_signal(desk.ctx("calculate_signal", inputs={"my_collector": snap}))
    # as if restored from storage after a restart: decoded JSON, not the struct
    decoded = msgspec.json.decode(msgspec.json.encode(snap))
    restored = calculate_signal(desk.ctx("calculate_signal", inputs={"collect_data": decoded}))
    assert direct == renamed == restored


def test_signal_without_its_input_is_a_clear_error() -> None:
    desk = Desk()
    with pytest.raises(StrategyError, match="MarketSnapshot"):
        calculate_signal(desk.ctx("calculate_signal", inputs={"other": 42}))
    with pytest.raises(StrategyError, match="not a valid"):
        calculate_signal(desk.ctx("calculate_signal", inputs={"collect_data": {"symbol": 1}}))


# -- execute_order ----------------------------------------------------------------------------


def test_hold_sends_no_order() -> None:
    desk = Desk()
    desk.feed([100.0] * 20)
    out = desk.run()
    assert (out.status, out.reason, out.fill) == ("skipped", "hold", None)
    assert desk.broker.statistics().orders == 0


def test_buy_fills_at_last_price_plus_slippage() -> None:
    desk = Desk()
    desk.feed(DIP)
    out = desk.run(run_id=42)
    assert isinstance(out, OrderOutcome)
    assert (out.status, out.side, out.qty, out.replayed) == ("filled", Side.BUY, 10.0, False)
    assert out.client_order_id == "high_freq_trading:42:execute_order"
    assert out.fill is not None
    assert out.fill.price == pytest.approx(98.0 * 1.001)
    assert out.fill.ts == desk.clock.now
    assert desk.broker.position(SYM).qty == 10.0
    assert desk.risk.recent_orders(SYM) == 1


def test_order_goes_out_at_the_newest_market_price() -> None:
    desk = Desk()
    desk.feed(DIP)
    desk.market.record(Tick(SYM, 200.0, 97.0))  # arrived after the signal was computed
    out = execute_order(desk.ctx("execute_order", inputs={"calculate_signal": buy_signal(98.0)}))
    assert out.fill is not None
    assert out.fill.last_price == 97.0


def test_qty_param_overrides_broker_default() -> None:
    desk = Desk()
    desk.feed(DIP)
    ctx = desk.ctx("execute_order", inputs={"calculate_signal": buy_signal()}, params={"qty": 3})
    assert execute_order(ctx).qty == 3.0


def test_risk_rejection_is_an_outcome_and_sends_nothing() -> None:
    desk = Desk(limits=RiskLimits(max_position=5.0))
    desk.feed(DIP)
    out = desk.run()
    assert (out.status, out.reason, out.side, out.fill) == (
        "rejected",
        "max_position",
        Side.BUY,
        None,
    )
    assert "limit is 5" in out.detail
    assert desk.broker.statistics().orders == 0
    assert desk.risk.recent_orders(SYM) == 0


def test_order_rate_rejection_across_runs() -> None:
    desk = Desk(limits=RiskLimits(max_orders_per_sec=2, max_position=1e6))
    desk.feed(DIP)
    ctxs = [
        desk.ctx("execute_order", inputs={"calculate_signal": buy_signal()}, run_id=i)
        for i in range(3)
    ]
    outcomes = [execute_order(c).status for c in ctxs]
    assert outcomes == ["filled", "filled", "rejected"]
    assert execute_order(ctxs[2]).reason == "order_rate"
    desk.clock.now += 1.0
    assert execute_order(ctxs[2]).status == "filled"


def test_retried_step_never_fills_twice() -> None:
    # The limit is exactly one order's size: a naive retry would re-check risk, see the
    # position its own first attempt created, and report a phantom rejection.
    desk = Desk(limits=RiskLimits(max_position=10.0, max_orders_per_sec=1))
    desk.feed(DIP)
    ctx = desk.ctx("execute_order", inputs={"calculate_signal": buy_signal()}, run_id=9)
    first = execute_order(ctx)
    desk.clock.now += 0.1
    desk.market.record(Tick(SYM, 300.0, 95.0))
    retry = execute_order(ctx)
    assert first.status == retry.status == "filled"
    assert retry.replayed
    assert retry.fill == first.fill
    stats = desk.broker.statistics()
    assert (stats.fills, stats.duplicates) == (1, 1)
    assert stats.position(SYM).qty == 10.0
    assert desk.risk.recent_orders(SYM) == 1


def test_pipeline_is_deterministic() -> None:
    def session() -> list[Any]:
        desk = Desk(limits=RiskLimits(max_position=50.0))
        rng = random.Random(1234)
        price = 100.0
        outcomes = []
        for run_id in range(200):
            price = max(1.0, price + rng.gauss(0.0, 0.5))
            spread = 0.02
            desk.feed([price], quotes=[(price - spread, price + spread)])
            desk.clock.now += 0.05
            outcomes.append(desk.run(run_id=run_id))
        return [*outcomes, desk.broker.statistics({SYM: price})]

    first, second = session(), session()
    assert first == second
    statuses = {o.status for o in first[:-1]}
    assert "filled" in statuses
    assert "skipped" in statuses


# -- incremental columns ------------------------------------------------------------------------


def from_scratch_snapshot(desk: Desk, window: int) -> tuple[tuple[Any, ...], ...]:
    ticks = desk.market.window(SYM, window)
    return (
        tuple(t.ts for t in ticks),
        tuple(t.price for t in ticks),
        tuple(t.volume for t in ticks),
        tuple(t.bid for t in ticks),
        tuple(t.ask for t in ticks),
    )


def columns(snap: MarketSnapshot) -> tuple[tuple[Any, ...], ...]:
    return (snap.ts, snap.prices, snap.volumes, snap.bids, snap.asks)


@given(
    chunks=st.lists(st.integers(min_value=0, max_value=25), min_size=1, max_size=30),
    window=st.integers(min_value=1, max_value=20),
    depth=st.sampled_from([8, 64]),
)
def test_snapshot_columns_kept_incrementally_equal_the_window(
    chunks: list[int], window: int, depth: int
) -> None:
    """Any chunking -- retries (empty chunks), chunks longer than the window or the market's
    depth -- gives exactly the columns of the market window at that moment."""
    desk = Desk(depth=depth)
    rng = random.Random(len(chunks) * 31 + window)
    for size in chunks:
        if size:
            desk.feed([100.0 + rng.random() for _ in range(size)],
                      quotes=[(99.0, 101.0) if rng.random() < 0.7 else (None, None)] * size)
        if desk.fed == 0:
            continue
        ctx = desk.ctx("collect_data", params={"window": window})
        snap = collect_data(ctx)
        assert columns(snap) == from_scratch_snapshot(desk, window)
        assert collect_data(ctx) == snap  # idempotent: a retry folds nothing twice


def test_snapshot_state_is_per_workflow_step_and_engine() -> None:
    desk = Desk()
    desk.feed([1.0, 2.0, 3.0])
    assert collect_data(desk.ctx("collect_data", params={"window": 2})).prices == (2.0, 3.0)
    other = Desk()  # another engine: same symbol, workflow and step, its own columns
    other.feed([7.0])
    assert collect_data(other.ctx("collect_data", params={"window": 2})).prices == (7.0,)
    desk.feed([4.0])
    snap = collect_data(desk.ctx("collect_data", params={"window": 2}))
    assert snap.prices == (3.0, 4.0)
    # A reload that widens the window restarts the columns from the market.
    assert collect_data(desk.ctx("collect_data", params={"window": 3})).prices == (2.0, 3.0, 4.0)


def test_golden_signal_from_incremental_columns() -> None:
    # The DIP case fed in three runs: the same snapshot and signal as one from-scratch run.
    desk = Desk()
    for chunk in (DIP[:4], DIP[4:9], DIP[9:]):
        desk.feed(chunk)
        snap = collect_data(desk.ctx("collect_data"))
    assert snap.prices == tuple(DIP)
    sig = calculate_signal(desk.ctx("calculate_signal", inputs={"collect_data": snap}))
    assert sig.zscore == pytest.approx(-3.0)
    assert (sig.action, sig.samples) == ("BUY", 10)
