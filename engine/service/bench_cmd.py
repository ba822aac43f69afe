"""``tickflow bench``: run the benchmark suite of a source checkout and write its report.

The benchmarks are not in the wheel (``benchmarks/`` imports the engine, the baseline pool and
pytest's helpers, and measures a checkout, not an installation), so ``tickflow bench`` looks for
a checkout: ``--source DIR``, else the one the running ``engine`` package was imported from (an
editable install or ``PYTHONPATH``), else the current directory. It then runs
``python -m benchmarks.suite`` there in a child process, never an import: the engine must not
depend on the benchmarks that sit above it (import-linter's layers), the child imports the
engine of the very checkout it measures, and a fresh interpreter starts every run clean.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "cmd_bench", "find_checkout"]

SUITE = Path("benchmarks") / "suite.py"


def add_parser(sub: Any) -> None:
    bench = sub.add_parser(
        "bench", help="run the benchmark suite of a source checkout: tickflow against the "
        "naive pool, heap, storage, intake; writes index.html + PNG charts + report.json",
    )
    size = bench.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer, shorter rounds: under 3 minutes "
                      "(default: every benchmark at its full size, ~4 minutes)")
    size.add_argument("--smoke", action="store_true",
                      help="seconds: proves the pipeline works, its figures mean nothing")
    bench.add_argument("--report", type=Path, default=Path(".benchmarks/report"), metavar="DIR",
                       help="report directory (default %(default)s; an earlier report there "
                       "is replaced)")
    bench.add_argument("--source", type=Path, default=None, metavar="DIR",
                       help="the source checkout to run (default: the engine's own, else .)")


def _is_checkout(path: Path) -> bool:
    return (path / SUITE).is_file() and (path / "engine" / "__init__.py").is_file()


def find_checkout(source: Path | None, cwd: Path) -> Path | None:
    """The source tree whose ``benchmarks/suite.py`` to run, or None."""
    if source is not None:
        return source.resolve() if _is_checkout(source) else None
    import engine

    for candidate in (Path(engine.__file__).resolve().parent.parent, cwd.resolve()):
        if _is_checkout(candidate):
            return candidate
    return None


def cmd_bench(args: argparse.Namespace) -> int:
    cwd = Path.cwd()
    checkout = find_checkout(args.source, cwd)
    if checkout is None:
        where = (f"{args.source} has no benchmarks/suite.py beside an engine/ package"
                 if args.source is not None else
                 "the tickflow installation has no benchmarks/ (they are not in the wheel)")
        print(f"tickflow bench: {where}. Run it from a source checkout "
              "(git clone the tickflow repository, then `make install` and `tickflow bench` "
              "inside it) or pass --source DIR.", file=sys.stderr)
        return 2
    report = args.report if args.report.is_absolute() else cwd / args.report
    size = "smoke" if args.smoke else "quick" if args.quick else "full"
    cmd = [sys.executable, "-m", "benchmarks.suite", "--size", size, "--report", str(report)]
    env = dict(os.environ)
    # The checkout first on the path: its engine is the one measured, whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(checkout), env.get("PYTHONPATH", "")) if p)
    print(f"tickflow bench: {size} run of {checkout}/benchmarks, report in {report}",
          file=sys.stderr, flush=True)
    try:
        return subprocess.run(cmd, cwd=checkout, env=env, check=False).returncode
    except KeyboardInterrupt:  # the child got the same SIGINT and has stopped (or will)
        return 130
