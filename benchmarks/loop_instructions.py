"""Instructions the event loop executes per run, storage off and on: a count, not a time.

``python -m benchmarks.loop_instructions [--small N] [--large N] [--workload W] [--storage S]``
(needs valgrind; ~2 min)

This shared VM's speed moves by up to 2x from one minute to the next, so timings of storage off
and on only compare when alternated within one run, and even then by a few percent at best.
Instructions do not move with it: callgrind counts those the event loop's thread executes
(collection switched on inside ``uv_run`` only, so neither start-up nor the SQLite thread
counts) for the drain workload of :mod:`benchmarks.bench_storage` (no-op 3-step runs, every
feature on), at two sizes; the difference over the difference in runs is the cost of one run,
the engine's set-up cancelled out. Fewer instructions are not the same as less time (cache
misses, the GIL hand-overs with the SQLite thread and the writer's catch-up are not in them),
but what the loop does per run is measured exactly, the same on every run.

``--workload`` picks what the runs are: ``drain`` (the default, above: every event for a new
symbol, submitted at once), or the saturated loop of :mod:`benchmarks.engine_load`'s
``throughput`` scenario with a bounded count of runs -- ``throughput`` (no-op steps, a universe
of 4096 symbols, at most 512 runs in flight, the producer yielding between batches) and
``yield`` (the same with steps that suspend once). The per-step path's changes are measured
with these two (``--storage off``), since they are the benchmark's own shapes.
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


WORKLOADS = ("drain", "throughput", "yield")
IN_FLIGHT = 512


async def _saturated(step: str, runs: int, design: str) -> None:
    """``engine_load``'s throughput producer, stopped after ``runs`` events instead of a time."""
    from benchmarks.engine_load import Workload, make_subject, mixed_events
    from engine.core import dispatcher

    # Valgrind runs the code ~50x slower, so a streak's time budget would cut streaks that at
    # full speed end on their step count: leave the count alone to decide, as it does there.
    dispatcher.STREAK_SECONDS = 1.0
    evs = mixed_events()
    n = len(evs)
    async with make_subject(design, Workload(step=step)) as subject:
        submit, in_flight = subject.submit, subject.in_flight
        i = 0
        while i < runs:
            for _ in range(min(IN_FLIGHT - in_flight(), runs - i)):
                submit(evs[i % n])
                i += 1
            await asyncio.sleep(0)
        async with asyncio.timeout(120):
            await subject.wait_idle()
        assert subject.completed() == runs, subject.completed()


def _child(storage: bool, runs: int, workload: str, design: str) -> None:
    import uvloop

    from benchmarks.bench_storage import drain

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "loop.db" if storage else None
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            if workload == "drain":
                runner.run(drain(runs, db))
            else:
                if storage:
                    raise SystemExit(f"--workload {workload} runs with storage off only")
                step = "noop" if workload == "throughput" else "yield_once"
                runner.run(_saturated(step, runs, design))


def _count(storage: bool, runs: int, workload: str, design: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            ["valgrind", "--tool=callgrind", "--toggle-collect=uv_run",
             f"--callgrind-out-file={tmp}/callgrind.out", sys.executable, "-m",
             "benchmarks.loop_instructions", "--workload", workload, "--design", design,
             "--child", "on" if storage else "off", str(runs)],
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
    parser.add_argument("--workload", choices=WORKLOADS, default="drain")
    parser.add_argument("--design", choices=("tickflow", "baseline"), default="tickflow",
                        help="with --workload throughput or yield: whose loop to count")
    parser.add_argument("--storage", choices=("both", "off"), default=None,
                        help="both (the default for drain) or off (the only choice otherwise)")
    parser.add_argument("--child", nargs=2, metavar=("STORAGE", "RUNS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child[0] == "on", int(args.child[1]), args.workload, args.design)
        return 0
    storage_both = (args.storage or ("both" if args.workload == "drain" else "off")) == "both"
    if storage_both and args.workload != "drain":
        parser.error(f"--workload {args.workload} runs with storage off only")
    per_run = {}
    for storage in (False, True) if storage_both else (False,):
        small = _count(storage, args.small, args.workload, args.design)
        large = _count(storage, args.large, args.workload, args.design)
        per_run[storage] = (large - small) / (args.large - args.small)
    if not storage_both:
        print(f"event loop, instructions per run ({args.design}, {args.workload}, storage off): "
              f"{per_run[False]:,.0f}")
        return 0
    off, on = per_run[False], per_run[True]
    print(f"event loop, instructions per run: storage off {off:,.0f}, on {on:,.0f} "
          f"(+{on - off:,.0f}); off/on {off / on:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
