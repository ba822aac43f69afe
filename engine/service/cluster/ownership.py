"""The ownership loop of one node: heartbeat, compute the assignment, hold exactly the
leases it says are ours.

Every ``poll_s`` the node lists the live members, computes :func:`~.assign.assign` over them
(every node computes the same thing from the same set) and then

1. **gives up first**: for each held partition no longer assigned to it, the listener's
   ``releasing`` runs (stop consuming, write the last checkpoint while still holding the
   lease), then the lease is deleted at its revision;
2. **acquires second**: for each assigned partition it does not hold, one ``create``; it
   fails while the previous owner still holds the key (it has not seen the new member yet,
   or it died and its lease has not expired), and is retried at the next poll -- that poll is
   how standbys notice an expired lease, since 2.9 emits no event for it.

Two owners at once are impossible by construction: the only way to own is a successful
``create``, which the server grants only while the key is absent (never written, deleted by a
graceful release, or expired ``ttl`` after the last renewal), and a holder's local belief ends
a margin *before* that expiry (:mod:`.lease`). Views of the live set may differ between nodes
for a poll or two; that only delays a move, it cannot double an owner.

A node that dies loses its partitions to the others within ``ttl`` (its lease and its
heartbeat expire) plus one poll: ``poll_s`` defaults to ``min(ttl / 5, 1 s)``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from .assign import assign, owned_by
from .cluster_metrics import ClusterStats
from .errors import ClusterError
from .lease import HeldLease, LeaseTable
from .membership import Membership, list_members

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

__all__ = ["NullListener", "Ownership", "OwnershipListener", "default_node_name"]

log = logging.getLogger("tickflow.cluster.ownership")


def default_node_name() -> str:
    """``<hostname>:<pid>``, what an empty ``[cluster] node`` means."""
    return f"{socket.gethostname()}:{os.getpid()}"


class OwnershipListener(Protocol):
    """What the data plane plugs in: it starts work for a partition on ``acquired`` (binding
    its tasks to the lease, so a loss cancels them) and finishes it on ``releasing``."""

    async def acquired(self, lease: HeldLease) -> None: ...

    async def releasing(self, lease: HeldLease) -> None: ...


class NullListener:
    async def acquired(self, lease: HeldLease) -> None:
        return None

    async def releasing(self, lease: HeldLease) -> None:
        return None


class Ownership:
    """One node's control plane over the lease and membership buckets."""

    def __init__(
        self,
        lease_kv: KeyValue,
        members_kv: KeyValue,
        *,
        node: str,
        partitions: int,
        ttl_s: float,
        listener: OwnershipListener | None = None,
        stats: ClusterStats | None = None,
        instance: str | None = None,
        poll_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        self.node = node or default_node_name()
        self.partitions = partitions
        self.ttl_s = ttl_s
        self.poll_s = min(ttl_s / 5, 1.0) if poll_s is None else poll_s
        self.listener: OwnershipListener = listener or NullListener()
        self.stats = stats or ClusterStats()
        self.instance = instance or uuid.uuid4().hex[:12]
        self.leases = LeaseTable(lease_kv, node=self.node, instance=self.instance, ttl_s=ttl_s,
                                 stats=self.stats, clock=clock, wall=wall)
        self.membership = Membership(members_kv, node=self.node, instance=self.instance,
                                     ttl_s=ttl_s, stats=self.stats, clock=clock, wall=wall)
        self.assignment: dict[int, str] = {}
        self.live: frozenset[str] = frozenset()
        self.steps = 0
        self._waited: set[int] = set()  # found held by someone else: the next win is a takeover
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.failed: BaseException | None = None

    @property
    def owned(self) -> dict[int, HeldLease]:
        return {p: lease for p, lease in self.leases.held.items() if lease.held}

    async def start(self) -> None:
        """Join (waiting out a stale heartbeat under our name), take a first step, then keep
        heartbeating and stepping in the background until :meth:`close`."""
        await self.membership.join()
        await self.step()
        self._tasks = [
            asyncio.create_task(self._guarded(self.membership.run()), name="cluster-heartbeat"),
            asyncio.create_task(self._guarded(self._loop()), name="cluster-ownership"),
        ]

    async def _guarded(self, body: Coroutine[Any, Any, None]) -> None:
        try:
            await body
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # the node cannot go on as a member: its leases end here, the others take over
            self.failed = exc
            log.error("cluster control plane stopped: %s", exc)
            self.leases.abandon()
            for task in self._tasks:
                if task is not asyncio.current_task():
                    task.cancel()

    async def _loop(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.poll_s)
            try:
                await self.step()
            except ClusterError:
                raise
            except Exception as exc:
                if _closed(exc):
                    raise ClusterError(f"the NATS connection is closed: {exc}") from exc
                log.warning("ownership step failed (retried next poll): %s: %s",
                            type(exc).__name__, exc)

    async def step(self) -> None:
        """One pass: live set -> assignment -> release what is no longer ours -> acquire what
        is."""
        members = await list_members(self.membership.kv)
        live = frozenset(members)
        # Our own heartbeat missing (expired while we stalled) means the others no longer
        # count us: neither may we, or two views of the assignment would both claim to be right.
        target = assign(self.partitions, live) if live else {}
        if target != self.assignment:
            if self.assignment:
                self.stats.assignment_changes += 1
            log.info("assignment: %d live nodes, %d partitions here",
                     len(live), len(owned_by(target, self.node)),
                     extra={"nodes": sorted(live)})
        self.assignment, self.live = target, live
        self.stats.live_nodes = len(live)
        mine = owned_by(target, self.node)
        for p, lease in sorted(self.leases.held.items()):
            if p not in mine and not self._closing:
                await self._give_up(lease)
        for p in sorted(mine):
            if self._closing:
                break
            current = self.leases.held.get(p)
            if current is not None and current.held:
                continue
            won = await self.leases.try_acquire(p, takeover=p in self._waited)
            if won is None:
                self._waited.add(p)
                continue
            self._waited.discard(p)
            try:
                await self.listener.acquired(won)
            except BaseException:
                # nothing consumes the partition: hand it back rather than sit on it
                await won.release()
                raise
        self.steps += 1

    async def _give_up(self, lease: HeldLease) -> None:
        try:
            if lease.held:
                await self.listener.releasing(lease)
        finally:
            await lease.release()

    async def close(self) -> None:
        """Graceful shutdown: stop stepping, hand every partition back (listener first, then
        the delete), leave the membership so the others rebalance at once."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)  # their cancellation is expected, not raised
        for lease in list(self.leases.held.values()):
            await self._give_up(lease)
        await self.membership.leave()


def _closed(exc: BaseException) -> bool:
    from nats.errors import ConnectionClosedError

    return isinstance(exc, ConnectionClosedError)
