"""Event types that flow from sources through intake to the router.

Events are frozen msgspec structs: cheap to build on the hot path, and the same definitions
drive JSON decoding and validation in :mod:`engine.intake`.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

__all__ = [
    "DATA_READY",
    "HIGH_PRIORITY_ARRIVED",
    "DataReady",
    "Event",
    "HighPriorityArrived",
    "Tick",
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
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
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
    priority: NonNegInt | None = None

    def tick(self) -> Tick:
        return Tick(self.symbol, self.ts, self.price, self.volume, self.bid, self.ask)


class HighPriorityArrived(
    msgspec.Struct, frozen=True, tag_field="type", tag=HIGH_PRIORITY_ARRIVED, gc=False
):
    """Re-prioritise ``symbol``: its pending heap entries are re-keyed at once."""

    symbol: Symbol
    priority: NonNegInt


Event = DataReady | HighPriorityArrived
