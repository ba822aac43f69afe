"""Print per-operation times and ratios against the baseline from one pytest-benchmark JSON.

``python -m benchmarks.report [.benchmarks/heap.json]`` -- every ratio compares figures taken
in the same run, so a noisy shared machine shifts both sides alike.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

DEFAULT = Path(".benchmarks/heap.json")


def per_op_seconds(bench: dict[str, Any]) -> float:
    batch = int(bench.get("extra_info", {}).get("batch", 1))
    return float(bench["stats"]["median"]) / batch


def rows(data: dict[str, Any], baseline: str = "heapq") -> list[tuple[str, str, float, float]]:
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in data["benchmarks"]:
        impl = bench["params"]["impl"]
        groups[bench["group"]][impl] = per_op_seconds(bench)
    out = []
    for group, impls in sorted(groups.items()):
        base = impls.get(baseline)
        for impl, secs in sorted(impls.items()):
            ratio = base / secs if base else float("nan")
            out.append((group, impl, secs, ratio))
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT
    data = orjson.loads(path.read_bytes())
    print(f"{'operation':<22} {'impl':<8} {'per op':>12} {'x heapq':>9}")
    for group, impl, secs, ratio in rows(data):
        print(f"{group:<22} {impl:<8} {secs * 1e6:>9.3f} us {ratio:>8.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
