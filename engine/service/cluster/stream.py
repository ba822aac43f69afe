"""The cluster's one stream and each partition's durable pull consumer, created and read back.

The stream captures ``<prefix>.part.>`` in a file store, with a duplicate window for
``Nats-Msg-Id`` de-duplication and the configured replica count. It keeps every message
(limits retention, no limits): a partition's messages must outlive the slowest checkpoint, and
interest retention would drop a partition's backlog the moment its durable is deleted for a
takeover. The partition count is part of the stream's identity (changing it moves most
symbols to other partitions), so it is written into the stream's description and checked on
every start.

Each partition ``p`` has the durable ``<stream>_p<p>`` (the name the control plane reads lag
from), filtered on ``<prefix>.part.<p>.>``, with the **AckAll** policy: a message is acked
only once a checkpoint covers it, and one ack of the highest covered message then covers every
message before it (explicit acks would need one ack per message, and acking only the highest
would leave the rest to be redelivered). ``max_ack_pending`` bounds how far delivery may run
ahead of the checkpoints.

nats-server 2.9 answers a create for an existing durable with a different filter by *changing*
the durable, and silently drops config fields it does not know: so an existing stream or durable
is inspected, never re-created blindly, and every create is read back with
:func:`~engine.service.cluster.readback.check_readback`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from engine.config.schema import ClusterSettings

from .errors import ClusterConfigError, ClusterError
from .partition import partition_filter, stream_subjects
from .readback import check_readback

if TYPE_CHECKING:
    from nats.js.api import ConsumerConfig, ConsumerInfo, StreamConfig, StreamInfo
    from nats.js.client import JetStreamContext

__all__ = [
    "DUPLICATE_WINDOW_S",
    "ClusterStream",
    "durable_name",
]

DUPLICATE_WINDOW_S: Final = 120.0
_DESCRIPTION: Final = "tickflow cluster stream: partitions={partitions}"
_PARTITIONS_IN_DESCRIPTION: Final = re.compile(r"partitions=(\d+)")
_STREAM_NOT_FOUND: Final = 10059
_CONSUMER_NOT_FOUND: Final = 10014


def durable_name(stream: str, partition: int) -> str:
    """The durable consumer of ``partition``: ``<stream>_p<p>`` (the control plane's name too)."""
    return f"{stream}_p{partition}"


def _as_mapping(config: object) -> Mapping[str, object]:
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise ClusterError(f"the server returned no config ({config!r})")
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


class ClusterStream:
    """The stream and the partitions' durables of one cluster, on one JetStream context.

    ``ensure`` creates the stream or checks the existing one; ``ensure_consumer(p)`` does the
    same for a partition's durable, and ``recreate_consumer(p, start_seq)`` is the takeover:
    delete the durable and create it again delivering from ``start_seq``, so the replay after
    a dead owner is in stream order (a surviving durable would redeliver its unacked messages
    first, newest ticks before older ones).
    """

    def __init__(
        self,
        js: JetStreamContext,
        settings: ClusterSettings,
        *,
        duplicate_window_s: float = DUPLICATE_WINDOW_S,
        ack_wait_s: float = 60.0,
    ) -> None:
        self.js = js
        self.settings = settings
        self.name = settings.stream
        self.duplicate_window_s = duplicate_window_s
        # With AckAll a message stays unacked until a checkpoint covers it; ack_wait only
        # decides when the server redelivers it to the same owner, which the pull loop drops
        # as already seen. Long enough that a busy owner is not sent its backlog twice.
        self.ack_wait_s = ack_wait_s

    # -- the stream ---------------------------------------------------------------------

    def stream_config(self) -> StreamConfig:
        from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

        return StreamConfig(
            name=self.name,
            description=_DESCRIPTION.format(partitions=self.settings.partitions),
            subjects=[stream_subjects(self.settings.prefix)],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            storage=StorageType.FILE,
            num_replicas=self.settings.replicas,
            duplicate_window=self.duplicate_window_s,
        )

    def _stream_wanted(self) -> dict[str, object]:
        config = self.stream_config()
        return {
            "name": config.name,
            "subjects": config.subjects,
            "retention": config.retention,
            "storage": config.storage,
            "num_replicas": config.num_replicas,
            "duplicate_window": config.duplicate_window,
            "description": config.description,
        }

    async def ensure(self) -> StreamInfo:
        """Create the stream, or check that the existing one is this cluster's: same subjects,
        same partition count, storage and replicas. Any difference is a
        :class:`ClusterConfigError` naming it; nothing is changed on the server."""
        from nats.js.errors import NotFoundError

        try:
            info = await self.js.stream_info(self.name)
        except NotFoundError:
            info = None
        if info is None:
            config = self.stream_config()
            try:
                info = await self.js.add_stream(config)
            except Exception as exc:  # nats-py raises APIError subclasses and connection errors
                raise ClusterError(f"creating stream {self.name!r} failed: {exc}") from exc
            check_readback("stream", self.name, self._stream_wanted(), _as_mapping(info.config))
            return info
        self._check_existing(info)
        return info

    def _check_existing(self, info: StreamInfo) -> None:
        got = _as_mapping(info.config)
        description = str(got.get("description") or "")
        found = _PARTITIONS_IN_DESCRIPTION.search(description)
        if found is None:
            raise ClusterConfigError(
                f"stream {self.name!r} exists but was not made by tickflow's cluster mode "
                f"(its description {description!r} names no partition count): use another "
                f"[cluster] stream name or remove it"
            )
        partitions = int(found.group(1))
        if partitions != self.settings.partitions:
            raise ClusterConfigError(
                f"stream {self.name!r} holds {partitions} partitions, [cluster] partitions is "
                f"{self.settings.partitions}: the count is fixed for the life of a stream "
                f"(changing it moves most symbols); set it back, or start a new stream"
            )
        check_readback("existing stream", self.name, self._stream_wanted(), got)

    # -- the partitions' durables ----------------------------------------------------------

    def consumer_config(self, partition: int, start_seq: int | None = None) -> ConsumerConfig:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, ReplayPolicy

        self._check_partition(partition)
        by_seq = start_seq is not None
        return ConsumerConfig(
            durable_name=durable_name(self.name, partition),
            filter_subject=partition_filter(self.settings.prefix, partition),
            ack_policy=AckPolicy.ALL,
            ack_wait=self.ack_wait_s,
            max_deliver=-1,
            max_ack_pending=self.settings.max_ack_pending,
            replay_policy=ReplayPolicy.INSTANT,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if by_seq else DeliverPolicy.ALL,
            opt_start_seq=start_seq,
        )

    def _consumer_wanted(self, config: ConsumerConfig, created: bool) -> dict[str, object]:
        wanted: dict[str, object] = {
            "durable_name": config.durable_name,
            "filter_subject": config.filter_subject,
            "ack_policy": config.ack_policy,
            "max_ack_pending": config.max_ack_pending,
        }
        if created:
            # Where delivery starts is fixed at creation; an existing durable keeps its own.
            wanted["deliver_policy"] = config.deliver_policy
            wanted["opt_start_seq"] = config.opt_start_seq
            wanted["ack_wait"] = config.ack_wait
        return wanted

    def _check_partition(self, partition: int) -> None:
        if not 0 <= partition < self.settings.partitions:
            raise ClusterError(
                f"partition {partition} does not exist: [cluster] partitions is "
                f"{self.settings.partitions} (0..{self.settings.partitions - 1})"
            )

    async def consumer_info(self, partition: int) -> ConsumerInfo | None:
        """The durable's info, or None when it does not exist."""
        from nats.js.errors import NotFoundError

        self._check_partition(partition)
        try:
            info: ConsumerInfo = await self.js.consumer_info(
                self.name, durable_name(self.name, partition)
            )
        except NotFoundError:
            return None
        return info

    async def ensure_consumer(self, partition: int) -> ConsumerInfo:
        """The partition's durable: created delivering from the start of the stream when it
        does not exist; otherwise checked (filter, ack policy, ``max_ack_pending``) and used as
        it is. A durable with another filter would deliver another partition's symbols (or
        every partition's): a :class:`ClusterConfigError`, never silently changed."""
        info = await self.consumer_info(partition)
        config = self.consumer_config(partition)
        if info is None:
            return await self._create_consumer(config)
        check_readback(
            "existing consumer", str(config.durable_name), self._consumer_wanted(config, False),
            _as_mapping(info.config),
        )
        return info

    async def recreate_consumer(self, partition: int, start_seq: int) -> ConsumerInfo:
        """Takeover: delete the partition's durable (if any) and create it again delivering
        from stream sequence ``start_seq`` (a checkpoint's ``seq + 1``), read back.

        Deleting the durable also ends every pull request a previous owner left on it."""
        from nats.js.errors import NotFoundError

        if start_seq < 1:
            raise ClusterError(f"a stream sequence starts at 1, not {start_seq}")
        config = self.consumer_config(partition, start_seq)
        try:
            await self.js.delete_consumer(self.name, str(config.durable_name))
        except NotFoundError:
            pass
        except Exception as exc:
            raise ClusterError(f"deleting consumer {config.durable_name!r} failed: {exc}") from exc
        return await self._create_consumer(config)

    async def _create_consumer(self, config: ConsumerConfig) -> ConsumerInfo:
        try:
            info = await self.js.add_consumer(self.name, config)
        except Exception as exc:
            raise ClusterError(f"creating consumer {config.durable_name!r} failed: {exc}") from exc
        check_readback(
            "consumer", str(config.durable_name), self._consumer_wanted(config, True),
            _as_mapping(info.config),
        )
        return info
