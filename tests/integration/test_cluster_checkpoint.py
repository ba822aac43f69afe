"""Checkpoints and takeover against a real nats-server: the claim fences a stale owner out,
and a new owner resumes at the checkpoint's sequence + 1 in stream order, losing nothing and
applying nothing twice."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from engine.core.events import DataReady, Event
from engine.service.cluster.checkpoint import CheckpointStore, take_over
from engine.service.cluster.consume import PartitionConsumer
from engine.service.cluster.errors import ClusterError, LeaseLost
from engine.service.cluster.publish import ClusterPublisher
from engine.service.cluster.stream import ClusterStream
from tests.cluster_data_support import Collected, connect, run, settings, wait_for
from tests.nats_support import NatsServer


async def _stores(server: NatsServer) -> tuple[Any, CheckpointStore, CheckpointStore]:
    nc = await connect(server.url)
    a = await CheckpointStore(nc.jetstream(), settings()).ensure()
    b = await CheckpointStore(nc.jetstream(), settings()).ensure()
    return nc, a, b


def test_the_bucket_is_created_and_read_back(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc, store, _ = await _stores(nats_server)
        info = await nc.jetstream().stream_info("KV_TF_ckpt")
        assert info.config.max_msgs_per_subject == 1
        assert info.config.max_age == 0.0
        assert await store.load(3) is None
        await nc.close()

    run(body())


def test_save_and_load_round_trip_the_state(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc, store, other = await _stores(nats_server)
        claimed = await store.claim(3, fence=7)
        assert (claimed.seq, claimed.state, claimed.fence) == (0, None, 7)
        state = {"positions": {"AAPL": 3.0}, "runs": [[1, "wf"]]}
        saved = await store.save(3, 42, state, fence=7)
        loaded = await other.load(3)
        assert loaded is not None
        assert (loaded.seq, loaded.state, loaded.fence) == (42, state, 7)
        assert loaded.revision == saved.revision
        raw = (await (await nc.jetstream().key_value("TF_ckpt")).get("p3")).value
        assert set(json.loads(raw)) == {"seq", "ts", "fence", "state"}
        with pytest.raises(ClusterError, match=r"checkpoints only move forward"):
            await store.save(3, 41, state, fence=7)
        with pytest.raises(ClusterError, match=r"save before claim"):
            await other.save(3, 50, state, fence=7)
        with pytest.raises(ClusterError, match=r"state is not JSON"):
            await store.save(3, 43, {"x": object()}, fence=7)
        await nc.close()

    run(body())


def test_a_write_under_an_older_fence_fails_with_lease_lost(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc, old, new = await _stores(nats_server)
        await old.claim(1, fence=5)
        await old.save(1, 10, {"n": 10}, fence=5)
        taken = await new.claim(1, fence=9)  # the new owner's claim
        assert (taken.seq, taken.state) == (10, {"n": 10})
        with pytest.raises(LeaseLost, match=r"written by fence 9 since .* another node owns"):
            await old.save(1, 11, {"n": 11}, fence=5)
        # a stale node cannot claim back over a newer fence either
        with pytest.raises(LeaseLost, match=r"fence 9, newer than this node's 5"):
            await old.claim(1, fence=5)
        assert (await new.save(1, 12, {"n": 12}, fence=9)).seq == 12
        with pytest.raises(LeaseLost, match=r"fence 8 is older than 9"):
            await new.save(1, 13, {"n": 13}, fence=8)
        await nc.close()

    run(body())


def test_a_claim_racing_a_stale_save_adopts_the_stale_state(nats_server: NatsServer) -> None:
    """The previous owner's last save lands between the new owner's load and its claim: the
    claim fails its compare-and-set, reloads, and resumes from that save."""
    async def body() -> None:
        nc, old, new = await _stores(nats_server)
        await old.claim(2, fence=1)
        await old.save(2, 5, {"n": 5}, fence=1)
        original_load = new.load
        raced = False

        async def load_then_stale_save(partition: int) -> Any:
            nonlocal raced
            got = await original_load(partition)
            if not raced:
                raced = True
                await old.save(2, 6, {"n": 6}, fence=1)
            return got

        new.load = load_then_stale_save  # type: ignore[method-assign]
        claimed = await new.claim(2, fence=2)
        assert (claimed.seq, claimed.state, claimed.fence) == (6, {"n": 6}, 2)
        await nc.close()

    run(body())


def test_takeover_resumes_after_the_checkpoint_in_order(nats_server: NatsServer) -> None:
    """A applies 1..k, checkpoints at j, dies with unacked messages pending; B claims, the
    durable restarts at j+1, B receives j+1.. in order: nothing lost, nothing <= j twice."""
    total, k, j = 300, 200, 150

    async def body() -> None:
        admin = await connect(nats_server.url)
        stream = ClusterStream(admin.jetstream(), settings(partitions=1))
        await stream.ensure()
        pub = await ClusterPublisher(settings(partitions=1), node="n1",
                                     url=nats_server.url).start()
        symbols = ["AAPL", "MSFT", "IBM"]
        await asyncio.gather(*[pub.publish(DataReady(symbol=symbols[n % 3], ts=float(n),
                                                     price=1.0)) for n in range(total)])

        # A: owner under fence 1
        nc_a = await connect(nats_server.url)
        store_a = await CheckpointStore(nc_a.jetstream(), settings(partitions=1)).ensure()
        resumed = await take_over(ClusterStream(nc_a.jetstream(), settings(partitions=1)),
                                  store_a, 0, fence=1)
        assert resumed.seq == 0
        applied_a: list[int] = []
        reached_k = asyncio.Event()

        async def deliver_a(partition: int, seq: int, event: Event) -> None:
            if seq > k:
                return  # "dies" after applying k: the rest never reaches its state
            applied_a.append(seq)
            if seq == j:
                await store_a.save(0, j, {"applied": j}, fence=1)
                await consumer_a.checkpointed(j)
            if seq == k:
                reached_k.set()

        consumer_a = await PartitionConsumer(nc_a, settings(partitions=1), 0, deliver_a,
                                             start_after=resumed.seq).start()
        await asyncio.wait_for(reached_k.wait(), 30)

        async def acked_to_j() -> bool:
            # the ack is fire and forget on A's connection; this asks on another one
            info = await stream.consumer_info(0)
            assert info is not None
            assert info.ack_floor.stream_seq <= j  # never past the checkpoint
            return bool(info.ack_floor.stream_seq == j and info.num_ack_pending > 0)

        # acked up to the checkpoint, unacked messages pending when A dies
        await wait_for(acked_to_j, what="ack floor at the checkpoint")
        await nc_a.close()  # A dies: its connection closes mid-stream

        # B: takes over under fence 2
        nc_b = await connect(nats_server.url)
        store_b = await CheckpointStore(nc_b.jetstream(), settings(partitions=1)).ensure()
        checkpoint = await take_over(ClusterStream(nc_b.jetstream(), settings(partitions=1)),
                                     store_b, 0, fence=2)
        assert (checkpoint.seq, checkpoint.state) == (j, {"applied": j})
        applied_b = Collected()

        async def deliver_b(partition: int, seq: int, event: Event) -> None:
            applied_b.add(seq)

        consumer_b = await PartitionConsumer(nc_b, settings(partitions=1), 0, deliver_b,
                                             start_after=checkpoint.seq).start()
        await applied_b.until(lambda g: len(g) >= total - j, what="B's replay")
        await consumer_b.stop()
        assert applied_b == list(range(j + 1, total + 1))
        # the state B holds is A's up to j plus B's own: every sequence exactly once
        assert applied_a[:j] + applied_b == list(range(1, total + 1))
        # A, back on a new connection with its stale claim, cannot overwrite B's checkpoint
        nc_a = await connect(nats_server.url)
        store_a.js = nc_a.jetstream()
        await store_a.ensure()
        with pytest.raises(LeaseLost, match=r"written by fence 2"):
            await store_a.save(0, k, {"applied": k}, fence=1)
        await nc_a.close()
        await pub.close()
        await nc_b.close()
        await admin.close()

    run(body())
