"""High-frequency workflow steps: ``collect_data`` -> ``calculate_signal`` -> ``execute_order``.

The signal is short-horizon mean reversion confirmed by order flow:

* ``z`` is the z-score of the latest price against the rolling window; a price stretched below
  its mean is a buy candidate, above it a sell candidate. The reversion component is
  ``clamp(-z / z_entry, -1, 1)``: full conviction once the price is ``z_entry`` deviations out.
* ``imbalance`` (in ``[-1, 1]``, see :func:`strategies.indicators.flow_imbalance`) says whether
  buyers or sellers have been aggressive over the last ``imbalance_window`` ticks.
* ``score = (1 - flow_weight) * reversion + flow_weight * imbalance``. When no tick in the window
  has a bid and ask, the score is the reversion component alone: missing quotes are missing
  evidence, and diluting the price signal by a made-up neutral flow would hide it.
* ``BUY`` when ``score >= threshold``, ``SELL`` when ``score <= -threshold``, else ``HOLD``.
  ``strength`` is ``|score|`` for BUY/SELL and ``0`` for HOLD.

Params (step ``params`` tables, validated at load into the structs below; defaults in brackets):
``collect_data``: ``window`` [50].
``calculate_signal``: ``min_ticks`` [10], ``z_entry`` [2.0], ``flow_weight`` [0.3],
``imbalance_window`` [10], ``threshold`` [0.5].
``execute_order``: ``qty`` [the broker's ``default_qty``].
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Annotated

import msgspec

from engine.core.strategy import (
    Context,
    OrderResult,
    OrderStatus,
    Tick,
    cheap,
    sends_orders,
    strategy_params,
)

from .common import Action, Params, clamp, find_input
from .indicators import flow_imbalance, zscore
from .stepstate import StepState, StepStates

__all__ = [
    "CollectParams",
    "MarketSnapshot",
    "OrderOutcome",
    "OrderParams",
    "OrderStatus",
    "Signal",
    "SignalParams",
    "calculate_signal",
    "collect_data",
    "execute_order",
]

OrderOutcome = OrderResult
"""What ``execute_order`` returns (the engine's order result; ``skipped`` on HOLD)."""

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]


class CollectParams(Params, frozen=True):
    window: PositiveInt = 50
    """Ticks in the snapshot."""


class SignalParams(Params, frozen=True):
    min_ticks: Annotated[int, msgspec.Meta(ge=2)] = 10
    """Below this many ticks the signal is HOLD (``insufficient_data``)."""
    z_entry: Annotated[float, msgspec.Meta(gt=0.0)] = 2.0
    """Deviations from the mean at which the reversion component is at full conviction."""
    flow_weight: Fraction = 0.3
    imbalance_window: PositiveInt = 10
    threshold: Annotated[float, msgspec.Meta(gt=0.0, le=1.0)] = 0.5


class OrderParams(Params, frozen=True):
    qty: Annotated[float, msgspec.Meta(gt=0.0)] | None = None
    """Order size; the broker's ``default_qty`` (``[broker] order_qty``) when unset."""


class MarketSnapshot(msgspec.Struct, frozen=True):
    """The recent window of one symbol in columns (oldest first) plus the triggering tick."""

    symbol: str
    tick: Tick
    ts: tuple[float, ...]
    prices: tuple[float, ...]
    volumes: tuple[float, ...]
    bids: tuple[float | None, ...]
    asks: tuple[float | None, ...]

    @property
    def size(self) -> int:
        return len(self.prices)


class Signal(msgspec.Struct, frozen=True):
    """The HFT decision and the evidence behind it (kept for audit and tuning)."""

    symbol: str
    action: Action
    strength: float
    score: float
    zscore: float
    imbalance: float | None
    price: float
    ts: float
    samples: int
    reason: str


class _Columns(StepState):
    """The last ``window`` ticks of a symbol in columns, kept up to date from run to run."""

    __slots__ = ("asks", "bids", "prices", "ts", "volumes")

    def __init__(self) -> None:
        super().__init__()
        self.resize(1)

    def resize(self, window: int) -> None:
        self.ts: deque[float] = deque(maxlen=window)
        self.prices: deque[float] = deque(maxlen=window)
        self.volumes: deque[float] = deque(maxlen=window)
        self.bids: deque[float | None] = deque(maxlen=window)
        self.asks: deque[float | None] = deque(maxlen=window)

    def extend(self, ticks: Sequence[Tick]) -> None:
        ts, prices, volumes = self.ts.append, self.prices.append, self.volumes.append
        bids, asks = self.bids.append, self.asks.append
        for t in ticks:
            ts(t.ts)
            prices(t.price)
            volumes(t.volume)
            bids(t.bid)
            asks(t.ask)


_collect_states: StepStates[_Columns] = StepStates(_Columns)


@cheap
@strategy_params(CollectParams)
def collect_data(ctx: Context[CollectParams]) -> MarketSnapshot:
    """Snapshot the last ``window`` ticks of the run's symbol.

    The columns are kept per engine, workflow, step and symbol and extended with the ticks
    since the previous run only (:mod:`strategies.stepstate`): the snapshot is the window's,
    value for value, without re-reading it. A window that no longer reaches the previous run's
    last tick, or a changed ``window``, restarts the columns from the window.
    """
    market = ctx.market
    window = ctx.params.window
    ticks = market.window(ctx.symbol, window)
    if not ticks:
        # The engine records the tick before triggering, but a snapshot must never be empty.
        ticks = (ctx.tick,)
    size = min(window, market.depth)  # the market keeps no more than its depth
    state = _collect_states.get(ctx)
    with state.lock:
        start = -1 if state.changed(size) else state.cursor.find(ticks)
        if start < 0:
            state.resize(size)
            state.key = size
            state.extend(ticks)
        elif start < len(ticks):
            state.extend(ticks[start:])
        state.cursor.consumed(ticks)
        return MarketSnapshot(
            symbol=ctx.symbol,
            tick=ctx.tick,
            ts=tuple(state.ts),
            prices=tuple(state.prices),
            volumes=tuple(state.volumes),
            bids=tuple(state.bids),
            asks=tuple(state.asks),
        )


@cheap
@strategy_params(SignalParams)
def calculate_signal(ctx: Context[SignalParams]) -> Signal:
    """Turn the ``collect_data`` snapshot into BUY/SELL/HOLD with a strength in ``[0, 1]``."""
    snap = find_input(ctx, "collect_data", MarketSnapshot)
    p = ctx.params
    min_ticks = p.min_ticks
    z_entry = p.z_entry
    flow_weight = p.flow_weight
    imb_window = p.imbalance_window
    threshold = p.threshold

    price = snap.prices[-1] if snap.prices else snap.tick.price
    ts = snap.ts[-1] if snap.ts else snap.tick.ts

    def hold(reason: str, z: float = 0.0, imb: float | None = None, score: float = 0.0) -> Signal:
        return Signal(snap.symbol, "HOLD", 0.0, score, z, imb, price, ts, snap.size, reason)

    if snap.size < min_ticks:
        return hold("insufficient_data")

    z = zscore(snap.prices)
    imb = flow_imbalance(
        snap.prices[-imb_window:],
        snap.bids[-imb_window:],
        snap.asks[-imb_window:],
        snap.volumes[-imb_window:],
    )
    reversion = clamp(-z / z_entry, -1.0, 1.0)
    score = reversion if imb is None else (1.0 - flow_weight) * reversion + flow_weight * imb
    score = clamp(score, -1.0, 1.0)

    if score >= threshold:
        action: Action = "BUY"
    elif score <= -threshold:
        action = "SELL"
    else:
        return hold("below_threshold", z, imb, score)
    reason = "reversion" if imb is None else "reversion+flow"
    return Signal(snap.symbol, action, abs(score), score, z, imb, price, ts, snap.size, reason)


@cheap
@sends_orders
@strategy_params(OrderParams)
def execute_order(ctx: Context[OrderParams]) -> OrderResult:
    """Send the signal's order with ``ctx.submit_order``: risk checks, then the broker.

    Idempotent under retries: the order carries the step's client order id, and a retry that
    finds its order already filled gets that fill back (``replayed``) on its original terms.
    """
    signal = find_input(ctx, "calculate_signal", Signal)
    if signal.action == "HOLD":
        return OrderResult("skipped", ctx.symbol, ctx.client_order_id, reason="hold")
    return ctx.submit_order(signal.action, ctx.params.qty)
