"""Helpers for tests that run ``tickflow`` as a real subprocess."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
import weakref
from pathlib import Path

import orjson

TICKFLOW = [sys.executable, "-m", "engine"]


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*TICKFLOW, *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )


# What was read from a daemon's stderr past the last line handed out, per process. The pipe is
# read with os.read, not the file object's readline: that reads ahead into a buffer of its own,
# and a line waiting there (two log lines that came in one write) is invisible to select(),
# which would then wait for more output that may never come.
_PENDING: weakref.WeakKeyDictionary[subprocess.Popen[bytes], bytes] = (
    weakref.WeakKeyDictionary()
)


def wait_for_log(proc: subprocess.Popen[bytes], message: str, timeout: float = 30.0) -> dict:
    """Read the daemon's JSON log lines until one has ``msg == message`` (bounded wait)."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    deadline = time.monotonic() + timeout
    buffered = _PENDING.pop(proc, b"")
    seen: list[bytes] = []
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    try:
        while True:
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                seen.append(line + b"\n")
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if record.get("msg") == message:
                    return dict(record)
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(timeout=left):
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buffered += chunk
    finally:
        sel.close()
        _PENDING[proc] = buffered
    raise AssertionError(f"no log line {message!r} within {timeout}s; saw: {b''.join(seen)!r}")
