"""Print the engine load benchmark as a table of both designs, their ratios and the targets.

``python -m benchmarks.engine_report [.benchmarks/engine.json] [--json]`` reads what
``python -m benchmarks.engine_load`` wrote; ``--json`` prints the summary, ratios and targets as
JSON instead of the table. Given the pytest-benchmark JSON of
``benchmarks/test_bench_engine.py`` instead, it prints the time per run of each design and its
speed relative to the baseline. Every ratio divides figures taken in the same run (medians over its
rounds), so a noisy shared machine shifts both sides alike.

Ratio column: for rates, tickflow / baseline (higher is better for tickflow); for latencies,
baseline / tickflow (how many times lower tickflow's latency is). Rates are medians over the
rounds, latency quantiles pool every round's samples; the target lines also show the ratio of
each round on its own, to show the noise.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import orjson

from . import report

__all__ = ["ROWS", "TARGETS", "format_drain", "format_table", "main", "ratios", "targets"]

DEFAULT = Path(".benchmarks/engine.json")
DESIGNS = ("tickflow", "baseline", "baseline-job")

# (scenario, label, path to the figure, unit, kind): kind "rate" = higher is better,
# "latency" = lower is better, "info" = no ratio.
ROWS: list[tuple[str, str, tuple[str, ...], str, str]] = [
    ("throughput", "runs/s (no-op 3-step)", ("runs_per_s",), "/s", "rate"),
    ("throughput", "steps/s", ("steps_per_s",), "/s", "rate"),
    ("throughput", "events conflated", ("conflated",), "", "info"),
    ("throughput", "CPU share (noise gauge)", ("cpu_share",), "frac", "info"),
    ("throughput_yield", "runs/s (yield-once steps)", ("runs_per_s",), "/s", "rate"),
    ("throughput_yield", "steps/s", ("steps_per_s",), "/s", "rate"),
]
for _sc in ("paced", "paced_common"):
    ROWS += [
        (_sc, "offered events/s", ("offered_per_s",), "/s", "info"),
        (_sc, "achieved events/s", ("achieved_per_s",), "/s", "rate"),
        (_sc, "dispatch p50", ("dispatch", "p50_us"), "us", "latency"),
        (_sc, "dispatch p99", ("dispatch", "p99_us"), "us", "latency"),
        (_sc, "dispatch p99.9", ("dispatch", "p999_us"), "us", "latency"),
    ]
ROWS += [
    ("flood", "p0 dispatch p50", ("hot_dispatch", "p50_us"), "us", "latency"),
    ("flood", "p0 dispatch p99", ("hot_dispatch", "p99_us"), "us", "latency"),
    ("flood", "p0 dispatch p99.9", ("hot_dispatch", "p999_us"), "us", "latency"),
    ("flood", "p0 arrival->start p50", ("urgent", "p50_us"), "us", "latency"),
    ("flood", "p0 arrival->start p99", ("urgent", "p99_us"), "us", "latency"),
    ("flood", "p0 events measured", ("urgent", "samples"), "", "info"),
    ("flood", "preemptions", ("preemptions",), "", "info"),
    ("preempt", "preemption p50", ("preemption", "p50_us"), "us", "info"),
    ("preempt", "preemption p99", ("preemption", "p99_us"), "us", "info"),
    ("preempt", "preemption p99.9", ("preemption", "p999_us"), "us", "info"),
    ("preempt", "preemptions", ("preemptions",), "", "info"),
    ("preempt", "urgent arrival->start p50", ("urgent", "p50_us"), "us", "latency"),
    ("preempt", "urgent arrival->start p99", ("urgent", "p99_us"), "us", "latency"),
]
# Noise gauges: the OS took the CPU away this many times during the run (shared machine).
ROWS += [
    (_sc, "involuntary ctx switches", ("involuntary_switches",), "", "info")
    for _sc in ("throughput", "throughput_yield", "paced", "paced_common", "flood", "preempt")
]

# name: (key in ratios(), comparison, bound)
TARGETS: dict[str, tuple[str, str, float]] = {
    "tickflow runs/s >= 0.5x baseline": ("throughput_runs", ">=", 0.5),
    "p0 dispatch p99 under 10x flood >= 10x lower": ("flood_p0_p99", ">=", 10.0),
    "  (strict: p0 arrival->first step p99 >= 10x lower)": ("flood_urgent_p99", ">=", 10.0),
    "preemption p99 < 0.5 ms": ("preemption_p99_us", "<", 500.0),
}


def _get(summary: dict[str, Any], scenario: str, design: str, path: tuple[str, ...]) -> Any:
    node: Any = summary.get(scenario, {}).get(design)
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _ratio(a: Any, b: Any) -> float:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or b == 0:
        return math.nan
    return float(a) / float(b)


def ratios(summary: dict[str, Any]) -> dict[str, float]:
    """The same-run ratios the issue asks about (see the module docstring for direction), plus
    tickflow's preemption p99 in microseconds (a figure, not a ratio: it has no counterpart)."""

    def tf_over(scenario: str, path: tuple[str, ...], base: str = "baseline") -> float:
        return _ratio(_get(summary, scenario, "tickflow", path),
                      _get(summary, scenario, base, path))

    def base_over(scenario: str, path: tuple[str, ...], base: str = "baseline") -> float:
        return _ratio(_get(summary, scenario, base, path),
                      _get(summary, scenario, "tickflow", path))

    p99 = _get(summary, "preempt", "tickflow", ("preemption", "p99_us"))
    return {
        "throughput_runs": tf_over("throughput", ("runs_per_s",)),
        "throughput_runs_vs_job": tf_over("throughput", ("runs_per_s",), "baseline-job"),
        "throughput_steps": tf_over("throughput", ("steps_per_s",)),
        "throughput_yield_runs": tf_over("throughput_yield", ("runs_per_s",)),
        "throughput_yield_runs_vs_job": tf_over("throughput_yield", ("runs_per_s",),
                                                "baseline-job"),
        "paced_p50": base_over("paced", ("dispatch", "p50_us")),
        "paced_p99": base_over("paced", ("dispatch", "p99_us")),
        "paced_common_p50": base_over("paced_common", ("dispatch", "p50_us")),
        "paced_common_p99": base_over("paced_common", ("dispatch", "p99_us")),
        "flood_p0_p50": base_over("flood", ("hot_dispatch", "p50_us")),
        "flood_p0_p99": base_over("flood", ("hot_dispatch", "p99_us")),
        "flood_p0_p999": base_over("flood", ("hot_dispatch", "p999_us")),
        "flood_urgent_p99": base_over("flood", ("urgent", "p99_us")),
        "urgent_p50": base_over("preempt", ("urgent", "p50_us")),
        "urgent_p99": base_over("preempt", ("urgent", "p99_us")),
        "urgent_p99_vs_job": base_over("preempt", ("urgent", "p99_us"), "baseline-job"),
        "preemption_p99_us": math.nan if p99 is None else float(p99),
    }


def targets(
    rat: dict[str, float], per_round: list[dict[str, float]] | None = None
) -> dict[str, dict[str, Any]]:
    """Each target against the whole run's ratio, with the same ratio from every round."""
    out: dict[str, dict[str, Any]] = {}
    for name, (key, op, bound) in TARGETS.items():
        value = rat.get(key, math.nan)
        met = value >= bound if op == ">=" else value < bound
        out[name] = {
            "value": value,
            "bound": bound,
            "op": op,
            "met": bool(met),
            "rounds": [r.get(key, math.nan) for r in per_round or []],
        }
    return out


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if not isinstance(value, int | float) or math.isnan(value):
        return str(value)
    if unit == "us":
        return f"{value:,.1f} us" if value < 1000 else f"{value / 1000:,.2f} ms"
    if unit == "frac":
        return f"{value:.2f}"
    if unit == "/s":
        return f"{value:,.0f}/s"
    return f"{value:,.0f}"


def format_table(data: dict[str, Any]) -> str:
    summary = data["summary"]
    present = [d for d in DESIGNS if any(d in by for by in summary.values())]
    meta = data.get("meta", {})
    lines = []
    if meta:
        lines.append(
            f"python {meta.get('python')}, uvloop {meta.get('uvloop')}, {meta.get('cpus')} cpus; "
            f"medians of {meta.get('settings', {}).get('rounds')} rounds; baseline saturation "
            f"{meta.get('baseline_saturation_runs_per_s', 0):,.0f} runs/s, tickflow "
            f"{meta.get('tickflow_saturation_runs_per_s', 0):,.0f} runs/s; wall "
            f"{meta.get('wall_s', 0):.0f} s"
        )
    header = f"{'scenario':<18}{'figure':<27}" + "".join(f"{d:>15}" for d in present)
    header += f"{'ratio':>10}"
    lines += [header, "-" * len(header)]
    for scenario, label, path, unit, kind in ROWS:
        if scenario not in summary:
            continue
        cells = [_fmt(_get(summary, scenario, d, path), unit) for d in present]
        if kind == "rate":
            r = _ratio(_get(summary, scenario, "tickflow", path),
                       _get(summary, scenario, "baseline", path))
        elif kind == "latency":
            r = _ratio(_get(summary, scenario, "baseline", path),
                       _get(summary, scenario, "tickflow", path))
        else:
            r = math.nan
        ratio = "" if math.isnan(r) else f"{r:.2f}x"
        lines.append(f"{scenario:<18}{label:<27}" + "".join(f"{c:>15}" for c in cells)
                     + f"{ratio:>10}")
    lines.append("")
    lines.append("ratio: rates tickflow/baseline; latencies baseline/tickflow (x lower)")
    rat = data.get("ratios", {})
    if "throughput_runs_vs_job" in rat:
        lines.append(
            f"vs baseline-job: runs/s {rat['throughput_runs_vs_job']:.2f}x (no-op), "
            f"{rat.get('throughput_yield_runs_vs_job', math.nan):.2f}x (yield-once); "
            f"urgent p99 {rat.get('urgent_p99_vs_job', math.nan):.0f}x lower"
        )
    lines.append("paced: at half the baseline's saturation; paced_common: at half tickflow's "
                 "(a rate both sustain)")
    lines.append("")
    for name, t in data.get("targets", {}).items():
        mark = "MET " if t["met"] else "MISS"
        each = ", ".join(f"{v:.2f}" for v in t.get("rounds", []))
        lines.append(f"[{mark}] {name}: {t['value']:.2f} ({t['op']} {t['bound']:g})"
                     + (f"  rounds: {each}" if each else ""))
    return "\n".join(lines)


def format_drain(data: dict[str, Any]) -> str:
    """The pytest-benchmark JSON of ``benchmarks/test_bench_engine.py``: time per run."""
    lines = [f"{'benchmark':<32} {'design':<13} {'per run':>11} {'speed vs baseline':>18}"]
    for group, impl, secs, speed in report.rows(data, baseline="baseline"):
        lines.append(f"{group:<32} {impl:<13} {secs * 1e6:>8.2f} us {speed:>17.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    as_json = "--json" in args
    paths = [a for a in args if a != "--json"]
    path = Path(paths[0]) if paths else DEFAULT
    data = orjson.loads(path.read_bytes())
    if "benchmarks" in data:  # a pytest-benchmark file (test_bench_engine.py)
        print(format_drain(data))
        return 0
    if as_json:
        out = {k: data.get(k) for k in ("meta", "summary", "ratios", "targets")}
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(format_table(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
