"""The terminal experience under a real terminal: tmux panes of a fixed size, read with
``capture-pane`` and driven with ``send-keys``.

- ``tickflow top`` against a real daemon shows the workflows with non-zero rates and quits on
  ``q`` with status 0; against nothing it says so and keeps retrying.
- ``tickflow run`` on a terminal writes readable lines (no JSON) and a status line that moves.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.logwatch import StderrLines, spawn

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (make system-deps)"),
]

WIDTH, HEIGHT = 120, 40


class Tmux:
    """One private tmux server (its own socket) with one pane running ``command``."""

    def __init__(self, tmp: Path) -> None:
        self.socket = tmp / "tmux.sock"
        self.conf = tmp / "tmux.conf"
        self.status_file = tmp / "exit-status"
        # Keep the pane after its command exits, to read the exit status.
        self.conf.write_text("set -g remain-on-exit on\nset -g history-limit 2000\n")

    def _tmux(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", str(self.conf), *args],
            capture_output=True, text=True, timeout=30,
        )
        assert proc.returncode == 0, (args, proc.stderr)
        return proc.stdout

    def start(self, argv: list[str], cwd: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "TICKFLOW_NO_EXTENSIONS")}
        # A COLUMNS/LINES inherited from the test runner would override the pane's real size.
        # The exit status goes to a file: tmux's own #{pane_dead_status} is sometimes never
        # filled in under load (the pane is dead, the status empty), which read as a hang. The
        # wrapping shell traps SIGINT (Ctrl-C reaches the whole foreground group) so that it
        # outlives the command; a trap, unlike an ignore, is not inherited by the command.
        command = shlex.join(
            ["bash", "-c", 'trap : INT; "$@"; echo $? > "$0"', str(self.status_file),
             "env", "-u", "COLUMNS", "-u", "LINES", *(f"{k}={v}" for k, v in env.items()), *argv]
        )
        self._tmux("new-session", "-d", "-s", "t", "-x", str(WIDTH), "-y", str(HEIGHT),
                   "-c", str(cwd), command)

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t")

    def wait_screen(self, predicate: Callable[[str], bool], what: str,
                    timeout: float = 60.0) -> str:
        """Poll the pane until ``predicate(screen)`` (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout}s; screen:\n{screen}")
            time.sleep(0.1)  # the poll period of capture-pane, not a stand-in for a condition

    def send(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "t", *keys)

    def exit_status(self, timeout: float = 30.0) -> int:
        """The pane command's exit status, once it has exited (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.status_file.read_text() if self.status_file.exists() else ""
            if text.endswith("\n"):
                status = int(text)
                return status if status < 128 else -(status - 128)  # sh: 128 + signal
            if time.monotonic() > deadline:
                raise AssertionError(f"still running after {timeout}s:\n{self.screen()}")
            time.sleep(0.1)

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"],
                       capture_output=True, timeout=30)


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    term = Tmux(tmp_path)
    try:
        yield term
    finally:
        term.kill()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[StderrLines, int]]:
    state = tmp_path / "daemon"
    state.mkdir()
    log = StderrLines(spawn(["run", "--metrics-port", "0", "--duration", "120"], state))
    try:
        port = int(log.wait_for(lambda r: r.get("msg") == "metrics listening", "port")["port"])
        log.wait_for(lambda r: r.get("msg") == "tickflow ready", "ready")
        yield log, port
    finally:
        log.close()


def _rows(screen: str) -> dict[str, list[str]]:
    return {
        line.split()[0]: line.split()
        for line in screen.splitlines()
        if line.strip().startswith(("high_freq_trading", "trend_trading"))
    }


def _moving(screen: str) -> bool:
    """Both workflows on screen, each with a runs/s above zero (the 4th column)."""
    rows = _rows(screen)
    try:
        return len(rows) == 2 and all(float(r[3].replace(",", "")) > 0 for r in rows.values())
    except (IndexError, ValueError):  # "-" before the second sample
        return False


def test_top_shows_a_live_daemon_and_quits_on_q(
    tmux: Tmux, daemon: tuple[StderrLines, int], tmp_path: Path
) -> None:
    log, port = daemon
    url = f"http://127.0.0.1:{port}"
    tmux.start([sys.executable, "-m", "engine", "top", "--url", url, "--interval", "0.5"],
               tmp_path)
    screen = tmux.wait_screen(_moving, "both workflows with a non-zero runs/s")
    assert f"at {url}" in screen
    assert "● ready" in screen
    for section in ("agents & queue", "intake", "storage", "positions & P&L", "q quits"):
        assert section in screen, screen
    assert re.search(r"events/s\s+[1-9]", screen), screen
    tmux.send("q")
    assert tmux.exit_status() == 0
    log.proc.send_signal(signal.SIGTERM)
    assert log.finish() == 0


def test_top_without_a_daemon_says_so_and_retries(tmux: Tmux, tmp_path: Path) -> None:
    with_nothing = "http://127.0.0.1:9"  # discard port: nothing listens on loopback
    tmux.start([sys.executable, "-m", "engine", "top", "--url", with_nothing,
                "--interval", "0.2"], tmp_path)
    tmux.wait_screen(lambda s: "no daemon answers at http://127.0.0.1:9" in s, "the message")
    screen = tmux.wait_screen(lambda s: "retrying (attempt 3)" in s, "a third attempt")
    assert "refused" in screen.lower()
    tmux.send("q")
    assert tmux.exit_status() == 0


def _status_block(screen: str) -> str | None:
    """The status (one line, or more on a narrow pane) once it shows a rate: from the "● ready"
    line to the one with the P&L."""
    lines = screen.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"● ready \d[\d,.]* ev/s", line):
            block = []
            for part in lines[i:i + 4]:
                block.append(part)
                if re.search(r"P&L [+-][\d,.]+", part):
                    text = "\n".join(block)
                    return text if "high_freq_trading" in text and "runs/s" in text else None
    return None


def test_run_on_a_terminal_shows_readable_lines_and_a_moving_status(
    tmux: Tmux, tmp_path: Path
) -> None:
    tmux.start([sys.executable, "-m", "engine", "run", "--metrics-port", "0",
                "--duration", "60"], tmp_path)
    screen = tmux.wait_screen(
        lambda s: _status_block(s) is not None, "a status line with a rate", timeout=60
    )
    assert re.search(r"^\d\d:\d\d:\d\d\.\d{3} INFO  cli: tickflow ready  config_version=",
                     screen, re.MULTILINE), screen
    assert re.search(r"INFO  http: metrics listening  host=127\.0\.0\.1  port=\d+", screen)
    assert '{"ts"' not in screen  # no JSON for a person
    assert "…" not in screen  # nothing cut short
    first = _status_block(screen)
    # Rewritten in place: it changes, and there is still only one.
    changed = tmux.wait_screen(
        lambda s: (block := _status_block(s)) is not None and block != first,
        "the status line to change",
    )
    assert changed.count("● ready") == 1, changed
    tmux.send("C-c")  # SIGINT: the daemon drains and exits 0
    assert tmux.exit_status(timeout=60) == 0
    final = tmux.screen()
    assert "SIGINT received: draining" in final
    assert "tickflow stopped" in final
    assert "● ready" not in final  # the status line leaves with the run
