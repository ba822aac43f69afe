"""One partition's tenure on this node: from the lease's acquisition to its release or loss.

``start`` (the ownership listener's ``acquired``): claim the partition's checkpoint key
(the data plane's :class:`~.checkpoint.CheckpointStore`: from then on no earlier tenure
can write it), decode the checkpoint (none: empty), restore it
into the engine, recreate the durable at ``seq + 1`` so the replay is in stream order, then run
consumption bound to the lease; the node's checkpoint cadence covers it:

* **consume**: a :class:`~.consume.PartitionConsumer` (the continuous pull loop) applying
  each ``(seq, event)`` with ``coordinator.event_seq = seq`` (run ids, so client order
  ids, derive from it); events the previous tenure may already have applied (up to what
  its durable had delivered) first learn the registered fills of the order ids their runs
  would use, so a replayed order reports the original fill instead of trading (:mod:`.fills`);
* **checkpoint**, every ``checkpoint_interval_ms`` (the node's one cadence for all its
  partitions: one ``snapshot_many`` pass over the engine, then each partition's writes
  concurrently): the cut at the last applied seq (taken synchronously) -> register the
  fills made since the last checkpoint in the order registry -> ``store.save`` (CAS under
  the lease's token) -> ack (AckAll) the message at that seq. A message is acked only once
  a stored checkpoint covers it.

``stop`` (``releasing``): stop consuming, write the last checkpoint while the lease is held,
evict the partition. A **lost** lease stops consumption at once (the lease cancels it, the
consumer asks the lease before every delivery) and
evicts without writing: the next owner resumes from the last stored checkpoint.

A checkpoint whose fills lost their registration to *different* fills (a stale owner
registered first) is not written: the tenure restarts from its last stored checkpoint, now
knowing the winners, and replays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from engine.core.errors import EventError
from engine.core.events import Event
from engine.core.orders import Fill

from .consume import PartitionConsumer
from .errors import CheckpointError, ClusterError, LeaseLost
from .fills import decode_fill, encode_fill
from .handover import evict, restore, snapshot
from .state import PartitionState

if TYPE_CHECKING:

    from .lease import HeldLease
    from .node import ClusterNode

__all__ = ["NodeState", "PartitionTenure", "StoredCheckpoint", "decode_checkpoint"]

log = logging.getLogger("tickflow.cluster.tenure")


class Applied(msgspec.Struct, array_like=True):
    """Per symbol: events applied in this partition's lineage, the last event time, and how
    many came with a time not after the one before (out of order, or a duplicate, when a
    source stamps strictly increasing times)."""

    count: int = 0
    last_ts: float = 0.0
    disorder: int = 0


class NodeState(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The ``state`` a node stores in the data plane's checkpoint (:mod:`.checkpoint`:
    ``{"seq", "ts", "fence", "state"}``): the partition's state, who wrote it, and the
    partition's applied counts per symbol."""

    node: str
    state: PartitionState
    applied: dict[str, Applied] = {}


class StoredCheckpoint(msgspec.Struct, kw_only=True):
    """A checkpoint as stored, with the node's state decoded (for status, tests, tools)."""

    seq: int
    ts: float
    fence: int
    state: NodeState | None = None  # None: claimed before any checkpoint was stored

    @property
    def node(self) -> str | None:
        return None if self.state is None else self.state.node

    @property
    def applied(self) -> dict[str, Applied]:
        return {} if self.state is None else self.state.applied

    @property
    def partition_state(self) -> PartitionState:
        if self.state is None:
            raise CheckpointError("an empty claim holds no partition state")
        return self.state.state


_decode_stored = msgspec.json.Decoder(StoredCheckpoint).decode


def decode_checkpoint(data: bytes) -> StoredCheckpoint:
    try:
        return _decode_stored(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CheckpointError(f"partition checkpoint is not readable: {exc}") from exc


def node_state(raw: object) -> NodeState:
    """The node's state in a claimed checkpoint's ``state`` (JSON builtins)."""
    try:
        return msgspec.convert(raw, NodeState)
    except msgspec.ValidationError as exc:
        raise CheckpointError(f"partition checkpoint state is not a node's: {exc}") from exc


class Cut(NamedTuple):
    seq: int
    fresh: list[Fill]
    started: float
    # The per-symbol applied counts as of ``seq``: copied with the cut, since events go on
    # being applied while the checkpoint registers fills and writes (a copy taken later
    # would count events the checkpoint does not cover, and the next owner's replay would
    # count them again).
    counts: dict[str, Applied]


class _Diverged(ClusterError):
    """A fill of ours lost its registration to a different fill."""


class PartitionTenure:
    def __init__(self, node: ClusterNode, lease: HeldLease) -> None:
        self.node = node
        self.lease = lease
        self.partition = lease.partition
        self.applied = 0  # last stream seq applied
        self.checkpointed = 0  # last stream seq a stored checkpoint covers
        self.consumer: PartitionConsumer | None = None
        self.replay_until = 0  # up to here a previous tenure may have applied: learn fills
        self.counts: dict[str, Applied] = {}
        self.stored: NodeState | None = None  # the last state stored (or claimed)
        self.stored_seq = 0
        self.checkpoints = 0
        self.checkpoint_s = 0.0
        self.restarts = 0
        self._consume: asyncio.Future[None] | None = None

    # -- start ------------------------------------------------------------------------------

    async def start(self) -> None:
        self.lease.check()
        claimed = await self.node.store.claim(self.partition, self.lease.token)
        self.stored = None if claimed.state is None else node_state(claimed.state)
        self.stored_seq = claimed.seq
        if self.stored is not None and self.stored.state.partitions != self.node.partitions:
            raise CheckpointError(
                f"partition {self.partition}: checkpoint of {self.stored.state.partitions} "
                f"partitions, [cluster] partitions is {self.node.partitions}"
            )
        self.lease.on_lost(lambda lease, exc: self.node.lost(self))
        await self._resume()

    async def _resume(self) -> None:
        """(Re)start from the last stored checkpoint: restore, recreate the durable, consume."""
        node, p = self.node, self.partition
        stored = self.stored
        seq = self.stored_seq
        if stored is not None:
            restore(node.engine, stored.state)
        carried = stored.applied if stored is not None else {}
        self.counts = {s: msgspec.structs.replace(a) for s, a in carried.items()}
        self.applied = self.checkpointed = seq
        info = await node.stream.consumer_info(p)
        delivered = info.delivered.stream_seq if info is not None and info.delivered else 0
        self.replay_until = max(self.replay_until, delivered or 0)
        await node.stream.recreate_consumer(p, seq + 1)
        self.lease.check()
        lease = self.lease
        self.consumer = consumer = PartitionConsumer(
            node.nc, node.settings, p, self._apply, owned=lambda: lease.held,
            on_invalid=self._invalid, start_after=seq, batch=node.pull_batch,
        )
        await consumer.start()
        self._consume = lease.bind(asyncio.create_task(
            self._watch(consumer), name=f"cluster-consume-p{p}"
        ))

    # -- consume ----------------------------------------------------------------------------

    async def _watch(self, consumer: PartitionConsumer) -> None:
        """Until the consumer ends: cancelled (stop, lease over) it stops the consumer; ended
        by itself (its durable deleted by a newer owner, the connection closed), the partition
        is not ours to apply any more."""
        try:
            await consumer.wait()
        except asyncio.CancelledError:
            await consumer.stop()
            raise
        except ClusterError as exc:
            log.warning("p%d: consumption ended: %s", self.partition, exc)
        await consumer.stop()
        if self.lease.held and self._consume is asyncio.current_task():
            self._consume = None
            self.node.lost(self)

    def _invalid(self, partition: int, seq: int, reason: str) -> None:
        self.node.undecodable += 1
        log.error("p%d seq %d skipped: %s", partition, seq, reason)
        self.applied = max(self.applied, seq)

    async def _apply(self, partition: int, seq: int, event: Event) -> None:
        node = self.node
        if not node.has_room():
            # flow control: the backlog waits in the stream while runs in flight are many
            while not node.has_room() and not node.closing and self.lease.held:
                node.room.clear()
                await node.room.wait()
            if not self.lease.held:
                return
        if seq <= self.replay_until:
            await self._learn(seq)
            if not self.lease.held:
                return
        coordinator = node.coordinator
        coordinator.event_seq = seq
        try:
            node.engine.apply_nowait(event)
        except EventError as exc:
            node.refused += 1
            log.warning("p%d seq %d refused: %s", self.partition, seq, exc)
        finally:
            coordinator.event_seq = None
        counts = self.counts.get(event.symbol)
        if counts is None:
            counts = self.counts[event.symbol] = Applied()
        ts = getattr(event, "ts", counts.last_ts)
        if counts.count and ts <= counts.last_ts:
            counts.disorder += 1
        counts.count += 1
        counts.last_ts = ts
        self.applied = seq
        node.applied += 1

    async def _learn(self, seq: int) -> None:
        """The registered fills of the order ids the runs of event ``seq`` would use."""
        node = self.node
        ids = node.order_ids(seq)
        if not ids:
            return
        found = await asyncio.gather(*(node.registry.lookup(i) for i in ids))
        for registration in found:
            if registration is not None:
                node.broker.learn(decode_fill(registration.fill))

    # -- checkpoints ------------------------------------------------------------------------

    def cut(self) -> Cut | None:
        """What the next checkpoint covers, taken synchronously with the snapshot: the last
        applied seq and the fills made since the last checkpoint.
        None when there is nothing new (or the lease is over)."""
        if not self.lease.held:
            return None
        fresh = self.node.broker.take_fresh(self.partition)
        if self.applied == self.checkpointed and not fresh:
            return None
        counts = {s: msgspec.structs.replace(a) for s, a in self.counts.items()}
        return Cut(self.applied, fresh, time.perf_counter(), counts)

    async def checkpoint(self) -> bool:
        """Store a checkpoint at the last applied seq now (this partition alone)."""
        cut = self.cut()
        if cut is None:
            return False
        node = self.node
        await self.commit(cut, snapshot(node.engine, self.partition, node.partitions, cut.seq))
        return True

    async def commit(self, cut: Cut, state: PartitionState) -> None:
        """Register the cut's fills, store the checkpoint (fenced), ack up to its seq.
        :class:`LeaseLost` when another tenure owns the key; ``_Diverged`` when a fill lost
        its registration to another fill (nothing written: restart from the last one)."""
        node, p = self.node, self.partition
        counts = cut.counts
        if cut.fresh:
            try:
                answers = await asyncio.gather(*(
                    node.registry.register(f.client_order_id, encode_fill(f)) for f in cut.fresh
                ))
            except BaseException:
                node.broker.put_back(p, cut.fresh)  # the next try registers them again
                raise
            for fill, reg in zip(cut.fresh, answers, strict=True):
                if not reg.won:
                    winner = decode_fill(reg.fill)
                    node.broker.learn(winner)
                    if winner != fill:
                        raise _Diverged(f"order {fill.client_order_id} was filled before "
                                        f"({reg.attempt}) on other terms")
        self.lease.check()
        stored = NodeState(node=node.name, state=state, applied=counts)
        await node.store.save(p, cut.seq, stored, self.lease.token)
        self.stored, self.stored_seq = stored, cut.seq
        self.checkpointed = max(self.checkpointed, cut.seq)
        if self.consumer is not None:
            await self.consumer.checkpointed(cut.seq)  # AckAll: every message up to seq
        self.checkpoints += 1
        node.checkpoint_done(time.perf_counter() - cut.started)

    async def failed(self, exc: BaseException) -> None:
        """A checkpoint of this tenure failed with ``exc`` (the node's cadence calls it)."""
        if isinstance(exc, _Diverged):
            log.warning("p%d: %s; restarting from the last checkpoint", self.partition, exc)
            await self._restart()
        elif isinstance(exc, LeaseLost):
            # fenced off: a later tenure claimed the key; nothing more is ours to write
            log.warning("p%d: checkpoint refused, leaving: %s", self.partition, exc)
            self.node.lost(self)
        elif isinstance(exc, ClusterError | OSError | TimeoutError):
            log.warning("p%d: checkpoint failed (retried): %s", self.partition, exc)
        else:
            raise exc

    async def _restart(self) -> None:
        self.restarts += 1
        await self._stop_consuming()
        node = self.node
        await evict(node.engine, self.partition, node.partitions)
        node.broker.take_fresh(self.partition)
        await self._resume()

    # -- the end --------------------------------------------------------------------------

    async def _stop_consuming(self) -> None:
        task, self._consume = self._consume, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def stop(self) -> None:
        """Graceful hand-over, lease still held: last checkpoint, then out of the engine."""
        await self._stop_consuming()
        try:
            await self.checkpoint()
        except (LeaseLost, _Diverged) as exc:
            log.warning("p%d: no last checkpoint: %s", self.partition, exc)
        await self.leave()

    async def leave(self) -> None:
        """Take the partition out of this engine (after a release or a loss)."""
        await self._stop_consuming()
        node = self.node
        with contextlib.suppress(CheckpointError):
            await evict(node.engine, self.partition, node.partitions)
        node.broker.drop(self.partition)

    def describe(self) -> dict[str, Any]:
        return {"partition": self.partition, "token": self.lease.token, "applied": self.applied,
                "checkpointed": self.checkpointed, "checkpoints": self.checkpoints,
                "restarts": self.restarts}
