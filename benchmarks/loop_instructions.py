"""Instructions the event loop executes per run, storage off and on: a count, not a time.

``python -m benchmarks.loop_instructions [--small N] [--large N]`` (needs valgrind; ~2 min)

This shared VM's speed moves by up to 2x from one minute to the next, so timings of storage off
and on only compare when alternated within one run, and even then by a few percent at best.
Instructions do not move with it: callgrind counts those the event loop's thread executes
(collection switched on inside ``uv_run`` only, so neither start-up nor the SQLite thread
counts) for the drain workload of :mod:`benchmarks.bench_storage` (no-op 3-step runs, every
feature on), at two sizes; the difference over the difference in runs is the cost of one run,
the engine's set-up cancelled out. Fewer instructions are not the same as less time (cache
misses, the GIL hand-overs with the SQLite thread and the writer's catch-up are not in them),
but what the loop does per run is measured exactly, the same on every run.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
from pathlib import Path

_COLLECTED = re.compile(r"Collected : (\d+)")


def _child(storage: bool, runs: int) -> None:
    import uvloop

    from benchmarks.bench_storage import drain

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "loop.db" if storage else None
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(drain(runs, db))


def _count(storage: bool, runs: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--toggle-collect=uv_run",
             f"--callgrind-out-file={tmp}/callgrind.out", sys.executable, "-m",
             "benchmarks.loop_instructions", "--child", "on" if storage else "off", str(runs)],
            capture_output=True, text=True, check=True,
        )
    match = _COLLECTED.search(out.stderr)
    if match is None:
        raise RuntimeError(f"callgrind printed no count:\n{out.stderr[-2000:]}")
    return int(match.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=5_000)
    parser.add_argument("--large", type=int, default=15_000)
    parser.add_argument("--child", nargs=2, metavar=("STORAGE", "RUNS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0] == "on", int(args.child[1]))
        return 0
    per_run = {}
    for storage in (False, True):
        small, large = _count(storage, args.small), _count(storage, args.large)
        per_run[storage] = (large - small) / (args.large - args.small)
    off, on = per_run[False], per_run[True]
    print(f"event loop, instructions per run: storage off {off:,.0f}, on {on:,.0f} "
          f"(+{on - off:,.0f}); off/on {off / on:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
