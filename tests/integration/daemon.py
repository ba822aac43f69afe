"""Helpers for tests that run ``tickflow`` as a real subprocess."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import orjson

TICKFLOW = [sys.executable, "-m", "engine.cli"]


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*TICKFLOW, *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


def wait_for_log(proc: subprocess.Popen[bytes], message: str, timeout: float = 30.0) -> dict:
    """Read the daemon's JSON log lines until one has ``msg == message`` (bounded wait)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stderr, selectors.EVENT_READ)
    seen: list[bytes] = []
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=deadline - time.monotonic()):
                break
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if record.get("msg") == message:
                return dict(record)
    finally:
        sel.close()
    raise AssertionError(f"no log line {message!r} within {timeout}s; saw: {b''.join(seen)!r}")
