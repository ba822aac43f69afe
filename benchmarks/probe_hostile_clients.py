"""Re-runs the slow-client cases of issue 18's hostile probe against a real daemon and prints
the figures docs/security.md quotes (not a test: it measures elapsed times and fd counts).

    python -m benchmarks.probe_hostile_clients

Everything listens on 127.0.0.1, every client and daemon it starts is stopped by itself, and
every wait is bounded. Takes about a minute.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import orjson

TICK = b'{"type":"DATA_READY","symbol":"G","ts":1,"price":1}\n'
REPO = Path(__file__).resolve().parents[1]


def _config(tmp: Path, *, idle_s: float, drain_s: float, extra: str = "") -> Path:
    path = tmp / "probe.toml"
    path.write_text(f"""
[engine]
drain_timeout_s = {drain_s}

[source]
kind = "none"

[metrics]
port = 0

[storage]
path = "{tmp / 'state.db'}"

[intake]
tcp_port = 0
idle_timeout_s = {idle_s}

[workflows.w]
priority = 0
max_concurrent = 2

[[workflows.w.steps]]
name = "s"
action = "strategies.hft:collect_data"
{extra}
""")
    return path


class _Daemon:
    def __init__(self, config: Path, tmp: Path, env: dict[str, str] | None = None) -> None:
        self.log = tmp / "daemon.log"
        self._fh = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "run", "--config", str(config)],
            cwd=tmp, stdout=subprocess.DEVNULL, stderr=self._fh,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        )
        self.intake = int(self._wait("intake listening")["port"])
        self.http = int(self._wait("metrics listening")["port"])
        self._wait("tickflow ready")

    def _wait(self, msg: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log.read_bytes().splitlines():
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if record.get("msg") == msg:
                    return dict(record)
            time.sleep(0.05)  # polling a file another process writes
        raise RuntimeError(f"no {msg!r} in {timeout}s")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> float:
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return float("inf")
        finally:
            self._fh.close()
        return time.monotonic() - start


def _stuffed_client(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    payload = TICK * 2000
    stalls = 0
    deadline = time.monotonic() + 20
    while stalls < 20 and time.monotonic() < deadline:
        try:
            sock.send(payload)
            stalls = 0
        except BlockingIOError:
            stalls += 1
            time.sleep(0.05)  # the client's pacing
        except OSError:
            break
    return sock


def probe_non_reading_clients() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        daemon = _Daemon(_config(tmp, idle_s=2.0, drain_s=5.0), tmp)
        base_fds, base_rss = daemon.fds(), daemon.rss_mb()
        clients = [_stuffed_client(daemon.intake) for _ in range(25)]
        peak_fds = daemon.fds()
        deadline = time.monotonic() + 30
        while daemon.fds() > base_fds and time.monotonic() < deadline:
            time.sleep(0.1)  # polling another process's fd table
        print(f"25 non-reading clients, idle_timeout_s=2: fds {base_fds} -> {peak_fds} -> "
              f"{daemon.fds()} after idle close, RSS {base_rss:.0f} -> {daemon.rss_mb():.0f} MB")
        stuck = [_stuffed_client(daemon.intake) for _ in range(3)]
        took = daemon.stop()
        print(f"SIGTERM with 3 non-reading clients connected, drain_timeout_s=5: exit after "
              f"{took:.1f} s, status {daemon.proc.returncode}")
        for sock in clients + stuck:
            sock.close()


def probe_slow_http_and_dripping_intake() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        daemon = _Daemon(_config(tmp, idle_s=6.0, drain_s=1.0), tmp)
        partial = []
        for _ in range(150):
            sock = socket.create_connection(("127.0.0.1", daemon.http))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            partial.append(sock)
        start = time.monotonic()
        for sock in partial:
            sock.settimeout(max(0.1, 30 - (time.monotonic() - start)))
            with contextlib.suppress(OSError):
                sock.recv(4096)
        held = time.monotonic() - start
        health = socket.create_connection(("127.0.0.1", daemon.http))
        health.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        health.settimeout(5)
        answer = health.recv(64).split(b"\r\n")[0].decode()
        print(f"150 HTTP connections with a partial header: all closed after {held:.1f} s; "
              f"then /healthz: {answer}")
        for sock in [*partial, health]:
            sock.close()

        drips = [socket.create_connection(("127.0.0.1", daemon.intake)) for _ in range(64)]
        start = time.monotonic()
        closed = 0
        stop = threading.Event()
        while closed < len(drips) and time.monotonic() - start < 30:
            closed = 0
            for sock in drips:
                try:
                    sock.send(b" ")
                except OSError:
                    closed += 1
            stop.wait(2.0)  # one space every 2 s per client: the drip under test
        fresh = socket.create_connection(("127.0.0.1", daemon.intake))
        fresh.sendall(TICK)
        fresh.settimeout(5)
        ack = fresh.recv(64).strip().decode()
        print(f"64 intake clients dripping a space every 2 s, idle_timeout_s=6: "
              f"{closed} closed within {time.monotonic() - start:.0f} s; a new client: {ack}")
        for sock in [*drips, fresh]:
            sock.close()
        daemon.stop()


def probe_slow_reload_import() -> None:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "probe_sleepy.py").write_text(
            "import time\ntime.sleep(30)\n\nasync def step(ctx):\n    return 1\n"
        )
        extra = ('\n[workflows.sleepy]\npriority = 1\n[[workflows.sleepy.steps]]\nname = "s"\n'
                 'action = "probe_sleepy:step"\n')
        config = _config(tmp, idle_s=60.0, drain_s=5.0)
        daemon = _Daemon(config, tmp, env={"PYTHONPATH": f"{REPO}:{tmp}"})
        config.write_text(config.read_text() + extra)
        daemon.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)  # let the import start: its 30 s sleep is what SIGTERM must not wait
        took = daemon.stop()
        print(f"SIGTERM 1 s into a reload whose module sleeps 30 s at import, "
              f"drain_timeout_s=5: exit after {took:.1f} s, status {daemon.proc.returncode}")


if __name__ == "__main__":
    probe_non_reading_clients()
    probe_slow_http_and_dripping_intake()
    probe_slow_reload_import()
