"""One partition's tenure on this node: from the lease's acquisition to its release or loss.

``start`` (the ownership listener's ``acquired``): claim the partition's fenced checkpoint key
(from then on no earlier tenure can write it), decode the checkpoint (none: empty), restore it
into the engine, recreate the durable at ``seq + 1`` so the replay is in stream order, then run
two tasks bound to the lease:

* **consume**: a :class:`~.pull.PullLoop` applying each ``(seq, event)`` with
  ``coordinator.event_seq = seq`` (run ids, so client order ids, derive from it); events the
  previous tenure may already have applied (up to what its durable had delivered) first learn
  the registered fills of the order ids their runs would use, so a replayed order reports the
  original fill instead of trading (:mod:`.fills`);
* **checkpoint**, every ``checkpoint_interval_ms``: snapshot at the last applied seq (a
  consistent cut, taken synchronously) -> register the fills made since the last checkpoint in
  the order registry -> ``fence.write`` -> ack (AckAll) the message at that seq. A message is
  acked only once a stored checkpoint covers it.

``stop`` (``releasing``): stop consuming, write the last checkpoint while the lease is held,
evict the partition. A **lost** lease cancels both tasks at once (the lease does that) and
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
from typing import TYPE_CHECKING, Any

import msgspec

from engine.core.errors import EventError
from engine.core.events import Event

from .errors import CheckpointError, ClusterError, LeaseLost
from .fence import FencedKey
from .fills import decode_fill, encode_fill
from .handover import evict, restore, snapshot
from .pull import PullLoop
from .state import PartitionState
from .stream import durable_name

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from .lease import HeldLease
    from .node import ClusterNode

__all__ = ["Checkpoint", "PartitionTenure", "decode_checkpoint"]

log = logging.getLogger("tickflow.cluster.tenure")


class Applied(msgspec.Struct, array_like=True):
    """Per symbol: events applied in this partition's lineage, the last event time, and how
    many came with a time not after the one before (out of order, or a duplicate, when a
    source stamps strictly increasing times)."""

    count: int = 0
    last_ts: float = 0.0
    disorder: int = 0


class Checkpoint(msgspec.Struct, kw_only=True):
    """What ``<stream>_ckpt`` key ``p<p>`` holds: ``ts`` (wall clock, read by ``tickflow
    cluster status``), the tenure that wrote it, the partition's state and its applied
    counts."""

    ts: float
    seq: int
    node: str
    token: int
    state: PartitionState
    applied: dict[str, Applied] = {}


_encode = msgspec.json.Encoder().encode
_decode_checkpoint = msgspec.json.Decoder(Checkpoint).decode
_decode_event = msgspec.json.Decoder(Event).decode


def decode_checkpoint(data: bytes) -> Checkpoint:
    try:
        return _decode_checkpoint(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CheckpointError(f"partition checkpoint is not readable: {exc}") from exc


class _Diverged(ClusterError):
    """A fill of ours lost its registration to a different fill."""


class PartitionTenure:
    def __init__(self, node: ClusterNode, lease: HeldLease) -> None:
        self.node = node
        self.lease = lease
        self.partition = lease.partition
        self.fence = FencedKey(node.js, node.checkpoint_bucket, f"p{lease.partition}", lease)
        self.applied = 0  # last stream seq applied
        self.checkpointed = 0  # last stream seq a stored checkpoint covers
        self.last_reply: str | None = None  # the reply subject of the message at `applied`
        self.replay_until = 0  # up to here a previous tenure may have applied: learn fills
        self.counts: dict[str, Applied] = {}
        self.stored: Checkpoint | None = None  # the last checkpoint stored (or claimed)
        self.checkpoints = 0
        self.checkpoint_s = 0.0
        self.restarts = 0
        self._consume: asyncio.Future[None] | None = None
        self._cadence: asyncio.Future[None] | None = None

    # -- start ------------------------------------------------------------------------------

    async def start(self) -> None:
        payload = await self.fence.claim()
        self.stored = None if not payload else decode_checkpoint(payload)
        if self.stored is not None and self.stored.state.partitions != self.node.partitions:
            raise CheckpointError(
                f"partition {self.partition}: checkpoint of {self.stored.state.partitions} "
                f"partitions, [cluster] partitions is {self.node.partitions}"
            )
        self.lease.on_lost(lambda lease, exc: self.node.lost(self))
        await self._resume()
        self._cadence = self.lease.bind(asyncio.create_task(
            self._checkpoint_loop(), name=f"cluster-checkpoint-p{self.partition}"
        ))

    async def _resume(self) -> None:
        """(Re)start from the last stored checkpoint: restore, recreate the durable, consume."""
        node, p = self.node, self.partition
        stored = self.stored
        seq = stored.seq if stored is not None else 0
        if stored is not None:
            restore(node.engine, stored.state)
        carried = stored.applied if stored is not None else {}
        self.counts = {s: msgspec.structs.replace(a) for s, a in carried.items()}
        self.applied = self.checkpointed = seq
        self.last_reply = None
        info = await node.stream.consumer_info(p)
        delivered = info.delivered.stream_seq if info is not None and info.delivered else 0
        self.replay_until = max(self.replay_until, delivered or 0)
        await node.stream.recreate_consumer(p, seq + 1)
        self.lease.check()
        loop = PullLoop(node.nc, node.stream.name, durable_name(node.stream.name, p),
                        self._apply)
        self._consume = self.lease.bind(asyncio.create_task(
            loop.run(), name=f"cluster-consume-p{p}"
        ))

    # -- consume ----------------------------------------------------------------------------

    async def _apply(self, seq: int, msg: Msg) -> None:
        if seq <= self.applied or not self.lease.held:
            return  # a redelivery of what was applied, or the tenure is over
        if seq <= self.replay_until:
            await self._learn(seq)
            if not self.lease.held or seq <= self.applied:
                return
        node = self.node
        try:
            event = _decode_event(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            node.undecodable += 1
            log.error("p%d seq %d: not an event, skipped: %s", self.partition, seq, exc)
            self.applied, self.last_reply = seq, msg.reply
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
        self.applied, self.last_reply = seq, msg.reply
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

    async def _checkpoint_loop(self) -> None:
        interval = self.node.settings.checkpoint_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval)  # the group-commit cadence, not a wait on a condition
            try:
                await self.checkpoint()
            except _Diverged as exc:
                log.warning("p%d: %s; restarting from the last checkpoint", self.partition, exc)
                await self._restart()
            except LeaseLost as exc:
                # fenced off: a later tenure claimed the key; nothing more is ours to write
                log.warning("p%d: checkpoint refused, leaving: %s", self.partition, exc)
                self.node.lost(self)
                return
            except ClusterError as exc:
                log.warning("p%d: checkpoint failed (retried): %s", self.partition, exc)

    async def checkpoint(self) -> bool:
        """Store a checkpoint at the last applied seq and ack up to it; False when there was
        nothing new. :class:`LeaseLost` when another tenure owns the key."""
        node, p = self.node, self.partition
        seq, reply = self.applied, self.last_reply
        fresh = node.broker.take_fresh(p)
        if seq == self.checkpointed and not fresh and self.stored is not None:
            return False
        started = time.perf_counter()
        self.lease.check()
        state = snapshot(node.engine, p, node.partitions, seq)
        counts = {s: msgspec.structs.replace(a) for s, a in self.counts.items()}
        if fresh:
            try:
                answers = await asyncio.gather(
                    *(node.registry.register(f.client_order_id, encode_fill(f)) for f in fresh)
                )
            except BaseException:
                node.broker.put_back(p, fresh)  # registered or not, the next try re-registers
                raise
            for fill, reg in zip(fresh, answers, strict=True):
                if not reg.won:
                    winner = decode_fill(reg.fill)
                    node.broker.learn(winner)
                    if winner != fill:
                        raise _Diverged(f"order {fill.client_order_id} was filled before "
                                        f"({reg.attempt}) on other terms")
        checkpoint = Checkpoint(ts=time.time(), seq=seq, node=node.name,
                                token=self.lease.token, state=state, applied=counts)
        await self.fence.write(_encode(checkpoint))
        self.stored, self.checkpointed = checkpoint, seq
        if reply is not None:
            await node.nc.publish(reply, b"+ACK")  # AckAll: every message up to seq
        self.checkpoints += 1
        elapsed = time.perf_counter() - started
        self.checkpoint_s += elapsed
        node.checkpoint_done(elapsed)
        return True

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
        cadence, self._cadence = self._cadence, None
        if cadence is not None:
            cadence.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cadence
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
