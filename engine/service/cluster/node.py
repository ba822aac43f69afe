"""A cluster node: ``tickflow run`` with ``[cluster] enabled``.

:func:`build_cluster_engine` makes the daemon's :class:`~engine.service.daemon.Engine` for
cluster mode: its broker seen through the order registry (:mod:`.fills`), its input sent to a
:class:`~.ingest.ClusterIngest` (every source, the network intake and ``POST /events`` publish
to the stream; their ack is the PubAck), the periodic sweep off (a run it re-triggered would
take a counter id no replay can re-derive), and :class:`ClusterNode` as its first service.

The node, for the engine's session: connect; ensure the stream, the control buckets and the
checkpoint bucket (every config read back); start the publisher (ingest on any node); derive
run ids from (stream sequence, workflow) (:func:`run_id`); join the membership and run
:class:`~.ownership.Ownership` with this node as its listener, one
:class:`~.tenure.PartitionTenure` per partition it holds. On exit: every partition is handed
over (last checkpoint, release), the membership left, the publisher drained.

Storage is refused in cluster mode: the stream and the checkpoints are the durable state, and
a local SQLite journal of events another node applies would be a second, diverging truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.core.runs import WorkflowDef

from .buckets import ensure_control_buckets
from .checkpoint import CheckpointStore
from .cluster_metrics import ClusterCollector, ClusterStats
from .errors import CheckpointError, ClusterConfigError, ClusterError
from .fills import RegisteredBroker
from .handover import snapshot_many, track
from .ingest import ClusterIngest
from .orders import OrderRegistry
from .ownership import Ownership, default_node_name
from .publish import ClusterPublisher
from .stream import ClusterStream
from .tenure import PartitionTenure

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js.client import JetStreamContext

    from engine.config import Config
    from engine.config.schema import ClusterSettings
    from engine.core.coordinator import Coordinator
    from engine.service.daemon import Engine

    from .lease import HeldLease

__all__ = ["RUN_ID_BASE", "ClusterNode", "build_cluster_engine", "run_id"]

log = logging.getLogger("tickflow.cluster.node")

RUN_ID_BASE: Final = 1 << 40
"""Derived run ids start here, far above the counter's (which a node never uses for runs of
stream events, but the two must not meet)."""
_WORKFLOW_SLOTS: Final = 256
_NO_SWEEP_S: Final = 1e9


def run_id(seq: int, workflow_index: int) -> int:
    """The id of the run stream event ``seq`` makes for the ``workflow_index``-th workflow (in
    name order): the same on every node with the same workflows, so a replay after a takeover
    re-derives the previous owner's run ids and so its client order ids."""
    if not 0 <= workflow_index < _WORKFLOW_SLOTS:
        raise ClusterConfigError(f"cluster mode supports at most {_WORKFLOW_SLOTS} workflows")
    return RUN_ID_BASE + seq * _WORKFLOW_SLOTS + workflow_index


def build_cluster_engine(config: Config, *, config_version: str = "") -> Engine:
    """The daemon's engine for ``[cluster] enabled`` (see the module doc); a
    :class:`ClusterConfigError` for a config cluster mode cannot run."""
    from engine.service.daemon import Engine
    from engine.service.trading import build_broker

    settings = config.cluster
    if not settings.enabled:
        raise ClusterConfigError("[cluster] enabled is false")
    if config.storage.enabled:
        raise ClusterConfigError(
            "[cluster] enabled needs [storage] enabled = false: in cluster mode the stream and "
            "the partitions' checkpoints in NATS are the durable state (a local journal of "
            "events other nodes apply would be a second truth)"
        )
    if len(config.workflows) > _WORKFLOW_SLOTS:
        raise ClusterConfigError(f"cluster mode supports at most {_WORKFLOW_SLOTS} workflows")
    engine_settings = msgspec.structs.replace(config.engine, sweep_interval_s=_NO_SWEEP_S)
    config = msgspec.structs.replace(config, engine=engine_settings)
    broker = RegisteredBroker(build_broker(config.broker), settings.partitions)
    engine = Engine(config, config_version=config_version, broker=broker)
    ingest = ClusterIngest()
    engine.attach_ingest(ingest)
    engine.services.insert(0, lambda e: ClusterNode(e, settings, ingest=ingest, broker=broker))
    return engine


class ClusterNode:
    """The node's service for one engine session (see the module doc)."""

    def __init__(
        self, engine: Engine, settings: ClusterSettings, *, ingest: ClusterIngest,
        broker: RegisteredBroker, stats: ClusterStats | None = None,
        max_runs_in_flight: int = 1024, pull_batch: int = 256,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.ingest = ingest
        self.broker = broker
        self.partitions = settings.partitions
        self.name = settings.node or default_node_name()
        self.stats = stats or ClusterStats()
        self.tenures: dict[int, PartitionTenure] = {}
        # Flow control: the partitions stop pulling while this many runs are in flight (the
        # backlog stays in the stream; a checkpoint carries the runs in flight, so this also
        # bounds its size); the checkpoint cadence reopens them.
        self.max_runs_in_flight = max_runs_in_flight
        self.pull_batch = pull_batch
        self.room = asyncio.Event()
        self.closing = False
        self.applied = 0
        self.refused = 0
        self.undecodable = 0
        self.refused_checkpoints = 0
        self._refused: set[int] = set()  # partitions whose checkpoint was refused (logged once)
        self.checkpoints = 0
        self.checkpoint_seconds = 0.0
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._stream: ClusterStream | None = None
        self._registry: OrderRegistry | None = None
        self._store: CheckpointStore | None = None
        self._ownership: Ownership | None = None
        self._publisher: ClusterPublisher | None = None
        self._leaving: dict[asyncio.Task[None], int] = {}  # evictions after a loss
        self._checkpointer: asyncio.Task[None] | None = None
        self._slots: tuple[tuple[str, ...], dict[str, int]] = ((), {})
        self._collectors: list[Collector] = []

    # -- what the tenures use -----------------------------------------------------------------

    @property
    def nc(self) -> NATS:
        assert self._nc is not None
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        assert self._js is not None
        return self._js

    @property
    def stream(self) -> ClusterStream:
        assert self._stream is not None
        return self._stream

    @property
    def store(self) -> CheckpointStore:
        assert self._store is not None
        return self._store

    @property
    def registry(self) -> OrderRegistry:
        assert self._registry is not None
        return self._registry

    @property
    def coordinator(self) -> Coordinator:
        coordinator = self.engine.coordinator
        assert coordinator is not None
        return coordinator

    def _index(self, name: str) -> int:
        names, index = self._slots
        workflows = self.engine.workflows
        if len(names) != len(workflows) or name not in index:
            names = tuple(sorted(workflows))
            index = {n: i for i, n in enumerate(names)}
            self._slots = (names, index)
        return index[name]

    def run_id(self, workflow: WorkflowDef, seq: int) -> int:
        """``Coordinator.id_for``: see :func:`run_id`."""
        return run_id(seq, self._index(workflow.name))

    def order_ids(self, seq: int) -> list[str]:
        """The client order ids the runs of stream event ``seq`` would send orders under."""
        ids = []
        for wf in self.engine.workflows.values():
            for step in wf.steps:
                if step.sends_orders:
                    ids.append(f"{wf.name}:{self.run_id(wf, seq)}:{step.name}")
        return ids

    def has_room(self) -> bool:
        coordinator = self.engine.coordinator
        return coordinator is None or len(coordinator.runs) < self.max_runs_in_flight

    async def _cadence(self) -> None:
        interval = self.settings.checkpoint_interval_ms / 1000.0
        while True:
            await asyncio.sleep(interval)  # the group-commit cadence, not a wait on a condition
            if self.has_room():
                self.room.set()
            try:
                await self.checkpoint_all()
            except Exception:  # one bad round must not end checkpointing (nothing acks then)
                log.exception("checkpoint round failed; retried next interval")

    async def checkpoint_all(self) -> None:
        """One checkpoint of every owned partition with something new: the cuts and one
        ``snapshot_many`` pass synchronously (a consistent cut of all of them), then the
        registrations and fenced writes concurrently."""
        cuts = {}
        for tenure in list(self.tenures.values()):
            cut = tenure.cut()
            if cut is not None:
                cuts[tenure] = cut
        if not cuts:
            return
        states = snapshot_many(self.engine, {t.partition: c.seq for t, c in cuts.items()},
                               self.partitions)
        results = await asyncio.gather(
            *(t.commit(c, states[t.partition]) for t, c in cuts.items()), return_exceptions=True
        )
        for tenure, result in zip(cuts, results, strict=True):
            if isinstance(result, BaseException):
                await tenure.failed(result)

    def checkpoint_done(self, seconds: float) -> None:
        self.checkpoints += 1
        self.checkpoint_seconds += seconds

    def lost(self, tenure: PartitionTenure) -> None:
        """A tenure's lease was lost (or its key fenced): out of the engine, nothing written."""
        if self.tenures.get(tenure.partition) is tenure:
            del self.tenures[tenure.partition]
        log.warning("partition %d lost (token %d): evicting without a checkpoint",
                    tenure.partition, tenure.lease.token)
        task = asyncio.get_running_loop().create_task(
            tenure.leave(), name=f"cluster-leave-p{tenure.partition}"
        )
        self._leaving[task] = tenure.partition
        task.add_done_callback(self._leaving.pop)

    # -- OwnershipListener ---------------------------------------------------------------------

    async def acquired(self, lease: HeldLease) -> None:
        # the partition back after a loss: its eviction must be over before the restore
        leaving = [t for t, p in self._leaving.items() if p == lease.partition]
        if leaving:
            await asyncio.wait(leaving)
        tenure = PartitionTenure(self, lease)
        try:
            await tenure.start()
        except CheckpointError as exc:
            # This partition cannot start here (its checkpoint is damaged or foreign); the
            # others go on. Its events wait in the stream (nothing is acked past the stored
            # checkpoint); the lease goes back, and the next poll tries again.
            await tenure.leave()
            self.refused_checkpoints += 1
            if lease.partition not in self._refused:
                self._refused.add(lease.partition)
                log.error("partition %d not taken: %s (repair or remove key p%d of %s_ckpt; "
                          "retried every poll)", lease.partition, exc, lease.partition,
                          self.settings.stream)
            await lease.release()
            return
        except BaseException:
            # whatever was restored leaves with it: the next tenure restores into a clean engine
            await tenure.leave()
            raise
        self.tenures[lease.partition] = tenure
        self._refused.discard(lease.partition)
        log.info("partition %d acquired (token %d) from seq %d", lease.partition, lease.token,
                 tenure.applied + 1)

    async def releasing(self, lease: HeldLease) -> None:
        tenure = self.tenures.pop(lease.partition, None)
        if tenure is not None:
            await tenure.stop()
            log.info("partition %d handed over at seq %d", lease.partition, tenure.checkpointed)

    # -- the service ------------------------------------------------------------------------------

    async def __aenter__(self) -> ClusterNode:
        import nats

        settings = self.settings
        try:
            self._nc = await nats.connect(
                settings.nats_url, name=f"tickflow {self.name}", connect_timeout=5,
                max_reconnect_attempts=-1, reconnect_time_wait=0.2,
            )
        except Exception as exc:
            raise ClusterError(f"cannot connect to NATS at {settings.nats_url}: {exc}") from exc
        try:
            await self._start()
        except BaseException:
            await self._close_connections()
            raise
        return self

    async def _start(self) -> None:
        settings = self.settings
        self._js = js = self.nc.jetstream()
        self._stream = ClusterStream(js, settings)
        await self._stream.ensure()
        buckets = await ensure_control_buckets(
            js, stream=settings.stream, lease_ttl_s=settings.lease_ttl_s,
            replicas=settings.replicas,
        )
        self._store = await CheckpointStore(js, settings).ensure()
        self._registry = OrderRegistry(buckets.orders, registrant=self.name, stats=self.stats)
        self._publisher = await ClusterPublisher(settings, node=self.name).start()
        self.ingest.start(self._publisher)
        coordinator = self.coordinator
        coordinator.id_for = self.run_id
        track(self.engine)  # the per-symbol books ledger, before the broker forgets a fill
        for collector in (ClusterCollector(self.stats), NodeCollector(self)):
            self.engine.metrics_registry.register(collector)
            self._collectors.append(collector)
        self._ownership = Ownership(
            buckets.lease, buckets.members, node=self.name, partitions=self.partitions,
            ttl_s=settings.lease_ttl_s, listener=self, stats=self.stats,
        )
        await self._ownership.start()
        self._checkpointer = asyncio.create_task(self._cadence(), name="cluster-checkpoints")
        log.info("cluster node joined",
                 extra={"node": self.name, "partitions": sorted(self.tenures)})

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.closing = True
        self.room.set()  # a delivery waiting for room finishes: the hand-over stops after it
        try:
            checkpointer, self._checkpointer = self._checkpointer, None
            if checkpointer is not None:
                checkpointer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await checkpointer
            if self._ownership is not None:
                await self._ownership.close()  # hand-over: last checkpoints, release, leave
            if self._leaving:
                await asyncio.wait(self._leaving)
            self.ingest.stop()
            if self._publisher is not None:
                await self._publisher.close()
        finally:
            for collector in self._collectors:
                with contextlib.suppress(KeyError):
                    self.engine.metrics_registry.unregister(collector)
            self._collectors.clear()
            coordinator = self.engine.coordinator
            if coordinator is not None:
                coordinator.id_for = None
            await self._close_connections()

    async def _close_connections(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            with contextlib.suppress(Exception):
                await nc.drain()

    def describe(self) -> dict[str, Any]:
        return {"node": self.name, "partitions": [t.describe() for t in self.tenures.values()],
                "applied": self.applied, "checkpoints": self.checkpoints}


class NodeCollector(Collector):
    """The data plane's ``tickflow_cluster_*`` families of one node."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        n = self.node
        yield CounterMetricFamily("tickflow_cluster_events_applied",
                                  "Stream events applied by this node's partitions.",
                                  value=n.applied)
        yield CounterMetricFamily("tickflow_cluster_events_refused",
                                  "Stream events the engine refused (or could not decode).",
                                  value=n.refused + n.undecodable)
        yield CounterMetricFamily("tickflow_cluster_checkpoints",
                                  "Partition checkpoints stored (fenced writes).",
                                  value=n.checkpoints)
        yield CounterMetricFamily("tickflow_cluster_checkpoint_seconds",
                                  "Time spent taking and storing checkpoints (snapshot, order "
                                  "registration, fenced write).", value=n.checkpoint_seconds)
        yield GaugeMetricFamily(
            "tickflow_cluster_partition_unacked",
            "Events applied but not yet covered by a stored checkpoint, per owned partition.",
            value=sum(t.applied - t.checkpointed for t in list(n.tenures.values())),
        )
