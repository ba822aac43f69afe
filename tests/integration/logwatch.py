"""Every stderr line of a ``tickflow`` subprocess, kept: for tests that check all of them."""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Callable
from typing import Any

import orjson

from tests.integration.daemon import TICKFLOW


def spawn(args: list[str], cwd: os.PathLike[str] | str,
          env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*TICKFLOW, *args], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
    )


class StderrLines:
    """Reads a process's stderr pipe without blocking past a deadline (select + os.read: a
    file object's readline would buffer lines select() cannot see)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self.proc = proc
        self._fd = proc.stderr.fileno()
        self._partial = b""
        self.lines: list[bytes] = []
        self.eof = False

    def _read(self, timeout: float) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._fd, selectors.EVENT_READ)
            if not sel.select(timeout=max(timeout, 0.0)):
                return
        chunk = os.read(self._fd, 65536)
        if not chunk:
            self.eof = True
            if self._partial:
                self.lines.append(self._partial)
                self._partial = b""
            return
        *complete, self._partial = (self._partial + chunk).split(b"\n")
        self.lines.extend(complete)

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 30.0
    ) -> dict[str, Any]:
        """The first JSON record matching ``predicate`` (bounded wait)."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for line in self.lines[checked:]:
                checked += 1
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict) and predicate(record):
                    return record
            left = deadline - time.monotonic()
            if self.eof or left <= 0:
                raise AssertionError(f"no {what} within {timeout}s; stderr: {self.text()[-3000:]}")
            self._read(left)

    def finish(self, timeout: float = 60.0) -> int:
        """Read to EOF and reap the process; its exit status."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise AssertionError(f"still running after {timeout}s: {self.text()[-3000:]}")
            self._read(left)
        code = self.proc.wait(max(deadline - time.monotonic(), 1.0))
        self.close()
        return code

    def close(self) -> None:
        """Kill the process if it still runs; close the pipe (idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        assert self.proc.stderr is not None
        self.proc.stderr.close()

    def text(self) -> str:
        return b"\n".join(self.lines).decode("utf-8", "replace")

    def records(self) -> list[dict[str, Any]]:
        """Every line as a JSON object: the assertion names the first line that is not one."""
        out: list[dict[str, Any]] = []
        for number, line in enumerate(self.lines, 1):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise AssertionError(
                    f"stderr line {number} is not JSON: {line[:300]!r}\n{self.text()[-3000:]}"
                ) from None
            assert isinstance(record, dict), line
            out.append(record)
        return out
