"""The PNG charts of ``tickflow bench``'s report, drawn with matplotlib's Agg backend.

Every function takes the part of ``report.json`` it draws and the output directory, writes one
PNG and returns a :class:`Chart` (file name, title, caption), or ``None`` when that part holds
nothing to draw. Latency CDFs come from the histograms' buckets (bucket ``k``'s upper edge is
``bucket_edge_seconds(k + 1)``), so a CDF is exact to the histogram's ~4.4% resolution.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastpath.latency import bucket_edge_seconds

__all__ = ["LATENCY_PANELS", "Chart", "cdf_points", "draw_all", "require_matplotlib"]

COLOURS = {"tickflow": "#1f77b4", "baseline": "#d62728", "baseline-job": "#ff7f0e"}
DPI = 100

# scenario -> (histogram key, what it measures)
LATENCY_PANELS: dict[str, tuple[str, str]] = {
    "throughput": ("dispatch", "dispatch wait (step ready -> start), no-op runs at saturation"),
    "throughput_yield": ("dispatch", "dispatch wait, steps that suspend once, at saturation"),
    "paced": ("dispatch", "dispatch wait paced at half the baseline's saturation"),
    "paced_common": ("dispatch", "dispatch wait paced at a rate both sustain"),
    "flood": ("hot_dispatch", "priority-0 dispatch wait under a 10x priority-2 flood"),
    "preempt": ("urgent", "urgent arrival -> first step, every agent busy with 50 ms steps"),
}


class ChartError(Exception):
    """The report cannot be drawn (matplotlib missing)."""


@dataclass(frozen=True)
class Chart:
    file: str
    title: str
    caption: str


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the Agg backend, or a :class:`ChartError` saying what to install."""
    try:
        import matplotlib
    except ImportError as exc:
        raise ChartError("the report's charts need matplotlib: "
                         "pip install 'tickflow[report]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def cdf_points(record: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """(latency in µs at each non-empty bucket's upper edge, fraction of samples at or below)."""
    buckets = sorted((int(k), int(v)) for k, v in record.get("buckets", {}).items())
    total = sum(v for _, v in buckets)
    xs: list[float] = []
    ys: list[float] = []
    seen = 0
    for k, count in buckets:
        seen += count
        xs.append(bucket_edge_seconds(k + 1) * 1e6)
        ys.append(seen / total)
    return xs, ys


def _save(plt: Any, fig: Any, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=DPI)
    plt.close(fig)
    return name


def latency_cdf(plt: Any, engine: Mapping[str, Any], scenario: str, out: Path) -> Chart | None:
    key, what = LATENCY_PANELS[scenario]
    by_design = engine.get("summary", {}).get(scenario, {})
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for design, result in by_design.items():
        record = result.get(key)
        if not isinstance(record, dict) or not record.get("buckets"):
            continue
        xs, ys = cdf_points(record)
        label = (f"{design}: p50 {_us(record['p50_us'])}, p99 {_us(record['p99_us'])} "
                 f"({record['samples']:,} samples)")
        ax.step(xs, ys, where="post", label=label, color=COLOURS.get(design), linewidth=1.6)
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("latency (µs, log scale)")
    ax.set_ylabel("fraction of samples ≤ x")
    ax.set_ylim(0, 1.01)
    ax.axhline(0.99, color="grey", linestyle=":", linewidth=0.8)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(f"{scenario}: {what}", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    name = _save(plt, fig, out, f"latency_{scenario}.png")
    return Chart(name, f"Latency CDF: {scenario}",
                 f"{what}; all rounds pooled. Dotted line: p99.")


def throughput_rounds(plt: Any, engine: Mapping[str, Any], out: Path) -> Chart | None:
    rounds = engine.get("rounds", {})
    panels = [sc for sc in ("throughput", "throughput_yield") if sc in rounds]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, scenario in zip(axes[0], panels, strict=True):
        by_design = rounds[scenario]
        designs = list(by_design)
        n = max(len(v) for v in by_design.values())
        width = 0.8 / len(designs)
        for j, design in enumerate(designs):
            rates = [r["runs_per_s"] for r in by_design[design]]
            xs = [i + (j - (len(designs) - 1) / 2) * width for i in range(len(rates))]
            ax.bar(xs, rates, width, label=design, color=COLOURS.get(design))
        ax.set_xticks(range(n), [f"round {i + 1}" for i in range(n)])
        ax.set_ylabel("runs/s")
        ratio = engine.get("ratios", {}).get(
            "throughput_runs" if scenario == "throughput" else "throughput_yield_runs", math.nan)
        ax.set_title(f"{scenario}: tickflow/baseline {ratio:.2f}x (median of rounds)",
                     fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    name = _save(plt, fig, out, "throughput_rounds.png")
    return Chart(name, "Throughput per round",
                 "runs/s of each design in every round (designs alternate who goes first): the "
                 "spread between rounds is the machine's noise.")


def heap_ratios(plt: Any, heap: Mapping[str, Any], out: Path) -> Chart | None:
    sizes: Sequence[Mapping[str, Any]] = heap.get("sizes", [])
    if not sizes:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"1e{round(math.log10(s['size']))}" if math.log10(s["size"]).is_integer()
              else f"{s['size']:,}" for s in sizes]
    ax.bar(range(len(sizes)), [s["median_ratio"] for s in sizes], 0.6,
           color=COLOURS["tickflow"], alpha=0.7, label="median of paired rounds")
    for i, s in enumerate(sizes):
        ax.scatter([i] * len(s["ratios"]), s["ratios"], color="black", s=14, zorder=3,
                   label="one round" if i == 0 else None)
        ax.annotate(f"{s['median_ratio']:.2f}x", (i, max(s["ratios"])), ha="center",
                    va="bottom", fontsize=8, xytext=(0, 3), textcoords="offset points")
    ax.axhline(5.0, color="grey", linestyle="--", linewidth=0.8, label="target 5x (at 1e5)")
    ax.axhline(1.0, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xticks(range(len(sizes)), labels)
    ax.set_xlabel("entries in the heap")
    ax.set_ylabel("heapq time / tickflow heap time")
    ax.set_title(f"push+pop against inline heapq ({heap.get('impl', '?')} heap)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    name = _save(plt, fig, out, "heap_ratios.png")
    return Chart(name, "Heap push+pop vs heapq, by size",
                 "Bars: median ratio of the paired rounds; dots: each round.")


def storage(plt: Any, data: Mapping[str, Any], out: Path) -> Chart | None:
    per_round = data.get("rounds_runs_per_s", {})
    if not per_round:
        return None
    fig, axes = plt.subplots(1, len(per_round), figsize=(6 * len(per_round), 4), squeeze=False)
    for ax, (kind, series) in zip(axes[0], per_round.items(), strict=True):
        n = len(series["off"])
        for j, side in enumerate(("off", "on")):
            xs = [i + (j - 0.5) * 0.4 for i in range(n)]
            ax.bar(xs, series[side], 0.4, label=f"storage {side}",
                   color=COLOURS["baseline"] if side == "off" else COLOURS["tickflow"])
        paired = data.get("paired_ratios", {}).get(kind, {})
        ax.set_title(f"{kind}: on/off {paired.get('median', math.nan):.2f}x median of rounds "
                     f"({paired.get('min', math.nan):.2f}-{paired.get('max', math.nan):.2f})",
                     fontsize=9)
        ax.set_xticks(range(n), [f"round {i + 1}" for i in range(n)])
        ax.set_ylabel("runs/s")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    name = _save(plt, fig, out, "storage.png")
    return Chart(name, "Storage on vs off",
                 "The engine's runs/s with storage off and on, each round back to back; drain: "
                 "a batch until committed; steady: saturation with the writer's catch-up.")


def market_flood(plt: Any, data: Mapping[str, Any], out: Path) -> list[Chart]:
    summary = data.get("summary", {})
    designs = [d for d in ("tickflow", "baseline") if d in summary]
    if not designs:
        return []
    charts = []
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    colours = [COLOURS[d] for d in designs]
    xs = range(len(designs))
    p50 = [summary[d]["staleness"]["p50_us"] / 1e3 for d in designs]
    p99 = [summary[d]["staleness"]["p99_us"] / 1e3 for d in designs]
    ax = axes[0]
    ax.bar([x - 0.2 for x in xs], p50, 0.4, label="p50", color=colours, alpha=0.6)
    ax.bar([x + 0.2 for x in xs], p99, 0.4, label="p99", color=colours)
    for x, a, b in zip(xs, p50, p99, strict=True):
        ax.annotate(f"{a:,.1f}", (x - 0.2, a), ha="center", va="bottom", fontsize=8)
        ax.annotate(f"{b:,.1f}", (x + 0.2, b), ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    positive = [v for v in p50 + p99 if v > 0]
    if positive:  # a log axis starts at its lowest bar unless told: show every bar's foot
        ax.set_ylim(bottom=min(positive) / 3)
    ax.set_ylabel("tick age at decision (ms, log)")
    ax.set_title("staleness p50 (light) / p99", fontsize=9)
    for ax, key, label in ((axes[1], "decisions_per_s", "decisions/s"),
                           (axes[2], "peak_rss_mib", "peak RSS (MiB)")):
        values = [summary[d][key] for d in designs]
        ax.bar(xs, values, 0.6, color=colours)
        for x, v in zip(xs, values, strict=True):
            ax.annotate(f"{v:,.0f}", (x, v), ha="center", va="bottom", fontsize=8)
        ax.set_ylabel(label)
        ax.set_title(label, fontsize=9)
    for ax in axes:
        ax.set_xticks(list(xs), designs)
        ax.grid(True, axis="y", alpha=0.3)
    rate = summary[designs[0]]["offered_per_s"]
    fig.suptitle(f"market flood: 2,000 symbols at {rate:,.0f} ticks/s offered", fontsize=10)
    charts.append(Chart(_save(plt, fig, out, "market_flood.png"), "Market-data flood",
                        "Staleness of the tick each decision acted on, decisions per second and "
                        "peak RSS of each design's own process."))
    fig, ax = plt.subplots(figsize=(7, 4))
    for design in designs:
        xs_, ys = cdf_points(summary[design]["staleness"])
        if xs_:
            ax.step(xs_, ys, where="post", label=design, color=COLOURS[design], linewidth=1.6)
    ax.set_xscale("log")
    ax.set_xlabel("tick age at decision (µs, log scale)")
    ax.set_ylabel("fraction of decisions ≤ x")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("market flood: staleness CDF", fontsize=9)
    charts.append(Chart(_save(plt, fig, out, "market_flood_staleness.png"),
                        "Market-data flood: staleness CDF",
                        "Every decision of the measured window, all rounds pooled."))
    return charts


def intake(plt: Any, data: Mapping[str, Any], out: Path) -> Chart | None:
    results: Sequence[Mapping[str, Any]] = data.get("results", [])
    if not results:
        return None
    labels = [f"{r['conns']}x{r['window']}\nstorage {'on' if r['storage'] else 'off'}"
              for r in results]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    xs = range(len(results))
    for ax, key, label, scale in ((axes[0], "events_per_s", "events acked/s", 1.0),
                                  (axes[1], "p99_us", "ack latency p99 (ms)", 1e-3)):
        values = [r[key] * scale for r in results]
        ax.bar(xs, values, 0.6, color=[COLOURS["tickflow"] if not r["storage"]
                                       else COLOURS["baseline-job"] for r in results])
        for x, v in zip(xs, values, strict=True):
            ax.annotate(f"{v:,.1f}" if scale != 1.0 else f"{v:,.0f}", (x, v), ha="center",
                        va="bottom", fontsize=8)
        ax.set_xticks(list(xs), labels, fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    name = _save(plt, fig, out, "intake.png")
    return Chart(name, "Network intake (loopback TCP)",
                 "Connections x lines in flight per connection; with storage on an ack waits "
                 "for the journal's group commit.")


def draw_all(report: Mapping[str, Any], out: Path) -> list[Chart]:
    """Every chart the report's parts allow, in the order the page shows them."""
    plt = require_matplotlib()
    charts: list[Chart | None] = []
    engine = report.get("engine") or {}
    for scenario in LATENCY_PANELS:
        charts.append(latency_cdf(plt, engine, scenario, out))
    charts.append(throughput_rounds(plt, engine, out))
    charts.extend(market_flood(plt, report.get("market_flood") or {}, out))
    charts.append(heap_ratios(plt, report.get("heap") or {}, out))
    charts.append(storage(plt, report.get("storage") or {}, out))
    charts.append(intake(plt, report.get("intake") or {}, out))
    return [c for c in charts if c is not None]


def _us(value: float) -> str:
    return f"{value:,.1f} µs" if value < 1000 else f"{value / 1000:,.2f} ms"
