"""The continuous pull loop against a real nats-server: stream order per partition with each
message's stream sequence, acks only up to the declared checkpoint, and an immediate stop when
the lease goes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from engine.core.events import DataReady, Event
from engine.service.cluster.consume import PartitionConsumer, stream_seq_of
from engine.service.cluster.errors import ClusterError, LeaseLost
from engine.service.cluster.partition import partition_of
from engine.service.cluster.publish import ClusterPublisher
from engine.service.cluster.stream import ClusterStream
from tests.cluster_data_support import Collected, connect, run, settings, wait_for
from tests.nats_support import NatsServer

SYMBOLS = [f"S{i:03d}" for i in range(50)]


def _event(symbol: str, n: int) -> DataReady:
    return DataReady(symbol=symbol, ts=float(n), price=100.0)


async def _setup(server: NatsServer, partitions: int, total: int) -> tuple[Any, ClusterStream]:
    nc = await connect(server.url)
    stream = ClusterStream(nc.jetstream(), settings(partitions=partitions))
    await stream.ensure()
    for p in range(partitions):
        await stream.ensure_consumer(p)
    if total:
        pub = await ClusterPublisher(settings(partitions=partitions), node="n1",
                                     url=server.url).start()
        await asyncio.gather(*[pub.publish(_event(SYMBOLS[n % len(SYMBOLS)], n))
                               for n in range(total)])
        await pub.close()
    return nc, stream


def test_stream_seq_of_both_ack_subject_versions() -> None:
    assert stream_seq_of("$JS.ACK.TF.TF_p1.1.42.7.1700000000.3") == 42
    assert stream_seq_of("$JS.ACK.dom.acchash.TF.TF_p1.1.42.7.1700000000.3.tok") == 42
    with pytest.raises(ClusterError, match=r"not a JetStream ack subject"):
        stream_seq_of("_INBOX.abc")


def test_ten_thousand_messages_arrive_in_order_once_per_partition(
    nats_server: NatsServer,
) -> None:
    total, partitions = 10_000, 4

    async def body() -> None:
        nc, _ = await _setup(nats_server, partitions, total)
        seen: dict[int, list[tuple[int, Event]]] = {p: [] for p in range(partitions)}
        done = asyncio.Event()
        count = 0

        async def deliver(partition: int, seq: int, event: Event) -> None:
            nonlocal count
            seen[partition].append((seq, event))
            count += 1
            if count == total:
                done.set()

        consumers = [await PartitionConsumer(nc, settings(partitions=partitions), p, deliver,
                                             batch=256).start() for p in range(partitions)]
        await asyncio.wait_for(done.wait(), 60)
        for c in consumers:
            await c.stop()
        per_symbol: dict[str, list[float]] = {}
        for p, got in seen.items():
            seqs = [s for s, _ in got]
            assert seqs == sorted(set(seqs)), f"partition {p}: not in stream order, or twice"
            for _, event in got:
                assert partition_of(event.symbol, partitions) == p
                per_symbol.setdefault(event.symbol, []).append(event.ts)
        assert {s: len(v) for s, v in per_symbol.items()} == {s: total // 50 for s in SYMBOLS}
        for symbol, ts in per_symbol.items():
            assert ts == sorted(ts), f"{symbol} out of order"
        assert sum(c.pulls for c in consumers) > partitions  # the loop re-issued requests
        await nc.close()

    run(body(), timeout=90)


def test_acks_go_only_up_to_the_checkpointed_sequence(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc, stream = await _setup(nats_server, 1, 100)
        got = Collected()

        async def deliver(partition: int, seq: int, event: Event) -> None:
            got.add(seq)

        consumer = await PartitionConsumer(nc, settings(partitions=1), 0, deliver).start()
        await got.until(lambda g: len(g) == 100, what="100 deliveries")

        async def ack_floor() -> int:
            info = await stream.consumer_info(0)
            assert info is not None
            return int(info.ack_floor.stream_seq)

        assert await ack_floor() == 0  # delivered is not acked: nothing is checkpointed yet
        await consumer.checkpointed(40)
        await wait_for(lambda: _eq(ack_floor(), 40), what="ack floor 40")
        assert consumer.acked_seq == 40
        await consumer.checkpointed(100)
        await wait_for(lambda: _eq(ack_floor(), 100), what="ack floor 100")
        await consumer.stop()
        await nc.close()

    run(body())


async def _eq(value: Any, expected: int) -> bool:
    return bool(await value == expected)


def test_a_lost_lease_stops_deliveries_at_once(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc, _ = await _setup(nats_server, 1, 50)
        held = True
        got: list[int] = []

        async def deliver(partition: int, seq: int, event: Event) -> None:
            nonlocal held
            got.append(seq)
            if seq == 10:
                held = False  # the lease ran out while message 10 was being applied

        consumer = await PartitionConsumer(nc, settings(partitions=1), 0, deliver,
                                           owned=lambda: held).start()
        with pytest.raises(LeaseLost, match=r"partition 0: the lease is no longer held"):
            await asyncio.wait_for(consumer.wait(), 10)
        assert got == list(range(1, 11))
        await consumer.stop()
        await nc.close()

    run(body())


def test_stop_ends_the_loop_without_another_delivery(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc, _ = await _setup(nats_server, 1, 200)
        got: list[int] = []
        consumer: PartitionConsumer

        async def deliver(partition: int, seq: int, event: Event) -> None:
            got.append(seq)
            if seq == 5:
                await consumer.stop()  # e.g. the lease module, told of a failed renewal

        consumer = PartitionConsumer(nc, settings(partitions=1), 0, deliver)
        await consumer.start()
        await asyncio.wait_for(consumer.wait(), 10)
        assert got == [1, 2, 3, 4, 5]
        assert not consumer.running
        await nc.close()

    run(body())


def test_invalid_payloads_and_foreign_symbols_are_reported_not_delivered(
    nats_server: NatsServer,
) -> None:
    async def body() -> None:
        nc, _ = await _setup(nats_server, 2, 0)
        js = nc.jetstream()
        other = next(s for s in SYMBOLS if partition_of(s, 2) == 1)
        mine = next(s for s in SYMBOLS if partition_of(s, 2) == 0)
        await js.publish(f"tf.part.0.{mine}", b"not json")
        await js.publish(f"tf.part.0.{other}", b'{"type":"DATA_READY","symbol":"%s",'
                         b'"ts":1,"price":1}' % other.encode())
        await js.publish(f"tf.part.0.{mine}", b'{"type":"DATA_READY","symbol":"%s",'
                         b'"ts":2,"price":1}' % mine.encode())
        got = Collected()
        invalid: list[tuple[int, str]] = []

        async def deliver(partition: int, seq: int, event: Event) -> None:
            got.add(seq)

        consumer = await PartitionConsumer(
            nc, settings(partitions=2), 0, deliver,
            on_invalid=lambda p, seq, why: invalid.append((seq, why))).start()
        await got.until(lambda g: g == [3], what="the valid event")
        assert invalid[0][0] == 1
        assert "not an event" in invalid[0][1]
        assert invalid[1] == (2, f"{other!r} belongs to partition 1 of 2, not 0")
        await consumer.stop()
        await nc.close()

    run(body())


def test_a_deleted_durable_stops_the_loop(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc, _ = await _setup(nats_server, 1, 0)

        async def deliver(partition: int, seq: int, event: Event) -> None:
            raise AssertionError("nothing to deliver")

        consumer = await PartitionConsumer(nc, settings(partitions=1), 0, deliver,
                                           heartbeat_s=0.2, expires_s=1.0).start()
        await nc.jetstream().delete_consumer("TF", "TF_p0")
        with pytest.raises(ClusterError, match=r"durable TF_p0 (was deleted|no longer exists)"):
            await asyncio.wait_for(consumer.wait(), 10)
        await consumer.stop()
        await nc.close()

    run(body())


def test_the_loop_survives_a_server_restart(nats_server: NatsServer) -> None:
    async def body() -> None:
        nc, _ = await _setup(nats_server, 1, 20)
        got = Collected()

        async def deliver(partition: int, seq: int, event: Event) -> None:
            got.add(seq)

        consumer = await PartitionConsumer(nc, settings(partitions=1), 0, deliver,
                                           heartbeat_s=0.2, expires_s=1.0).start()
        await got.until(lambda g: len(g) == 20, what="the first 20")
        await asyncio.to_thread(nats_server.restart)
        await wait_for(lambda: nc.is_connected, what="the reconnect")
        pub = await ClusterPublisher(settings(partitions=1), node="n1",
                                     url=nats_server.url).start()
        await asyncio.gather(*[pub.publish(_event("AAPL", n)) for n in range(20, 40)])
        await pub.close()
        await got.until(lambda g: len(g) == 40, what="the 20 after the restart")
        assert got == list(range(1, 41))
        await consumer.stop()
        await nc.close()

    run(body())


def test_delivery_waits_at_max_ack_pending_until_a_checkpoint(nats_server: NatsServer) -> None:
    """``max_ack_pending`` bounds how far delivery runs ahead of the checkpoints: the loop
    stalls there and carries on once a checkpoint acks what was delivered."""
    async def body() -> None:
        nc = await connect(nats_server.url)
        cfg = settings(partitions=1, max_ack_pending=10)
        stream = ClusterStream(nc.jetstream(), cfg)
        await stream.ensure()
        await stream.ensure_consumer(0)
        pub = await ClusterPublisher(cfg, node="n1", url=nats_server.url).start()
        await asyncio.gather(*[pub.publish(_event("AAPL", n)) for n in range(50)])
        await pub.close()
        got = Collected()
        checkpointing = False

        async def deliver(partition: int, seq: int, event: Event) -> None:
            got.add(seq)
            if checkpointing:
                await consumer.checkpointed(seq)

        consumer = await PartitionConsumer(nc, cfg, 0, deliver, batch=8, expires_s=0.5,
                                           heartbeat_s=0.2).start()
        await got.until(lambda g: len(g) == 10, what="the first max_ack_pending")
        info = await stream.consumer_info(0)
        assert info is not None
        assert info.num_ack_pending == 10
        # two more pull requests expire and are re-issued: still nothing beyond 10
        pulls = consumer.pulls
        await wait_for(lambda: consumer.pulls >= pulls + 2, what="requests re-issued")
        assert len(got) == 10
        checkpointing = True
        await consumer.checkpointed(10)
        await got.until(lambda g: len(g) == 50, what="the other 40 after the checkpoint")
        assert list(got) == list(range(1, 51))
        await consumer.stop()
        await nc.close()

    run(body())
