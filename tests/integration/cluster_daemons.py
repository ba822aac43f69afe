"""Cluster nodes as real ``tickflow run`` daemons, and what the tests read back from NATS.

Each node gets its own config (TCP intake on a free loopback port, storage off, a cluster
section pointing at the test's nats-server). The events carry a per-symbol sequence number in
``ts`` (1, 2, 3, ...) so the checkpoints' applied counts show loss, duplication and disorder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import orjson

from engine.core.orders import Fill
from engine.service.cluster.errors import CheckpointError
from engine.service.cluster.fills import decode_fill
from engine.service.cluster.tenure import StoredCheckpoint, decode_checkpoint
from tests.integration.daemon import wait_for_log
from tests.nats_support import free_port

ROOT = Path(__file__).resolve().parents[2]
STREAM = "TF"
PREFIX = "tf"

CONFIG = """
[engine]
drain_timeout_s = 2.0

[source]
kind = "none"

[metrics]
enabled = {metrics}
port = {metrics_port}

[storage]
enabled = false

[intake]
tcp_port = {port}
max_batch = 64

[cluster]
enabled = true
nats_url = "{url}"
prefix = "{prefix}"
stream = "{stream}"
partitions = {partitions}
node = "{node}"
lease_ttl_s = {ttl}
checkpoint_interval_ms = {ckpt_ms}

[workflows.trade]
priority = 1
max_concurrent = 1000

[[workflows.trade.steps]]
name = "buy"
action = "tests.integration.cluster_actions:buy"
preemptible = false
"""


class Node:
    """One ``tickflow run`` daemon of the cluster."""

    def __init__(self, tmp: Path, url: str, name: str, *, partitions: int = 8,
                 ttl: float = 2.0, ckpt_ms: float = 50.0, metrics: bool = False,
                 extra: str = "") -> None:
        self.name = name
        self.port = free_port()
        self.metrics_port = free_port()
        self.config = tmp / f"{name}.toml"
        self.config.write_text(CONFIG.format(
            metrics=str(metrics).lower(), metrics_port=self.metrics_port, port=self.port,
            url=url, prefix=PREFIX, stream=STREAM, partitions=partitions, node=name, ttl=ttl,
            ckpt_ms=ckpt_ms,
        ) + extra)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Node:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "--log-format", "json", "run", "--config",
             str(self.config)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        wait_for_log(self.proc, "tickflow ready", timeout)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (a graceful hand-over), then the exit code; SIGKILL past ``timeout``."""
        proc = self.proc
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
        return proc.returncode


def event(symbol: str, n: int) -> bytes:
    return orjson.dumps({"type": "DATA_READY", "symbol": symbol, "ts": float(n),
                         "price": 100.0 + n % 7}) + b"\n"


async def send(port: int, lines: list[bytes], within: float = 20.0) -> list[dict[str, Any]]:
    """Send ``lines`` on one connection; their acks, in order (fewer if the node died)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    acks: list[dict[str, Any]] = []
    try:
        writer.write(b"".join(lines))
        await writer.drain()
        async with asyncio.timeout(within):
            while len(acks) < len(lines):
                line = await reader.readline()
                if not line:
                    break
                acks.append(json.loads(line))
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    return acks


@contextlib.asynccontextmanager
async def nats(url: str) -> AsyncIterator[Any]:
    import nats as nats_py

    nc = await nats_py.connect(url, connect_timeout=5)
    try:
        yield nc
    finally:
        await nc.close()


async def bucket_keys(kv: Any) -> list[str]:
    """The keys of a KV bucket; nats-py's ``keys()`` raises ``NoKeysError`` for an empty
    bucket, and now and then for one that is not (its listing watcher saw nothing yet): an
    empty answer is asked again a few times before it counts."""
    from nats.js.errors import NoKeysError, NotFoundError

    for _ in range(10):
        try:
            keys: list[str] = await kv.keys()
            return keys
        except NotFoundError:
            return []
        except NoKeysError:
            await asyncio.sleep(0.1)  # the bucket is another process's: polled
    return []


async def checkpoints(js: Any) -> dict[int, StoredCheckpoint]:
    """Every partition's stored checkpoint."""
    out: dict[int, StoredCheckpoint] = {}
    kv = await js.key_value(f"{STREAM}_ckpt")
    keys = await bucket_keys(kv)
    for key in keys:
        entry = await kv.get(key)
        if entry.value:
            try:
                cp = decode_checkpoint(entry.value)
            except CheckpointError:
                continue  # not a node's (a test damaged it): the counts then come up short
            if cp.state is not None:  # an empty claim is no checkpoint
                out[int(key[1:])] = cp
    return out


async def registry(js: Any) -> dict[str, Fill]:
    """Every registered order: client order id -> the winning fill."""
    kv = await js.key_value(f"{STREAM}_orders")
    keys = await bucket_keys(kv)
    out: dict[str, Fill] = {}
    for key in keys:
        entry = await kv.get(key)
        fill = decode_fill((entry.value or b"").partition(b"\n")[2])
        out[fill.client_order_id] = fill
    return out


def applied(cps: dict[int, StoredCheckpoint]) -> dict[str, tuple[int, float, int]]:
    """symbol -> (count, last ts, disorder) over every partition's checkpoint."""
    return {s: (a.count, a.last_ts, a.disorder) for cp in cps.values()
            for s, a in cp.applied.items()}


def cluster_status(config: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "engine", "cluster", "status", "--config", str(config), "--json"],
        cwd=ROOT, capture_output=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, Any] = msgspec.json.decode(done.stdout)
    return result
