"""The ``tickflow replay`` subcommand: a recorded tick file through an embedded live engine.

Live means wall-clock time and uvloop: how much conflates depends on how fast the machine runs,
so two replays of one file can act on different ticks. ``tickflow backtest`` is the
deterministic one (engine/service/backtest.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import orjson

from engine.core.errors import TickflowError
from engine.service.logs import text_console
from engine.service.status import status_document

if TYPE_CHECKING:
    from engine.service.daemon import Engine

__all__ = ["Progress", "add_parser", "cmd_replay", "format_replay_summary", "replay_summary"]

log = logging.getLogger("tickflow.cli")


def add_parser(sub: Any, default_config: Path) -> None:
    replay = sub.add_parser(
        "replay", help="feed a recorded CSV / JSON-lines tick file through an embedded engine"
    )
    replay.add_argument("file", type=Path, help="tick file (.csv, .jsonl)")
    replay.add_argument("--config", type=Path, default=default_config, help="TOML config file")
    replay.add_argument("--speed", type=float, default=0.0,
                        help="1 = recorded pace, 10 = ten times faster, 0 = as fast as possible "
                        "(default)")
    replay.add_argument("--format", default="auto", choices=["auto", "csv", "jsonl"])
    replay.add_argument("--db", type=Path, default=None,
                        help="record to this state database (default: no storage)")
    replay.add_argument("--json", action="store_true", help="print the summary as JSON")
    replay.add_argument("--drain-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="after the file ends, how long runs in flight get to finish")


class Progress:
    """Replay progress on stderr: one rewritten line on a terminal, periodic lines otherwise
    (a log file or CI output must not fill with carriage returns)."""

    def __init__(
        self, total: int, stream: Any = None, *, interval_s: float | None = None,
        as_json: bool = False,
    ) -> None:
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        # With JSON logs every stderr line is a JSON object: progress too (at any log level).
        self.as_json = as_json and not self.tty
        self.interval_s = interval_s if interval_s is not None else (0.2 if self.tty else 5.0)
        self.started = time.monotonic()

    def line(self, done: int, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        total = max(self.total, done)
        fraction = done / total if total else 1.0
        eta = (total - done) / rate if rate > 0 else float("inf")
        eta_text = "--:--" if eta == float("inf") else f"{int(eta) // 60:02d}:{int(eta) % 60:02d}"
        bar = ""
        if self.tty:
            filled = int(fraction * 24)
            bar = "[" + "#" * filled + "-" * (24 - filled) + "] "
        return (
            f"replay {bar}{done}/{total} lines ({fraction:6.1%}) "
            f"{rate:,.0f} lines/s ETA {eta_text}"
        )

    def show(self, done: int, *, final: bool = False) -> None:
        text = self.line(done)
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        elif self.as_json:
            record = {"ts": round(time.time(), 6), "level": "info", "logger": "tickflow.replay",
                      "msg": text, "done": done, "total": max(self.total, done)}
            self.stream.write(orjson.dumps(record).decode() + "\n")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    async def run(self, position: Callable[[], int]) -> None:
        """Refresh until cancelled (the caller shows the final line)."""
        while True:
            await asyncio.sleep(self.interval_s)  # a display period, not a wait for a condition
            self.show(position())


def replay_summary(engine: Engine, source_stats: Any) -> dict[str, Any]:
    stats = engine.statistics()
    c = stats.counters
    doc = status_document(engine)
    return {
        "file": str(getattr(source_stats, "name", "")),
        "events": {
            "emitted": source_stats.emitted,
            "received": c.events_received,
            "rejected": {k: v for k, v in c.events_rejected.items() if v},
            "conflated": c.events_conflated,
            "shed": c.events_shed,
        },
        "runs": {wf: {k: v for k, v in outcomes.items() if v} for wf, outcomes in c.runs.items()},
        "runs_in_flight": c.runs_in_flight,
        "orders": msgspec.to_builtins(doc.orders),
        "pnl": msgspec.to_builtins(doc.pnl),
    }


def format_replay_summary(s: dict[str, Any]) -> str:
    ev = s["events"]
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(ev["rejected"].items())) or "none"
    lines = [
        f"events: {sum(ev['received'].values())} accepted "
        f"({', '.join(f'{k} {v}' for k, v in sorted(ev['received'].items()))}), "
        f"conflated {ev['conflated']}, shed {ev['shed']}",
        f"rejected: {rejected}",
        "runs:",
    ]
    for wf, outcomes in sorted(s["runs"].items()):
        text = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())) or "none"
        lines.append(f"  {wf}: {text}")
    if s["runs_in_flight"]:
        lines.append(f"  still in flight at exit: {s['runs_in_flight']}")
    orders = s["orders"]
    by = ", ".join(f"{k} {v}" for k, v in sorted(orders["by_side_and_outcome"].items())) or "none"
    lines.append(f"orders: {orders['submitted']} submitted, {orders['fills']} filled ({by})")
    return "\n".join(lines)


def cmd_replay(args: argparse.Namespace) -> int:
    from engine.service.cli import fail, load_checked_config, run_loop
    from engine.service.daemon import Engine
    from engine.sources import ReplaySource

    loaded = load_checked_config(args.config, logged=True)
    if loaded is None:
        return 1
    config = loaded[0]
    if not (args.speed >= 0 and math.isfinite(args.speed)):
        return fail(f"--speed must be finite and >= 0, got {args.speed}", 2)
    if args.db is not None:
        config = msgspec.structs.replace(
            config,
            storage=msgspec.structs.replace(config.storage, enabled=True, path=str(args.db)),
        )
    try:
        source = ReplaySource(
            args.file, speed=args.speed, format=args.format,
            max_line_bytes=config.engine.max_line_bytes,
        )
        total = source.count_lines()
    except (TickflowError, OSError) as exc:
        return fail(f"replay: {exc}")
    # An embedded engine: no metrics port, storage only with --db.
    engine = Engine(config, sources=[source], persist=args.db is not None, serve_metrics=False)
    progress = Progress(total, as_json=text_console() is None)
    drained = True

    async def main() -> None:
        nonlocal drained
        async with engine.session():
            ticker = asyncio.create_task(progress.run(lambda: source.position))
            try:
                await engine.wait_sources()
                try:
                    async with asyncio.timeout(args.drain_timeout):
                        await engine.wait_idle()
                except TimeoutError:
                    drained = False
            finally:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
        progress.show(source.position, final=True)

    failures: list[BaseException] = []
    try:
        run_loop(main)
    except* (TickflowError, OSError) as group:  # from the session's task group (a bad header)
        failures.extend(group.exceptions)
    if failures:
        return fail("replay: " + "; ".join(str(failure) for failure in failures))
    summary = replay_summary(engine, source.statistics())
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(summary, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        print(format_replay_summary(summary))
    if not drained:
        log.warning("replay: runs still in flight after %ss were cancelled", args.drain_timeout,
                    extra={"drain_timeout_s": args.drain_timeout})
    return 0
