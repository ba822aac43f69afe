"""The ``tickflow`` command line: run, validate, replay, status."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import ConfigError

__all__ = ["DEFAULT_CONFIG", "build_parser", "main"]

# Shipped inside the package so `tickflow run` works from any working directory.
DEFAULT_CONFIG = Path(__file__).with_name("default.toml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tickflow",
        description="High-throughput trading-pipeline daemon: market-data events trigger "
        "workflows that a priority heap and a preemptive dispatcher feed to a bounded agent pool.",
    )
    parser.add_argument("--version", action="version", version=f"tickflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    validate = sub.add_parser("validate", help="check a config file and summarise it")
    validate.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)
    return parser


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "validate":
        return cmd_validate(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
