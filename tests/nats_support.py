"""A real ``nats-server`` with JetStream on a free loopback port, for the cluster tests.

Debian's ``nats-server`` (``make system-deps``) is the server CI has; tests that need one take
the ``nats_server`` fixture (tests/conftest.py), which skips only when the binary is missing
outside CI -- under ``CI=true`` a missing server is an error, never a silent skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

__all__ = ["NatsServer", "free_port", "nats_server_binary", "require_nats_server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def nats_server_binary() -> str | None:
    return shutil.which("nats-server")


class NatsServer:
    """One ``nats-server -js`` process with its store under ``store_dir``.

    ``start`` returns once the server answers its client port with an ``INFO`` line (bounded
    wait); ``stop`` terminates it and waits. ``restart`` keeps the port and the store, which is
    what a server crash and restart looks like to the clients.
    """

    def __init__(self, store_dir: Path, port: int | None = None, binary: str | None = None):
        self.store_dir = store_dir
        self.port = port or free_port()
        self.binary = binary or nats_server_binary() or "nats-server"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = store_dir / "nats-server.log"
        self.extra_args: list[str] = []

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> NatsServer:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port),
             "-sd", str(self.store_dir), "-l", str(self.log_path), *self.extra_args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with {self.proc.returncode}: {self._log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as conn:
                    if conn.recv(4).startswith(b"INFO"):
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"nats-server not ready in {timeout} s: {self._log_tail()}")
            time.sleep(0.02)  # polling a port that is not open yet: nothing to wait on

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def restart(self) -> NatsServer:
        self.stop()
        return self.start()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> NatsServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def require_nats_server() -> str:
    """The binary's path; a skip outside CI when it is missing, an error under CI."""
    import pytest

    binary = nats_server_binary()
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("nats-server is not installed (make system-deps installs it)")
        pytest.skip("nats-server is not installed (make system-deps installs it)")
    return binary
