"""The control plane's counters and their Prometheus families.

As for the engine (:mod:`engine.service.metrics`), the code that counts never touches
prometheus-client: leases, membership and the ownership loop add to the plain ints of one
:class:`ClusterStats`, and :class:`ClusterCollector` turns them into metric families when
``/metrics`` is scraped. The node wiring registers the collector on the daemon's registry
(``registry.register(ClusterCollector(stats))``). Every series exists at 0 from the first
scrape, and no label takes a value outside a fixed set (no partition or node labels: a
partition count of 1024 would be 1024 series per metric).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["LOSS_REASONS", "ClusterCollector", "ClusterStats"]

# Why a lease was lost (never "released": a graceful release is not a loss).
LOSS_REASONS = ("renewal_failed", "expired_locally", "superseded", "closed")


@dataclass(slots=True)
class ClusterStats:
    """Plain counters of one node's control plane; read at scrape time."""

    partitions_owned: int = 0
    live_nodes: int = 0
    lease_renewals: int = 0
    lease_losses: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LOSS_REASONS, 0))
    lease_releases: int = 0
    acquisitions: int = 0
    takeovers: int = 0
    assignment_changes: int = 0
    heartbeats: int = 0
    heartbeat_failures: int = 0
    orders_registered: int = 0
    orders_duplicate: int = 0

    def lost(self, reason: str) -> None:
        self.lease_losses[reason] = self.lease_losses.get(reason, 0) + 1


class ClusterCollector(Collector):
    """``tickflow_cluster_*`` families from one :class:`ClusterStats`."""

    def __init__(self, stats: ClusterStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        yield GaugeMetricFamily(
            "tickflow_cluster_partitions_owned",
            "Partitions whose lease this node holds now.",
            value=s.partitions_owned,
        )
        yield GaugeMetricFamily(
            "tickflow_cluster_live_nodes",
            "Nodes with a live heartbeat, as this node last saw them.",
            value=s.live_nodes,
        )
        yield CounterMetricFamily(
            "tickflow_cluster_lease_renewals",
            "Lease renewals that succeeded (update with the last revision).",
            value=s.lease_renewals,
        )
        losses = CounterMetricFamily(
            "tickflow_cluster_lease_losses",
            "Leases lost while held, by reason: a renewal failed, the renewal could not "
            "complete before the local expiry, a newer revision superseded it, the connection "
            "closed.",
            labels=["reason"],
        )
        for reason in sorted(s.lease_losses):
            losses.add_metric([reason], s.lease_losses[reason])
        yield losses
        yield CounterMetricFamily(
            "tickflow_cluster_lease_releases",
            "Leases this node gave up gracefully (rebalance or shutdown).",
            value=s.lease_releases,
        )
        yield CounterMetricFamily(
            "tickflow_cluster_lease_acquisitions",
            "Partitions this node acquired a lease for.",
            value=s.acquisitions,
        )
        yield CounterMetricFamily(
            "tickflow_cluster_takeovers",
            "Acquisitions of a partition another node held before (it released it or its "
            "lease expired while this node waited).",
            value=s.takeovers,
        )
        yield CounterMetricFamily(
            "tickflow_cluster_assignment_changes",
            "Times the partition -> node assignment this node computes changed.",
            value=s.assignment_changes,
        )
        yield CounterMetricFamily(
            "tickflow_cluster_heartbeats",
            "Membership heartbeats written.",
            value=s.heartbeats,
        )
        yield CounterMetricFamily(
            "tickflow_cluster_heartbeat_failures",
            "Membership heartbeats that failed (the node rejoins on the next one).",
            value=s.heartbeat_failures,
        )
        orders = CounterMetricFamily(
            "tickflow_cluster_orders_registered",
            "Order ids registered in the registry, by outcome: won (first) or duplicate (a "
            "replay found it registered and reports the original fill).",
            labels=["outcome"],
        )
        orders.add_metric(["won"], s.orders_registered)
        orders.add_metric(["duplicate"], s.orders_duplicate)
        yield orders
