"""Event types that flow from sources through intake to the router, and their one table.

Events are frozen msgspec structs: cheap to build on the hot path, and the same definitions
drive JSON decoding and validation in :mod:`engine.intake`. :data:`EVENT_KINDS` is the one
place an event type is declared: its wire tag, its struct, the cross-field rule its annotations
cannot express, and the :class:`~engine.core.coordinator.Coordinator` method that applies it.
The intake, the engine, the journal and the metrics read this table; adding an event type is a
struct and a row here plus its handler on the coordinator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final, NamedTuple

import msgspec

__all__ = [
    "DATA_READY",
    "EVENT_KINDS",
    "HIGH_PRIORITY_ARRIVED",
    "KIND_OF",
    "MAX_PRIORITY",
    "DataReady",
    "Event",
    "EventKind",
    "HighPriorityArrived",
    "Tick",
    "bid_above_ask",
]

DATA_READY = "DATA_READY"
HIGH_PRIORITY_ARRIVED = "HIGH_PRIORITY_ARRIVED"

# The symbol alphabet: 1 to SYMBOL_MAX_LENGTH printable ASCII characters, no spaces ("AAPL",
# "BRK.B", "ES=F", "^GSPC", "EUR/USD"). A symbol is a name people read and compare: anything
# invisible or look-alike (U+200B in "AA\u200bPL", U+202E, a BOM, fullwidth letters) or that a
# terminal interprets (C0/C1 controls, U+009B starts an escape sequence) is refused, and storage's
# JSON batches end a string at a NUL.
SYMBOL_PATTERN = r"^[!-~]+$"
SYMBOL_MAX_LENGTH = 32
SYMBOL_RULE = f"1-{SYMBOL_MAX_LENGTH} printable ASCII characters without spaces"
Symbol = Annotated[
    str, msgspec.Meta(min_length=1, max_length=SYMBOL_MAX_LENGTH, pattern=SYMBOL_PATTERN)
]
# The fastpath heap's key range: a priority the heap would refuse is refused by decoding, as a
# counted rejection, instead of failing deep inside the dispatcher.
MAX_PRIORITY: Final = 2**63 - 1
Priority = Annotated[int, msgspec.Meta(ge=0, le=MAX_PRIORITY)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0.0)]
PositivePrice = Annotated[float, msgspec.Meta(gt=0.0)]


class Tick(msgspec.Struct, frozen=True, gc=False):
    """One market-data observation for a symbol (the payload of ``DATA_READY``)."""

    symbol: str
    ts: float
    price: float
    volume: float = 0.0
    bid: float | None = None
    ask: float | None = None


class DataReady(msgspec.Struct, frozen=True, tag_field="type", tag=DATA_READY, gc=False):
    """New market data for ``symbol``: triggers the workflows routed to it."""

    symbol: Symbol
    ts: NonNegFloat
    price: PositivePrice
    volume: NonNegFloat = 0.0
    bid: PositivePrice | None = None
    ask: PositivePrice | None = None
    priority: Priority | None = None

    def tick(self) -> Tick:
        return Tick(self.symbol, self.ts, self.price, self.volume, self.bid, self.ask)


class HighPriorityArrived(
    msgspec.Struct, frozen=True, tag_field="type", tag=HIGH_PRIORITY_ARRIVED, gc=False
):
    """Re-prioritise ``symbol``: its pending heap entries are re-keyed at once."""

    symbol: Symbol
    priority: Priority


Event = DataReady | HighPriorityArrived


def bid_above_ask(bid: float | None, ask: float | None) -> str | None:
    """The quote rule (a crossed book is refused): the problem, or None."""
    if bid is not None and ask is not None and bid > ask:
        return f"bid {bid!r} above ask {ask!r}"
    return None


def _data_ready_problem(event: DataReady) -> str | None:
    return bid_above_ask(event.bid, event.ask)


def _no_problem(event: Any) -> str | None:
    return None


class EventKind(NamedTuple):
    """One event type: what the intake, the engine, the journal and the metrics know of it."""

    tag: str
    struct: type[Any]
    # The cross-field rule the struct's annotations cannot express: the problem, or None.
    problem: Callable[[Any], str | None]
    # The Coordinator method that applies an accepted event:
    # ``handler(event, received_at, default_priority)``.
    handler: str

    @property
    def required(self) -> frozenset[str]:
        """The fields an object must carry (those without a default), ``type`` aside."""
        return frozenset(f.name for f in msgspec.structs.fields(self.struct) if f.required)


EVENT_KINDS: Final[dict[str, EventKind]] = {
    DATA_READY: EventKind(DATA_READY, DataReady, _data_ready_problem, "accept_data"),
    HIGH_PRIORITY_ARRIVED: EventKind(
        HIGH_PRIORITY_ARRIVED, HighPriorityArrived, _no_problem, "accept_priority"
    ),
}
KIND_OF: Final[dict[type[Any], EventKind]] = {k.struct: k for k in EVENT_KINDS.values()}
