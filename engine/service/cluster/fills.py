"""The broker of a cluster node, seen through the order registry: what makes a replayed order
fill once.

A partition's owner fills orders with the configured broker (the paper broker) as any daemon
does; this wrapper adds two things around it:

* every **fresh fill** (not a replay of a fill the broker already had) is kept per partition
  until that partition's next checkpoint takes it (:meth:`take_fresh`): the checkpoint first
  registers each in the :class:`~.orders.OrderRegistry`, and only then writes the state that
  contains it;
* **winners known in advance** (:meth:`learn`): a new owner replaying events the previous one
  may have applied looks up, before applying each, the client order ids its runs would use;
  ``fill_for`` then answers with the registered fill, so the engine's order path replays it on
  its original terms (:func:`engine.core.orders.submit_order`: symbol, side, qty, last price
  and time of the original) instead of trading again. The paper broker prices a fill from
  exactly those terms, so the replay reproduces the original fill and the books match.

Why register at the checkpoint, after the paper fill, instead of before it: the paper broker's
fill lives only in this process until a checkpoint makes it durable, and ``Broker.submit`` is
synchronous (a step cannot await the registry in the middle of it). A checkpoint that finds a
fill of its own lost the registration to a *different* fill (a stale owner registered first)
does not write: the node restarts the partition from its last checkpoint, now knowing the
winner (docs/cluster.md). A **live broker** sends the order to the outside world at
``submit``: there the registration has to come first, awaited before the send, which needs an
asynchronous order path; this wrapper is the paper broker's answer only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import msgspec

from engine.core.orders import Broker, BrokerBooks, BrokerStatistics, Fill, Position, Side

from .partition import partition_of

__all__ = ["RegisteredBroker", "decode_fill", "encode_fill"]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Fill).decode


def encode_fill(fill: Fill) -> bytes:
    return _encode(fill)


def decode_fill(data: bytes) -> Fill:
    return _decode(data)


class RegisteredBroker:
    """A :class:`~engine.core.orders.Broker` around ``inner`` (see the module doc)."""

    def __init__(self, inner: Broker, partitions: int) -> None:
        self.inner = inner
        self.partitions = partitions
        self._fresh: defaultdict[int, list[Fill]] = defaultdict(list)
        self._known: dict[str, Fill] = {}

    def __getattr__(self, name: str) -> Any:
        # The paper broker's extras (cash, fees_paid, ...) that metrics and status read.
        return getattr(self.inner, name)

    # -- the registry's side --------------------------------------------------------------

    def take_fresh(self, partition: int) -> list[Fill]:
        """The fills made for ``partition`` since the last call (its checkpoint takes them)."""
        return self._fresh.pop(partition, [])

    def put_back(self, partition: int, fills: list[Fill]) -> None:
        """A checkpoint that failed before registering ``fills``: the next one takes them."""
        self._fresh[partition][:0] = fills

    def drop(self, partition: int) -> None:
        """Forget what ``partition`` filled and learned (it left this node)."""
        self._fresh.pop(partition, None)
        for coid in [c for c, f in self._known.items()
                     if partition_of(f.symbol, self.partitions) == partition]:
            del self._known[coid]

    def learn(self, fill: Fill) -> None:
        """``fill`` is the registered fill of its client order id: replay it, never trade."""
        self._known[fill.client_order_id] = fill

    # -- Broker -------------------------------------------------------------------------------

    @property
    def default_qty(self) -> float:
        return self.inner.default_qty

    def fill_for(self, client_order_id: str) -> Fill | None:
        fill = self.inner.fill_for(client_order_id)
        if fill is None:
            fill = self._known.get(client_order_id)
        return fill

    def position(self, symbol: str) -> Position:
        return self.inner.position(symbol)

    def statistics(self, marks: Mapping[str, float] | None = None) -> BrokerStatistics:
        return self.inner.statistics(marks)

    def submit(
        self, client_order_id: str, symbol: str, side: Side | str, qty: float,
        last_price: float, ts: float,
    ) -> Fill:
        seen = self.inner.fill_for(client_order_id) is not None
        fill = self.inner.submit(client_order_id, symbol, side, qty, last_price, ts)
        if not seen:
            self._fresh[partition_of(symbol, self.partitions)].append(fill)
        return fill

    def snapshot(self) -> BrokerBooks:
        return self.inner.snapshot()

    def restore(self, books: BrokerBooks) -> None:
        self.inner.restore(books)
