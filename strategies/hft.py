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

Params (step ``params`` tables; defaults in brackets):
``collect_data``: ``window`` [50].
``calculate_signal``: ``min_ticks`` [10], ``z_entry`` [2.0], ``flow_weight`` [0.3],
``imbalance_window`` [10], ``threshold`` [0.5].
``execute_order``: ``qty`` [the broker's ``default_qty``].
"""

from __future__ import annotations

from typing import Literal

import msgspec

from engine.core.context import StepContext, cheap, sends_orders
from engine.core.events import Tick

from .broker import Fill, Side
from .common import Action, clamp, find_input, param_float, param_int
from .indicators import flow_imbalance, zscore

__all__ = [
    "MarketSnapshot",
    "OrderOutcome",
    "OrderStatus",
    "Signal",
    "calculate_signal",
    "collect_data",
    "execute_order",
]

OrderStatus = Literal["filled", "rejected", "skipped"]


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


class OrderOutcome(msgspec.Struct, frozen=True):
    """What ``execute_order`` did.

    ``reason`` is a bounded label fit for a metric (``hold`` or a risk reason); ``detail`` is the
    human explanation. ``replayed`` marks a retry that found its order already filled.
    """

    status: OrderStatus
    symbol: str
    client_order_id: str
    side: Side | None = None
    qty: float = 0.0
    reason: str | None = None
    detail: str = ""
    fill: Fill | None = None
    replayed: bool = False


@cheap
def collect_data(ctx: StepContext) -> MarketSnapshot:
    """Snapshot the last ``window`` ticks of the run's symbol."""
    window = param_int(ctx.params, "window", 50)
    ticks = ctx.market.window(ctx.symbol, window)
    if not ticks:
        # The engine records the tick before triggering, but a snapshot must never be empty.
        ticks = (ctx.tick,)
    return MarketSnapshot(
        symbol=ctx.symbol,
        tick=ctx.tick,
        ts=tuple(t.ts for t in ticks),
        prices=tuple(t.price for t in ticks),
        volumes=tuple(t.volume for t in ticks),
        bids=tuple(t.bid for t in ticks),
        asks=tuple(t.ask for t in ticks),
    )


@cheap
def calculate_signal(ctx: StepContext) -> Signal:
    """Turn the ``collect_data`` snapshot into BUY/SELL/HOLD with a strength in ``[0, 1]``."""
    snap = find_input(ctx, "collect_data", MarketSnapshot)
    p = ctx.params
    min_ticks = param_int(p, "min_ticks", 10, minimum=2)
    z_entry = param_float(p, "z_entry", 2.0, minimum=0.0, exclusive_minimum=True)
    flow_weight = param_float(p, "flow_weight", 0.3, minimum=0.0, maximum=1.0)
    imb_window = param_int(p, "imbalance_window", 10)
    threshold = param_float(p, "threshold", 0.5, minimum=0.0, exclusive_minimum=True, maximum=1.0)

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
def execute_order(ctx: StepContext) -> OrderOutcome:
    """Send the signal's order through risk checks to the paper broker.

    Idempotent under retries: the order carries ``ctx.client_order_id``, and a retry that finds
    its order already filled returns that fill without re-running risk checks (the original fill
    itself could otherwise trip the position limit and report a phantom rejection) and without
    counting it again in the order-rate window.
    """
    signal = find_input(ctx, "calculate_signal", Signal)
    coid = ctx.client_order_id
    symbol = signal.symbol
    if signal.action == "HOLD":
        return OrderOutcome("skipped", symbol, coid, reason="hold")

    side = Side(signal.action)
    qty = param_float(
        ctx.params, "qty", ctx.broker.default_qty, minimum=0.0, exclusive_minimum=True
    )

    earlier = ctx.broker.fill_for(coid)
    if earlier is not None:
        # Replay on the original terms: what was filled is the truth even if `qty` was
        # reloaded in between, and the broker still counts the retry as a duplicate.
        fill = ctx.broker.submit(
            coid, earlier.symbol, earlier.side, earlier.qty, earlier.last_price, earlier.ts
        )
        return OrderOutcome("filled", symbol, coid, fill.side, fill.qty, fill=fill, replayed=True)

    # The order goes out at the market's last price now, which may be newer than the signal's.
    latest = ctx.market.latest(symbol)
    last_price = latest.price if latest is not None else signal.price
    decision = ctx.risk.check(symbol, side, qty, last_price, ctx.broker)
    if not decision.allowed:
        return OrderOutcome(
            "rejected", symbol, coid, side, qty, reason=decision.reason, detail=decision.detail
        )

    fill = ctx.broker.submit(coid, symbol, side, qty, last_price, ctx.clock())
    ctx.risk.record(symbol)
    return OrderOutcome("filled", symbol, coid, side, qty, fill=fill)
