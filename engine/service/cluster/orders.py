"""The order-id registry: exactly one fill per client order id across the whole cluster.

Run ids, and so client order ids (``workflow:run_id:step``), derive from (partition, stream
sequence): a node that takes a partition over and replays from the last checkpoint re-derives
the very ids the previous owner may already have sent. Before an order goes to the broker its
id is registered here; only the first registrant ever wins, and every later one -- a replay
on the new owner, a stale owner that was paused -- gets the winner's fill back and reports it
instead of trading again.

The bucket has no TTL and its keys are **never deleted**. A KV ``create`` succeeds again on a
deleted key (it writes over the delete marker), so a delete would let an order id fill a
second time. :meth:`OrderRegistry.register` goes further than ``create``: it writes with
"expected last subject sequence 0", which a delete marker also fails, and a registry key found
deleted is an error, not a free slot.

A value is ``<attempt>\\n<fill>``: the attempt id (the registrant and a per-call nonce) lets a
registrant whose ``create`` timed out find out whether it landed (same attempt id: it won),
while a second call for the same id -- a replay on the same node -- is a different attempt and
loses to the first, as it must.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, NamedTuple

from .buckets import escape_key
from .cluster_metrics import ClusterStats
from .errors import ClusterError

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

__all__ = ["OrderRegistry", "Registration", "order_key"]

log = logging.getLogger("tickflow.cluster.orders")


def order_key(order_id: str) -> str:
    """The registry key of ``order_id`` (escaped: client order ids contain ``:``)."""
    return escape_key(order_id)


class Registration(NamedTuple):
    won: bool  # this call registered the id first: send the order
    fill: bytes  # the winner's fill: ours when won, the original one otherwise
    attempt: str  # which registration won
    revision: int


class OrderRegistry:
    """Register client order ids in the registry bucket (``<stream>_orders``)."""

    def __init__(
        self, kv: KeyValue, *, registrant: str, stats: ClusterStats | None = None,
        attempts: int = 3,
    ) -> None:
        if "\n" in registrant:
            raise ValueError("a registrant name must be one line")
        self.kv = kv
        self.registrant = registrant
        self.stats = stats or ClusterStats()
        self.attempts = attempts

    async def register(self, order_id: str, fill: bytes) -> Registration:
        """``Registration(won, original_fill, ...)``: ``won`` for exactly one call per
        ``order_id`` ever, cluster-wide; every other call gets that winner's ``fill``."""
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.errors import KeyWrongLastSequenceError

        key = order_key(order_id)
        attempt = f"{self.registrant}/{uuid.uuid4().hex[:16]}"
        value = attempt.encode() + b"\n" + fill
        for _ in range(self.attempts):
            try:
                revision = await self.kv.update(key, value, last=0)
            except KeyWrongLastSequenceError:
                break  # registered already (perhaps by our own timed-out try): read it
            except (NatsTimeout, TimeoutError) as exc:
                # the write may have landed: a retry fails then, and the read tells
                log.warning("order %r: registration timed out (%s); retrying", order_id, exc)
                continue
            self.stats.orders_registered += 1
            return Registration(True, fill, attempt, revision)
        found = await self.lookup(order_id)
        if found is None:
            raise ClusterError(
                f"order {order_id!r}: could not register it in {self.attempts} attempts and "
                "it is not registered: the registry is not answering"
            )
        if found.attempt == attempt:  # our timed-out write did land
            self.stats.orders_registered += 1
            return found._replace(won=True)
        self.stats.orders_duplicate += 1
        log.info("order %r was registered before (%s): reporting its original fill",
                 order_id, found.attempt)
        return found

    async def lookup(self, order_id: str) -> Registration | None:
        """The registration of ``order_id`` (``won`` False: it is a record, not a win); None
        when it was never registered; :class:`ClusterError` when its key was deleted."""
        from nats.js.errors import KeyDeletedError, KeyNotFoundError

        key = order_key(order_id)
        try:
            entry = await self.kv._get(key)  # _get: tells a deleted key from a missing one
        except KeyNotFoundError:
            return None
        except KeyDeletedError as exc:
            raise ClusterError(
                f"order {order_id!r}: its registry key was deleted (revision "
                f"{exc.entry.revision if exc.entry else '?'}); registry keys must never be "
                "deleted, so whether it filled is unknown: refusing to register it again"
            ) from exc
        attempt, sep, fill = (entry.value or b"").partition(b"\n")
        if not sep:
            raise ClusterError(f"order {order_id!r}: registry value is not <attempt>\\n<fill>")
        return Registration(False, fill, attempt.decode(errors="replace"), entry.revision or 0)
