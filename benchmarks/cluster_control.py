"""The cluster control plane's figures on one loopback nats-server.

``python -m benchmarks.cluster_control [--ttl 2] [--partitions 32] [--kills 5] [--orders 2000]``

- **takeover**: three nodes in this process (each on its own connection) settle; one node's
  connection is closed at a seeded random moment within one TTL of settling (no release, no
  leave: a crash as the others see it) and the clock
  runs until the other two own every partition at their new shares. Repeated ``--kills``
  times with a fresh node each time. The bound is ``ttl`` + one poll (``min(ttl/5, 1 s)``).
- **registry**: ``OrderRegistry.register`` one at a time, then all at once (``gather``).

Needs ``nats-server`` on PATH (``make system-deps``); starts it on a free 127.0.0.1 port in
a temporary directory and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.service.cluster.assign import assign, owned_by
from engine.service.cluster.buckets import ensure_control_buckets
from engine.service.cluster.orders import OrderRegistry
from engine.service.cluster.ownership import Ownership
from tests.nats_support import NatsServer, nats_server_binary


def _server(store: Path) -> NatsServer:
    binary = nats_server_binary()
    if binary is None:
        raise SystemExit("nats-server is not installed (make system-deps)")
    return NatsServer(store, binary=binary)


async def _until(condition: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not settled within {within} s")
        await asyncio.sleep(0.005)


async def _run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    import nats

    async def node(name: str) -> tuple[Any, Ownership, Any]:
        nc = await nats.connect(url, allow_reconnect=False)
        buckets = await ensure_control_buckets(nc.jetstream(), stream="BENCH",
                                               lease_ttl_s=args.ttl, replicas=1)
        own = Ownership(buckets.lease, buckets.members, node=name,
                        partitions=args.partitions, ttl_s=args.ttl)
        await own.start()
        return nc, own, buckets

    def settled(nodes: list[Ownership]) -> bool:
        names = {n.node for n in nodes}
        target = assign(args.partitions, names)
        return all(n.live == names and set(n.owned) == owned_by(target, n.node) for n in nodes)

    rng = random.Random(args.seed)
    nodes = [await node(f"n{i}") for i in range(3)]
    takeovers: list[float] = []
    for kill in range(args.kills):
        await _until(lambda: settled([own for _nc, own, _b in nodes]), 4 * args.ttl + 10)
        # a seeded moment within one TTL of settling: right after settling every lease was
        # just written, which would always measure the worst phase
        await asyncio.sleep(rng.uniform(0, args.ttl))
        nc, _victim, _buckets = nodes.pop()
        started = time.monotonic()
        await nc.close()
        await _until(lambda: settled([own for _nc, own, _b in nodes]), 4 * args.ttl + 10)
        takeovers.append(time.monotonic() - started)
        nodes.append(await node(f"m{kill}"))
    registry = OrderRegistry(nodes[0][2].orders, registrant="bench")
    started = time.monotonic()
    for i in range(args.orders):
        await registry.register(f"seq:{i}:buy", b"fill")
    sequential = args.orders / (time.monotonic() - started)
    started = time.monotonic()
    await asyncio.gather(*(registry.register(f"par:{i}:buy", b"fill")
                           for i in range(args.orders)))
    concurrent = args.orders / (time.monotonic() - started)
    for nc, own, _buckets in nodes:
        await own.close()
        await nc.close()
    return {
        "takeover_s": [round(t, 3) for t in takeovers],
        "takeover_median_s": round(statistics.median(takeovers), 3),
        "takeover_max_s": round(max(takeovers), 3),
        "bound_s": round(args.ttl + min(args.ttl / 5, 1.0), 3),
        "registrations_per_s_sequential": round(sequential),
        "registrations_per_s_concurrent": round(concurrent),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--partitions", type=int, default=32)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=15)
    args = parser.parse_args()
    # the kills are deliberate: their lease-lost warnings would only bury the figures
    logging.getLogger("tickflow.cluster").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp, _server(Path(tmp) / "nats") as server:
        result = asyncio.run(_run(server.url, args))
    for key, value in result.items():
        print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
