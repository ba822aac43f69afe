"""Cluster mode's scaling on this machine: real ``tickflow run`` daemons on one loopback
nats-server.

``python -m benchmarks.cluster_scaling [--runs 15000] [--us 200] [--rate 500] [--backlog 40000]``

- **scaling**: ``--runs`` events, each for a symbol of its own (so every event makes exactly
  one run: nothing conflates), published as fast as the publisher goes to a cluster of one node,
  then of two nodes (each a process of its own, partitions settled 16/16 first); each run's one
  step burns ``--us`` µs of real CPU on the node's event loop. runs/s = runs / (the time from the
  first publish to the last run's step), and the ratio two nodes / one node.
- **latency**: one node, ``--rate`` events/s for 4 s, each stamped with its publish time; the
  run's step records ``now - stamp``: publish -> run start (through the stream, the pull loop,
  the engine's queue), p50/p99.
- **ceiling**: one node stopped (SIGSTOP; lease 30 s so it keeps its partitions), ``--backlog``
  events over 64 symbols published, the node resumed: events/s until its checkpoints show
  every event applied (steps cost nothing; the runs conflate).

Needs ``nats-server`` (``make system-deps``); everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import msgspec

from engine.config.schema import ClusterSettings
from engine.core.events import DataReady
from engine.core.runs import StepContext
from engine.core.strategy import cheap
from tests.nats_support import NatsServer, nats_server_binary

ROOT = Path(__file__).resolve().parents[1]
PARTITIONS = 32
CKPT_MS = 100.0
_out: TextIO | None = None


@cheap
def burn(ctx: StepContext) -> None:
    """Records publish -> start (the tick's ``ts`` is its publish time), then burns
    ``params.us`` µs of CPU on the loop, as a strategy's own work would."""
    global _out
    started = time.time()
    if _out is None:
        _out = open(os.environ["TICKFLOW_BENCH_OUT"], "a", buffering=1)  # noqa: SIM115
    # CPU time, not wall time: a step descheduled on a busy machine still costs its CPU
    until = time.thread_time() + float(ctx.params.get("us", 200)) / 1e6
    while time.thread_time() < until:
        pass
    _out.write(f"{started - ctx.tick.ts:.6f}\n")


CONFIG = """
[engine]
drain_timeout_s = 1.0
agents = 1

[source]
kind = "none"

[metrics]
enabled = false

[storage]
enabled = false

[cluster]
enabled = true
nats_url = "{url}"
prefix = "bench"
stream = "BENCH"
partitions = {partitions}
node = "{node}"
lease_ttl_s = {ttl}
checkpoint_interval_ms = {ckpt_ms}

[workflows.w]
priority = 1
max_concurrent = 100000

[[workflows.w.steps]]
name = "burn"
action = "benchmarks.cluster_scaling:burn"
params = {{ us = {us} }}
"""


class Cluster:
    """A nats-server and the nodes started on it, in a temporary directory."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.nodes: list[tuple[subprocess.Popen[bytes], Path]] = []
        binary = nats_server_binary()
        if binary is None:
            raise SystemExit("nats-server is not installed (make system-deps)")
        self.nats = NatsServer(tmp / "nats", binary=binary).start()
        self.url = self.nats.url

    def start_node(self, name: str, *, us: float, ttl: float = 5.0) -> subprocess.Popen[bytes]:
        config = self.tmp / f"{name}.toml"
        config.write_text(CONFIG.format(url=self.url, partitions=PARTITIONS, node=name, ttl=ttl,
                                        us=us, ckpt_ms=CKPT_MS))
        out = self.tmp / f"{name}.out"
        out.touch()
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "--log-level", "warning", "run", "--config",
             str(config)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT), "TICKFLOW_BENCH_OUT": str(out)},
        )
        self.nodes.append((proc, out))
        return proc

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) of the server and each node, from /proc."""
        tick = os.sysconf("SC_CLK_TCK")
        out = {}
        assert self.nats.proc is not None
        procs = [("nats-server", self.nats.proc), *((f"node{i}", p) for i, (p, _) in
                                                 enumerate(self.nodes))]
        for name, proc in procs:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            out[name] = (int(fields[11]) + int(fields[12])) / tick
        out["this benchmark"] = time.process_time()
        return out

    def latencies(self) -> list[float]:
        values: list[float] = []
        for _, out in self.nodes:
            values += [float(x) for x in out.read_text().split()]
        return values

    def runs(self) -> int:
        return sum(out.read_text().count("\n") for _, out in self.nodes)

    def close(self) -> None:
        for proc, _ in self.nodes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc, _ in self.nodes:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.nats.stop()


async def _settled(url: str, nodes: int, within: float = 60.0) -> None:
    """Until every partition is owned and evenly spread over ``nodes`` nodes."""
    import nats

    from engine.service.cluster.lease import read_lease

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + within
        while True:
            try:
                kv = await js.key_value("BENCH_lease")
                owners = [await read_lease(kv, p) for p in range(PARTITIONS)]
                names = [o[0].node for o in owners if o is not None]
                counts = sorted({n: names.count(n) for n in names}.values())
                if len(names) == PARTITIONS and len(counts) == nodes \
                        and counts[-1] - counts[0] <= 1:
                    return
            except Exception:  # the buckets may not exist yet
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the partitions did not settle")
            await asyncio.sleep(0.05)  # another process's state: polled
    finally:
        await nc.close()


async def _publish(url: str, events: list[DataReady], rate: float | None = None) -> None:
    from engine.service.cluster.publish import ClusterPublisher

    settings = ClusterSettings(enabled=True, nats_url=url, prefix="bench", stream="BENCH",
                               partitions=PARTITIONS)
    publisher = await ClusterPublisher(settings, node="bench").start()
    try:
        futures = []
        started = time.perf_counter()
        for i, ev in enumerate(events):
            if rate is not None:
                ahead = started + i / rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)  # pacing the offered load
                ev = msgspec.structs.replace(ev, ts=time.time())
            futures.append(publisher.publish(ev))
            if len(futures) % 1000 == 0:
                await asyncio.sleep(0)
        await asyncio.gather(*futures)
    finally:
        await publisher.close()


async def _until(condition: Any, within: float, what: str) -> float:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done within {within} s")
        await asyncio.sleep(0.01)  # the nodes' output files: polled
    return time.perf_counter()


def scaling(nodes: int, runs: int, us: float) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            for i in range(nodes):
                cluster.start_node(f"n{i}", us=us)
            asyncio.run(_settled(cluster.url, nodes))
            events = [DataReady(symbol=f"X{i}", ts=time.time(), price=100.0)
                      for i in range(runs)]

            async def main() -> float:
                started = time.perf_counter()
                await _publish(cluster.url, events)
                cpu0 = cluster.cpu()
                done = await _until(lambda: cluster.runs() >= runs, 300, "runs")
                cpu1 = cluster.cpu()
                wall = done - started
                node_cpu = sum(cpu1[k] - cpu0[k] for k in cpu1 if k.startswith("node"))
                # On a shared machine the CPU the nodes got says whether the second core was
                # there to be had: runs per node-CPU-second is the efficiency either way.
                print(f"  {nodes} node(s): CPU share over {wall:.2f} s: " + ", ".join(
                    f"{k} {(cpu1[k] - cpu0[k]) / wall:.0%}" for k in cpu1)
                    + f"; {runs / node_cpu:,.0f} runs per node-CPU-second", flush=True)
                return runs / wall

            return asyncio.run(main())
        finally:
            cluster.close()


def latency(rate: float, us: float, seconds: float = 4.0) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start_node("n0", us=us)
            asyncio.run(_settled(cluster.url, 1))
            n = int(rate * seconds)
            events = [DataReady(symbol=f"L{i % 500}", ts=0.0, price=100.0) for i in range(n)]

            async def main() -> None:
                await _publish(cluster.url, events, rate=rate)
                await _until(lambda: cluster.runs() >= n * 0.9, 60, "latency runs")

            asyncio.run(main())
            values = sorted(cluster.latencies())
            return (statistics.median(values), values[int(len(values) * 0.99)], len(values))
        finally:
            cluster.close()


def ceiling(backlog: int) -> float:
    import nats

    from engine.service.cluster.tenure import decode_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(Path(tmp))
        try:
            proc = cluster.start_node("n0", us=0, ttl=30.0)
            asyncio.run(_settled(cluster.url, 1))
            proc.send_signal(signal.SIGSTOP)
            events = [DataReady(symbol=f"C{i % 64}", ts=float(i), price=100.0)
                      for i in range(backlog)]
            asyncio.run(_publish(cluster.url, events))

            async def main() -> float:
                nc = await nats.connect(cluster.url)
                try:
                    kv = await nc.jetstream().key_value("BENCH_ckpt")
                    started = time.perf_counter()
                    proc.send_signal(signal.SIGCONT)
                    while True:
                        total = 0
                        for key in await kv.keys():
                            entry = await kv.get(key)
                            if entry.value:
                                cp = decode_checkpoint(entry.value)
                                total += sum(a.count for a in cp.applied.values())
                        if total >= backlog:
                            return backlog / (time.perf_counter() - started)
                        await asyncio.sleep(0.02)  # the node's checkpoints: polled
                finally:
                    await nc.close()

            return asyncio.run(asyncio.wait_for(main(), 120))
        finally:
            cluster.close()


def main() -> None:
    global CKPT_MS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15000)
    parser.add_argument("--us", type=float, default=200.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--backlog", type=int, default=40_000)
    parser.add_argument("--checkpoint-ms", type=float, default=CKPT_MS)
    parser.add_argument("--only", choices=["scaling", "latency", "ceiling"])
    args = parser.parse_args()
    CKPT_MS = args.checkpoint_ms
    print(f"checkpoints every {CKPT_MS:g} ms, {PARTITIONS} partitions, steps of {args.us:g} us",
          flush=True)
    if args.only in (None, "scaling"):
        one = scaling(1, args.runs, args.us)
        print(f"scaling: 1 node {one:,.0f} runs/s", flush=True)
        two = scaling(2, args.runs, args.us)
        print(f"scaling: 2 nodes {two:,.0f} runs/s, ratio {two / one:.2f}x", flush=True)
    if args.only in (None, "latency"):
        p50, p99, n = latency(args.rate, args.us)
        print(f"latency: publish -> run start at {args.rate:.0f}/s ({n} runs): "
              f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms", flush=True)
    if args.only in (None, "ceiling"):
        print(f"ceiling: one node consumes {ceiling(args.backlog):,.0f} events/s "
              f"({args.backlog} backlog)", flush=True)


if __name__ == "__main__":
    main()
