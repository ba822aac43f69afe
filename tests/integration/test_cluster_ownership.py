"""Membership, assignment and leases together: 1, 2, 3 nodes in one process against a real
nats-server, each on its own connection. The spread is even, joins and leaves rebalance, a
node whose connection dies loses its partitions to the others within ttl + 1 s, and no
partition ever has two owners -- checked on the nodes' own clocks and in the lease bucket's
history on the server's."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from engine.service.cluster.assign import assign, owned_by
from engine.service.cluster.buckets import ensure_control_buckets
from engine.service.cluster.errors import ClusterError
from engine.service.cluster.lease import HeldLease, LeaseRecord
from engine.service.cluster.ownership import Ownership
from tests.cluster_support import connect, run, wait_until
from tests.nats_support import NatsServer

TTL = 2.0
PARTITIONS = 12
pytestmark = pytest.mark.slow


@dataclass
class Tenure:
    partition: int
    node: str
    token: int
    start: float
    end: float = math.inf


@dataclass
class Recorder:
    """Every node's tenures on one monotonic clock (all nodes share this process)."""

    tenures: list[Tenure] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def listener(self, node: str) -> Listener:
        return Listener(self, node)

    def check_no_overlap(self) -> None:
        by_partition: dict[int, list[Tenure]] = defaultdict(list)
        for tenure in self.tenures:
            by_partition[tenure.partition].append(tenure)
        for p, tenures in by_partition.items():
            tenures.sort(key=lambda t: t.start)
            for before, after in itertools.pairwise(tenures):
                assert after.start >= before.end, (
                    f"partition {p}: {after.node} acquired at {after.start:.3f} while "
                    f"{before.node} held it until {before.end:.3f}"
                )


class Listener:
    def __init__(self, recorder: Recorder, node: str) -> None:
        self.recorder, self.node = recorder, node

    async def acquired(self, lease: HeldLease) -> None:
        tenure = Tenure(lease.partition, self.node, lease.token, time.monotonic())
        self.recorder.tenures.append(tenure)

        async def ended() -> None:
            await lease.ended.wait()
            tenure.end = time.monotonic()  # noticed a little late: stricter, never laxer

        task = asyncio.create_task(ended())
        self.recorder.tasks.add(task)
        task.add_done_callback(self.recorder.tasks.discard)

    async def releasing(self, lease: HeldLease) -> None:
        assert lease.held


class History:
    """Every write to the lease bucket, as the server ordered and stamped it."""

    def __init__(self) -> None:
        self.entries: list[Any] = []
        self.task: asyncio.Task[None] | None = None
        self.watcher: Any = None

    async def start(self, server: NatsServer) -> None:
        self.nc = await connect(server)
        buckets = await ensure_control_buckets(self.nc.jetstream(), stream="T",
                                               lease_ttl_s=TTL, replicas=1)
        self.watcher = await buckets.lease.watch(">", include_history=True)

        async def pump() -> None:
            async for entry in self.watcher:
                if entry is not None:
                    self.entries.append(entry)

        self.task = asyncio.create_task(pump())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.nc.close()

    def check(self) -> int:
        """For every key: a new tenure starts only after the previous one was deleted or
        had gone a full TTL without a write. Returns the number of tenures seen."""
        last: dict[str, tuple[int, Any, bool]] = {}  # key -> (token, last write, deleted)
        tenures = 0
        for entry in self.entries:
            if entry.operation in ("DEL", "PURGE"):
                token, write, _ = last[entry.key]
                last[entry.key] = (token, write, True)
                continue
            record = msgspec.json.decode(entry.value, type=LeaseRecord)
            if record.token:  # a renewal: of the tenure that holds the key
                assert last[entry.key][0] == record.token, f"{entry.key}: foreign renewal"
                last[entry.key] = (record.token, entry, False)
                continue
            tenures += 1
            if entry.key in last:
                _token, write, deleted = last[entry.key]
                gap = (entry.created - write.created).total_seconds()
                assert deleted or gap >= TTL - 0.05, (
                    f"{entry.key}: created {gap:.3f} s after the last renewal, not released"
                )
            last[entry.key] = (entry.revision, entry, False)
        return tenures


async def _node(server: NatsServer, name: str, recorder: Recorder) -> tuple[Any, Ownership]:
    nc = await connect(server)
    buckets = await ensure_control_buckets(nc.jetstream(), stream="T", lease_ttl_s=TTL,
                                           replicas=1)
    node = Ownership(buckets.lease, buckets.members, node=name, partitions=PARTITIONS,
                     ttl_s=TTL, listener=recorder.listener(name))
    await node.start()
    return nc, node


def _settled(nodes: list[Ownership]) -> bool:
    """Every node sees exactly these nodes, computes one assignment and holds its share."""
    names = {n.node for n in nodes}
    target = assign(PARTITIONS, names)
    held: set[int] = set()
    for n in nodes:
        if n.live != names or n.assignment != target:
            return False
        owned = set(n.owned)
        if owned != owned_by(target, n.node) or owned & held:
            return False
        held |= owned
    return len(held) == PARTITIONS


def test_one_two_three_nodes_spread_evenly_and_rebalance(nats_server: NatsServer) -> None:
    recorder, history = Recorder(), History()

    async def body() -> None:
        await history.start(nats_server)
        nc_a, a = await _node(nats_server, "a", recorder)
        await wait_until(lambda: _settled([a]), 5, "one node owns every partition")
        nc_b, b = await _node(nats_server, "host-b:1234", recorder)
        await wait_until(lambda: _settled([a, b]), TTL + 5, "two nodes settle")
        assert sorted(len(n.owned) for n in (a, b)) == [6, 6]
        nc_c, c = await _node(nats_server, "c", recorder)
        await wait_until(lambda: _settled([a, b, c]), TTL + 5, "three nodes settle")
        assert sorted(len(n.owned) for n in (a, b, c)) == [4, 4, 4]
        assert a.stats.assignment_changes >= 2
        assert b.stats.takeovers + c.stats.takeovers >= 1  # they waited for a's releases
        # a graceful leave hands back at once: no TTL to wait for
        await c.close()
        await wait_until(lambda: _settled([a, b]), TTL, "two nodes settle after c left")
        assert sorted(len(n.owned) for n in (a, b)) == [6, 6]
        assert sum(c.stats.lease_losses.values()) == 0
        for node in (a, b):
            await node.close()
        await asyncio.sleep(0)
        for nc in (nc_a, nc_b, nc_c):
            await nc.close()
        await wait_until(lambda: not recorder.tasks, 5, "tenure end recorded")
        await wait_until(lambda: len(history.entries) > 0, 5, "history arrived")
        await history.stop()

    run(body, timeout=90)
    recorder.check_no_overlap()
    assert history.check() == len(recorder.tenures)


def test_a_node_whose_connection_dies_loses_its_partitions_within_ttl_plus_1s(
    nats_server: NatsServer,
) -> None:
    recorder, history = Recorder(), History()

    async def body() -> None:
        await history.start(nats_server)
        started = [await _node(nats_server, name, recorder) for name in ("a", "b", "c")]
        nodes = [node for _nc, node in started]
        await wait_until(lambda: _settled(nodes), TTL + 8, "three nodes settle")
        nc_c, c = started[2]
        held_by_c = set(c.owned)
        assert len(held_by_c) == 4
        killed_at = time.monotonic()
        await nc_c.close()  # no release, no leave: to the others c just stops renewing
        await wait_until(lambda: not c.owned, TTL, "c stops believing it owns anything")
        assert c.failed is not None
        took = await wait_until(lambda: _settled(nodes[:2]), TTL + 3,
                                "a and b own every partition")
        elapsed = time.monotonic() - killed_at
        assert elapsed <= TTL + 1.0, f"takeover took {elapsed:.2f} s (waited {took:.2f})"
        assert set(nodes[0].owned) | set(nodes[1].owned) >= held_by_c
        assert nodes[0].stats.takeovers + nodes[1].stats.takeovers >= len(held_by_c)
        for _nc, node in started[:2]:
            await node.close()
        for nc, _ in started[:2]:
            await nc.close()
        await wait_until(lambda: not recorder.tasks, 5, "tenure end recorded")
        await history.stop()

    run(body, timeout=90)
    recorder.check_no_overlap()
    assert history.check() == len(recorder.tenures)


def test_a_second_live_node_with_the_same_name_is_refused(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc_a, a = await _node(nats_server, "same", Recorder())
        nc = await connect(nats_server)
        buckets = await ensure_control_buckets(nc.jetstream(), stream="T", lease_ttl_s=TTL,
                                               replicas=1)
        twin = Ownership(buckets.lease, buckets.members, node="same", partitions=PARTITIONS,
                         ttl_s=TTL)
        with pytest.raises(ClusterError, match=r"node name 'same' is in use by a live node"):
            await twin.membership.join(wait_s=TTL / 2)
        await a.close()
        # after a graceful leave the name is free at once
        await twin.membership.join(wait_s=0)
        await twin.membership.leave()
        await nc_a.close()
        await nc.close()

    run(body)


def test_a_node_missing_from_the_live_set_gives_its_partitions_up_then_rejoins(
    nats_server: NatsServer,
) -> None:
    """Its heartbeat key vanished (it stalled past the TTL, or someone deleted it): the others
    no longer count it, so neither may it -- it releases everything, then its next heartbeat
    rejoins and it takes its share again."""
    recorder = Recorder()

    async def body() -> None:
        nc_a, a = await _node(nats_server, "a", recorder)
        await wait_until(lambda: _settled([a]), 5, "a owns everything")
        tokens = {p: lease.token for p, lease in a.owned.items()}
        await a.membership.kv.delete(a.membership.key)
        await wait_until(lambda: not a.owned, TTL, "a gives everything up")
        assert a.stats.lease_releases == PARTITIONS
        assert sum(a.stats.lease_losses.values()) == 0
        await wait_until(lambda: _settled([a]), 2 * TTL, "a rejoins and owns everything")
        assert all(a.owned[p].token > tokens[p] for p in tokens)  # new tenures, new tokens
        await a.close()
        await nc_a.close()
        await wait_until(lambda: not recorder.tasks, 5, "tenure end recorded")

    run(body)
    recorder.check_no_overlap()


class FailingListener:
    async def acquired(self, lease: HeldLease) -> None:
        raise RuntimeError("the data plane could not start")

    async def releasing(self, lease: HeldLease) -> None:
        raise AssertionError("never reached: acquired failed")


def test_a_partition_the_listener_cannot_start_is_handed_back(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc = await connect(nats_server)
        buckets = await ensure_control_buckets(nc.jetstream(), stream="T", lease_ttl_s=TTL,
                                               replicas=1)
        node = Ownership(buckets.lease, buckets.members, node="a", partitions=2, ttl_s=TTL,
                         listener=FailingListener())
        await node.membership.join()
        with pytest.raises(RuntimeError, match="could not start"):
            await node.step()
        assert not node.owned
        assert node.stats.lease_releases == 1
        # released, not left to expire: the key is free for the next create right away
        assert await buckets.lease.create("p0", b"probe") > 0
        await node.membership.leave()
        await nc.close()

    run(body)


def test_a_nats_restart_stops_every_owner_then_the_cluster_recovers(
    nats_server: NatsServer,
) -> None:
    """While the server is down no renewal can complete: every node loses every lease by its
    local deadline (nobody consumes on a lease it cannot renew). The buckets are files, so
    after the restart the old lease keys are still there until their TTL runs out; then the
    nodes acquire again, each its share, with new tokens."""
    recorder = Recorder()

    async def body() -> None:
        started = []
        for name in ("a", "b"):
            nc = await connect(nats_server, allow_reconnect=True, max_reconnect_attempts=-1,
                               reconnect_time_wait=0.1)
            buckets = await ensure_control_buckets(nc.jetstream(timeout=1.0), stream="T",
                                                   lease_ttl_s=TTL, replicas=1)
            node = Ownership(buckets.lease, buckets.members, node=name, partitions=6,
                             ttl_s=TTL, listener=recorder.listener(name))
            await node.start()
            started.append((nc, node))
        nodes = [node for _nc, node in started]

        def settled() -> bool:
            target = assign(6, {"a", "b"})
            return all(set(n.owned) == owned_by(target, n.node) for n in nodes)

        await wait_until(settled, TTL + 5, "two nodes settle")
        before = {p: lease.token for n in nodes for p, lease in n.owned.items()}
        nats_server.stop()
        await wait_until(lambda: not any(n.owned for n in nodes), TTL, "every owner stops")
        nats_server.start()
        await wait_until(lambda: settled() and len(nodes[0].live) == 2, 3 * TTL + 5,
                         "the cluster recovers")
        after = {p: lease.token for n in nodes for p, lease in n.owned.items()}
        assert all(after[p] > before[p] for p in before)
        assert sum(sum(n.stats.lease_losses.values()) for n in nodes) == 6
        assert all(n.failed is None for n in nodes)
        for nc, node in started:
            await node.close()
            await nc.close()
        await wait_until(lambda: not recorder.tasks, 5, "tenure end recorded")

    run(body, timeout=90)
    recorder.check_no_overlap()
