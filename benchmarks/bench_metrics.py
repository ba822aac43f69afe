"""Cost of Prometheus metrics on the engine workload: runs/s with metrics scraped vs not.

``python -m benchmarks.bench_metrics`` runs the saturation scenario of
:mod:`benchmarks.engine_load` (throughput: ``in_flight`` runs kept in flight, no-op steps) on
the same engine, alternating "off" (nothing reads the collector) and "on" (the engine's
registry rendered with ``generate_latest`` every ``--scrape-interval`` seconds on the engine's
loop -- what a ``/metrics`` request does, minus the socket) round by round, all in one process.
It prints the median runs/s of each, their ratio, and the median time of one scrape.

The collector adds nothing to the hot path (the engine counts the same way with or without
it), so the cost is the scrape itself: a few hundred microseconds per second.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import uvloop
from prometheus_client import generate_latest

from benchmarks.engine_load import Settings, TickflowSubject, engine_toml, throughput


async def one_round(scrape_every: float | None, s: Settings) -> tuple[float, list[float]]:
    scrape_times: list[float] = []
    async with TickflowSubject(engine_toml()) as subject:
        engine = subject.engine
        assert engine is not None

        async def scraper() -> None:
            assert scrape_every is not None
            while True:
                await asyncio.sleep(scrape_every)  # the scrape period
                t0 = time.perf_counter()
                generate_latest(engine.metrics_registry)
                scrape_times.append(time.perf_counter() - t0)

        task = asyncio.get_running_loop().create_task(scraper()) if scrape_every else None
        try:
            result: dict[str, Any] = await throughput(subject, s)
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
    return float(result["runs_per_s"]), scrape_times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--scrape-interval", type=float, default=1.0)
    args = parser.parse_args()
    s = Settings(duration_s=args.duration, warmup_s=0.5)
    off: list[float] = []
    on: list[float] = []
    scrapes: list[float] = []
    for r in range(args.rounds):
        order = [None, args.scrape_interval] if r % 2 == 0 else [args.scrape_interval, None]
        for every in order:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                rate, times = runner.run(one_round(every, s))
            (on if every else off).append(rate)
            scrapes.extend(times)
            print(f"round {r} metrics {'on ' if every else 'off'}: {rate:,.0f} runs/s", flush=True)
    m_off, m_on = statistics.median(off), statistics.median(on)
    print(f"median runs/s  off: {m_off:,.0f}  on: {m_on:,.0f}  on/off: {m_on / m_off:.3f}")
    if scrapes:
        print(f"scrape: median {statistics.median(scrapes) * 1e3:.2f} ms, "
              f"max {max(scrapes) * 1e3:.2f} ms over {len(scrapes)} scrapes")


if __name__ == "__main__":
    main()
