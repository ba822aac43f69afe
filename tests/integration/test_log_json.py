"""In JSON mode every line the daemon writes to stderr is one JSON object, library errors
included and rate-limited, and every failure exit ends with one ``tickflow failed`` line.

Each case of issue 18 item 6 runs a real ``tickflow`` subprocess (stderr is a pipe, so
``--log-format auto`` means JSON) and parses every line it wrote.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.logwatch import StderrLines, spawn

pytestmark = pytest.mark.slow

TOKEN = "t0ken-for-tests"


def _failed(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The one ``tickflow failed`` line, which must be the last."""
    failed = [r for r in records if str(r.get("msg", "")).startswith("tickflow failed: ")]
    assert len(failed) == 1, records
    assert records[-1] is failed[0], records[-3:]
    assert records[-1]["level"] == "error"
    return failed[0]


@pytest.fixture
def spawned() -> Iterator[list[StderrLines]]:
    """Processes a test starts, killed and closed whatever the test's outcome."""
    logs: list[StderrLines] = []
    try:
        yield logs
    finally:
        for log in logs:
            log.close()


def _watch(spawned: list[StderrLines], args: list[str], cwd: Path) -> StderrLines:
    log = StderrLines(spawn(args, cwd))
    spawned.append(log)
    return log


def _port(log: StderrLines) -> int:
    return int(log.wait_for(lambda r: r.get("msg") == "metrics listening", "port")["port"])


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], StderrLines, int]]:
    proc = spawn(["run", "--metrics-port", "0", "--duration", "60"], tmp_path,
                 env={"TICKFLOW_ADMIN_TOKEN": TOKEN})
    log = StderrLines(proc)
    try:
        port = _port(log)
        log.wait_for(lambda r: r.get("msg") == "tickflow ready", "ready")
        yield proc, log, port
    finally:
        log.close()


def _stop(proc: subprocess.Popen[bytes], log: StderrLines) -> list[dict[str, Any]]:
    proc.send_signal(signal.SIGTERM)
    assert log.finish() == 0, log.text()[-3000:]
    return log.records()


def test_client_leaving_mid_body_is_one_json_warning(
    daemon: tuple[subprocess.Popen[bytes], StderrLines, int],
) -> None:
    proc, log, port = daemon
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /events HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + TOKEN.encode()
                + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                b'{"type":'
            )
    cut_seen: list[dict[str, Any]] = []

    def third_cut(record: dict[str, Any]) -> bool:
        if record.get("event") == "client_gone":
            cut_seen.append(record)
        return len(cut_seen) == 3

    log.wait_for(third_cut, "three cut-short warnings")
    # The daemon still takes a whole request.
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/events", method="POST",
        data=orjson.dumps({"type": "DATA_READY", "symbol": "AAPL", "ts": 1.0, "price": 1.0}),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert orjson.loads(resp.read())["accepted"] == 1
    records = _stop(proc, log)
    cut = [r for r in records if r.get("event") == "client_gone"]
    assert len(cut) == 3, records
    assert cut[0]["level"] == "warning"
    assert cut[0]["msg"].startswith("admin request cut short")
    assert not [r for r in records if r["logger"].startswith("aiohttp")], records


def test_library_errors_are_json_lines_and_rate_limited(
    daemon: tuple[subprocess.Popen[bytes], StderrLines, int],
) -> None:
    proc, log, port = daemon
    for _ in range(40):  # a header line over aiohttp's limit: it logs an error per request
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /status HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
            assert sock.recv(4096).split(b" ", 2)[1] == b"400"
    records = _stop(proc, log)
    library = [r for r in records if r["logger"] == "aiohttp.server"]
    assert 1 <= len(library) <= 10, len(library)  # the filter's budget: 10 per 10 s per message
    assert library[0]["exc_type"] == "LineTooLong"
    assert library[0]["exc"].startswith("Traceback")


def test_second_daemon_on_the_same_state_file_fails_with_one_line(
    daemon: tuple[subprocess.Popen[bytes], StderrLines, int], tmp_path: Path,
    spawned: list[StderrLines],
) -> None:
    # Refused at start by the state-file lock (issue 18 item 8); without it the second daemon
    # fails only if its first commit collides, which is a matter of timing.
    pytest.importorskip("engine.storage.lock", reason="needs the state-file lock (issue 18 #8)")
    first, first_log, _ = daemon
    log = _watch(spawned, ["run", "--metrics-port", "0", "--duration", "30"], tmp_path)
    assert log.finish() == 1, log.text()[-3000:]
    failed = _failed(log.records())
    assert "tickflow.db" in failed["msg"]
    _stop(first, first_log)


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_duration_that_is_not_a_finite_time_is_refused(
    tmp_path: Path, spawned: list[StderrLines], value: str
) -> None:
    log = _watch(spawned, ["run", "--metrics-port", "0", f"--duration={value}"], tmp_path)
    assert log.finish() == 2
    records = log.records()
    assert len(records) == 1  # refused before anything starts
    assert f"--duration must be a finite number of seconds >= 0, got {float(value)}" in (
        _failed(records)["msg"]
    )
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["run", "--duration", "abc"], "argument --duration: invalid float value: 'abc'"),
        (["run", "--no-such-option"], "unrecognized arguments: --no-such-option"),
        (["--log-format", "json", "nosuchcommand"], "invalid choice: 'nosuchcommand'"),
    ],
)
def test_usage_error_is_one_json_line(
    tmp_path: Path, spawned: list[StderrLines], args: list[str], reason: str
) -> None:
    log = _watch(spawned, args, tmp_path)
    assert log.finish() == 2
    records = log.records()
    assert len(records) == 1
    failed = _failed(records)
    assert reason in failed["msg"]
    assert failed["usage"].startswith("usage: tickflow")


@pytest.mark.parametrize(
    ("summary", "reason"),
    [("missing/summary.json", "does not exist"), (".", "is a directory")],
)
def test_unwritable_summary_path_is_refused_before_the_run(
    tmp_path: Path, spawned: list[StderrLines], summary: str, reason: str
) -> None:
    log = _watch(
        spawned, ["run", "--metrics-port", "0", "--duration", "30", "--summary", summary],
        tmp_path,
    )
    assert log.finish() == 2
    records = log.records()
    assert len(records) == 1
    assert reason in _failed(records)["msg"]


def test_summary_that_cannot_be_written_at_exit_fails_with_one_line(
    tmp_path: Path, spawned: list[StderrLines]
) -> None:
    # Passes the check at start (the directory exists), then is gone when the run ends.
    target = tmp_path / "out"
    target.mkdir()
    log = _watch(
        spawned, ["run", "--metrics-port", "0", "--summary", str(target / "s.json")], tmp_path
    )
    proc = log.proc
    log.wait_for(lambda r: r.get("msg") == "tickflow ready", "ready")
    shutil.rmtree(target)
    proc.send_signal(signal.SIGTERM)
    assert log.finish() == 1
    assert "cannot write --summary" in _failed(log.records())["msg"]


def test_ctrl_c_during_replay_ends_with_one_line(
    tmp_path: Path, spawned: list[StderrLines]
) -> None:
    ticks = tmp_path / "ticks.csv"
    # 100 rows a second at --speed 1: long enough to be interrupted mid-file.
    rows = "".join(f"S{i % 7},{1700000000 + i * 0.01:.2f},{100 + i % 5},1\n" for i in range(20000))
    ticks.write_text("symbol,ts,price,volume\n" + rows)
    log = _watch(spawned, ["replay", str(ticks), "--speed", "1"], tmp_path)
    proc = log.proc
    progress = log.wait_for(lambda r: r.get("logger") == "tickflow.replay", "progress", 60)
    assert 0 < progress["done"] < 20000
    proc.send_signal(signal.SIGINT)
    assert log.finish() == 130
    assert _failed(log.records())["msg"] == "tickflow failed: interrupted (SIGINT)"


def _can_mount_tmpfs(where: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
                           capture_output=True, timeout=30)
    if probe.returncode != 0:
        return False
    subprocess.run(["umount", str(where)], check=True, timeout=30)
    return True


def test_disk_full_ends_with_one_line(tmp_path: Path, spawned: list[StderrLines]) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if not _can_mount_tmpfs(mnt):
        pytest.skip("needs root and tmpfs mounts to fill a disk")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True,
                   timeout=30)
    try:
        log = _watch(spawned, ["run", "--metrics-port", "0", "--duration", "60"], mnt)
        log.wait_for(lambda r: r.get("msg") == "tickflow ready", "ready")
        with (  # noqa: PT012 - the loop is the fill
            pytest.raises(OSError, match="No space"),
            (mnt / "filler").open("wb", buffering=0) as filler,
        ):
            while True:  # bounded by the 4 MiB of the file system
                filler.write(b"\0" * 65536)
        assert log.finish() == 1
        failed = _failed(log.records())
        assert "disk is full" in failed["msg"]
        assert "tickflow.db" in failed["msg"]
    finally:
        for log in spawned:
            log.close()
        subprocess.run(["umount", "-l", str(mnt)], timeout=30)
