"""Orders as the engine sees them: the broker and risk interfaces, the order and fill types, and
the one way a step sends an order (:func:`submit_order`, behind ``ctx.submit_order``).

The engine depends on these protocols, never on a concrete broker: the paper broker
(``strategies.broker.PaperBroker``) implements :class:`Broker`, the risk manager
(``strategies.risk.RiskManager``) implements :class:`Risk`, and the composition root
(``engine.service``) builds both once from config and hands them in. A live broker adapter is
written against :class:`Broker` alone.

Every order goes through :func:`submit_order`, so two rules always hold:

* **idempotency**: the order carries the step's client order id (stable across retries of the
  step); a retry that finds its order already filled gets that fill back on the original
  terms, without a second risk check (the original fill itself could trip the position limit and
  report a phantom rejection) and without counting again in the order-rate window;
* **risk**: a new order is checked by :meth:`Risk.check` before it reaches the broker, and
  recorded by :meth:`Risk.record` after it filled. A refusal is an ordinary result
  (``status = "rejected"``), not an exception: a step that raised would be retried into the
  same limit.

Only steps whose action is marked ``@sends_orders`` may send: the engine stores such a run
before the step starts, which is what keeps its client order ids (and so its fills) unique
across a restart.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import msgspec

from engine.core.errors import StrategyError

if TYPE_CHECKING:
    from engine.core.events import Tick

__all__ = [
    "Books",
    "Broker",
    "BrokerBooks",
    "BrokerStatistics",
    "Fill",
    "OrderResult",
    "OrderStatus",
    "Position",
    "Risk",
    "RiskDecision",
    "RiskReason",
    "Side",
    "submit_order",
]


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class Fill(msgspec.Struct, frozen=True):
    """The execution of one order. ``price`` includes slippage; ``last_price`` is the reference."""

    client_order_id: str
    symbol: str
    side: Side
    qty: float
    price: float
    last_price: float
    notional: float
    fee: float
    realized_pnl: float
    ts: float


class Position(msgspec.Struct, frozen=True):
    """Signed quantity, average entry cost and realised P&L (gross of fees) of one symbol."""

    symbol: str
    qty: float
    avg_cost: float
    realized_pnl: float


class BrokerStatistics(msgspec.Struct, frozen=True):
    """A frozen snapshot of a broker's books; ``positions`` is sorted by symbol.

    ``orders`` counts accepted submits including idempotent replays, ``fills`` distinct executions
    and ``duplicates`` the replays, so ``orders == fills + duplicates``.
    """

    cash: float
    positions: tuple[Position, ...]
    realized_pnl: float
    unrealized_pnl: float
    fees_paid: float
    equity: float
    orders: int
    fills: int
    duplicates: int

    def position(self, symbol: str) -> Position:
        for p in self.positions:
            if p.symbol == symbol:
                return p
        return Position(symbol, 0.0, 0.0, 0.0)


class BrokerBooks(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A broker's books as plain data: what storage keeps and hands back at start.

    ``fills`` are the remembered recent fills, oldest first: they keep a retried order's client
    order id idempotent across a restart. The broker's terms (fees, slippage, default size)
    are not books: they come from the config the broker was built from.
    """

    cash: float
    fees_paid: float
    orders: int
    fill_count: int
    duplicates: int
    positions: tuple[Position, ...]
    last_prices: dict[str, float]
    fills: tuple[Fill, ...]


RiskReason = Literal["max_position", "max_notional", "order_rate"]


class RiskDecision(msgspec.Struct, frozen=True):
    """The verdict on one order; ``reason`` and ``detail`` are set when it is refused."""

    allowed: bool
    reason: RiskReason | None = None
    detail: str = ""


OrderStatus = Literal["filled", "rejected", "skipped"]


class OrderResult(msgspec.Struct, frozen=True):
    """What became of one order (a step that decides not to trade may return ``skipped``).

    Returned from an order-sending step, it is what storage records for the step (order row and
    fill). ``reason`` is a bounded label fit for a metric (a risk reason, or the step's own for
    ``skipped``); ``detail`` is the human explanation. ``replayed`` marks a retry that found its
    order already filled.
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


@runtime_checkable
class Books(Protocol):
    """A broker's books, read-only: what a step sees as ``ctx.broker``. Sending goes through
    ``ctx.submit_order``, which adds the risk checks."""

    @property
    def default_qty(self) -> float:
        """The order size a step gets when it names none."""
        ...

    def fill_for(self, client_order_id: str) -> Fill | None:
        """The fill of an earlier order with this id, if it is still remembered."""
        ...

    def position(self, symbol: str) -> Position: ...

    def statistics(self, marks: Mapping[str, float] | None = None) -> BrokerStatistics: ...


@runtime_checkable
class Broker(Books, Protocol):
    """What the engine needs of a broker. Orders are idempotent by ``client_order_id``."""

    def submit(
        self, client_order_id: str, symbol: str, side: Side | str, qty: float,
        last_price: float, ts: float,
    ) -> Fill:
        """Execute now, or return the original fill if ``client_order_id`` was seen."""
        ...

    def snapshot(self) -> BrokerBooks:
        """The books now, for storage."""
        ...

    def restore(self, books: BrokerBooks) -> None:
        """Replace the books with stored ones (at start, before any order)."""
        ...


@runtime_checkable
class Risk(Protocol):
    """Pre-trade checks. :meth:`check` decides, :meth:`record` counts an order that was sent."""

    def check(
        self, symbol: str, side: Side | str, qty: float, price: float, broker: Broker
    ) -> RiskDecision: ...

    def record(self, symbol: str) -> None: ...


class _MarketView(Protocol):
    def latest(self, symbol: str) -> Tick | None: ...


class OrderContext(Protocol):
    """The parts of a step context :func:`submit_order` reads (``StepContext`` has them)."""

    @property
    def symbol(self) -> str: ...
    @property
    def step(self) -> str: ...
    @property
    def tick(self) -> Tick: ...
    @property
    def market(self) -> _MarketView: ...
    @property
    def broker(self) -> Broker: ...
    @property
    def risk(self) -> Risk: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def sends_orders(self) -> bool: ...
    @property
    def client_order_id(self) -> str: ...


def submit_order(ctx: OrderContext, side: Side | str, qty: float | None = None) -> OrderResult:
    """Send one market order for the step's symbol through the risk checks to the broker.

    ``qty`` defaults to the broker's ``default_qty``. The order is priced by the broker at the
    market's latest price (the triggering tick's when the market has none). A step sends at most
    one order: a second call in the same step is the same client order id, so it replays the
    first fill (or is a :class:`~engine.core.errors.DuplicateOrderError` if its terms differ).
    """
    if not ctx.sends_orders:
        raise StrategyError(
            f"step {ctx.step!r} sent an order, but its action is not marked @sends_orders: "
            "the engine stores such a run before it starts, which keeps its orders unique "
            "across a restart; mark the action and set preemptible = false"
        )
    try:
        side = Side(side)
    except ValueError:
        raise StrategyError(f"order side must be BUY or SELL, got {side!r}") from None
    broker = ctx.broker
    if qty is None:
        qty = broker.default_qty
    if isinstance(qty, bool) or not isinstance(qty, int | float) or not (
        math.isfinite(qty) and qty > 0.0
    ):
        raise StrategyError(f"order qty must be a positive finite number, got {qty!r}")
    qty = float(qty)
    coid = ctx.client_order_id
    symbol = ctx.symbol

    earlier = broker.fill_for(coid)
    if earlier is not None:
        # A retry: replay on the original terms (what was filled is the truth even if the qty
        # param was reloaded in between); the broker counts it as a duplicate.
        fill = broker.submit(
            coid, earlier.symbol, earlier.side, earlier.qty, earlier.last_price, earlier.ts
        )
        return OrderResult("filled", symbol, coid, fill.side, fill.qty, fill=fill, replayed=True)

    # The order goes out at the market's last price now, which may be newer than the tick
    # that triggered the run.
    latest = ctx.market.latest(symbol)
    last_price = latest.price if latest is not None else ctx.tick.price
    decision = ctx.risk.check(symbol, side, qty, last_price, broker)
    if not decision.allowed:
        return OrderResult(
            "rejected", symbol, coid, side, qty, reason=decision.reason, detail=decision.detail
        )
    fill = broker.submit(coid, symbol, side, qty, last_price, ctx.clock())
    ctx.risk.record(symbol)
    return OrderResult("filled", symbol, coid, side, qty, fill=fill)
