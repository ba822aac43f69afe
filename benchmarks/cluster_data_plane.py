"""The cluster data plane on this machine: acked publishes/s, consumed msgs/s, publish->deliver
latency, against a real ``nats-server -js`` on a free loopback port (started and stopped here).

``python -m benchmarks.cluster_data_plane [--events 100000] [--window 2048] [--rate 5000]``

1. **publish**: one :class:`ClusterPublisher` (its own connection) publishes ``--events``
   events over 200 symbols with ``--window`` PubAcks outstanding; the figure is acked events
   per second of wall time, from the first publish to the last PubAck.
2. **consume**: one :class:`PartitionConsumer` per partition (``--partitions``, one
   connection, one process) drains the stream those publishes filled; the figure is delivered
   events per second, from the first pull request to the last delivery (acks included: a
   checkpoint is declared every 1000 deliveries).
3. **latency**: with the consumers live, ``--rate`` events/s for ``--seconds`` s; each event's
   ``ts`` is its publish time, and the deliver callback records ``now - ts`` (p50/p99).

Client and server share the machine's two cores (and with other work): nats-py's per-message
Python cost is the limit, not the server (the trial's finding).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.config.schema import ClusterSettings
from engine.core.events import DataReady, Event
from engine.service.cluster.consume import PartitionConsumer
from engine.service.cluster.publish import ClusterPublisher
from engine.service.cluster.stream import ClusterStream
from tests.nats_support import NatsServer, require_nats_server


def _settings(partitions: int) -> ClusterSettings:
    return ClusterSettings(enabled=True, prefix="bench", stream="BENCH", partitions=partitions,
                           node="bench", max_ack_pending=100_000)


async def _publish(url: str, cfg: ClusterSettings, events: int, window: int) -> float:
    pub = await ClusterPublisher(cfg, node="bench", url=url, window=window).start()
    symbols = [f"S{i:03d}" for i in range(200)]
    started = time.perf_counter()
    pending: list[Any] = []
    for n in range(events):
        pending.append(pub.publish(DataReady(symbol=symbols[n % 200], ts=float(n), price=1.0)))
        if len(pending) >= window:
            await pending[0]  # keep about a window queued: a live intake's pace, not a flood
            pending = [f for f in pending if not f.done()]
    await asyncio.gather(*pending)
    elapsed = time.perf_counter() - started
    await pub.close()
    return events / elapsed


async def _consume(url: str, cfg: ClusterSettings, events: int) -> tuple[float, Any, list[Any]]:
    import nats

    nc = await nats.connect(url)
    stream = ClusterStream(nc.jetstream(), cfg)
    for p in range(cfg.partitions):
        await stream.ensure_consumer(p)
    done = asyncio.Event()
    count = 0
    consumers: list[PartitionConsumer] = []
    latencies: list[float] = []
    measuring = False
    enough = _Enough()

    async def deliver(partition: int, seq: int, event: Event) -> None:
        nonlocal count
        count += 1
        if measuring:
            latencies.append(time.time() - event.ts)
            if len(latencies) >= enough.target:
                enough.event.set()
        if count % 1000 == 0:
            await consumers[partition].checkpointed(seq)
        if count == events:
            done.set()

    started = time.perf_counter()
    for p in range(cfg.partitions):
        consumers.append(await PartitionConsumer(nc, cfg, p, deliver).start())
    await asyncio.wait_for(done.wait(), 600)
    rate = events / (time.perf_counter() - started)
    measuring = True
    return rate, (nc, latencies, enough), consumers


class _Enough:
    def __init__(self) -> None:
        self.target = 1 << 62
        self.event = asyncio.Event()


async def _latency(url: str, cfg: ClusterSettings, rate: int, seconds: float,
                   latencies: list[float], enough: _Enough) -> tuple[float, float, int]:
    pub = await ClusterPublisher(cfg, node="bench-lat", url=url).start()
    total = int(rate * seconds)
    enough.target = total
    tick = 0.001  # small bursts: a 10 ms burst of 50 events measures its own queueing
    per_tick = max(1, int(rate * tick))
    loop = asyncio.get_running_loop()
    start = loop.time()
    futures = []
    for n in range(0, total, per_tick):
        for k in range(n, min(n + per_tick, total)):
            futures.append(pub.publish(DataReady(symbol=f"S{k % 200:03d}", ts=time.time(),
                                                 price=1.0)))
        await asyncio.sleep(max(0.0, start + (n // per_tick + 1) * tick - loop.time()))
    await asyncio.gather(*futures)
    await asyncio.wait_for(enough.event.wait(), 30)
    await pub.close()
    ms = sorted(x * 1000 for x in latencies)
    return statistics.median(ms), ms[int(len(ms) * 0.99) - 1], len(ms)


async def _main(url: str, args: argparse.Namespace) -> None:
    import nats

    cfg = _settings(args.partitions)
    nc = await nats.connect(url)
    await ClusterStream(nc.jetstream(), cfg).ensure()
    await nc.close()
    pub_rate = await _publish(url, cfg, args.events, args.window)
    print(f"publish: {pub_rate:,.0f} acked events/s ({args.events} events, window "
          f"{args.window})")
    cons_rate, (cnc, latencies, enough), consumers = await _consume(url, cfg, args.events)
    print(f"consume: {cons_rate:,.0f} events/s ({args.partitions} partitions, one process)")
    p50, p99, n = await _latency(url, cfg, args.rate, args.seconds, latencies, enough)
    print(f"publish->deliver at {args.rate}/s: p50 {p50:.2f} ms, p99 {p99:.2f} ms ({n} events)")
    for c in consumers:
        await c.stop()
    await cnc.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args(argv)
    binary = require_nats_server()
    with tempfile.TemporaryDirectory() as tmp, NatsServer(Path(tmp), binary=binary) as server:
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(_main(server.url, args))
        else:
            asyncio.run(_main(server.url, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
