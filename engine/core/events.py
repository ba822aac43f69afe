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

# No control characters: a symbol is a name people read, and storage's JSON batches end a string
# at a NUL (two names differing only after one would collide).
Symbol = Annotated[
    str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[^\x00-\x1f\x7f]+$")
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
