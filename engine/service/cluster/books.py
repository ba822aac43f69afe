"""A partition's share of the broker's books, as pure functions over
:class:`~engine.core.orders.BrokerBooks`, and the ledger that keeps each symbol's cash and fees.

A node's broker keeps one account for every partition the node owns. When a partition moves,
the symbols' part of that account moves with it: their positions, last prices and remembered
fills (whose client order ids keep a replayed order idempotent on the new owner), and their
*cash flow* -- the cash and fees their fills moved -- so that the books of N nodes, each started
from the same initial cash, add up to one account: ``cash = initial + sum of every
partition's cash flow``.

The broker only remembers its recent fills (``order_memory``), so a symbol's cash flow cannot
be summed from the fills it still holds once a daemon has run a while. :class:`BookLedger`
keeps it instead: it reads the fills made since it last looked (every snapshot, restore and
evict) and adds each one to its symbol's running totals, and it refuses clearly when the
broker forgot fills it never saw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import msgspec

from engine.core.orders import BrokerBooks, Fill, Position, Side

from .errors import CheckpointError

__all__ = ["BookLedger", "Flow", "SymbolBooks", "merged", "share_of", "without"]

InPartition = Callable[[str], bool]


class SymbolBooks(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One symbol's part of the account."""

    symbol: str
    position: Position | None  # None: never traded (a last price alone, say)
    last_price: float | None
    cash_flow: float  # the cash its fills moved: -(+-notional + fee) summed, since ever
    fees: float  # the fees its fills paid, since ever (part of cash_flow too)
    fill_count: int  # its executions, since ever
    fills: tuple[Fill, ...]  # the fills the broker still remembers, oldest first


class Flow:
    """A symbol's running totals in the ledger."""

    __slots__ = ("cash", "count", "fees")

    def __init__(self, cash: float = 0.0, fees: float = 0.0, count: int = 0) -> None:
        self.cash = cash
        self.fees = fees
        self.count = count

    def add(self, fill: Fill) -> None:
        sign = 1.0 if fill.side is Side.BUY else -1.0
        # The paper broker's model (strategies/broker.py): the fee is always paid in cash.
        self.cash -= sign * fill.notional + fill.fee
        self.fees += fill.fee
        self.count += 1


class BookLedger:
    """Each symbol's cash flow, fees and executions since its books began, exact although the
    broker forgets old fills. Read the broker with :meth:`catch_up` before using the totals."""

    def __init__(self, books: BrokerBooks) -> None:
        if books.fill_count != len(books.fills):
            raise CheckpointError(
                f"the broker made {books.fill_count} fills and remembers {len(books.fills)}: "
                "the cash of the forgotten ones cannot be given to their partitions (cluster "
                "mode needs a broker whose books began with it: no restored SQLite books)"
            )
        self.flows: dict[str, Flow] = {}
        self._seen: set[str] = set()
        self._fill_count = 0
        self.catch_up(books)

    def catch_up(self, books: BrokerBooks) -> None:
        """Add the fills made since the last call to their symbols' totals."""
        executed = books.fill_count - self._fill_count
        if executed == 0:
            return  # nothing filled since: the remembered fills are all seen (or forgotten)
        seen = self._seen
        flows = self.flows
        new = 0
        for fill in books.fills:
            if fill.client_order_id not in seen:
                flow = flows.get(fill.symbol)
                if flow is None:
                    flow = flows[fill.symbol] = Flow()
                flow.add(fill)
                new += 1
        if new != executed:
            raise CheckpointError(
                f"the broker made {executed} fills since its books were last read and "
                f"remembers {new} of them: raise broker order_memory above the fills made "
                "between two checkpoints (the forgotten fills' cash has no partition)"
            )
        self._reset(books)

    def absorb(self, shares: Iterable[SymbolBooks], books: BrokerBooks) -> None:
        """``shares`` were merged into the broker, whose books are now ``books``."""
        for share in shares:
            self.flows[share.symbol] = Flow(share.cash_flow, share.fees, share.fill_count)
        self._reset(books)

    def drop(self, symbols: Iterable[str], books: BrokerBooks) -> None:
        """``symbols`` left the broker, whose books are now ``books``."""
        for symbol in symbols:
            self.flows.pop(symbol, None)
        self._reset(books)

    def _reset(self, books: BrokerBooks) -> None:
        # Only the remembered ids can be met again: a forgotten fill never comes back.
        self._seen = {f.client_order_id for f in books.fills}
        self._fill_count = books.fill_count


def share_of(
    books: BrokerBooks, in_partition: InPartition, flows: dict[str, Flow]
) -> tuple[SymbolBooks, ...]:
    """The books of the symbols ``in_partition`` accepts, by symbol (``flows``: the ledger's,
    caught up with ``books``)."""
    positions = {p.symbol: p for p in books.positions if in_partition(p.symbol)}
    prices = {s: x for s, x in books.last_prices.items() if in_partition(s)}
    fills: dict[str, list[Fill]] = {}
    for fill in books.fills:
        if in_partition(fill.symbol):
            fills.setdefault(fill.symbol, []).append(fill)
    names = set(positions) | set(prices) | set(fills)
    names.update(s for s in flows if in_partition(s))
    shares = []
    for name in sorted(names):
        flow = flows.get(name) or Flow()
        shares.append(SymbolBooks(
            symbol=name, position=positions.get(name), last_price=prices.get(name),
            cash_flow=flow.cash, fees=flow.fees, fill_count=flow.count,
            fills=tuple(fills.get(name, ())),
        ))
    return tuple(shares)


def without(
    books: BrokerBooks, in_partition: InPartition, shares: Iterable[SymbolBooks]
) -> BrokerBooks:
    """``books`` with the symbols ``in_partition`` accepts taken out, ``shares`` (their
    :func:`share_of`) subtracted from the account."""
    shares = tuple(shares)
    count = sum(s.fill_count for s in shares)
    return BrokerBooks(
        cash=books.cash - math.fsum(s.cash_flow for s in shares),
        fees_paid=books.fees_paid - math.fsum(s.fees for s in shares),
        # A share's executions were counted as orders too (orders = fills + duplicates).
        orders=max(0, books.orders - count),
        fill_count=max(0, books.fill_count - count),
        duplicates=books.duplicates,
        positions=tuple(p for p in books.positions if not in_partition(p.symbol)),
        last_prices={s: x for s, x in books.last_prices.items() if not in_partition(s)},
        fills=tuple(f for f in books.fills if not in_partition(f.symbol)),
    )


def merged(books: BrokerBooks, shares: Iterable[SymbolBooks]) -> BrokerBooks:
    """``books`` with ``shares`` added; :class:`CheckpointError` when ``books`` already holds
    one of their symbols or one of their client order ids (nothing is merged then)."""
    shares = tuple(shares)
    names = {s.symbol for s in shares}
    held = sorted(
        {p.symbol for p in books.positions} | set(books.last_prices)
        | {f.symbol for f in books.fills}
    )
    clash = [s for s in held if s in names]
    if clash:
        raise CheckpointError(
            f"the broker already holds books of {', '.join(clash)}: evict the partition "
            "before restoring it (its books would count twice)"
        )
    ids = {f.client_order_id for f in books.fills}
    reused = sorted(f.client_order_id for s in shares for f in s.fills if f.client_order_id in ids)
    if reused:
        raise CheckpointError(
            f"client order id(s) {', '.join(reused[:5])} already filled here for other "
            "symbols: run ids must be unique across the cluster"
        )
    count = sum(s.fill_count for s in shares)
    positions = list(books.positions) + [s.position for s in shares if s.position is not None]
    prices = dict(books.last_prices)
    prices.update({s.symbol: s.last_price for s in shares if s.last_price is not None})
    # Oldest first, as the broker keeps them, so that its memory bound forgets the oldest.
    fills = sorted((*books.fills, *(f for s in shares for f in s.fills)), key=_fill_ts)
    return BrokerBooks(
        cash=books.cash + math.fsum(s.cash_flow for s in shares),
        fees_paid=books.fees_paid + math.fsum(s.fees for s in shares),
        orders=books.orders + count,
        fill_count=books.fill_count + count,
        duplicates=books.duplicates,
        positions=tuple(sorted(positions, key=_position_symbol)),
        last_prices=prices,
        fills=tuple(fills),
    )


def _fill_ts(fill: Fill) -> float:
    return fill.ts


def _position_symbol(position: Position) -> str:
    return position.symbol
