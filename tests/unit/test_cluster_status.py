"""The cluster status report's pure parts: ranges, ages and the text layout."""

from __future__ import annotations

from engine.service.cluster.status import (
    ClusterStatus,
    NodeStatus,
    PartitionStatus,
    _age,
    _ranges,
    durable_name,
    format_status,
)


def test_ranges_and_ages() -> None:
    assert _ranges([0, 1, 2, 3, 7, 9, 10]) == "0-3, 7, 9-10"
    assert _ranges([5]) == "5"
    assert (_age(None), _age(0.25), _age(75), _age(7300)) == ("-", "0.2s", "1m15s", "2h01m")
    assert durable_name("TICKFLOW", 7) == "TICKFLOW_p7"


def test_text_report_lists_nodes_partitions_and_notes() -> None:
    status = ClusterStatus(
        nats_url="nats://127.0.0.1:4222", stream="TF", partitions=2,
        nodes=[NodeStatus(node="a", instance="i1", heartbeat_age_s=0.5, up_s=61)],
        owners=[
            PartitionStatus(partition=0, owner="a", instance="i1", token=3, revision=9,
                            held_s=12, last_seq=100, ack_floor=90, lag=10, unacked=7,
                            checkpoint_age_s=0.1),
            PartitionStatus(partition=1),
        ],
        stream_exists=True, notes=["1 partition(s) without an owner: 1"],
    )
    lines = format_status(status).splitlines()
    assert lines[0] == "cluster TF at nats://127.0.0.1:4222: 2 partitions, 1 live node(s)"
    node_row = lines[3].split()
    assert node_row == ["a", "i1", "0.5s", "1m01s", "1"]
    p0 = next(line.split() for line in lines if line.split()[:2] == ["0", "a"])
    assert p0 == ["0", "a", "3", "9", "12.0s", "100", "90", "10", "7", "0.1s"]
    p1 = next(line.split() for line in lines if line.split()[:1] == ["1"])
    assert p1 == ["1", "-", "-", "-", "-", "-", "-", "-", "-", "-"]
    assert lines[-1] == "note: 1 partition(s) without an owner: 1"
