"""The pause test for the control plane, with real processes: two nodes own and checkpoint
their partitions through fenced writes; one is stopped (SIGSTOP) past its lease, the other
takes its partitions over and claims their checkpoint keys; the paused one is resumed. It
must stop at once (every lease lost, every writer refused), and on the server no checkpoint
written under its old token may follow the new owner's claim."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.service.cluster.buckets import ensure_bucket
from engine.service.cluster.fence import FENCE_HEADER
from tests.cluster_support import connect, run, wait_until
from tests.nats_support import NatsServer

TTL = 1.5
PARTITIONS = 4
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


class NodeProcess:
    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.reader: asyncio.Task[None] | None = None

    async def start(self, url: str) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.integration.cluster_node", url, self.name,
            str(PARTITIONS), str(TTL), "60",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        )
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["ev"] == kind]

    def holding(self) -> set[int]:
        held: set[int] = set()
        for e in self.events:
            if e["ev"] == "claimed":
                held.add(e["p"])
            elif e["ev"] in ("lost", "releasing"):
                held.discard(e["p"])
        return held

    async def stop(self) -> int:
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        code = await asyncio.wait_for(self.proc.wait(), 30)
        if self.reader is not None:
            await asyncio.wait_for(self.reader, 5)
        return code


def test_a_paused_node_stops_and_its_stale_writes_are_refused(nats_server: NatsServer) -> None:
    writes: list[tuple[str, int, int]] = []  # (key, stream seq, fence token) in server order

    async def body() -> tuple[NodeProcess, NodeProcess, set[int], float]:
        nc = await connect(nats_server)
        js = nc.jetstream()
        await ensure_bucket(js, "T_ckpt", ttl_s=None, history=1, replicas=1)

        async def record(msg: Any) -> None:
            token = int((msg.headers or {}).get(FENCE_HEADER, "0"))
            writes.append((msg.subject.rsplit(".", 1)[1], msg.metadata.sequence.stream, token))

        await js.subscribe("$KV.T_ckpt.>", ordered_consumer=True, cb=record)
        a, b = NodeProcess("a"), NodeProcess("b")
        await a.start(nats_server.url)
        await b.start(nats_server.url)
        await wait_until(lambda: len(a.holding()) == 2 and len(b.holding()) == 2, 20,
                         "each node holds and checkpoints two partitions")
        paused = a.holding()
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            await wait_until(lambda: b.holding() == set(range(PARTITIONS)), TTL + 5,
                             "b takes a's partitions over and claims their checkpoints")
            took = time.monotonic() - stopped_at
            # let b write a few checkpoints under its new tokens before a wakes up
            count = len(writes)
            await wait_until(lambda: len(writes) >= count + 8, 5, "b checkpoints")
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        await wait_until(lambda: {e["p"] for e in a.of("writer_end")} >= paused, 10,
                         "the resumed node's checkpoint writers stop")
        await wait_until(lambda: {e["p"] for e in a.of("lost")} >= paused, 10,
                         "the resumed node's leases are lost")
        assert await a.stop() == 0
        assert await b.stop() == 0
        await nc.close()
        return a, b, paused, took

    a, b, paused, took = run(body, timeout=120)
    assert took <= TTL + 1.0 + 1.0  # TTL + one poll, with room for a loaded machine
    assert {e["reason"] for e in a.of("lost") if e["p"] in paused} <= {
        "expired_locally", "superseded",
    }
    b_tokens = {e["p"]: e["token"] for e in b.of("claimed") if e["p"] in paused}
    a_tokens = {e["p"]: e["token"] for e in a.of("claimed") if e["p"] in paused}
    assert all(b_tokens[p] > a_tokens[p] for p in paused)
    # the fence, on the server: per key, tokens never go back
    last: dict[str, int] = {}
    for key, _seq, token in writes:
        assert token >= last.get(key, 0), f"{key}: a write under {token} after {last[key]}"
        last[key] = token
    for p in paused:
        assert last[f"p{p}"] == b_tokens[p]
