"""The backtest report: ``index.html``, its PNG charts and ``summary.json`` in one folder.

Charts are drawn with matplotlib's Agg backend (no display needed; ``tickflow[report]``):
equity and drawdown, position per symbol, fills on the price path of the busiest symbols, and
per-workflow run latency in virtual and in wall-clock time. The page is static HTML with the
headline figures and a table of the trades; it opens from the folder in any browser.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from pathlib import Path
from typing import Any, Final

import orjson

from engine.core.errors import TickflowError
from engine.service.backtest_record import Recorder

__all__ = ["ReportError", "write_report"]

_BUSIEST: Final = 4  # symbols whose fills are drawn on their price path
_POSITION_SYMBOLS: Final = 8
_TABLE_ROWS: Final = 1000


class ReportError(TickflowError, RuntimeError):
    """The report cannot be drawn (matplotlib missing)."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise ReportError(
            "--report needs matplotlib: pip install 'tickflow[report]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(folder: Path, recorder: Recorder, summary: dict[str, Any]) -> list[Path]:
    """Write the report into ``folder`` (made if missing); returns the files written."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    charts = [
        ("equity.png", "Equity and drawdown", _equity(plt, recorder)),
        ("positions.png", "Position per symbol", _positions(plt, recorder)),
        ("fills.png", "Fills on the price path (busiest symbols)", _fills(plt, recorder)),
        ("latency.png", "Run latency per workflow", _latency(plt, recorder)),
    ]
    written = []
    for name, _, fig in charts:
        path = folder / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    summary_path = folder / "summary.json"
    summary_path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    index = folder / "index.html"
    index.write_text(_page(summary, recorder, [(n, t) for n, t, _ in charts]), encoding="utf-8")
    return [*written, summary_path, index]


def _equity(plt: Any, rec: Recorder) -> Any:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    curve = rec.equity or [rec.broker.initial_cash]
    xs = [i * rec.sample_s for i in range(len(curve))]
    peak = -math.inf
    drawdown = []
    for value in curve:
        peak = max(peak, value)
        drawdown.append(value - peak)
    top.plot(xs, curve, color="tab:blue", linewidth=1.2)
    top.axhline(rec.broker.initial_cash, color="grey", linewidth=0.8, linestyle="--")
    top.set_ylabel("equity")
    top.ticklabel_format(axis="y", useOffset=False, style="plain")  # cash, not "+1e6" offsets
    top.set_title("Equity (marked to the last price)")
    bottom.fill_between(xs, drawdown, 0.0, color="tab:red", alpha=0.5, step="post")
    bottom.set_ylabel("drawdown")
    bottom.set_xlabel("virtual seconds since the first tick")
    fig.tight_layout()
    return fig


def _positions(plt: Any, rec: Recorder) -> Any:
    fig, ax = plt.subplots(figsize=(10, 4))
    by_symbol: dict[str, list[tuple[float, float]]] = {}
    for f in rec.fills:
        by_symbol.setdefault(f.symbol, [(0.0, 0.0)]).append((f.t, f.position))
    busiest = [s for s, _ in Counter(f.symbol for f in rec.fills).most_common(_POSITION_SYMBOLS)]
    end = max(rec.sample_s * max(len(rec.equity) - 1, 1), max((f.t for f in rec.fills),
                                                                 default=0.0))
    for symbol in sorted(busiest):
        points = [*by_symbol[symbol], (end, by_symbol[symbol][-1][1])]
        ax.step([p[0] for p in points], [p[1] for p in points], where="post", label=symbol)
    if busiest:
        ax.legend(loc="upper left", fontsize="small", ncol=4)
    else:
        ax.text(0.5, 0.5, "no fills", ha="center", va="center", transform=ax.transAxes)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("virtual seconds since the first tick")
    ax.set_ylabel("position (units)")
    ax.set_title(f"Position per symbol (the {len(busiest)} most traded)")
    fig.tight_layout()
    return fig


def _fills(plt: Any, rec: Recorder) -> Any:
    counts = Counter(f.symbol for f in rec.fills)
    symbols = [s for s, _ in counts.most_common(_BUSIEST)]
    if not symbols:  # no fills: the busiest symbols by ticks
        symbols = [s for s, _ in Counter(rec.ticks).most_common(_BUSIEST)]
    rows = max(1, len(symbols))
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.6 * rows), squeeze=False)
    for ax, symbol in zip((a[0] for a in axes), symbols, strict=False):
        path = rec.paths.get(symbol)
        if path is not None:
            ax.plot(path.t, path.v, color="tab:grey", linewidth=0.8, label="price")
        buys = [f for f in rec.fills if f.symbol == symbol and f.side == "BUY"]
        sells = [f for f in rec.fills if f.symbol == symbol and f.side == "SELL"]
        ax.scatter([f.t for f in buys], [f.price for f in buys], marker="^", color="tab:green",
                   s=18, label=f"buy ({len(buys)})", zorder=3)
        ax.scatter([f.t for f in sells], [f.price for f in sells], marker="v", color="tab:red",
                   s=18, label=f"sell ({len(sells)})", zorder=3)
        ax.set_title(symbol, loc="left", fontsize="medium")
        ax.legend(loc="upper right", fontsize="small")
    axes[-1][0].set_xlabel("virtual seconds since the first tick")
    fig.tight_layout()
    return fig


def _latency(plt: Any, rec: Recorder) -> Any:
    workflows = sorted(set(rec.run_virtual) | set(rec.run_wall))
    rows = max(1, len(workflows))
    fig, axes = plt.subplots(rows, 2, figsize=(10, 2.8 * rows), squeeze=False)
    for row, wf in zip(axes, workflows, strict=False):
        for ax, series, label in (
            (row[0], rec.run_virtual.get(wf, []), "virtual"),
            (row[1], rec.run_wall.get(wf, []), "wall (step compute)"),
        ):
            micros = [v * 1e6 for v in series if v > 0]
            if micros:
                low, high = min(micros), max(micros)
                color = "tab:purple" if label == "virtual" else "tab:orange"
                if high > 10 * low:  # a wide spread reads best on a log axis
                    edges = [low * (high / low) ** (i / 40) for i in range(41)]
                    ax.hist(micros, bins=edges, color=color)
                    ax.set_xscale("log")
                else:
                    pad = max(high - low, high * 0.05, 1e-3) / 2
                    ax.hist(micros, bins=40, range=(low - pad, high + pad), color=color)
            ax.set_title(f"{wf}: {label}, {len(series)} runs", loc="left", fontsize="medium")
            ax.set_xlabel("µs")
    if not workflows:
        axes[0][0].text(0.5, 0.5, "no completed runs", ha="center", va="center")
    fig.tight_layout()
    return fig


def _fmt(value: Any, spec: str = ",.2f") -> str:
    if value is None:
        return "-"
    return format(value, spec)


def _page(summary: dict[str, Any], rec: Recorder, charts: list[tuple[str, str]]) -> str:
    f = summary["figures"]
    e = html.escape
    headline = [
        ("P&L", _fmt(f["pnl"])), ("realized", _fmt(f["realized_pnl"])),
        ("unrealized", _fmt(f["unrealized_pnl"])), ("fees", _fmt(f["fees"])),
        ("Sharpe (annualised)", _fmt(f["sharpe"])),
        ("max drawdown", f"{_fmt(f['max_drawdown'])} ({_fmt(f['max_drawdown_pct'], '.2%')})"),
        ("hit rate", _fmt(f["hit_rate"], ".1%")), ("turnover", _fmt(f["turnover"], ".3f") + "x"),
        ("fills", str(f["fills"])), ("runs", str(f["runs"])),
        ("virtual time", f"{summary['virtual_seconds']:,.3f} s"),
        ("wall time", f"{summary['wall_seconds']:,.3f} s"),
        ("digest", f"<code>{e(summary['digest'])}</code>"),
    ]
    rows = "\n".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in headline)
    images = "\n".join(
        f'<h2>{e(title)}</h2>\n<img src="{e(name)}" alt="{e(title)}">' for name, title in charts
    )
    trades = "\n".join(
        f"<tr><td>{t.t:.6f}</td><td>{e(t.symbol)}</td><td>{e(t.side)}</td><td>{t.qty:g}</td>"
        f"<td>{t.price:.4f}</td><td>{t.fee:.4f}</td><td>{t.realized_pnl:.2f}</td>"
        f"<td>{t.position:g}</td><td>{e(t.client_order_id)}</td></tr>"
        for t in rec.fills[:_TABLE_ROWS]
    )
    costs = "\n".join(
        f"<tr><th>{e(step)}</th><td>{us:,.1f} µs</td></tr>"
        for step, us in summary.get("step_cost_us", {}).items()
    )
    more = len(rec.fills) - _TABLE_ROWS
    note = f"<p>{more} more fills are not shown.</p>" if more > 0 else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>tickflow backtest: {e(summary['data'])}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f4f4f4; text-align: left; }}
img {{ max-width: 100%; border: 1px solid #ddd; }}
</style></head><body>
<h1>Backtest of {e(summary['data'])}</h1>
<table>{rows}</table>
{images}
<h2>Step cost</h2>
<p>Mean real time per call of each step's action on this machine (not part of the digest):
what <code>--latency WORKFLOW.STEP=...</code> would model it as.</p>
<table>{costs}</table>
<h2>Trades</h2>
<table><tr><th>t (virtual s)</th><th>symbol</th><th>side</th><th>qty</th><th>price</th>
<th>fee</th><th>realized</th><th>position after</th><th>client order id</th></tr>
{trades}
</table>{note}
<p>Raw figures: <a href="summary.json">summary.json</a></p>
</body></html>
"""
