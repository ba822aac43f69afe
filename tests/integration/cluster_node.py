"""A control-plane node as a real process, for the pause test: it owns partitions through
:class:`Ownership` and, for each one it holds, claims the partition's checkpoint key and
writes a fenced checkpoint every 20 ms. One JSON line per event on stdout.

``python -m tests.integration.cluster_node URL NAME PARTITIONS TTL DURATION``; it stops by
itself after DURATION seconds or when stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

from engine.service.cluster.buckets import ensure_bucket, ensure_control_buckets
from engine.service.cluster.errors import LeaseLost
from engine.service.cluster.fence import FencedKey
from engine.service.cluster.lease import HeldLease
from engine.service.cluster.ownership import Ownership


def emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class Checkpointer:
    def __init__(self, js: Any, name: str) -> None:
        self.js, self.name = js, name

    async def acquired(self, lease: HeldLease) -> None:
        emit(ev="acquired", p=lease.partition, token=lease.token, t=time.time())
        lease.on_lost(lambda lost, error: emit(ev="lost", p=lost.partition, token=lost.token,
                                               reason=lost.lost_reason, t=time.time()))
        lease.bind(asyncio.ensure_future(self._write(lease)))

    async def releasing(self, lease: HeldLease) -> None:
        emit(ev="releasing", p=lease.partition, token=lease.token)

    async def _write(self, lease: HeldLease) -> None:
        fence = FencedKey(self.js, "T_ckpt", f"p{lease.partition}", lease)
        n = 0
        try:
            await fence.claim()
            emit(ev="claimed", p=lease.partition, token=lease.token)
            while True:
                n += 1
                body = {"node": self.name, "n": n, "ts": time.time()}
                await fence.write(json.dumps(body).encode())
                await asyncio.sleep(0.02)
        except LeaseLost as exc:  # the fence (or the local deadline) said no
            emit(ev="writer_end", how="refused", p=lease.partition, token=lease.token,
                 error=str(exc))
        except asyncio.CancelledError:  # the lease ended first and cancelled its bound task
            emit(ev="writer_end", how="cancelled", p=lease.partition, token=lease.token)
            raise


async def main(url: str, name: str, partitions: int, ttl: float, duration: float) -> None:
    import nats

    nc = await nats.connect(url, allow_reconnect=False)
    js = nc.jetstream()
    buckets = await ensure_control_buckets(js, stream="T", lease_ttl_s=ttl, replicas=1)
    await ensure_bucket(js, "T_ckpt", ttl_s=None, history=1, replicas=1)
    node = Ownership(buckets.lease, buckets.members, node=name, partitions=partitions,
                     ttl_s=ttl, listener=Checkpointer(js, name))
    await node.start()
    emit(ev="started", pid_name=name)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    with contextlib.suppress(TimeoutError):  # EOF on stdin: the test is done with us
        await asyncio.wait_for(stdin.read(), duration)
    await node.close()
    await nc.close()
    emit(ev="stopped")


if __name__ == "__main__":
    url, name, partitions, ttl, duration = sys.argv[1:6]
    asyncio.run(main(url, name, int(partitions), float(ttl), float(duration)))
