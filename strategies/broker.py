"""Paper broker: fills orders at the last price plus slippage, charges fees, keeps the books.

Accounting model (documented here because P&L conventions differ between desks):

* Buys execute at ``last * (1 + slippage)``, sells at ``last * (1 - slippage)``; the fee is
  ``fee_bps`` of the executed notional and is always paid in cash.
* Positions are signed (short selling is allowed; limits live in :mod:`strategies.risk`) and
  carry an average cost. Reducing a position realises ``closed_qty * (exit - avg_cost)`` for a
  long (the mirror for a short); a fill that flips the sign opens the remainder at the fill price.
* Realised P&L is *gross* of fees; fees are tracked separately, so at any time
  ``cash + sum(qty * mark) == initial_cash + realised + unrealised(mark) - fees``.
* Cash may go negative (a margin account); bounding exposure is the risk manager's job.

Orders are idempotent by ``client_order_id``: the engine retries a step with the same id, and a
retry must get the original fill back instead of trading twice. It implements the engine's
:class:`~engine.core.strategy.Broker` protocol; steps reach it through ``ctx.submit_order``,
which adds the risk checks. It is not thread-safe: orders are sent only from actions that run on
the event loop thread (the loader refuses an order-sending action that would run in a thread).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping

from engine.core.strategy import (
    BrokerBooks,
    BrokerError,
    BrokerStatistics,
    DuplicateOrderError,
    Fill,
    Position,
    Side,
)

__all__ = [
    "BrokerError",
    "BrokerStatistics",
    "DuplicateOrderError",
    "Fill",
    "PaperBroker",
    "Position",
    "Side",
]

_BPS = 1e-4
# A position this close to zero after float arithmetic is flat; leaving 1e-15 shares around
# would keep a stale average cost alive and mis-price the next trade.
_FLAT_EPS = 1e-9


def _positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0.0):
        raise BrokerError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _non_negative(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0.0):
        raise BrokerError(f"{name} must be a non-negative finite number, got {value!r}")
    return float(value)


class PaperBroker:
    """Simulated execution venue with cash, signed positions and P&L (a :class:`Broker`)."""

    def __init__(
        self,
        initial_cash: float = 1_000_000.0,
        slippage_bps: float = 1.0,
        fee_bps: float = 0.5,
        default_qty: float = 10.0,
        *,
        order_memory: int = 100_000,
    ) -> None:
        self.initial_cash = _non_negative("initial_cash", initial_cash)
        self.slippage_bps = _non_negative("slippage_bps", slippage_bps)
        self.fee_bps = _non_negative("fee_bps", fee_bps)
        self.default_qty = _positive("default_qty", default_qty)
        if order_memory < 1:
            raise BrokerError(f"order_memory must be >= 1, got {order_memory}")
        # Retries arrive within seconds; remembering the last N ids bounds memory in a daemon
        # that runs for weeks while keeping every id a retry could still carry.
        self.order_memory = order_memory
        self._cash = self.initial_cash
        self._fees = 0.0
        self._orders = 0
        self._duplicates = 0
        self._fill_count = 0
        self._positions: dict[str, Position] = {}
        self._last_prices: dict[str, float] = {}
        self._fills: OrderedDict[str, Fill] = OrderedDict()

    # -- orders ---------------------------------------------------------------------------------

    def submit(
        self,
        client_order_id: str,
        symbol: str,
        side: Side | str,
        qty: float,
        last_price: float,
        ts: float,
    ) -> Fill:
        """Fill an order now, or return the original fill if ``client_order_id`` was seen.

        ``last_price`` and ``ts`` are market observations, not order terms: a retry may see a newer
        price and must still get its original fill. A reused id with a different symbol, side or
        quantity is a bug in the caller and raises :class:`DuplicateOrderError`.
        """
        if not client_order_id:
            raise BrokerError("client_order_id must be a non-empty string")
        if not symbol:
            raise BrokerError("symbol must be a non-empty string")
        try:
            side = Side(side)
        except ValueError:
            raise BrokerError(f"side must be BUY or SELL, got {side!r}") from None
        qty = _positive("qty", qty)
        last_price = _positive("last_price", last_price)
        if not math.isfinite(ts):
            raise BrokerError(f"ts must be finite, got {ts!r}")

        previous = self._fills.get(client_order_id)
        if previous is not None:
            if (previous.symbol, previous.side, previous.qty) != (symbol, side, qty):
                raise DuplicateOrderError(
                    f"client_order_id {client_order_id!r} was already used for "
                    f"{previous.side} {previous.qty:g} {previous.symbol}, "
                    f"not {side} {qty:g} {symbol}"
                )
            self._orders += 1
            self._duplicates += 1
            return previous
        self._orders += 1

        sign = 1.0 if side is Side.BUY else -1.0
        price = last_price * (1.0 + sign * self.slippage_bps * _BPS)
        notional = qty * price
        fee = notional * self.fee_bps * _BPS
        realized = self._apply(symbol, sign * qty, price)
        self._cash -= sign * notional + fee
        self._fees += fee
        self._last_prices[symbol] = last_price
        fill = Fill(
            client_order_id=client_order_id,
            symbol=symbol,
            side=side,
            qty=qty,
            price=price,
            last_price=last_price,
            notional=notional,
            fee=fee,
            realized_pnl=realized,
            ts=float(ts),
        )
        self._remember(fill)
        self._fill_count += 1
        return fill

    def fill_for(self, client_order_id: str) -> Fill | None:
        """The fill of an earlier order with this id, if it is still remembered."""
        return self._fills.get(client_order_id)

    def _remember(self, fill: Fill) -> None:
        self._fills[fill.client_order_id] = fill
        while len(self._fills) > self.order_memory:
            self._fills.popitem(last=False)

    def _apply(self, symbol: str, delta: float, price: float) -> float:
        """Move the position by signed ``delta`` at ``price``; return the P&L this realises."""
        pos = self._positions.get(symbol) or Position(symbol, 0.0, 0.0, 0.0)
        old = pos.qty
        new = old + delta
        realized = 0.0
        if old == 0.0 or (old > 0.0) == (delta > 0.0):
            # Opening or adding: the average cost is the quantity-weighted entry price.
            avg = (abs(old) * pos.avg_cost + abs(delta) * price) / abs(new)
        else:
            closed = min(abs(delta), abs(old))
            realized = closed * (price - pos.avg_cost) * (1.0 if old > 0.0 else -1.0)
            if abs(new) <= _FLAT_EPS:
                new, avg = 0.0, 0.0
            elif (new > 0.0) == (old > 0.0):
                avg = pos.avg_cost
            else:
                avg = price  # flipped: the remainder is a fresh position opened at this fill
        self._positions[symbol] = Position(symbol, new, avg, pos.realized_pnl + realized)
        return realized

    # -- books ----------------------------------------------------------------------------------

    @property
    def cash(self) -> float:
        return self._cash

    @property
    def fees_paid(self) -> float:
        return self._fees

    @property
    def realized_pnl(self) -> float:
        return math.fsum(p.realized_pnl for p in self._positions.values())

    def position(self, symbol: str) -> Position:
        """The position in ``symbol`` (flat if never traded)."""
        return self._positions.get(symbol) or Position(symbol, 0.0, 0.0, 0.0)

    def positions(self) -> dict[str, Position]:
        return dict(self._positions)

    def _mark(self, symbol: str, marks: Mapping[str, float] | None) -> float:
        # Without a mark for a symbol, its last traded price is the best available estimate.
        if marks is not None and symbol in marks:
            return float(marks[symbol])
        return self._last_prices.get(symbol, self._positions[symbol].avg_cost)

    def unrealized_pnl(self, marks: Mapping[str, float] | None = None) -> float:
        """Open P&L marked to ``marks`` (symbol -> price); unmarked symbols use their last price."""
        return math.fsum(
            p.qty * (self._mark(s, marks) - p.avg_cost)
            for s, p in self._positions.items()
            if p.qty != 0.0
        )

    def equity(self, marks: Mapping[str, float] | None = None) -> float:
        """Cash plus the marked value of every position."""
        return self._cash + math.fsum(
            p.qty * self._mark(s, marks) for s, p in self._positions.items() if p.qty != 0.0
        )

    def statistics(self, marks: Mapping[str, float] | None = None) -> BrokerStatistics:
        return BrokerStatistics(
            cash=self._cash,
            positions=tuple(self._positions[s] for s in sorted(self._positions)),
            realized_pnl=self.realized_pnl,
            unrealized_pnl=self.unrealized_pnl(marks),
            fees_paid=self._fees,
            equity=self.equity(marks),
            orders=self._orders,
            fills=self._fill_count,
            duplicates=self._duplicates,
        )

    # -- persistence ---------------------------------------------------------------------------

    def snapshot(self) -> BrokerBooks:
        """The books now (cash, counts, positions, last prices, remembered fills)."""
        return BrokerBooks(
            cash=self._cash,
            fees_paid=self._fees,
            orders=self._orders,
            fill_count=self._fill_count,
            duplicates=self._duplicates,
            positions=tuple(self._positions[s] for s in sorted(self._positions)),
            last_prices=dict(self._last_prices),
            fills=tuple(self._fills.values()),
        )

    def restore(self, books: BrokerBooks) -> None:
        """Replace the books with ``books`` (from :meth:`snapshot` or storage); remembered order
        ids stay idempotent. The terms (fees, slippage, sizes) stay this broker's own."""
        if not isinstance(books, BrokerBooks):
            raise BrokerError(f"invalid broker books: expected BrokerBooks, got {books!r}")
        numbers = [books.cash, books.fees_paid, *books.last_prices.values()]
        numbers += [x for p in books.positions for x in (p.qty, p.avg_cost, p.realized_pnl)]
        if not all(math.isfinite(x) for x in numbers):
            raise BrokerError(
                "invalid broker books: cash, fees, prices and positions must be finite"
            )
        if min(books.orders, books.fill_count, books.duplicates) < 0:
            raise BrokerError("invalid broker books: order counts must be >= 0")
        self._cash = books.cash
        self._fees = books.fees_paid
        self._orders = books.orders
        self._fill_count = books.fill_count
        self._duplicates = books.duplicates
        self._positions = {p.symbol: p for p in books.positions}
        self._last_prices = dict(books.last_prices)
        self._fills = OrderedDict()
        for fill in books.fills:
            self._remember(fill)
