"""Backtest speed: ticks per second of ``tickflow backtest`` against the live ``tickflow replay``.

    python -m benchmarks.bench_backtest [--ticks 1000000] [--replay-ticks 100000]
        [--only default,bare,replay] [--profile OUT.prof]

Generates a CSV of ``--ticks`` ticks (20 symbols, 4 of them priority 0 so both default
workflows run; a seeded random walk with bid/ask) and measures, each in a fresh subprocess
through the real CLI:

* ``backtest`` with the default config (both default workflows);
* ``backtest`` with no workflow routed (every symbol at a priority no route covers): the cost
  of reading, validating and feeding ticks and of the engine's intake;
* ``replay --speed 0`` (the live engine on the wall clock, uvloop) on the same file (or its
  first ``--replay-ticks`` ticks), timed as a whole command: interpreter start-up included.

Rates are events fed per wall-clock second as each command reports it (its own timer, so
interpreter start-up is not counted), with the command's CPU time beside them: on a shared
machine the wall rate moves with the load, the CPU time much less. ``--profile`` runs the
default-workflow backtest under cProfile instead and prints its top functions (slower: for
finding costs, not for figures). Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

__all__ = ["write_ticks"]

TICKFLOW = [sys.executable, "-m", "engine", "--log-level", "error"]

# The default workflows, routed to priority 0-2 only, and every symbol at priority 7.
UNROUTED_CONFIG = """
[engine]
default_symbol_priority = 7

[workflows.high_freq_trading]
priority = 0
route = { min_priority = 0, max_priority = 0 }
max_concurrent = 3

[[workflows.high_freq_trading.steps]]
name = "collect_data"
action = "strategies.hft:collect_data"

[workflows.trend_trading]
priority = 2
route = { min_priority = 1, max_priority = 2 }
max_concurrent = 5

[[workflows.trend_trading.steps]]
name = "collect_trend_data"
action = "strategies.trend:collect_trend_data"
"""


def write_ticks(
    path: Path,
    n: int,
    *,
    symbols: int = 20,
    hot: int = 4,
    rate_hz: float = 20_000.0,
    seed: int = 1,
    start: float = 1_700_000_000.0,
    cold_priority: int | None = 2,
) -> Path:
    """A CSV of ``n`` ticks: a random walk per symbol, ``rate_hz`` ticks per second in total
    (exponential gaps), the first ``hot`` symbols at priority 0."""
    rng = random.Random(seed)
    names = [f"S{i:03d}" for i in range(symbols)]
    prices = [100.0 + 10 * i for i in range(symbols)]
    prio = ["0" if i < hot else ("" if cold_priority is None else str(cold_priority))
            for i in range(symbols)]
    ts = start
    rows = ["symbol,ts,price,volume,bid,ask,priority"]
    gauss, randrange, expo = rng.gauss, rng.randrange, rng.expovariate
    for _ in range(n):
        i = randrange(symbols)
        p = prices[i] = max(0.01, prices[i] * (1.0 + 0.0005 * gauss(0.0, 1.0)))
        half = p * 0.0001
        ts += expo(rate_hz)
        rows.append(
            f"{names[i]},{ts:.6f},{p:.4f},{randrange(1, 500)},{p - half:.4f},{p + half:.4f},"
            f"{prio[i]}"
        )
    path.write_text("\n".join(rows) + "\n")
    return path


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _backtest(data: Path, config: Path | None, profile: Path | None = None) -> dict[str, Any]:
    command = TICKFLOW
    if profile is not None:
        command = [sys.executable, "-m", "cProfile", "-o", str(profile), *TICKFLOW[1:]]
    args = [*command, "backtest", str(data), "--json", "--progress", "never"]
    if config is not None:
        args += ["--config", str(config)]
    cpu = _children_cpu()
    out = subprocess.run(args, check=True, capture_output=True, timeout=3600).stdout
    doc: dict[str, Any] = orjson.loads(out)
    doc["cpu_seconds"] = _children_cpu() - cpu  # the whole command's, start-up included
    return doc


def _print_profile(path: Path, top: int = 25) -> None:
    import pstats

    stats = pstats.Stats(str(path))
    stats.sort_stats("tottime").print_stats(top)


def _replay_rate(data: Path) -> tuple[float, int]:
    with data.open() as f:
        lines = sum(1 for _ in f) - 1
    started = time.perf_counter()
    subprocess.run(
        [*TICKFLOW, "replay", str(data), "--json", "--drain-timeout", "600"],
        check=True, capture_output=True, timeout=3600,
    )
    return lines / (time.perf_counter() - started), lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ticks", type=int, default=1_000_000)
    parser.add_argument("--replay-ticks", type=int, default=None,
                        help="replay only the first N ticks (default: the whole file)")
    parser.add_argument("--rate-hz", type=float, default=200_000.0,
                        help="ticks per second of market time in the generated file")
    parser.add_argument("--only", default="default,bare,replay",
                        help="comma-separated subset of: default, bare (no workflow), replay")
    parser.add_argument("--profile", type=Path, default=None, metavar="OUT",
                        help="run the default-workflow backtest under cProfile into OUT, "
                             "print its top functions, and measure nothing else")
    args = parser.parse_args(argv)
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    unknown = only - {"default", "bare", "replay"}
    if unknown or not only:
        parser.error(f"--only takes default, bare and replay, got {args.only!r}")
    if args.profile is not None:
        with tempfile.TemporaryDirectory() as tmp:
            data = write_ticks(Path(tmp) / "ticks.csv", args.ticks, rate_hz=args.rate_hz)
            doc = _backtest(data, None, args.profile)
        print(f"profiled {args.ticks:,} ticks: {doc['ticks_per_second']:,.0f} ticks/s "
              f"under the profiler; stats in {args.profile}")
        _print_profile(args.profile)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_ticks(root / "ticks.csv", args.ticks, rate_hz=args.rate_hz)
        results: list[tuple[str, dict[str, Any]]] = []
        if "default" in only:
            results.append(("backtest, default workflows", _backtest(data, None)))
        if "bare" in only:
            unrouted = root / "unrouted.toml"
            unrouted.write_text(UNROUTED_CONFIG)
            unrouted_data = write_ticks(
                root / "unrouted.csv", args.ticks, rate_hz=args.rate_hz, hot=0,
                cold_priority=None,
            )
            results.append(("backtest, no workflow", _backtest(unrouted_data, unrouted)))
        replay_rate, replay_lines = 0.0, 0
        if "replay" in only:
            head = data
            if args.replay_ticks is not None and args.replay_ticks < args.ticks:
                head = root / "head.csv"
                with data.open() as src, head.open("w") as dst:
                    for i, line in enumerate(src):
                        if i > args.replay_ticks:
                            break
                        dst.write(line)
            replay_rate, replay_lines = _replay_rate(head)
    print(f"ticks: {args.ticks:,} ({args.rate_hz:,.0f}/s of market time, 20 symbols, 4 hot)")
    for name, doc in results:
        runs = sum(sum(o.values()) for o in doc["runs"].values())
        print(
            f"{name:<28} {doc['ticks_per_second']:>10,.0f} ticks/s  "
            f"({doc['wall_seconds']:.2f} s wall, {doc['cpu_seconds']:.2f} s CPU, {runs:,} runs, "
            f"conflated {doc['events']['conflated']:,}, digest {doc['digest'][:19]})"
        )
    if "replay" in only:
        print(f"{'replay --speed 0 (live)':<28} {replay_rate:>10,.0f} ticks/s  "
              f"(first {replay_lines:,} ticks, wall time of the whole command)")
        return 0 if math.isfinite(replay_rate) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
