"""The control plane's Prometheus families: every series at 0 from the start, then counts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from engine.service.cluster.cluster_metrics import LOSS_REASONS, ClusterCollector, ClusterStats


def _scrape(stats: ClusterStats) -> str:
    registry = CollectorRegistry()
    registry.register(ClusterCollector(stats))
    return generate_latest(registry).decode()


def test_every_series_exists_at_zero() -> None:
    text = _scrape(ClusterStats())
    for line in (
        "tickflow_cluster_partitions_owned 0.0",
        "tickflow_cluster_live_nodes 0.0",
        "tickflow_cluster_lease_renewals_total 0.0",
        "tickflow_cluster_lease_releases_total 0.0",
        "tickflow_cluster_lease_acquisitions_total 0.0",
        "tickflow_cluster_takeovers_total 0.0",
        "tickflow_cluster_assignment_changes_total 0.0",
        "tickflow_cluster_heartbeats_total 0.0",
        "tickflow_cluster_heartbeat_failures_total 0.0",
        'tickflow_cluster_orders_registered_total{outcome="won"} 0.0',
        'tickflow_cluster_orders_registered_total{outcome="duplicate"} 0.0',
    ):
        assert line in text.splitlines(), line
    for reason in LOSS_REASONS:
        assert f'tickflow_cluster_lease_losses_total{{reason="{reason}"}} 0.0' in text


def test_counts_show_up() -> None:
    stats = ClusterStats(partitions_owned=11, live_nodes=3, lease_renewals=40, takeovers=2)
    stats.lost("superseded")
    stats.lost("superseded")
    lines = _scrape(stats).splitlines()
    assert "tickflow_cluster_partitions_owned 11.0" in lines
    assert "tickflow_cluster_live_nodes 3.0" in lines
    assert "tickflow_cluster_lease_renewals_total 40.0" in lines
    assert "tickflow_cluster_takeovers_total 2.0" in lines
    assert 'tickflow_cluster_lease_losses_total{reason="superseded"} 2.0' in lines
