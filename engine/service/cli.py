"""The ``tickflow`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from engine import __version__
from engine.core.errors import ConfigError, TickflowError
from engine.service.ctl import DEFAULT_ADMIN_URL, add_reload_parser, cmd_reload
from engine.service.logs import text_console
from engine.service.reload import Reloader
from engine.service.sdnotify import Notifier

if TYPE_CHECKING:
    from engine.config import Config
    from engine.service.daemon import Engine

__all__ = ["DEFAULT_CONFIG", "build_parser", "main"]

# Shipped inside the package so `tickflow run` works from any working directory.
DEFAULT_CONFIG = Path(__file__).parent.parent / "default.toml"

log = logging.getLogger("tickflow.cli")

STATUS_INTERVAL_S = 2.0  # the terminal status line's refresh period


class _Parser(argparse.ArgumentParser):
    """A usage error is one ``tickflow failed`` JSON line when the logs are JSON (journald):
    the usage text stays for a person at a terminal."""

    log_format = "auto"  # what the command line asks for, read before parsing (see main)

    def error(self, message: str) -> NoReturn:
        from engine.service.logs import resolve_format, setup_logging

        if resolve_format(_Parser.log_format) == "json":
            setup_logging("error", "json")
            fail(f"{self.prog}: {message}", 2, usage=self.format_usage().strip())
            self.exit(2)
        super().error(message)


def _requested_log_format(argv: Sequence[str]) -> str:
    for index, arg in enumerate(argv):
        value = None
        if arg == "--log-format" and index + 1 < len(argv):
            value = argv[index + 1]
        elif arg.startswith("--log-format="):
            value = arg.partition("=")[2]
        if value in ("auto", "json", "text"):
            return value
    return "auto"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tickflow",
        description="High-throughput trading-pipeline daemon: market-data events trigger "
        "workflows that a priority heap and a preemptive dispatcher feed to a bounded agent pool.",
    )
    parser.add_argument("--version", action="version", version=f"tickflow {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument(
        "--log-format", default="auto", choices=["auto", "json", "text"],
        help="stderr log lines: text for a person, one JSON object per line for journald; "
        "auto (default) = text when stderr is a terminal, JSON otherwise",
    )
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
    status.add_argument("--url", default=None,
                        help=f"admin API of a running daemon (default {DEFAULT_ADMIN_URL}, "
                        "falling back to the database when nothing answers there)")
    status.add_argument("--db", type=Path, default=None,
                        help="read this state database only (default: the one `tickflow run` "
                        "uses, when the daemon is not reachable)")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")

    top = sub.add_parser(
        "top", help="live full-screen view of a running daemon (its GET /status); q quits"
    )
    top.add_argument("--url", default=DEFAULT_ADMIN_URL,
                     help=f"admin API of the daemon (default {DEFAULT_ADMIN_URL})")
    top.add_argument("--interval", type=float, default=1.0, metavar="S",
                     help="seconds between refreshes (default 1)")
    top.add_argument("--count", type=int, default=None, metavar="N",
                     help="stop after N refreshes (default: until q or Ctrl-C)")

    from engine.service.replay_cmd import add_parser as add_replay_parser

    add_replay_parser(sub, DEFAULT_CONFIG)
    add_reload_parser(sub)
    from engine.service.backtest_cmd import add_parser as add_backtest_parser

    add_backtest_parser(sub, DEFAULT_CONFIG)

    from engine.service.bench_cmd import add_parser as add_bench_parser

    add_bench_parser(sub)
    from engine.service.cluster.status import add_parser as add_cluster_parser

    add_cluster_parser(sub, DEFAULT_CONFIG)
    return parser


def cmd_top(args: argparse.Namespace) -> int:
    from engine.service.top import run_top

    if not (args.interval > 0 and math.isfinite(args.interval)):
        print("tickflow top: --interval must be a positive number of seconds", file=sys.stderr)
        return 2
    if args.count is not None and args.count < 1:
        print("tickflow top: --count must be >= 1", file=sys.stderr)
        return 2
    return run_top(args.url, args.interval, count=args.count)


def fail(message: str, code: int = 1, **fields: Any) -> int:
    """The one line a failed ``run`` / ``replay`` ends with (JSON in JSON mode)."""
    log.error("tickflow failed: %s", message, extra={"exit_code": code, **fields})
    return code


def describe_failure(exc: BaseException) -> str:
    """One line for an exception, an ExceptionGroup's leaves included (a task group's)."""
    if isinstance(exc, BaseExceptionGroup):
        leaves: list[str] = []
        for sub in exc.exceptions:
            text = describe_failure(sub)
            if text not in leaves:
                leaves.append(text)
        return "; ".join(leaves)
    if isinstance(exc, TickflowError):
        return str(exc)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _summary_writable(path: Path) -> str | None:
    """Why ``--summary`` could not be written at exit, checked before the run: a run of hours
    must not end in a traceback over a typo in a path."""
    target = path if path.is_absolute() else Path.cwd() / path
    if target.is_dir():
        return f"--summary {str(path)!r} is a directory"
    if target.exists():
        return None if os.access(target, os.W_OK) else f"--summary {str(path)!r} is not writable"
    parent = target.parent
    if not parent.is_dir():
        return f"--summary {str(path)!r}: directory {str(parent)!r} does not exist"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"--summary {str(path)!r}: directory {str(parent)!r} is not writable"
    return None


def cmd_status(args: argparse.Namespace) -> int:
    from engine.storage import default_db_path, format_report, read_status

    # An explicit --db means that file; otherwise the live daemon first (it knows more: queue,
    # agents, paused workflows), its database when it does not answer.
    if args.db is None:
        url = args.url or DEFAULT_ADMIN_URL
        from engine.service.status import fetch_status, format_status

        try:
            doc = fetch_status(url)
        except OSError as exc:
            if args.url is not None:
                print(f"tickflow status: {url}: {exc}", file=sys.stderr)
                return 1
            log.debug("no daemon at %s (%s): reading the database", url, exc)
        else:
            if args.json:
                sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(doc)) + b"\n")
            else:
                print(format_status(doc, url))
            return 0
    path = args.db if args.db is not None else default_db_path("")
    try:
        report = read_status(path)
    except TickflowError as exc:
        print(f"tickflow status: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    else:
        print(format_report(report))
    return 0


def load_checked_config(path: Path, *, logged: bool = False) -> tuple[Config, str] | None:
    """The config and its digest, or None after saying why it is invalid (exit status 1):
    printed for ``validate``, a ``tickflow failed`` log line for the daemon (``logged``)."""
    from engine.config import load_config_with_digest

    try:
        return load_config_with_digest(path)
    except ConfigError as exc:
        if logged:
            fail(f"invalid config: {exc}")
        else:
            print(f"invalid config: {exc}", file=sys.stderr)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    from engine.config import summarize

    loaded = load_checked_config(args.config)
    if loaded is None:
        return 1
    config = loaded[0]
    print(f"{args.config}: OK")
    print(summarize(config))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from engine.service.daemon import Engine

    # Arguments first (nothing is loaded or opened for a run that cannot start).
    if args.duration is not None and not (args.duration >= 0 and math.isfinite(args.duration)):
        return fail(f"--duration must be a finite number of seconds >= 0, got {args.duration}", 2)
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        return fail(f"--metrics-port must be in 0..65535, got {args.metrics_port}", 2)
    if args.summary is not None and (why := _summary_writable(args.summary)) is not None:
        return fail(why, 2)
    loaded = load_checked_config(args.config, logged=True)
    if loaded is None:
        return 1
    config, digest = loaded
    if args.metrics_port is not None:
        import msgspec

        config = msgspec.structs.replace(
            config, metrics=msgspec.structs.replace(config.metrics, port=args.metrics_port)
        )
    if config.cluster.enabled:  # a cluster node: input to the stream, partitions from leases
        from engine.service.cluster.errors import ClusterConfigError
        from engine.service.cluster.node import build_cluster_engine

        try:
            engine = build_cluster_engine(config, config_version=digest[:12])
        except ClusterConfigError as exc:
            return fail(str(exc), 2)
    else:
        engine = Engine(config, config_version=digest[:12])
    if config.intake.enabled:  # network intake (TCP / Unix socket), off unless configured
        from engine.service.netintake import IntakeServers

        engine.services.append(IntakeServers)
    # Operations: sd_notify (a no-op outside systemd) and the reload path shared by SIGHUP and
    # POST /reload. --metrics-port is re-applied to every reloaded file.
    metrics_port = args.metrics_port
    notifier = Notifier()
    engine.attach_reloader(Reloader(
        engine, args.config, notifier=notifier,
        adjust=None if metrics_port is None else partial(_with_metrics_port, port=metrics_port),
    ))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        interrupts = 0

        def on_signal(signame: str) -> None:
            nonlocal interrupts
            interrupts += 1
            if interrupts > 1 and signame == "SIGINT":
                _exit_now(130)
            log.info("%s received: draining", signame, extra={"signal": signame})
            notifier.stopping("draining")
            engine.stop()

        def on_hangup() -> None:
            log.info("SIGHUP received: reloading the config", extra={"signal": "SIGHUP"})
            assert engine.reloader is not None
            # Served by the session's reload task: the file is read and checked off the loop.
            engine.reloader.request()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig.name)
        loop.add_signal_handler(signal.SIGHUP, on_hangup)
        # Last service: READY=1 once storage is open, sources run and the other services
        # (network intake) listen.
        engine.services.append(_serve_reloads)
        engine.services.append(_terminal_status)  # a no-op unless a person watches stderr
        engine.services.append(partial(_announce_ready, notifier=notifier))
        # Watchdog + STATUS from the engine's own loop, for the whole run (drain included).
        pinger = asyncio.create_task(notifier.run(_status_line(engine)), name="sd-notify")
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
        try:
            await engine.run(args.duration)
        finally:
            notifier.stopping()  # also when the run ends by --duration or an error
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger
        log.info("tickflow stopped", extra={"runs": engine.statistics().counters.runs})

    try:
        with notifier:
            run_loop(main)
    except TickflowError as exc:
        return fail(str(exc))
    if args.summary is not None:
        try:
            from engine.service.status import status_document

            doc = msgspec.json.encode(status_document(engine))
            args.summary.write_bytes(msgspec.json.format(doc) + b"\n")
        except OSError as exc:  # checked at start; the disk can still fill or vanish
            return fail(f"cannot write --summary {str(args.summary)!r}: {exc}")
    return 0


def _with_metrics_port(config: Config, *, port: int) -> Config:
    import msgspec

    return msgspec.structs.replace(
        config, metrics=msgspec.structs.replace(config.metrics, port=port)
    )


def _exit_now(code: int) -> NoReturn:
    """Second SIGINT: leave without draining. Storage is crash-safe by design (a SIGKILL loses
    no run recorded as accepted), so skipping the drain loses at most the last group commit."""
    log.warning("second SIGINT: stopping at once")
    fail("interrupted twice (SIGINT): stopped without the drain", code)
    logging.shutdown()  # flush the log line above; os._exit skips atexit handlers
    os._exit(code)


@contextlib.asynccontextmanager
async def _owned_task(coro: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """A background task owned by the session: cancelled and awaited when the block ends."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def _serve_reloads(engine: Engine) -> AsyncIterator[None]:
    """The task that serves SIGHUP reload requests, owned (and awaited) by the session."""
    assert engine.reloader is not None
    async with _owned_task(engine.reloader.serve_requests(), "reload"):
        yield


@contextlib.asynccontextmanager
async def _terminal_status(engine: Engine) -> AsyncIterator[None]:
    """A live status line under the log lines while the engine runs, when a person reads
    stderr (text logs on a terminal); nothing on journald, a pipe or a file."""
    console = text_console()
    if console is None or not console.is_terminal:
        yield
        return
    from engine.service.console import StatusLine
    from engine.service.status import status_document

    line = StatusLine(console, partial(status_document, engine), interval_s=STATUS_INTERVAL_S)
    async with _owned_task(line.run(), "status-line"):
        yield


@contextlib.asynccontextmanager
async def _announce_ready(engine: Engine, *, notifier: Notifier) -> AsyncIterator[None]:
    await asyncio.sleep(0)  # one loop turn: the source tasks created just before have started
    notifier.ready(f"running, config {engine.config_version}")
    log.info("tickflow ready", extra={"config_version": engine.config_version})
    yield


def _status_line(engine: Engine) -> Callable[[], str]:
    """A STATUS= text for systemctl status: events/s since the previous line, runs, queue."""
    loop_time = time.monotonic
    last = [loop_time(), 0]

    def line() -> str:
        now = loop_time()
        received = sum(engine.counters.received.values())
        elapsed = now - last[0]
        rate = (received - last[1]) / elapsed if elapsed > 0 else 0.0
        last[0], last[1] = now, received
        in_flight = engine.coordinator.in_flight() if engine.coordinator else 0
        state = engine.readiness()[1]
        return (
            f"{state}: {rate:.0f} events/s, {in_flight} runs in flight, "
            f"queue {len(engine.queue)}, config {engine.config_version}"
        )

    return line


def run_loop(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` on uvloop when it is installed (it is a dependency), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a hard dependency on POSIX
        asyncio.run(main())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def main(argv: Sequence[str] | None = None) -> int:
    from engine.service.logs import setup_logging

    _Parser.log_format = _requested_log_format(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format, install_hooks=True)
    try:
        return _command(parser, args)
    except KeyboardInterrupt:  # Ctrl-C where no drain is set up (replay, validate, status)
        return fail("interrupted (SIGINT)", 130)
    except (Exception, BaseExceptionGroup) as exc:  # one line saying why, not a raw traceback
        log.error(
            "tickflow failed: %s", describe_failure(exc), exc_info=exc, extra={"exit_code": 1}
        )
        return 1


def _command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "top":
        return cmd_top(args)
    if args.command == "validate":
        return cmd_validate(args)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "status":
        return cmd_status(args)
    if args.command == "replay":
        from engine.service.replay_cmd import cmd_replay

        return cmd_replay(args)
    if args.command == "reload":
        return cmd_reload(args)
    if args.command == "backtest":
        from engine.service.backtest_cmd import cmd_backtest

        return cmd_backtest(args)
    if args.command == "bench":
        from engine.service.bench_cmd import cmd_bench

        return cmd_bench(args)
    if args.command == "cluster":
        from engine.service.cluster.status import cmd_cluster

        return cmd_cluster(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
