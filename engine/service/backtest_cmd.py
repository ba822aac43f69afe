"""The ``tickflow backtest`` subcommand: arguments, the printed digest and summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import msgspec
import orjson

from engine.core.errors import ConfigError, TickflowError

__all__ = ["add_parser", "cmd_backtest", "format_result"]


def add_parser(sub: Any, default_config: Path) -> None:
    p = sub.add_parser(
        "backtest",
        help="run a tick file (CSV, JSON lines, Databento DBN) through the engine on virtual "
        "time: deterministic fills, positions and P&L, with a result digest",
    )
    p.add_argument("data", type=Path, help="tick file (.csv, .jsonl, .dbn, .dbn.zst)")
    p.add_argument("--config", type=Path, default=default_config, help="TOML config file")
    p.add_argument("--report", type=Path, default=None, metavar="DIR",
                   help="write index.html, PNG charts and summary.json here")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--format", default="auto", choices=["auto", "csv", "jsonl", "dbn"])
    p.add_argument("--latency", action="append", default=[], metavar="KIND=DURATION",
                   help="virtual duration of a step: inline=20us, async=200us, thread=1ms "
                   "(the defaults) or WORKFLOW.STEP=DURATION for one step; repeatable")
    p.add_argument("--drain-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="after the data ends, virtual seconds runs in flight get to finish")
    p.add_argument("--progress", choices=["auto", "always", "never"], default="auto",
                   help="progress bar on stderr (auto: when stderr is a terminal)")


def cmd_backtest(args: argparse.Namespace) -> int:
    from engine.config import compile_workflows, load_config_with_digest
    from engine.service.backtest import Backtest, open_data, parse_latency

    try:
        config, _ = load_config_with_digest(args.config)
    except ConfigError as exc:
        print(f"invalid config: {exc}", file=sys.stderr)
        return 1
    if not (args.drain_timeout >= 0 and args.drain_timeout != float("inf")):
        print("--drain-timeout must be finite and >= 0", file=sys.stderr)
        return 2
    progress = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    try:
        latency = parse_latency(args.latency, compile_workflows(config))
        data = open_data(args.data, args.format, config.engine.max_line_bytes)
        backtest = Backtest(
            config, data, latency=latency, detail=args.report is not None, progress=progress,
            drain_timeout_s=args.drain_timeout,
        )
        result = backtest.run()
    except (TickflowError, OSError) as exc:
        print(f"tickflow backtest: {exc}", file=sys.stderr)
        return 1
    summary = summary_doc(result)
    if args.report is not None:
        # Measured on this machine, so not part of the digest: a guide for --latency.
        summary["step_cost_us"] = backtest.recorder.step_costs_us()
        from engine.service.report import write_report

        try:
            write_report(args.report, backtest.recorder, summary)
        except OSError as exc:
            print(f"tickflow backtest: cannot write the report: {exc}", file=sys.stderr)
            return 1
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(format_result(summary))
    if not result.drained:
        print(f"tickflow backtest: runs still in flight after {args.drain_timeout} virtual "
              "seconds were cancelled", file=sys.stderr)
    return 0


def summary_doc(result: Any) -> dict[str, Any]:
    """The result as JSON-ready builtins, without the per-fill list (the report has it)."""
    doc: dict[str, Any] = msgspec.to_builtins(result)
    doc.pop("fills")
    doc["figures"]["runs"] = sum(sum(o.values()) for o in result.runs.values())
    return doc


def format_result(s: dict[str, Any]) -> str:
    f = s["figures"]
    ev = s["events"]
    received = sum(ev["received"].values())
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(ev["rejected"].items())) or "none"
    lines = [
        f"data: {s['data']}: {received} events accepted, rejected: {rejected}, "
        f"conflated {ev['conflated']}, shed {ev['shed']}",
        f"time: {s['virtual_seconds']:.3f} virtual s in {s['wall_seconds']:.3f} wall s "
        f"({s['ticks_per_second']:,.0f} events/s)",
        "runs:",
    ]
    for wf, outcomes in s["runs"].items():
        text = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "none"
        lines.append(f"  {wf}: {text}")
    hit = "-" if f["hit_rate"] is None else f"{f['hit_rate']:.1%}"
    sharpe = "-" if f["sharpe"] is None else f"{f['sharpe']:.2f}"
    lines += [
        f"fills: {f['fills']}, fees {f['fees']:.2f}, turnover {f['turnover']:.3f}x, "
        f"hit rate {hit}",
        f"P&L: {f['pnl']:.2f} (realized {f['realized_pnl']:.2f}, unrealized "
        f"{f['unrealized_pnl']:.2f}), max drawdown {f['max_drawdown']:.2f} "
        f"({f['max_drawdown_pct']:.2%}), Sharpe {sharpe}",
        "positions: " + (", ".join(
            f"{sym} {p['qty']:g}" for sym, p in s["positions"].items() if p["qty"]
        ) or "flat"),
        f"digest: {s['digest']}",
    ]
    return "\n".join(lines)
