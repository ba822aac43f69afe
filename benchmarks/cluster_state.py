"""What a partition's checkpoint costs: snapshot, encode, decode, evict and restore.

``python -m benchmarks.cluster_state --symbols 3200 --fills 100000 --partitions 32`` -- one
engine (real session, fake clock, no storage) holds ``--symbols`` symbols, each with a last
tick, and a paper broker with ``--fills`` remembered fills spread over them (sent straight to
the broker: the books are what is measured, not the steps that would fill them). Then, for
every partition: the time of :func:`snapshot` (which reads the broker's whole books once), of
encoding it to JSON and decoding it back, of :func:`evict` and of :func:`restore`; the median
and the largest over the partitions, in milliseconds (thread CPU time: other agents' work
shares these cores), and the checkpoint's size; then :func:`snapshot_many` of every partition
at once (one read of the books for all: what a node checkpointing all it owns pays).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import textwrap
import time

from engine.config import loads_config
from engine.core.clock import FakeClock
from engine.core.events import Tick
from engine.service.cluster.handover import evict, restore, snapshot, snapshot_many, track
from engine.service.cluster.state import decode_state, encode_state
from engine.service.daemon import Engine
from strategies.broker import PaperBroker

CONFIG = """
[metrics]
enabled = false
[workflows.idle]
priority = 0
max_concurrent = 1
[[workflows.idle.steps]]
name = "noop"
action = "benchmarks.bench_actions:noop"
"""


def _ms(samples: list[float]) -> str:
    return f"median {statistics.median(samples) * 1e3:.2f} ms, max {max(samples) * 1e3:.2f} ms"


async def measure(symbols: int, fills: int, partitions: int) -> None:
    config = loads_config(textwrap.dedent(CONFIG))
    broker = PaperBroker(order_memory=max(fills, 1))
    engine = Engine(config, clock=FakeClock(), sources=[], broker=broker)
    names = [f"SYM{i}" for i in range(symbols)]
    async with engine.session():
        for i, name in enumerate(names):
            row = engine.symbols.register(name, 0)
            tick = Tick(name, 1_700_000_000.0 + i, 100.0 + i % 50)
            engine.symbols.mark_data_ready(row, tick)
            engine.symbols.mark_completed(row, 1_700_000_000.0)  # nothing for the sweep
            engine.market.record(tick)
        for i in range(fills):
            broker.submit(f"idle:{i}:noop", names[i % symbols], "BUY" if i % 3 else "SELL",
                          1.0, 100.0 + i % 50, 1_700_000_000.0 + i)
        track(engine)
        times: dict[str, list[float]] = {k: [] for k in
                                         ("snapshot", "encode", "decode", "evict", "restore")}
        sizes: list[int] = []
        clock = time.thread_time
        for p in range(partitions):
            t0 = clock()
            state = snapshot(engine, p, partitions, p)
            t1 = clock()
            data = encode_state(state)
            t2 = clock()
            back = decode_state(data)
            t3 = clock()
            await evict(engine, p, partitions)
            t4 = clock()
            restore(engine, back)
            t5 = clock()
            for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
                times[key].append(dt)
            sizes.append(len(data))
        every = {p: 0 for p in range(partitions)}
        many = []
        for _ in range(5):
            t0 = clock()
            snapshot_many(engine, every, partitions)
            many.append(clock() - t0)
    print(f"{symbols} symbols, {fills} fills, {partitions} partitions "
          f"(checkpoint median {statistics.median(sizes) / 1024:.0f} KiB)")
    for key, samples in times.items():
        print(f"  {key:<8} {_ms(samples)}  (one partition)")
    print(f"  snapshot_many of all {partitions}: {_ms(many)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=3200)
    parser.add_argument("--fills", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(measure(args.symbols, args.fills, args.partitions))


if __name__ == "__main__":
    main()
