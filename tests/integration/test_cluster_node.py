"""Cluster nodes as real daemons on a real nats-server: events through a node's TCP intake are
published (acked on the PubAck), applied by their partition's owner with derived run ids,
their orders registered once, checkpointed (fenced) and acked; ``tickflow cluster status``
shows it. Every wait is bounded and on a condition read from NATS or a log line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.service.cluster.partition import partition_of
from tests.cluster_books import check_carried_books
from tests.integration.cluster_daemons import (
    PREFIX,
    ROOT,
    STREAM,
    Node,
    applied,
    checkpoints,
    cluster_status,
    event,
    nats,
    registry,
    send,
)
from tests.nats_support import NatsServer

SYMBOLS = [f"S{i}" for i in range(12)]
PARTITIONS = 8


def run(coro: Any, timeout: float = 60.0) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(timeout):
            return await coro

    return asyncio.run(bounded())


async def settle(js: Any, expected: dict[str, int], within: float = 20.0) -> dict[int, Any]:
    """Wait until the checkpoints show ``expected`` events applied per symbol."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        cps = await checkpoints(js)
        got = {s: c for s, (c, _, _) in applied(cps).items()}
        if got == expected:
            return cps
        if loop.time() > deadline:
            raise AssertionError(f"checkpoints show {got}, expected {expected}")
        await asyncio.sleep(0.05)  # checkpoints are another process's writes: polled


def check_books(cps: dict[int, Any], orders: dict[str, Any]) -> None:
    """Positions equal their executions (every run buys one unit), every fill carried is the
    registry's for its id and carried once, and each checkpoint carries the fills its books
    promise (tests/cluster_books.py: all of them up to a partition's RECENT_FILLS, then the
    newest: the count, position and cash stay whole)."""
    ids: list[str] = []
    for p, cp in cps.items():
        assert cp.partition_state.partition == p
        check_carried_books(cp.partition_state, orders)
        for books in cp.partition_state.books:
            assert partition_of(books.symbol, PARTITIONS) == p
            qty = books.position.qty if books.position is not None else 0.0
            assert qty == books.fill_count, books.symbol
            ids += [f.client_order_id for f in books.fills]
    assert len(set(ids)) == len(ids), "a client order id carried by two symbols"


def test_one_node_applies_checkpoints_and_reports(nats_server: NatsServer, tmp_path: Path) -> None:
    node = Node(tmp_path, nats_server.url, "n1", partitions=PARTITIONS, metrics=True).start()
    try:
        node.wait_ready()
        lines = [event(s, n) for n in range(1, 6) for s in SYMBOLS]

        async def main() -> dict[int, Any]:
            acks = await send(node.port, lines)
            assert [a["ok"] for a in acks] == [True] * len(lines)
            async with nats(nats_server.url) as nc:
                js = nc.jetstream()
                # an ack means "stored in the stream": every acked event is there already
                info = await js.stream_info(STREAM)
                assert info.state.messages == len(lines)
                cps = await settle(js, dict.fromkeys(SYMBOLS, 5))
                orders = await registry(js)
                check_books(cps, orders)
                # every run was made by a stream event: ids derived, none from the counter
                assert all(int(i.split(":")[1]) >= 1 << 40 for i in orders)
                assert {s: (c, ts, d) for s, (c, ts, d) in applied(cps).items()} == {
                    s: (5, 5.0, 0) for s in SYMBOLS
                }
                assert sum(b.fill_count for cp in cps.values() for b in cp.partition_state.books) \
                    == len(orders) > 0
                return cps

        cps = run(main())
        status = cluster_status(node.config)
        assert [n["node"] for n in status["nodes"]] == ["n1"]
        owners = {o["partition"]: o for o in status["owners"]}
        assert {o["owner"] for o in owners.values()} == {"n1"}
        for p in cps:
            assert owners[p]["checkpoint_age_s"] is not None
            assert owners[p]["lag"] == 0  # every message a checkpoint covers is acked
        with urllib.request.urlopen(f"http://127.0.0.1:{node.metrics_port}/metrics") as r:
            metrics = r.read().decode()
        assert f"tickflow_cluster_partitions_owned {float(PARTITIONS)}" in metrics
        assert "tickflow_cluster_events_applied_total 60.0" in metrics
        assert "tickflow_cluster_checkpoints_total 0.0" not in metrics
        assert node.stop() == 0
    finally:
        node.stop()


def test_a_bad_event_is_refused_and_loses_nothing_around_it(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    node = Node(tmp_path, nats_server.url, "n1", partitions=PARTITIONS).start()
    try:
        node.wait_ready()
        bad = b'{"type": "DATA_READY", "symbol": "A..B", "ts": 1.0, "price": 1.0}\n'

        async def main() -> None:
            acks = await send(node.port, [event("S1", 1), bad, event("S1", 2)])
            assert [a["ok"] for a in acks] == [True, False, True]
            assert "subject" in acks[1]["error"]
            async with nats(nats_server.url) as nc:
                await settle(nc.jetstream(), {"S1": 2})

        run(main())
    finally:
        node.stop()


@pytest.mark.slow
def test_two_nodes_share_the_partitions_and_apply_each_event_once(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    nodes = [Node(tmp_path, nats_server.url, f"n{i}", partitions=PARTITIONS).start()
             for i in (1, 2)]
    try:
        for node in nodes:
            node.wait_ready()

        async def main() -> None:
            async with nats(nats_server.url) as nc:
                js = nc.jetstream()
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 20
                while True:  # the second node's join rebalances: 4 and 4
                    status = await asyncio.to_thread(cluster_status, nodes[0].config)
                    held = Counter(o["owner"] for o in status["owners"])
                    if held == {"n1": 4, "n2": 4}:
                        break
                    assert loop.time() < deadline, held
                    await asyncio.sleep(0.1)  # ownership moves in another process: polled
                for i, node in enumerate(nodes):  # through either node's intake
                    lines = [event(s, n) for n in range(1 + 3 * i, 4 + 3 * i) for s in SYMBOLS]
                    acks = await send(node.port, lines)
                    assert all(a["ok"] for a in acks)
                    assert len(acks) == len(lines)
                cps = await settle(js, dict.fromkeys(SYMBOLS, 6))
                assert {cp.node for cp in cps.values()} == {"n1", "n2"}
                assert all(d == 0 for _, _, d in applied(cps).values())
                check_books(cps, await registry(js))

        run(main())
    finally:
        for node in nodes:
            node.stop()


def test_an_event_the_stream_does_not_store_is_never_acked(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    node = Node(tmp_path, nats_server.url, "n1", partitions=PARTITIONS).start()
    try:
        node.wait_ready()

        async def main() -> None:
            async with nats(nats_server.url) as nc:
                js = nc.jetstream()
                config = (await js.stream_info(STREAM)).config
                config.max_msg_size = 16  # the stream now refuses every event (a PubAck error)
                await js.update_stream(config)
            acks = await send(node.port, [event("S1", 1)])
            assert not any(a["ok"] for a in acks), acks

        run(main())
    finally:
        node.stop()


def test_tickflow_run_refuses_cluster_mode_with_storage_on(tmp_path: Path) -> None:
    node = Node(tmp_path, "nats://127.0.0.1:1", "n1")
    node.config.write_text(node.config.read_text().replace(
        "[storage]\nenabled = false", "[storage]\nenabled = true"))
    done = subprocess.run(
        [sys.executable, "-m", "engine", "run", "--config", str(node.config)],
        cwd=ROOT, capture_output=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 2
    assert b"[storage] enabled = false" in done.stderr


def test_a_damaged_checkpoint_is_refused_and_its_partition_loses_nothing(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    bad = next(s for s in SYMBOLS if partition_of(s, PARTITIONS) == 0)
    good = [s for s in SYMBOLS if partition_of(s, PARTITIONS) != 0]

    async def damage() -> None:
        from engine.config.schema import ClusterSettings
        from engine.service.cluster.checkpoint import CheckpointStore

        async with nats(nats_server.url) as nc:
            store = await CheckpointStore(nc.jetstream(), ClusterSettings(
                enabled=True, stream=STREAM, partitions=PARTITIONS)).ensure()
            await store.claim(0, fence=1)
            await store.save(0, 0, {"not": "a node's state"}, fence=1)

    run(damage())
    node = Node(tmp_path, nats_server.url, "n1", partitions=PARTITIONS).start()
    try:
        node.wait_ready()

        async def main() -> None:
            lines = [event(s, 1) for s in [bad, *good]]
            assert all(a["ok"] for a in await send(node.port, lines))
            async with nats(nats_server.url) as nc:
                js = nc.jetstream()
                await settle(js, dict.fromkeys(good, 1))  # the other partitions go on
                kv = await js.key_value(f"{STREAM}_ckpt")
                stored = msgspec.json.decode((await kv.get("p0")).value)
                assert stored["state"] == {"not": "a node's state"}  # nothing written over it
                assert stored["seq"] == 0
                # and nothing lost: p0's event waits in the stream for a readable checkpoint
                # (its durable was never recreated: nothing consumed, nothing acked)
                kept = await js.get_last_msg(STREAM, f"{PREFIX}.part.0.{bad}")
                assert msgspec.json.decode(kept.data)["symbol"] == bad
                assert 0 not in await checkpoints(js)

        run(main())
    finally:
        node.stop()


def test_an_order_registered_before_with_other_terms_is_reported_not_filled_again(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    """A previous owner (here: the test) registered the order id this event's run derives,
    with its own fill: the node's fresh fill loses at the checkpoint, the partition restarts
    from its last checkpoint knowing the winner, and the books hold the winner's fill once."""
    from engine.config.schema import BrokerSettings, ClusterSettings
    from engine.core.orders import Side
    from engine.service.cluster.buckets import ensure_control_buckets
    from engine.service.cluster.fills import encode_fill
    from engine.service.cluster.node import run_id
    from engine.service.cluster.orders import OrderRegistry
    from engine.service.cluster.publish import ClusterPublisher
    from engine.service.cluster.stream import ClusterStream
    from engine.service.trading import build_broker

    settings = ClusterSettings(enabled=True, nats_url=nats_server.url, prefix=PREFIX,
                               stream=STREAM, partitions=PARTITIONS, lease_ttl_s=2.0)
    coid = f"trade:{run_id(1, 0)}:buy"
    # the old owner's fill: same broker terms, another price (it traded on other market data)
    winner = build_broker(BrokerSettings()).submit(coid, "S1", Side.BUY, 1.0, 50.0, 1.0)

    async def before() -> None:
        async with nats(nats_server.url) as nc:
            js = nc.jetstream()
            await ClusterStream(js, settings).ensure()
            buckets = await ensure_control_buckets(js, stream=STREAM, lease_ttl_s=2.0,
                                                   replicas=1)
            reg = await OrderRegistry(buckets.orders, registrant="old-owner").register(
                coid, encode_fill(winner))
            assert reg.won
            publisher = await ClusterPublisher(settings, node="t").start()
            from engine.core.events import DataReady

            ack = await publisher.publish(DataReady(symbol="S1", ts=1.0, price=100.0))
            assert ack.seq == 1  # the run this event starts derives `coid`
            await publisher.close()

    run(before())
    node = Node(tmp_path, nats_server.url, "n1", partitions=PARTITIONS, ttl=2.0).start()
    try:
        node.wait_ready()

        async def main() -> None:
            async with nats(nats_server.url) as nc:
                js = nc.jetstream()
                cps = await settle(js, {"S1": 1})
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 20
                while True:  # the restart replays: the stored books end up holding the winner
                    books = [b for cp in cps.values() for b in cp.partition_state.books
                             if b.symbol == "S1"]
                    if books and books[0].fills:
                        break
                    assert loop.time() < deadline, books
                    await asyncio.sleep(0.05)  # the node's checkpoints: polled
                    cps = await checkpoints(js)
                assert books[0].fills == (winner,)
                assert books[0].position is not None
                assert books[0].position.qty == 1.0
                assert (await registry(js)) == {coid: winner}

        run(main())
    finally:
        node.stop()
