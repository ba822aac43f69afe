"""A partition's durable state, checkpointed to a KV bucket, and the takeover that resumes it.

Bucket ``<stream>_ckpt`` (history 1, no TTL, the configured replicas), key ``p<p>``, value JSON
``{"seq": <last applied stream sequence>, "ts": <wall-clock seconds>, "fence": <lease revision
of the writer>, "state": <the caller's JSON>}``. Every write is a compare-and-set on the
revision this process last read or wrote (``update(last=rev)``), so a write by a stale owner
fails once anyone else has written: :class:`LeaseLost`.

**Takeover** (:func:`take_over`): the new owner, holding the partition's lease with revision
``fence``, loads the checkpoint and at once writes it back unchanged under its own fence (the
*claim*). From then on the previous owner's next write fails its compare-and-set; and if the
previous owner wrote in between, the claim fails instead, the new owner reloads (the stale
owner's checkpoint is still a consistent state: applied in stream order up to its ``seq``) and
claims again. A stored fence newer than ours means a newer owner exists: :class:`LeaseLost`.
Then the durable is deleted and created again delivering from ``seq + 1``, so the replay is in
stream order and starts right after what the checkpoint holds: nothing acked is lost (acks
never run ahead of a stored checkpoint), nothing before ``seq + 1`` is applied twice.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Final

import msgspec

from engine.config.schema import ClusterSettings

from .errors import ClusterError, LeaseLost
from .readback import check_readback
from .stream import ClusterStream

if TYPE_CHECKING:
    from nats.js.client import JetStreamContext
    from nats.js.kv import KeyValue

__all__ = ["Checkpoint", "CheckpointStore", "bucket_name", "checkpoint_key", "take_over"]

_CLAIM_ATTEMPTS: Final = 5


def bucket_name(stream: str) -> str:
    return f"{stream}_ckpt"


def checkpoint_key(partition: int) -> str:
    return f"p{partition}"


class _Stored(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    seq: int
    ts: float
    fence: int
    state: Any = None


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Stored).decode


@dataclasses.dataclass(frozen=True, slots=True)
class Checkpoint:
    """A partition's stored checkpoint: everything up to stream sequence ``seq`` is applied
    in ``state``; ``fence`` is the lease revision of its writer, ``revision`` the KV
    revision it was read or written at (``0``: there is none yet)."""

    partition: int
    seq: int
    ts: float
    fence: int
    state: Any
    revision: int


class CheckpointStore:
    """The checkpoint bucket on one JetStream context, for the partitions this process owns."""

    def __init__(self, js: JetStreamContext, settings: ClusterSettings) -> None:
        self.js = js
        self.settings = settings
        self.bucket = bucket_name(settings.stream)
        self._kv: KeyValue | None = None
        self._held: dict[int, Checkpoint] = {}

    async def ensure(self) -> CheckpointStore:
        """Create the bucket, or check the existing one; read back either way."""
        from nats.js.errors import NotFoundError

        wanted: dict[str, object] = {
            "subjects": [f"$KV.{self.bucket}.>"],
            "max_msgs_per_subject": 1,
            "num_replicas": self.settings.replicas,
            "max_age": 0.0,
        }
        try:
            info = await self.js.stream_info(f"KV_{self.bucket}")
        except NotFoundError:
            info = None
        if info is None:
            try:
                await self.js.create_key_value(
                    bucket=self.bucket, history=1, replicas=self.settings.replicas,
                    description="tickflow partition checkpoints",
                )
            except Exception as exc:
                raise ClusterError(f"creating bucket {self.bucket!r} failed: {exc}") from exc
            info = await self.js.stream_info(f"KV_{self.bucket}")
        config = info.config
        check_readback("bucket", self.bucket, wanted,
                       {k: getattr(config, k) for k in wanted if hasattr(config, k)})
        self._kv = await self.js.key_value(self.bucket)
        return self

    def _bucket(self) -> KeyValue:
        if self._kv is None:
            raise ClusterError("the checkpoint store is not ensured: call ensure() first")
        return self._kv

    async def load(self, partition: int) -> Checkpoint | None:
        """The stored checkpoint of ``partition``, or None when there is none."""
        from nats.js.errors import KeyNotFoundError

        try:
            entry = await self._bucket().get(checkpoint_key(partition))
        except KeyNotFoundError:
            return None
        if entry.value is None or entry.revision is None:
            return None
        try:
            stored = _decode(entry.value)
        except msgspec.DecodeError as exc:
            raise ClusterError(
                f"checkpoint {self.bucket}/{checkpoint_key(partition)} (revision "
                f"{entry.revision}) is unreadable: {exc}; it was not written by tickflow"
            ) from exc
        return Checkpoint(partition, stored.seq, stored.ts, stored.fence, stored.state,
                          entry.revision)

    async def claim(self, partition: int, fence: int) -> Checkpoint:
        """Load the checkpoint and write it back under ``fence`` (see the module doc); the
        returned checkpoint is where this owner resumes (``seq`` 0 and state None when the
        partition has none yet)."""
        from nats.js.errors import KeyWrongLastSequenceError

        kv = self._bucket()
        key = checkpoint_key(partition)
        for _ in range(_CLAIM_ATTEMPTS):
            current = await self.load(partition)
            if current is not None and current.fence > fence:
                raise LeaseLost(
                    f"partition {partition}: its checkpoint was written under fence "
                    f"{current.fence}, newer than this node's {fence}"
                )
            seq = current.seq if current is not None else 0
            state = current.state if current is not None else None
            body = _encode(_Stored(seq, time.time(), fence, state))
            try:
                if current is None:
                    revision = await kv.create(key, body)
                else:
                    revision = await kv.update(key, body, last=current.revision)
            except KeyWrongLastSequenceError:
                # written in between (the previous owner's last save, or another claim's
                # create): read again
                continue
            except Exception as exc:
                raise ClusterError(f"claiming checkpoint {key} failed: {exc}") from exc
            claimed = Checkpoint(partition, seq, time.time(), fence, state, revision)
            self._held[partition] = claimed
            return claimed
        raise LeaseLost(f"partition {partition}: its checkpoint kept changing under the claim "
                        f"({_CLAIM_ATTEMPTS} attempts): another node is writing it")

    async def save(self, partition: int, seq: int, state: Any, fence: int) -> Checkpoint:
        """Store ``state`` as applied up to stream sequence ``seq``, written under ``fence``;
        a compare-and-set on this process's last revision. :class:`LeaseLost` when anyone
        else wrote since (a newer owner's claim), or ``fence`` is older than the claim's."""
        from nats.js.errors import KeyWrongLastSequenceError

        held = self._held.get(partition)
        if held is None:
            raise ClusterError(f"partition {partition}: save before claim (take the partition "
                               f"over first)")
        if fence < held.fence:
            raise LeaseLost(f"partition {partition}: fence {fence} is older than "
                            f"{held.fence}, the one the partition was claimed with")
        if seq < held.seq:
            raise ClusterError(f"partition {partition}: checkpoint seq {seq} is behind the "
                               f"stored {held.seq}; checkpoints only move forward")
        ts = time.time()
        try:
            body = _encode(_Stored(seq, ts, fence, state))
        except (TypeError, msgspec.EncodeError) as exc:
            raise ClusterError(f"partition {partition}: state is not JSON: {exc}") from exc
        try:
            revision = await self._bucket().update(
                checkpoint_key(partition), body, last=held.revision
            )
        except KeyWrongLastSequenceError as exc:
            self._held.pop(partition, None)
            current = await self.load(partition)
            by = f"fence {current.fence}" if current is not None else "someone"
            raise LeaseLost(
                f"partition {partition}: the checkpoint was written by {by} since this node's "
                f"revision {held.revision} (fence {fence}): another node owns it now"
            ) from exc
        except Exception as exc:
            raise ClusterError(f"saving checkpoint p{partition} failed: {exc}") from exc
        saved = Checkpoint(partition, seq, ts, fence, state, revision)
        self._held[partition] = saved
        return saved

    def release(self, partition: int) -> None:
        """Forget the partition (its lease is gone): a later save fails until a new claim."""
        self._held.pop(partition, None)


async def take_over(
    stream: ClusterStream, store: CheckpointStore, partition: int, fence: int
) -> Checkpoint:
    """Claim the partition's checkpoint under ``fence`` and recreate its durable at the
    checkpoint's ``seq + 1``; start a :class:`~.consume.PartitionConsumer` with
    ``start_after=checkpoint.seq`` on the returned checkpoint's state."""
    checkpoint = await store.claim(partition, fence)
    await stream.recreate_consumer(partition, checkpoint.seq + 1)
    return checkpoint
