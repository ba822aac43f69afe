"""A partition's share of the broker's books, as pure functions over
:class:`~engine.core.orders.BrokerBooks`, and the ledger that keeps each symbol's cash and fees.

A node's broker keeps one account for every partition the node owns. When a partition moves,
its symbols' part of that account moves with it (:func:`shares_of`, :func:`without` on the
node that gives it up, :func:`merged` on the one that takes it): their positions and last
prices, some of their fills (whose client order ids keep an order re-sent on the new owner
idempotent), and their *cash flow* -- the cash and fees their fills moved since ever -- so that
the books of N nodes, each started from the same initial cash, add up to one account:
``cash = initial + sum of every symbol's cash flow``.

The broker remembers only its recent fills (``order_memory``), so a symbol's cash flow cannot
be summed from the fills it still holds once a daemon has run a while. :class:`BookLedger`
keeps it instead: it reads the fills made since it last looked (every snapshot, restore and
evict) and adds each one to its symbol's running totals, and it refuses clearly when the
broker forgot fills it never saw."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping

import msgspec

from engine.core.orders import BrokerBooks, Fill, Position, Side

from .errors import CheckpointError

__all__ = ["BookLedger", "Flow", "PartOf", "SymbolBooks", "merged", "shares_of", "without"]

PartOf = Callable[[str], int]  # a symbol's partition


class SymbolBooks(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One symbol's part of the account."""

    symbol: str
    position: Position | None  # None: never traded (a last price alone, say)
    last_price: float | None
    cash_flow: float  # the cash its fills moved: -(+-notional + fee) summed, since ever
    fees: float  # the fees its fills paid, since ever (part of cash_flow too)
    fill_count: int  # its executions, since ever
    fills: tuple[Fill, ...]  # the fills carried (see shares_of), oldest first


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
    broker forgets old fills. Read the broker with :meth:`catch_up` before using the totals.

    The broker keeps its fills oldest first (:class:`~engine.core.orders.BrokerBooks`), so the
    fills made since the last read are the last ``fill_count - <count then>`` of them: a read
    costs the fills made since, not the fills remembered."""

    def __init__(self, books: BrokerBooks) -> None:
        if books.fill_count != len(books.fills):
            raise CheckpointError(
                f"the broker made {books.fill_count} fills and remembers {len(books.fills)}: "
                "the cash of the forgotten ones cannot be given to their partitions (cluster "
                "mode needs a broker whose books began with it: no restored SQLite books)"
            )
        self.flows: dict[str, Flow] = {}
        self._fill_count = 0
        self._newest: str | None = None  # the client order id of the newest fill read
        self.catch_up(books)

    def catch_up(self, books: BrokerBooks) -> None:
        """Add the fills made since the last call to their symbols' totals."""
        executed = books.fill_count - self._fill_count
        if executed == 0:
            return
        fills = books.fills
        kept = len(fills)
        if executed < 0 or executed > kept:
            raise CheckpointError(
                f"the broker made {executed} fills since its books were last read and "
                f"remembers {kept} fills in all: raise broker order_memory above the fills "
                "made between two checkpoints (the forgotten fills' cash has no partition)"
            )
        if executed < kept and fills[kept - executed - 1].client_order_id != self._newest:
            raise CheckpointError(
                "the broker's fills changed other than by new fills since its books were last "
                "read (restored from elsewhere?): their cash cannot be given to partitions"
            )
        flows = self.flows
        for fill in fills[kept - executed:]:
            flow = flows.get(fill.symbol)
            if flow is None:
                flow = flows[fill.symbol] = Flow()
            flow.add(fill)
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
        self._fill_count = books.fill_count
        self._newest = books.fills[-1].client_order_id if books.fills else None


def shares_of(
    books: BrokerBooks,
    part_of: PartOf,
    wanted: Collection[int],
    flows: Mapping[str, Flow],
    *,
    recent: int | None = None,
    pinned: Iterable[Fill] = (),
) -> dict[int, tuple[SymbolBooks, ...]]:
    """The books of each partition in ``wanted``, by symbol (``flows``: the ledger's, caught
    up with ``books``). ``recent``: how many of a partition's newest fills to carry (None:
    all it remembers); ``pinned`` fills are carried whatever their age (those of runs in
    flight, which the new owner runs again under the same client order ids)."""
    by_part: dict[int, dict[str, _Share]] = {p: {} for p in wanted}

    def share(symbol: str) -> _Share | None:
        group = by_part.get(part_of(symbol))
        if group is None:
            return None
        found = group.get(symbol)
        if found is None:
            found = group[symbol] = _Share()
        return found

    for position in books.positions:
        if (target := share(position.symbol)) is not None:
            target.position = position
    for symbol, price in books.last_prices.items():
        if (target := share(symbol)) is not None:
            target.last_price = price
    for symbol in flows:
        share(symbol)
    carried: set[str] = set()
    for fill in pinned:
        if (target := share(fill.symbol)) is not None:
            target.fills.append(fill)
            carried.add(fill.client_order_id)
    # Newest first, so that carrying the newest few stops long before the oldest fill.
    room = {p: (math.inf if recent is None else recent) for p in wanted}
    open_parts = sum(1 for n in room.values() if n > 0)
    for fill in reversed(books.fills):
        if not open_parts:
            break
        p = part_of(fill.symbol)
        left = room.get(p)
        if not left or fill.client_order_id in carried:
            continue
        room[p] = left - 1
        if left == 1:
            open_parts -= 1
        by_part[p][fill.symbol] = found = by_part[p].get(fill.symbol) or _Share()
        found.recent.append(fill)
    result = {}
    for p, group in by_part.items():
        made = []
        for symbol in sorted(group):
            got = group[symbol]
            flow = flows.get(symbol) or Flow()
            made.append(SymbolBooks(
                symbol=symbol, position=got.position, last_price=got.last_price,
                cash_flow=flow.cash, fees=flow.fees, fill_count=flow.count,
                fills=tuple(sorted((*got.fills, *reversed(got.recent)), key=_fill_ts)),
            ))
        result[p] = tuple(made)
    return result


class _Share:
    __slots__ = ("fills", "last_price", "position", "recent")

    def __init__(self) -> None:
        self.position: Position | None = None
        self.last_price: float | None = None
        self.fills: list[Fill] = []  # pinned
        self.recent: list[Fill] = []  # newest first


def without(
    books: BrokerBooks, gone: Callable[[str], bool], shares: Iterable[SymbolBooks]
) -> BrokerBooks:
    """``books`` with the symbols ``gone`` accepts taken out, ``shares`` (their
    :func:`shares_of`) subtracted from the account."""
    shares = tuple(shares)
    count = sum(s.fill_count for s in shares)
    return BrokerBooks(
        cash=books.cash - math.fsum(s.cash_flow for s in shares),
        fees_paid=books.fees_paid - math.fsum(s.fees for s in shares),
        # A share's executions were counted as orders too (orders = fills + duplicates).
        orders=max(0, books.orders - count),
        fill_count=max(0, books.fill_count - count),
        duplicates=books.duplicates,
        positions=tuple(p for p in books.positions if not gone(p.symbol)),
        last_prices={s: x for s, x in books.last_prices.items() if not gone(s)},
        fills=tuple(f for f in books.fills if not gone(f.symbol)),
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
    # After the fills held: the broker's memory bound forgets its oldest first, and the
    # carried fills are the ones a new owner needs (its runs in flight, the newest).
    fills = (*books.fills, *(f for s in shares for f in s.fills))
    return BrokerBooks(
        cash=books.cash + math.fsum(s.cash_flow for s in shares),
        fees_paid=books.fees_paid + math.fsum(s.fees for s in shares),
        orders=books.orders + count,
        fill_count=books.fill_count + count,
        duplicates=books.duplicates,
        positions=tuple(sorted(positions, key=_position_symbol)),
        last_prices=prices,
        fills=fills,
    )


def _fill_ts(fill: Fill) -> float:
    return fill.ts


def _position_symbol(position: Position) -> str:
    return position.symbol
