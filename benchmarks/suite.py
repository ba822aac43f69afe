"""Every benchmark in one run, written up as ``DIR/index.html`` + PNG charts + ``report.json``.

``python -m benchmarks.suite [--size smoke|quick|full] [--report DIR]`` (what ``tickflow bench``
runs) plays, in this order: the engine load scenarios of :mod:`benchmarks.engine_load` (tickflow
against the baseline pool), the market-data flood of :mod:`benchmarks.market_flood` (each design
in its own process), the heap's push+pop ratios against ``heapq`` (:mod:`benchmarks.heap_ratio`),
storage on vs off (:mod:`benchmarks.bench_storage`) and the network intake
(:mod:`benchmarks.intake_load`, its load generator in a separate process).

Sizes: ``full`` is each benchmark's own default (~4 minutes, judging by the parts' own
commands), ``quick`` fits in under three minutes on a 2-vCPU VM (1 min 40 s at load average
4), ``smoke`` takes seconds and only proves the pipeline works (its figures mean nothing).
Nothing here asserts a speed: the report shows figures and the issue's targets, met or not.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

__all__ = ["SIZES", "Size", "failed_parts", "main", "run_suite"]

DEFAULT_REPORT = Path(".benchmarks/report")
Log = Callable[[str], None]


@dataclass(frozen=True)
class Size:
    heap_sizes: tuple[int, ...]
    heap_rounds: int
    heap_batch: int
    engine: dict[str, Any]
    flood: dict[str, Any]
    storage: dict[str, Any]
    intake: dict[str, Any]
    heap_chunk: int = 2_000
    notes: tuple[str, ...] = field(default=())


SIZES: dict[str, Size] = {
    "smoke": Size(
        heap_sizes=(1_000, 10_000), heap_rounds=2, heap_batch=4_000,
        engine={"rounds": 1, "duration_s": 0.1, "warmup_s": 0.05, "in_flight": 128,
                "flood_backlog": 100},
        flood={"duration_s": 0.3, "warmup_s": 0.1, "saturation_s": 0.2, "rounds": 1},
        storage={"rounds": 1, "runs": 500, "records": 2_000, "duration_s": 0.2},
        intake={"events": 2_000, "duration": 2.0, "conns": 2, "window": 64, "chunk": 8,
                "light_events": 200},
        notes=("smoke size: proves the pipeline, its figures mean nothing",),
    ),
    "quick": Size(
        heap_sizes=(1_000, 100_000, 1_000_000), heap_rounds=5, heap_batch=30_000,
        engine={"rounds": 3, "duration_s": 0.8, "warmup_s": 0.2},
        flood={"duration_s": 6.0, "warmup_s": 0.5, "saturation_s": 0.8, "rounds": 1},
        storage={"rounds": 5, "runs": 5_000, "records": 50_000, "duration_s": 1.0},
        intake={"events": 60_000, "duration": 3.0, "conns": 4, "window": 512, "chunk": 32,
                "light_events": 5_000},
    ),
    "full": Size(
        heap_sizes=(1_000, 100_000, 1_000_000), heap_rounds=5, heap_batch=50_000,
        engine={"rounds": 4, "duration_s": 1.0, "warmup_s": 0.25},
        flood={"duration_s": 20.0, "warmup_s": 0.5, "saturation_s": 1.0, "rounds": 1},
        storage={"rounds": 9, "runs": 10_000, "records": 100_000, "duration_s": 2.0},
        intake={"events": 200_000, "duration": 10.0, "conns": 4, "window": 512, "chunk": 32,
                "light_events": 20_000},
    ),
}


# -- the parts ------------------------------------------------------------------------------


def run_engine(size: Size, log: Log) -> dict[str, Any]:
    from .engine_load import Settings, run_all

    return run_all(Settings(**size.engine), log=log)


def run_flood(size: Size, log: Log) -> dict[str, Any]:
    from .market_flood import FloodSettings, run

    return run(FloodSettings(**size.flood), log=log)


def run_heap(size: Size, log: Log) -> dict[str, Any]:
    from . import heap_ratio

    # The compiled heap is the one to measure; its pure-Python twin only when it is not built,
    # and the report says which.
    try:
        cls, impl = importlib.import_module("fastpath._heap").PriorityHeap, "cython"
    except ImportError:
        cls, impl = importlib.import_module("fastpath._heap_py").PriorityHeap, "python"
        log("  heap: the compiled heap is not built (make build): measuring the Python twin")
    out = []
    for n in size.heap_sizes:
        r = heap_ratio.measure(n, size.heap_rounds, size.heap_batch, size.heap_chunk,
                               heap_ratio.CLOCKS["cpu"], cls, False, log)
        out.append({"size": n, "ratios": r.ratios, "median_ratio": r.median_ratio,
                    "heap_us": r.per_op_us(r.heap_ns), "heapq_us": r.per_op_us(r.heapq_ns)})
    return {"impl": impl, "rounds": size.heap_rounds, "batch": size.heap_batch, "sizes": out}


def run_storage(size: Size, log: Log) -> dict[str, Any]:
    from . import bench_storage

    st = size.storage
    result = bench_storage.run(st["rounds"], st["runs"], st["records"], st["duration_s"])
    p = result["paired_ratios"]
    log(f"  storage on/off: drain {p['drain']['median']:.2f}x, steady "
        f"{p['steady']['median']:.2f}x (median of {st['rounds']} rounds)")
    return result


def run_intake(size: Size, log: Log) -> dict[str, Any]:
    from . import intake_load

    it = size.intake
    # As intake_load's own command: saturating (throughput) and one connection with four
    # lines in flight (latency near idle), each with storage off and on.
    loads = [({"conns": it["conns"], "window": it["window"], "chunk": it["chunk"]},
              it["events"]),
             ({"conns": 1, "window": 4, "chunk": 1}, it["light_events"])]
    results = []
    for load, events in loads:
        for stored in (False, True):
            r = intake_load.run_scenario(stored, events=events, duration=it["duration"],
                                         **load)
            log(f"  intake {load['conns']}x{load['window']} storage "
                f"{'on ' if stored else 'off'}: {r['events_per_s']:,.0f} events/s, "
                f"ack p99 {r['p99_us']:,.0f} us")
            results.append(r)
    return {"settings": dict(it), "results": results}


PARTS: dict[str, Callable[[Size, Log], dict[str, Any]]] = {
    "engine": run_engine,
    "market_flood": run_flood,
    "heap": run_heap,
    "storage": run_storage,
    "intake": run_intake,
}


# -- the run --------------------------------------------------------------------------------


def _meta(size_name: str) -> dict[str, Any]:
    import uvloop

    import engine

    from .engine_load import _git

    return {
        "size": size_name,
        "started_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "python": sys.version.split()[0],
        "uvloop": getattr(uvloop, "__version__", "?"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "engine_implementation": engine.IMPLEMENTATION,
        "loadavg_start": round(os.getloadavg()[0], 2),
        "git": _git(),
    }


def run_suite(size_name: str, report_dir: Path, log: Log,
              parts: Sequence[str] = tuple(PARTS)) -> dict[str, Any]:
    """Run ``parts`` at ``size_name``, then write the report; returns ``report.json``'s content.

    The report is written into a fresh directory beside ``report_dir`` and moved into place at
    the end, so a failed or interrupted run never leaves a half-written report (nor deletes the
    previous one)."""
    from . import charts, html_report

    charts.require_matplotlib()  # before minutes of measuring, not after
    size = SIZES[size_name]
    for note in size.notes:
        log(f"note: {note}")
    started = time.perf_counter()
    report: dict[str, Any] = {"meta": _meta(size_name)}
    timings: dict[str, float] = {}
    for name in parts:
        log(f"== {name}")
        t0 = time.perf_counter()
        try:
            report[name] = PARTS[name](size, log)
        except Exception as exc:
            # One failed benchmark must not lose the minutes of the others: the report is
            # written with the failure in it, and the command exits non-zero.
            report[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(traceback.format_exc().rstrip())
            log(f"   {name} FAILED: {report[name]['error']}")
        timings[name] = time.perf_counter() - t0
        log(f"   {name}: {timings[name]:.1f} s")
    report["meta"].update(wall_s=time.perf_counter() - started, part_wall_s=timings,
                          loadavg_end=round(os.getloadavg()[0], 2))
    report_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{report_dir.name}.", dir=report_dir.parent))
    try:
        drawn = charts.draw_all(report, staging)
        report["charts"] = [c.file for c in drawn]
        (staging / "report.json").write_bytes(
            orjson.dumps(report, option=orjson.OPT_INDENT_2))
        html_report.write(staging, report, drawn)
        if report_dir.exists():
            shutil.rmtree(report_dir)
        staging.rename(report_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report


def _report_dir(text: str) -> Path:
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / "report.json").exists():
        # The report replaces the directory: never one that holds something else.
        raise argparse.ArgumentTypeError(
            f"{text} is a non-empty directory without a report.json: not replacing it")
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.suite", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="full",
                        help="how long to measure (default %(default)s)")
    parser.add_argument("--report", type=_report_dir, default=DEFAULT_REPORT, metavar="DIR",
                        help="where to write index.html, the PNGs and report.json "
                        "(default %(default)s; replaced if it holds an earlier report)")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS),
                        help="run only these benchmarks (default: all)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    from .charts import ChartError

    try:
        report = run_suite(args.size, args.report, log, args.parts)
    except ChartError as exc:
        print(f"tickflow bench: {exc}", file=sys.stderr)
        return 2
    meta = report["meta"]
    print(f"report: {args.report / 'index.html'} ({len(report['charts'])} charts; "
          f"{meta['wall_s']:.0f} s, load average {meta['loadavg_start']} -> "
          f"{meta['loadavg_end']})")
    failed = failed_parts(report)
    if "engine" not in failed and "engine" in report:
        from .engine_report import format_table

        print(format_table(report["engine"]))
    if "market_flood" not in failed and "market_flood" in report:
        from .market_flood import format_table as flood_table

        print(flood_table(report["market_flood"]))
    for name, error in failed.items():
        print(f"tickflow bench: the {name} benchmark failed: {error}", file=sys.stderr)
    return 1 if failed else 0


def failed_parts(report: dict[str, Any]) -> dict[str, str]:
    return {name: str(report[name]["error"]) for name in PARTS
            if isinstance(report.get(name), dict) and "error" in report[name]}


if __name__ == "__main__":
    raise SystemExit(main())
