"""The ``tickflow`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import orjson

from . import __version__
from .errors import ConfigError, TickflowError

__all__ = ["DEFAULT_CONFIG", "build_parser", "main"]

# Shipped inside the package so `tickflow run` works from any working directory.
DEFAULT_CONFIG = Path(__file__).with_name("default.toml")

log = logging.getLogger("tickflow.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tickflow",
        description="High-throughput trading-pipeline daemon: market-data events trigger "
        "workflows that a priority heap and a preemptive dispatcher feed to a bounded agent pool.",
    )
    parser.add_argument("--version", action="version", version=f"tickflow {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument("--log-format", default="json", choices=["json", "text"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon (default config + simulated market)")
    run.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="TOML config file")
    run.add_argument(
        "--duration", type=float, default=None, metavar="SECONDS",
        help="stop after this many seconds (default: run until SIGINT/SIGTERM)",
    )
    run.add_argument("--summary", type=Path, default=None, metavar="PATH",
                     help="write a JSON summary here at exit")
    run.add_argument("--metrics-port", type=int, default=None, metavar="PORT",
                     help="override [metrics] port (0 = any free port, logged at start)")

    validate = sub.add_parser("validate", help="check a config file and summarise it")
    validate.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)

    status = sub.add_parser(
        "status", help="show symbols, runs in flight, failures and positions (read-only)"
    )
    status.add_argument("--db", type=Path, default=None,
                        help="state database (default: the one `tickflow run` uses)")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def cmd_status(args: argparse.Namespace) -> int:
    from .storage import default_db_path, format_report, read_status

    path = args.db if args.db is not None else default_db_path("")
    try:
        report = read_status(path)
    except TickflowError as exc:
        print(f"tickflow status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        import msgspec

        sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    else:
        print(format_report(report))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from .config import load_config, summarize

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"invalid config: {exc}", file=sys.stderr)
        return 1
    print(f"{args.config}: OK")
    print(summarize(config))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .config import load_config_with_digest
    from .engine import Engine

    try:
        config, digest = load_config_with_digest(args.config)
    except ConfigError as exc:
        print(f"invalid config: {exc}", file=sys.stderr)
        return 1
    if args.duration is not None and args.duration < 0:
        print("--duration must be >= 0", file=sys.stderr)
        return 2
    if args.metrics_port is not None:
        if not 0 <= args.metrics_port <= 65535:
            print("--metrics-port must be in 0..65535", file=sys.stderr)
            return 2
        import msgspec

        config = msgspec.structs.replace(
            config, metrics=msgspec.structs.replace(config.metrics, port=args.metrics_port)
        )
    engine = Engine(config, config_version=digest[:12])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        interrupts = 0

        def on_signal(signame: str) -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts > 1 and signame == "SIGINT":
                log.warning("second SIGINT: stopping at once")
                raise SystemExit(130)
            log.info("%s received: draining", signame, extra={"signal": signame})
            engine.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig.name)
        log.info(
            "tickflow starting",
            extra={
                "version": __version__,
                "config": str(args.config),
                "config_version": digest[:12],
                "workflows": sorted(engine.workflows),
                "agents": config.engine.agents,
            },
        )
        await engine.run(args.duration)
        log.info("tickflow stopped", extra={"runs": engine.statistics().counters.runs})

    try:
        _run_loop(main)
    except TickflowError as exc:
        log.error("tickflow failed: %s", exc)
        return 1
    if args.summary is not None:
        args.summary.write_bytes(orjson.dumps(engine.summary(), option=orjson.OPT_INDENT_2))
    return 0


def _run_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` on uvloop when it is installed (it is a dependency), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency on POSIX
        asyncio.run(main())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def main(argv: Sequence[str] | None = None) -> int:
    from .logs import setup_logging

    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    if args.command == "validate":
        return cmd_validate(args)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "status":
        return cmd_status(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
