"""Failover and fencing with real daemons on a real nats-server.

**Failover**: three nodes, events through the TCP intake of any live node, one node killed
with SIGKILL under load at seeded moments (then a replacement started): its partitions have new
owners within ``lease_ttl_s`` + 1 s, and at the end every event stored in the stream -- every
acked one among them -- is applied exactly once and in per-symbol order (the checkpoints'
applied counts against the stream itself), no client order id is filled twice, positions equal
the sum of their fills.

**Fencing**: a node stopped (SIGSTOP) past its lease while another takes its partitions over,
then resumed: no checkpoint under its old tokens follows the new owner's first one (every
checkpoint write is watched), and the events of the pause are applied exactly once.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.core.events import DataReady
from engine.service.cluster.lease import read_lease
from engine.service.cluster.partition import partition_of
from engine.service.cluster.tenure import decode_checkpoint
from tests.cluster_data_support import read_stream
from tests.integration.cluster_daemons import (
    PREFIX,
    STREAM,
    Node,
    applied,
    checkpoints,
    event,
    nats,
    registry,
    send,
)
from tests.integration.test_cluster_node import check_books, run
from tests.nats_support import NatsServer

pytestmark = pytest.mark.slow

TTL = 2.0
PARTITIONS = 8
SYMBOLS = [f"S{i}" for i in range(16)]


async def owners(js: Any) -> dict[int, str]:
    kv = await js.key_value(f"{STREAM}_lease")
    out = {}
    for p in range(PARTITIONS):
        found = await read_lease(kv, p)
        if found is not None:
            out[p] = found[0].node
    return out


async def stored_by_symbol(js: Any) -> dict[str, list[float]]:
    out: dict[str, list[float]] = defaultdict(list)
    for _, _, _, data in await read_stream(js, STREAM, f"{PREFIX}.part.>"):
        ev = msgspec.json.decode(data, type=DataReady)
        out[ev.symbol].append(ev.ts)
    return out


async def verify(js: Any, acked: dict[str, set[float]], within: float = 30.0) -> None:
    stored = await stored_by_symbol(js)
    for symbol, seqs in stored.items():
        assert seqs == sorted(set(seqs)), f"{symbol}: stream out of order or duplicated"
        assert acked.get(symbol, set()) <= set(seqs), f"{symbol}: an acked event is missing"
    expected = {s: (len(v), v[-1], 0) for s, v in stored.items()}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        cps = await checkpoints(js)
        if applied(cps) == expected:
            break
        assert loop.time() < deadline, f"applied {applied(cps)} != stored {expected}"
        await asyncio.sleep(0.1)  # checkpoints are the daemons' writes: polled
    check_books(cps, await registry(js))


def test_kill_9_under_load_loses_nothing_and_fills_nothing_twice(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    rng = random.Random(15)
    nodes = [Node(tmp_path, nats_server.url, f"n{i}", partitions=PARTITIONS, ttl=TTL).start()
             for i in range(3)]
    spawned = len(nodes)
    try:
        for node in nodes:
            node.wait_ready()

        async def main() -> None:
            nonlocal spawned
            acked: dict[str, set[float]] = defaultdict(set)
            n = 0
            total = 0
            async with nats(nats_server.url) as nc:
                js = nc.jetstream()
                for _kill in range(2):
                    kill_at = total + rng.randint(150, 400)
                    while total < kill_at:  # load through every live node in turn
                        node = nodes[n % len(nodes)]
                        n += 1
                        batch = [event(s, n) for s in SYMBOLS]
                        acks = await send(node.port, batch)
                        for s, ack in zip(SYMBOLS, acks, strict=False):
                            if ack["ok"]:
                                acked[s].add(float(n))
                                total += 1
                    victim = nodes.pop(rng.randrange(len(nodes)))
                    held = {p for p, o in (await owners(js)).items() if o == victim.name}
                    # the kill lands while the others are still loading
                    load = asyncio.gather(*(send(o.port, [event(s, n + 1) for s in SYMBOLS])
                                            for o in nodes[:1]))
                    victim.kill()
                    killed = time.monotonic()
                    for s, ack in zip(SYMBOLS, (await load)[0], strict=False):
                        if ack["ok"]:
                            acked[s].add(float(n + 1))
                    n += 1
                    while True:
                        now_owned = await owners(js)
                        if all(now_owned.get(p, victim.name) != victim.name for p in held):
                            break
                        assert time.monotonic() - killed < TTL + 1.0, (held, now_owned)
                        await asyncio.sleep(0.05)  # lease moves are another process's: polled
                    assert time.monotonic() - killed <= TTL + 1.0
                    spawned += 1
                    fresh = Node(tmp_path, nats_server.url, f"n{spawned}",
                                 partitions=PARTITIONS, ttl=TTL).start()
                    await asyncio.to_thread(fresh.wait_ready)
                    nodes.append(fresh)
                    victim.stop()
                await verify(js, acked)

        run(main(), timeout=120)
    finally:
        for node in nodes:
            node.stop()


def test_a_paused_owner_applies_nothing_durable_after_losing_its_lease(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    a = Node(tmp_path, nats_server.url, "a", partitions=PARTITIONS, ttl=TTL).start()
    b = Node(tmp_path, nats_server.url, "b", partitions=PARTITIONS, ttl=TTL).start()
    try:
        a.wait_ready()
        b.wait_ready()

        async def main() -> None:
            async with nats(nats_server.url) as nc:
                js = nc.jetstream()
                kv = await js.key_value(f"{STREAM}_ckpt")
                writes: list[tuple[int, int]] = []  # (partition, writer's fence), in order

                async def watch() -> None:
                    watcher = await kv.watchall()
                    async for entry in watcher:
                        if entry is not None and entry.value:
                            cp = decode_checkpoint(entry.value)
                            writes.append((int(entry.key[1:]), cp.fence))

                watching = asyncio.create_task(watch())
                loop = asyncio.get_running_loop()
                deadline = loop.time() + 20
                while sorted((await owners(js)).values()).count("a") != PARTITIONS // 2:
                    assert loop.time() < deadline
                    await asyncio.sleep(0.05)  # the rebalance is the daemons': polled
                mine = {p for p, o in (await owners(js)).items() if o == "a"}
                lines = [event(s, 1) for s in SYMBOLS]
                assert all(x["ok"] for x in await send(b.port, lines))
                a.signal(signal.SIGSTOP)
                deadline = loop.time() + TTL + 5
                # every partition held by b (a's leases first expire: unowned is not enough)
                while await owners(js) != dict.fromkeys(range(PARTITIONS), "b"):
                    assert loop.time() < deadline
                    await asyncio.sleep(0.05)
                # while a sleeps, b owns everything and takes more events
                lines = [event(s, 2) for s in SYMBOLS]
                assert all(x["ok"] for x in await send(b.port, lines))
                a.signal(signal.SIGCONT)
                lines = [event(s, 3) for s in SYMBOLS]
                assert all(x["ok"] for x in await send(b.port, lines))
                await verify(js, {s: {1.0, 2.0, 3.0} for s in SYMBOLS})
                watching.cancel()
                for p in mine:
                    # the claim and every write are CAS under the writer's lease token: once
                    # b claimed, no write under a's older token follows (fences never go back)
                    fences = [fence for q, fence in writes if q == p]
                    assert fences == sorted(fences), (p, fences)
                    assert fences[-1] > fences[0], (p, fences)  # a later tenure took over
                assert {partition_of(s, PARTITIONS) for s in SYMBOLS} & mine

        run(main(), timeout=90)
    finally:
        a.stop()
        b.stop()
