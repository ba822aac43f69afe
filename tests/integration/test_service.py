"""`tickflow run` as systemd runs it: sd_notify, signals, reload, drain (real subprocesses)."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.integration.daemon import TICKFLOW
from tests.integration.service_support import (
    REPO,
    Daemon,
    NotifySink,
    http,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.slow

UNIT = REPO / "config" / "systemd" / "tickflow.service"


@pytest.fixture(params=["path", "abstract"])
def sink(request: pytest.FixtureRequest) -> Iterator[NotifySink]:
    s = NotifySink(abstract=request.param == "abstract")
    try:
        yield s
    finally:
        s.close()


def _runs_by_state(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT state, COUNT(*) FROM runs GROUP BY state").fetchall())
    finally:
        conn.close()


def test_notify_ready_watchdog_reload_stopping(tmp_path: Path, sink: NotifySink) -> None:
    config = tmp_path / "tickflow.toml"
    write_config(config, db=tmp_path / "state" / "t.db")
    # WATCHDOG_USEC = 200 ms: a ping every 100 ms.
    env = {"NOTIFY_SOCKET": sink.address, "WATCHDOG_USEC": "200000"}
    daemon = Daemon(config, tmp_path, env=env)
    try:
        daemon.start()
        ready = sink.wait_for("READY", "1")
        assert ready
        pings = sink.wait_for("WATCHDOG", "1", count=12)
        after_ready = [at for at, _ in pings if at >= ready[0][0]]
        gaps = [b - a for a, b in itertools.pairwise(after_ready)]
        assert len(gaps) >= 5
        assert 0.07 <= statistics.median(gaps) <= 0.2, gaps
        status = sink.wait_for("STATUS")
        assert any("events/s" in m["STATUS"] for _, m in status), status

        # SIGHUP with a changed, valid file: RELOADING=1 (+ MONOTONIC_USEC) then READY=1.
        write_config(config, db=tmp_path / "state" / "t.db", max_concurrent=3)
        daemon.proc.send_signal(signal.SIGHUP)
        reloading = sink.wait_for("RELOADING", "1")
        assert int(reloading[0][1]["MONOTONIC_USEC"]) > 0
        wait_until(lambda: len(sink.with_key("READY", "1")) >= 2, "READY=1 after the reload")
        assert sink.with_key("READY", "1")[1][0] >= reloading[0][0]

        daemon.proc.send_signal(signal.SIGTERM)
        sink.wait_for("STOPPING", "1")
        assert daemon.proc.wait(timeout=30) == 0
    finally:
        daemon.close()


def test_sigterm_drains_running_steps_and_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "state" / "t.db"
    config = tmp_path / "tickflow.toml"
    write_config(config, db=db, sleep_s=0.5, drain_timeout_s=20.0)
    summary = tmp_path / "summary.json"
    daemon = Daemon(config, tmp_path, args=("--summary", str(summary)))
    try:
        daemon.start()
        wait_until(lambda: daemon.status()["runs_in_flight"] > 0, "runs in flight")
        wait_until(lambda: daemon.status()["agents"]["busy"] > 0, "a step running")
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=40) == 0
    finally:
        daemon.close()
    data = orjson.loads(summary.read_bytes())
    assert data["runs_in_flight"] == 0
    completed = data["runs"]["slow"]["completed"]
    assert completed > 0
    assert data["runs"]["slow"]["cancelled"] == 0  # the drain let every step finish
    states = _runs_by_state(db)
    assert states == {"completed": completed}, states


def test_drain_deadline_records_what_it_cancels(tmp_path: Path) -> None:
    db = tmp_path / "state" / "t.db"
    config = tmp_path / "tickflow.toml"
    write_config(config, db=db, sleep_s=30.0, drain_timeout_s=0.3)
    daemon = Daemon(config, tmp_path)
    try:
        daemon.start()
        wait_until(lambda: daemon.status()["agents"]["busy"] > 0, "a step running")
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=30) == 0
    finally:
        daemon.close()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT state, outcome, error FROM runs").fetchall()
    finally:
        conn.close()
    assert rows
    # Recorded as cut by the deadline, and left in flight: the next start resumes these runs
    # under their own ids (docs/storage.md) instead of redoing them under new ones.
    assert {(state, outcome) for state, outcome, _ in rows} == {("running", None)}, rows
    assert all("drain deadline passed" in (error or "") for _, _, error in rows), rows
    assert all("resumed at the next start" in (error or "") for _, _, error in rows), rows


def test_second_sigint_exits_at_once(tmp_path: Path) -> None:
    config = tmp_path / "tickflow.toml"
    write_config(config, db=tmp_path / "state" / "t.db", sleep_s=60.0, drain_timeout_s=60.0)
    daemon = Daemon(config, tmp_path)
    try:
        daemon.start()
        wait_until(lambda: daemon.status()["agents"]["busy"] > 0, "a step running")
        daemon.proc.send_signal(signal.SIGINT)
        daemon.wait_log("SIGINT received: draining")
        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGINT)
        assert daemon.proc.wait(timeout=10) == 130
        assert time.monotonic() - started < 5  # not the 60 s drain
        daemon.wait_log("second SIGINT: stopping at once")
    finally:
        daemon.close()


def _reloads(daemon: Daemon, outcome: str) -> float:
    code, text = http("GET", daemon.url("/metrics"))
    assert code == 200
    prefix = f'tickflow_config_reloads_total{{outcome="{outcome}"}} '
    for line in str(text).splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    raise AssertionError(f"no {prefix!r} in /metrics")


def test_sighup_valid_config_applies_to_new_runs(tmp_path: Path) -> None:
    config = tmp_path / "tickflow.toml"
    db = tmp_path / "state" / "t.db"
    write_config(config, db=db)
    daemon = Daemon(config, tmp_path)
    try:
        daemon.start()
        before = daemon.status()
        assert set(before["workflows"]) == {"slow"}
        assert before["workflows"]["slow"]["max_concurrent"] == 2

        write_config(config, db=db, max_concurrent=3, extra_workflow=True)
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: daemon.status()["config_version"] != before["config_version"],
                   "the new config version in /status")
        after = daemon.status()
        assert after["workflows"]["slow"]["max_concurrent"] == 3
        assert "extra" in after["workflows"]
        assert after["last_reload"]["workflows_added"] == ["extra"]
        assert after["reloads"]["success"] == 1
        # New runs use the new workflow.
        wait_until(lambda: daemon.status()["runs"].get("extra", {}).get("completed", 0) > 0,
                   "a completed run of the added workflow")
        assert _reloads(daemon, "success") == 1
        assert daemon.proc.poll() is None
    finally:
        daemon.close()


def test_sighup_invalid_config_keeps_the_old_one(tmp_path: Path) -> None:
    config = tmp_path / "tickflow.toml"
    db = tmp_path / "state" / "t.db"
    write_config(config, db=db)
    daemon = Daemon(config, tmp_path)
    try:
        daemon.start()
        before = daemon.status()
        config.write_text("[workflows.w]\npriority = 0\nmax_concurrent = 0\n")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: _reloads(daemon, "invalid") == 1, "the invalid-reload counter")
        record = daemon.wait_log("config reload refused, keeping the running config")
        assert str(config) in record["error"]
        after = daemon.status()
        assert after["config_version"] == before["config_version"]
        assert after["workflows"] == {
            "slow": {**after["workflows"]["slow"], "max_concurrent": 2, "paused": False}
        }
        assert _reloads(daemon, "success") == 0
        code, _ = http("GET", daemon.url("/healthz"))
        assert code == 200
        assert daemon.proc.poll() is None
        # Still working: runs keep completing after the refused reload.
        done = after["runs"]["slow"]["completed"]
        wait_until(lambda: daemon.status()["runs"]["slow"]["completed"] > done, "more runs")
    finally:
        daemon.close()


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    assert tool is not None, "systemd-analyze missing: run `make system-deps`"
    # verify also checks that ExecStart= is executable: point it at this venv's tickflow
    # instead of /opt/tickflow/venv (everything else is verified as shipped).
    installed = "/opt/tickflow/venv/bin/tickflow"
    text = UNIT.read_text()
    assert f"ExecStart={installed} " in text
    local = Path(sys.executable).parent / "tickflow"
    assert local.exists()
    unit = tmp_path / "tickflow.service"
    unit.write_text(text.replace(installed, str(local)))
    proc = subprocess.run(
        [tool, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (proc.stdout + proc.stderr).strip(), proc.stdout + proc.stderr
    for setting in ("Type=notify", "WatchdogSec=", "Restart=on-failure",
                    "StateDirectory=tickflow", "DynamicUser=yes", "ProtectSystem=strict",
                    "NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectHome=yes",
                    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "ExecReload="):
        assert setting in text, setting


def test_status_command_asks_the_daemon_then_falls_back_to_the_database(tmp_path: Path) -> None:
    db = tmp_path / "state" / "tickflow.db"  # where `tickflow status` looks from tmp_path
    config = tmp_path / "tickflow.toml"
    write_config(config, db=db)
    daemon = Daemon(config, tmp_path)
    try:
        daemon.start()
        live = subprocess.run(
            [*TICKFLOW, "status", "--url", daemon.url(""), "--json"],
            cwd=tmp_path, capture_output=True, timeout=60,
        )
        assert live.returncode == 0, live.stderr
        doc = orjson.loads(live.stdout)
        assert set(doc["workflows"]) == {"slow"}
        assert "agents" in doc
        text = subprocess.run(
            [*TICKFLOW, "status", "--url", daemon.url("")],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )
        assert text.returncode == 0, text.stderr
        assert "slow" in text.stdout
        assert "agents" in text.stdout
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=30) == 0
    finally:
        daemon.close()
    # An explicit --url that does not answer is an error; the default URL falls back to the db.
    dead = subprocess.run([*TICKFLOW, "status", "--url", daemon.url("")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert dead.returncode == 1
    offline = subprocess.run(
        [*TICKFLOW, "status", "--json"], cwd=tmp_path, capture_output=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert offline.returncode == 0, offline.stderr
    assert orjson.loads(offline.stdout)["runs_by_state"]["completed"] > 0
