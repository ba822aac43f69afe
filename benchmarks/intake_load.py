"""Network intake load benchmark: DATA_READY lines over loopback TCP, acks read back.

``python -m benchmarks.intake_load`` runs, for storage off and on, an engine with
:class:`engine.service.netintake.IntakeServers` on 127.0.0.1 (a free port) in this process, and
a load generator in a **separate process** (``python -m benchmarks.intake_load client ...``, so its
CPU does not share the engine's event loop) that opens ``--conns`` connections and keeps up to
``--window`` lines in flight on each (sent, not yet acked), in writes of ``--chunk`` lines.

Reported per scenario: events acknowledged per second (first send to last ack), and ack latency
(the client's write of a line -> its ack read back) p50/p99. With storage on, an ack means the
event's journal record is committed, so latency includes the group commit
(``storage.commit_interval_ms``). Bounded: at most ``--events`` per scenario and ``--duration``
seconds of sending. Prints a table and writes ``.benchmarks/intake.json``. Absolute numbers are
for reading, never for asserting.

Engine under load: one workflow of one no-op step, 1000 symbols (conflation keeps the run table
bounded whatever the rate), 5 agents -- what is measured is intake, decoding, journaling and
triggering, not strategy work.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

DEFAULT_JSON = Path(".benchmarks/intake.json")
SYMBOLS = 1000

CONFIG = """
[engine]
drain_timeout_s = 5.0

[metrics]
enabled = false

[source]
kind = "none"

[workflows.w]
priority = 1
max_concurrent = 5

[[workflows.w.steps]]
name = "noop"
action = "benchmarks.bench_actions:noop"
"""


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


# -- the load generator (runs in its own process) ---------------------------------------------


def _lines() -> list[bytes]:
    return [
        orjson.dumps({
            "type": "DATA_READY", "symbol": f"S{i % SYMBOLS:04d}", "ts": 1.7e9 + i,
            "price": 100.0 + (i % 97) * 0.01, "volume": 10.0, "bid": 99.99, "ask": 100.01,
        }) + b"\n"
        for i in range(4 * SYMBOLS)
    ]


async def _connection(
    port: int, quota: int, window: int, chunk: int, stop_at: float, latencies: list[int],
) -> tuple[int, int]:
    """Send up to ``quota`` lines (until ``stop_at``), read every ack; (acked, errors)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = _lines()
    sent_at: collections.deque[int] = collections.deque()
    room = asyncio.Event()
    room.set()
    state = {"sent": 0, "acked": 0, "errors": 0, "done_sending": False}

    async def send() -> None:
        i = 0
        while state["sent"] < quota and time.perf_counter() < stop_at:
            while len(sent_at) + chunk > window:
                room.clear()
                await room.wait()
            n = min(chunk, quota - state["sent"])
            payload = b"".join(lines[(i + k) % len(lines)] for k in range(n))
            i += n
            now = time.perf_counter_ns()
            sent_at.extend([now] * n)
            writer.write(payload)
            state["sent"] += n
            await writer.drain()
        state["done_sending"] = True
        room.set()

    async def receive() -> None:
        while not (state["done_sending"] and state["acked"] == state["sent"]):
            line = await reader.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            now = time.perf_counter_ns()
            latencies.append(now - sent_at.popleft())
            state["acked"] += 1
            if not line.startswith(b'{"ok":true'):
                state["errors"] += 1
            if len(sent_at) + chunk <= window:
                room.set()

    try:
        await asyncio.gather(send(), receive())
    finally:
        writer.close()
        await writer.wait_closed()
    return state["acked"], state["errors"]


async def _client(args: argparse.Namespace) -> dict[str, Any]:
    latencies: list[int] = []
    per_conn = max(1, args.events // args.conns)
    started = time.perf_counter()
    stop_at = started + args.duration
    results = await asyncio.gather(*(
        _connection(args.port, per_conn, args.window, args.chunk, stop_at, latencies)
        for _ in range(args.conns)
    ))
    elapsed = time.perf_counter() - started
    acked = sum(r[0] for r in results)
    latencies.sort()

    def q(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1000.0 if (
            latencies
        ) else 0.0

    return {
        "acked": acked,
        "errors": sum(r[1] for r in results),
        "elapsed_s": elapsed,
        "events_per_s": acked / elapsed if elapsed > 0 else 0.0,
        "p50_us": q(0.50),
        "p99_us": q(0.99),
        "max_us": latencies[-1] / 1000.0 if latencies else 0.0,
    }


def client_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="intake_load client")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--conns", type=int, required=True)
    parser.add_argument("--window", type=int, required=True)
    parser.add_argument("--chunk", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    args = parser.parse_args(argv)
    loop = _new_loop()
    try:
        result = loop.run_until_complete(_client(args))
    finally:
        loop.close()
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
    return 0


# -- the server side (this process) -----------------------------------------------------------


async def _scenario(
    storage: bool, *, events: int, conns: int, window: int, chunk: int, duration: float,
    db_dir: Path,
) -> dict[str, Any]:
    from engine.config import IntakeSettings, loads_config
    from engine.service.daemon import Engine
    from engine.service.netintake import IntakeServers

    toml = CONFIG
    if storage:
        toml += f'\n[storage]\npath = "{db_dir / "intake-bench.db"}"\n'
    config = loads_config(textwrap.dedent(toml))
    engine = Engine(config, sources=[], persist=storage, serve_metrics=False)
    settings = IntakeSettings(tcp_port=0, max_connections=max(64, conns))
    async with (
        engine.session(),
        IntakeServers(engine, settings, token=None, environ={}) as servers,
    ):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.intake_load", "client",
            "--port", str(servers.tcp_port), "--events", str(events), "--conns", str(conns),
            "--window", str(window), "--chunk", str(chunk), "--duration", str(duration),
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(duration + 60.0):
                out, _ = await proc.communicate()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed with exit code {proc.returncode}")
        result: dict[str, Any] = orjson.loads(out)
        stats = servers.statistics()
        result["server_lines"] = stats.lines
        result["rejected"] = stats.decoder.rejected_total
        if engine.persistence is not None and engine.persistence.writer is not None:
            w = engine.persistence.writer.statistics()
            result["commits"] = w.commits
        engine.stop()
    result.update(storage=storage, conns=conns, window=window, chunk=chunk)
    return result


def run_scenario(storage: bool, **kw: Any) -> dict[str, Any]:
    """One scenario in a fresh event loop (also the pytest-benchmark wrapper's entry point)."""
    with tempfile.TemporaryDirectory() as tmp:
        loop = _new_loop()
        try:
            return loop.run_until_complete(_scenario(storage, db_dir=Path(tmp), **kw))
        finally:
            loop.close()


def format_table(results: Sequence[dict[str, Any]]) -> str:
    head = (f"{'storage':<8} {'conns':>5} {'window':>6} {'acked':>8} {'events/s':>10} "
            f"{'p50 us':>9} {'p99 us':>9} {'max us':>9} {'errors':>6}")
    rows = [head, "-" * len(head)]
    for r in results:
        rows.append(
            f"{'on' if r['storage'] else 'off':<8} {r['conns']:>5} {r['window']:>6} "
            f"{r['acked']:>8} {r['events_per_s']:>10.0f} {r['p50_us']:>9.0f} "
            f"{r['p99_us']:>9.0f} {r['max_us']:>9.0f} {r['errors']:>6}"
        )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["client"]:
        return client_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.intake_load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=200_000,
                        help="events per scenario (upper bound)")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds of sending per scenario (upper bound)")
    parser.add_argument("--conns", type=int, default=4)
    parser.add_argument("--window", type=int, default=512, help="lines in flight per connection")
    parser.add_argument("--chunk", type=int, default=32, help="lines per write")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    results = []
    # "saturate": as many events as the client keeps in flight (throughput; latency is then
    # queueing, ~window/rate). "light": one connection, 4 lines in flight (latency near idle).
    loads = [
        {"conns": args.conns, "window": args.window, "chunk": args.chunk},
        {"conns": 1, "window": 4, "chunk": 1},
    ]
    for load in loads:
        for storage in (False, True):
            events = args.events if load["window"] > 4 else min(args.events, 20_000)
            results.append(run_scenario(
                storage, events=events, duration=args.duration, **load
            ))
    print(format_table(results))
    data = {
        "benchmark": "intake_load",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "settings": vars(args) | {"json": str(args.json)},
        "results": results,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
