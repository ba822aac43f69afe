"""Shared pieces of the service / admin-API subprocess tests: a fake systemd notify socket, a
config writer, an HTTP helper and the slow step action the daemons run."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from engine.core.strategy import StepContext
from tests.integration.daemon import TICKFLOW

__all__ = [
    "REPO",
    "Daemon",
    "NotifySink",
    "http",
    "slow_step",
    "wait_until",
    "write_config",
]

REPO = Path(__file__).resolve().parents[2]


async def slow_step(ctx: StepContext) -> dict[str, float]:
    """An async step that takes ``params.sleep_s`` (default 0.2 s): keeps runs in flight."""
    delay = float(ctx.params.get("sleep_s", 0.2))
    await asyncio.sleep(delay)  # the work being simulated, not a wait for a condition
    return {"slept": delay}


def write_config(
    path: Path,
    *,
    db: Path,
    token_file: Path | None = None,
    sleep_s: float = 0.2,
    drain_timeout_s: float = 10.0,
    max_concurrent: int = 2,
    extra_workflow: bool = False,
    tick_rate_hz: float = 50.0,
) -> None:
    """A small daemon config: a 4-symbol simulator and one slow workflow (+ optionally another)."""
    admin = f'[admin]\ntoken_file = "{token_file}"\n' if token_file is not None else ""
    text = f"""
[engine]
agents = 4
drain_timeout_s = {drain_timeout_s}

[source.sim]
symbols = 4
hot_symbols = 1
tick_rate_hz = {tick_rate_hz}

[metrics]
port = 0

[storage]
path = "{db}"

{admin}
[workflows.slow]
priority = 1
max_concurrent = {max_concurrent}

[[workflows.slow.steps]]
name = "work"
action = "tests.integration.service_support:slow_step"
timeout_ms = 60000.0
params = {{ sleep_s = {sleep_s} }}
"""
    if extra_workflow:
        text += """
[workflows.extra]
priority = 0
max_concurrent = 1

[[workflows.extra.steps]]
name = "quick"
action = "tests.integration.service_support:slow_step"
params = { sleep_s = 0.0 }
"""
    path.write_text(text)


def http(
    method: str, url: str, *, token: str | None = None, body: Any = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """One request; returns (status, decoded JSON body or raw text)."""
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            status, raw = exc.code, exc.read()
    try:
        return status, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return status, raw.decode()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``predicate`` (bounded): for conditions in another process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)  # polling interval of a bounded wait
    raise AssertionError(f"gave up after {timeout}s waiting for {what}")


class NotifySink:
    """A fake ``$NOTIFY_SOCKET``: an AF_UNIX datagram socket, path or abstract (``@name``),
    whose messages a thread timestamps on arrival."""

    def __init__(self, abstract: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._dir: str | None = None
        if abstract:
            name = f"tickflow-test-{os.getpid()}-{id(self):x}"
            self.sock.bind(b"\0" + name.encode())
            self.address = "@" + name
        else:
            # A short directory: AF_UNIX paths are limited to ~107 bytes, pytest's are long.
            self._dir = tempfile.mkdtemp(prefix="tfn-", dir="/tmp")
            path = os.path.join(self._dir, "notify")
            self.sock.bind(path)
            self.address = path
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            at = time.monotonic()
            fields = dict(
                line.split("=", 1) for line in data.decode().splitlines() if "=" in line
            )
            with self._lock:
                self.messages.append((at, fields))

    def snapshot(self) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return list(self.messages)

    def with_key(self, key: str, value: str | None = None) -> list[tuple[float, dict[str, str]]]:
        return [
            (at, m) for at, m in self.snapshot()
            if key in m and (value is None or m[key] == value)
        ]

    def wait_for(self, key: str, value: str | None = None, *, count: int = 1,
                 timeout: float = 20.0) -> list[tuple[float, dict[str, str]]]:
        wait_until(lambda: len(self.with_key(key, value)) >= count,
                   f"{count} x {key}={value or '*'} on the notify socket", timeout)
        return self.with_key(key, value)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        if self._dir is not None:
            for name in os.listdir(self._dir):
                os.unlink(os.path.join(self._dir, name))
            os.rmdir(self._dir)


class Daemon:
    """``tickflow run`` as a subprocess, its JSON log going to a file (a pipe nobody reads
    could fill up and stall the daemon)."""

    def __init__(self, config: Path, tmp: Path, *, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.log_path = tmp / "daemon.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*TICKFLOW, "run", "--config", str(config), "--metrics-port", "0", *args],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=self._log,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        )
        self.port = 0

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
        return out

    def wait_log(self, message: str, timeout: float = 30.0) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [r for r in self.records() if r.get("msg") == message]
            if found:
                return True
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"daemon exited ({self.proc.returncode}) before logging {message!r}: "
                    f"{self.log_path.read_text()[-3000:]}"
                )
            return False

        wait_until(seen, f"log line {message!r}", timeout)
        return found[0]

    def start(self) -> Daemon:
        self.port = int(self.wait_log("metrics listening")["port"])
        self.wait_log("tickflow ready")
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def status(self) -> dict[str, Any]:
        code, body = http("GET", self.url("/status"))
        assert code == 200, body
        assert isinstance(body, dict)
        return body

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()
