"""The cluster node's pure parts: derived run ids, the broker seen through the registry, and
the configs ``build_cluster_engine`` refuses (each with a clear message)."""

from __future__ import annotations

import msgspec
import pytest

from engine.config import loads_config
from engine.config.schema import BrokerSettings
from engine.service.cluster.errors import ClusterConfigError
from engine.service.cluster.fills import RegisteredBroker, decode_fill, encode_fill
from engine.service.cluster.node import RUN_ID_BASE, build_cluster_engine, run_id
from engine.service.cluster.partition import partition_of
from engine.service.cluster.tenure import Applied, PartitionTenure
from engine.service.trading import build_broker

BASE = """
[source]
kind = "none"
[metrics]
enabled = false
[cluster]
enabled = true
partitions = 8
[workflows.w]
priority = 1
max_concurrent = 1
[[workflows.w.steps]]
name = "a"
action = "tests.unit.config_actions:async_step"
"""


def test_run_ids_are_unique_per_event_and_workflow_and_far_above_the_counter() -> None:
    ids = {run_id(seq, w) for seq in range(1, 200) for w in range(4)}
    assert len(ids) == 199 * 4
    assert min(ids) > RUN_ID_BASE
    with pytest.raises(ClusterConfigError, match="at most 256 workflows"):
        run_id(1, 256)


def test_the_broker_keeps_fresh_fills_per_partition_and_replays_known_ones() -> None:
    broker = RegisteredBroker(build_broker(BrokerSettings()), 8)
    fill = broker.submit("w:1:a", "AAA", "BUY", 2.0, 100.0, 1.0)
    again = broker.submit("w:1:a", "AAA", "BUY", 2.0, 101.0, 2.0)  # a retry: not fresh
    assert again == fill
    p = partition_of("AAA", 8)
    assert broker.take_fresh(p) == [fill]
    assert broker.take_fresh(p) == []
    # a fill registered by another node: fill_for answers with it, so the order path replays
    # it on its original terms, and the paper broker reproduces it exactly
    other = RegisteredBroker(build_broker(BrokerSettings()), 8)
    other.learn(decode_fill(encode_fill(fill)))
    known = other.fill_for("w:1:a")
    assert known == fill
    replayed = other.submit("w:1:a", known.symbol, known.side, known.qty, known.last_price,
                            known.ts)
    assert replayed == fill
    assert other.position("AAA").qty == 2.0
    other.drop(p)
    assert other.fill_for("w:9:a") is None
    other.put_back(p, [fill])
    assert other.take_fresh(p) == [fill]  # drop forgot the replayed one with the partition


def test_cluster_mode_refuses_storage_with_a_clear_message() -> None:
    config = loads_config(BASE)  # storage is on by default
    with pytest.raises(ClusterConfigError, match=r"\[storage\] enabled = false"):
        build_cluster_engine(config)


def test_cluster_mode_turns_the_sweep_off_and_publishes_its_input() -> None:
    config = loads_config(BASE + "\n[storage]\nenabled = false\n")
    engine = build_cluster_engine(config)
    assert engine.config.engine.sweep_interval_s >= 1e8
    assert engine.ingest is not None
    assert isinstance(engine.broker, RegisteredBroker)
    assert len(engine.services) == 1


def test_a_disabled_cluster_is_not_a_node() -> None:
    config = loads_config(BASE.replace("enabled = true", "enabled = false"))
    with pytest.raises(ClusterConfigError, match="enabled is false"):
        build_cluster_engine(config)
    assert msgspec.structs.asdict(config.cluster)["enabled"] is False


class _Lease:
    partition = 3
    held = True


class _Node:
    def __init__(self) -> None:
        self.broker = RegisteredBroker(build_broker(BrokerSettings()), 8)


def test_a_cut_keeps_the_applied_counts_as_of_its_seq() -> None:
    """Events go on being applied while a checkpoint registers fills and writes: the counts it
    stores are the cut's, or the next owner's replay from seq + 1 counts some events twice
    (the failover test saw 38 applications of 37 events)."""
    tenure = PartitionTenure(_Node(), _Lease())  # type: ignore[arg-type]
    tenure.counts["S"] = Applied(count=1, last_ts=1.0)
    tenure.applied = 5
    cut = tenure.cut()
    assert cut is not None
    assert cut.seq == 5
    tenure.counts["S"].count += 1  # seq 6 applied before the checkpoint is written
    tenure.counts["S"].last_ts = 2.0
    tenure.applied = 6
    assert cut.counts == {"S": Applied(count=1, last_ts=1.0)}
