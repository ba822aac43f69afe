"""``index.html`` of ``tickflow bench``: the ratio tables and every chart, one static page.

Self-contained apart from the PNGs beside it (no scripts, no external styles), so the
directory can be copied or served as is. Every value comes from ``report.json``.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from . import engine_report
from .charts import Chart

__all__ = ["render", "write"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child, td.label { text-align: left; }
td.met { color: #176117; font-weight: bold; } .miss { color: #a11; font-weight: bold; }
figure { margin: 1em 0 2em; } figcaption { font-size: 0.85em; color: #555; }
img { max-width: 100%; border: 1px solid #eee; }
.meta { font-size: 0.85em; color: #555; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if not isinstance(value, int | float) or isinstance(value, bool):
        return _e(value)
    if math.isnan(value):
        return "-"
    if unit == "us":
        return f"{value:,.1f} µs" if value < 1000 else f"{value / 1000:,.2f} ms"
    if unit == "ratio":
        return f"{value:.2f}&times;"
    if unit == "pct":
        return f"{value:.1%}"
    if unit == "frac":
        return f"{value:.2f}"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "MiB":
        return f"{value:,.0f} MiB"
    return f"{value:,.0f}" if abs(value) >= 100 or float(value).is_integer() else f"{value:.2f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cells) + "</tr>\n" for cells in rows)
    return f"<table><tr>{head}</tr>\n{body}</table>"


def _td(text: str, cls: str = "") -> str:
    return f'<td class="{cls}">{text}</td>' if cls else f"<td>{text}</td>"


def engine_section(engine: Mapping[str, Any]) -> str:
    summary = engine.get("summary", {})
    if not summary:
        return ""
    designs = [d for d in engine_report.DESIGNS if any(d in by for by in summary.values())]
    rows = []
    for scenario, label, path, unit, kind in engine_report.ROWS:
        if scenario not in summary:
            continue
        get = engine_report._get  # the table's own reader: same figures as the text table
        cells = [_td(_e(scenario), "label"), _td(_e(label), "label")]
        cells += [_td(_num(get(summary, scenario, d, path), unit)) for d in designs]
        tf, base = get(summary, scenario, "tickflow", path), get(summary, scenario, "baseline",
                                                                  path)
        ratio = (engine_report._ratio(tf, base) if kind == "rate" else
                 engine_report._ratio(base, tf) if kind == "latency" else math.nan)
        cells.append(_td(_num(ratio, "ratio")))
        rows.append(cells)
    out = ["<h2>Engine: tickflow vs the baseline pool</h2>",
           _meta_line(engine.get("meta", {})),
           _table(["scenario", "figure", *designs, "ratio"], rows),
           "<p class=meta>ratio: rates tickflow/baseline, latencies baseline/tickflow "
           "(&times; lower). Rates: median of the rounds; latency quantiles: all rounds "
           "pooled.</p>"]
    targets = engine.get("targets", {})
    if targets:
        trows = []
        for name, t in targets.items():
            mark = ("met", "MET") if t["met"] else ("miss", "MISS")
            rounds = ", ".join(f"{v:.2f}" for v in t.get("rounds", []))
            trows.append([_td(mark[1], mark[0]), _td(_e(name), "label"),
                          _td(_num(t["value"])), _td(f"{_e(t['op'])} {t['bound']:g}"),
                          _td(_e(rounds), "label")])
        out += ["<h3>Targets</h3>",
                _table(["", "target", "value", "bound", "each round"], trows)]
    return "\n".join(out)


def _meta_line(meta: Mapping[str, Any]) -> str:
    if not meta:
        return ""
    parts = []
    if "settings" in meta:
        st = meta["settings"]
        parts.append(f"{st.get('rounds')} rounds of {st.get('duration_s')} s per run")
    for key, label in (("baseline_saturation_runs_per_s", "baseline saturation"),
                       ("tickflow_saturation_runs_per_s", "tickflow saturation")):
        if key in meta:
            parts.append(f"{label} {meta[key]:,.0f} runs/s")
    if "wall_s" in meta:
        parts.append(f"wall {meta['wall_s']:.0f} s")
    return f"<p class=meta>{_e('; '.join(parts))}</p>"


def flood_section(flood: Mapping[str, Any]) -> str:
    summary = flood.get("summary", {})
    if not summary:
        return ""
    designs = [d for d in ("tickflow", "baseline") if d in summary]
    rows_spec: list[tuple[str, tuple[str, ...], str]] = [
        ("saturation on this workload", ("saturation_per_s",), "/s"),
        ("ticks offered", ("offered_per_s",), "/s"),
        ("ticks taken in (one 512-tick read per loop turn)", ("taken_per_s",), "/s"),
        ("share of ticks dropped at the feed (socket buffer full)", ("dropped_share",), "pct"),
        ("decisions", ("decisions_per_s",), "/s"),
        ("staleness p50", ("staleness", "p50_us"), "us"),
        ("staleness p99", ("staleness", "p99_us"), "us"),
        ("decisions measured", ("staleness", "samples"), ""),
        ("peak RSS", ("peak_rss_mib",), "MiB"),
        ("RSS when the flood started", ("rss_start_mib",), "MiB"),
        ("ticks conflated", ("conflated",), ""),
        ("work queued at the end (runs / jobs)", ("queued_at_end",), ""),
        ("CPU share (noise gauge)", ("cpu_share",), "frac"),
    ]
    rows = []
    for label, path, unit in rows_spec:
        cells = [_td(_e(label), "label")]
        for d in designs:
            node: Any = summary[d]
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            cells.append(_td(_num(node, unit)))
        rows.append(cells)
    settings = flood.get("meta", {}).get("settings", {})
    return "\n".join([
        "<h2>Market-data flood: 2,000 symbols, ticks offered beyond saturation</h2>",
        f"<p class=meta>{_e(settings.get('rounds'))} round(s) of "
        f"{_e(settings.get('duration_s'))} s per design, each in its own process; offered at "
        f"{_e(settings.get('factor'))}&times; the higher saturation measured in the same "
        "round.</p>",
        _table(["figure", *designs], rows),
    ])


def heap_section(heap: Mapping[str, Any]) -> str:
    sizes = heap.get("sizes", [])
    if not sizes:
        return ""
    rows = [[_td(f"{s['size']:.0e}", "label"), _td(f"{s['heap_us']:.3f} µs"),
             _td(f"{s['heapq_us']:.3f} µs"), _td(_num(s["median_ratio"], "ratio")),
             _td(_e(", ".join(f"{r:.2f}" for r in s["ratios"])), "label")] for s in sizes]
    return "\n".join([
        "<h2>Heap: push+pop against inline heapq</h2>",
        f"<p class=meta>{_e(heap.get('impl'))} heap, {_e(heap.get('rounds'))} paired rounds of "
        f"{_e(heap.get('batch'))} operations per size, CPU time, gc off while timing</p>",
        _table(["entries", "heap per op", "heapq per op", "median ratio", "rounds"], rows),
    ])


def storage_section(st: Mapping[str, Any]) -> str:
    if not st:
        return ""
    pairs = st.get("paired_ratios", {})
    rows = []
    for kind, key in (("drain", "engine_runs_per_s"), ("steady", "steady_runs_per_s")):
        rates, p = st.get(key, {}), pairs.get(kind, {})
        rows.append([_td(kind, "label"), _td(_num(rates.get("storage_off"), "/s")),
                     _td(_num(rates.get("storage_on"), "/s")),
                     _td(_num(p.get("median"), "ratio")),
                     _td(f"{p.get('min', math.nan):.2f}&ndash;{p.get('max', math.nan):.2f}")])
    w = st.get("writer", {})
    return "\n".join([
        "<h2>Storage on vs off</h2>",
        _table(["workload", "storage off", "storage on", "on/off (median of rounds)",
                "rounds"], rows),
        f"<p class=meta>group-commit writer alone: {_num(w.get('records_per_s'), '/s')} "
        f"records committed, {_num(w.get('records_per_commit'))} per commit</p>",
    ])


def intake_section(data: Mapping[str, Any]) -> str:
    results = data.get("results", [])
    if not results:
        return ""
    rows = [[_td(f"{r['conns']} &times; {r['window']}", "label"),
             _td("on" if r["storage"] else "off", "label"), _td(_num(r["acked"])),
             _td(_num(r["events_per_s"], "/s")), _td(_num(r["p50_us"], "us")),
             _td(_num(r["p99_us"], "us")), _td(_num(r["errors"]))] for r in results]
    return "\n".join([
        "<h2>Network intake (loopback TCP, load generator in its own process)</h2>",
        _table(["connections x in flight", "storage", "acked", "events acked",
                "ack p50", "ack p99", "errors"], rows),
    ])


def render(report: Mapping[str, Any], charts: Sequence[Chart]) -> str:
    meta = report.get("meta", {})
    figures = "\n".join(
        f'<figure><img src="{_e(c.file)}" alt="{_e(c.title)}">'
        f"<figcaption><b>{_e(c.title)}</b>: {_e(c.caption)}</figcaption></figure>"
        for c in charts
    )
    info = (f"{meta.get('size')} run, {meta.get('started_utc')} UTC, git "
            f"{meta.get('git', {}).get('head', '?')}, Python {meta.get('python')}, "
            f"{meta.get('cpus')} CPUs, engine {meta.get('engine_implementation')}, load "
            f"average {meta.get('loadavg_start')} at start / {meta.get('loadavg_end')} at end, "
            f"wall {meta.get('wall_s', 0):.0f} s")
    failures = "".join(
        f"<p class=miss><b>The {_e(name)} benchmark failed</b>: {_e(part['error'])}</p>\n"
        for name, part in report.items()
        if name != "meta" and isinstance(part, dict) and "error" in part
    )
    sections = [
        failures,
        engine_section(report.get("engine") or {}),
        flood_section(report.get("market_flood") or {}),
        heap_section(report.get("heap") or {}),
        storage_section(report.get("storage") or {}),
        intake_section(report.get("intake") or {}),
    ]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>tickflow bench</title>
<style>{STYLE}</style></head>
<body>
<h1>tickflow bench</h1>
<p class=meta>{_e(info)}. Every ratio compares figures taken in this one run; absolute numbers
move with the machine's load.</p>
{"".join(s + chr(10) for s in sections if s)}
<h2>Charts</h2>
{figures}
</body></html>
"""


def write(out: Path, report: Mapping[str, Any], charts: Sequence[Chart]) -> Path:
    path = out / "index.html"
    path.write_text(render(report, charts), encoding="utf-8")
    return path
