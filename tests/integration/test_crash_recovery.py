"""SIGKILL the daemon at randomised points, restart it, and check the durability contract.

Contract (docs/storage.md): an event is accepted once its journal record is committed. After any
number of kill -9s and a final clean stop, every accepted event has produced its runs (the
latest tick of every symbol was processed by each workflow routed to it -- conflation lets a newer
tick stand in for older ones), no run was completed twice for the same trigger, nothing is left in
flight, and the books add up: no client order id filled twice, positions equal the sum of fills.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.daemon import start, wait_for_log

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KILLS = 22
SEED = 20261122


def _config(tmp_path: Path, db: Path) -> Path:
    text = (ROOT / "config" / "default.toml").read_text()
    text = text.replace("tick_rate_hz = 200.0", "tick_rate_hz = 3000.0")
    assert "tick_rate_hz = 3000.0" in text
    config = tmp_path / "crash.toml"
    config.write_text(
        text + f'\n[metrics]\nenabled = false\n\n[storage]\npath = "{db}"\n'
        "commit_interval_ms = 1.0\n"
    )
    return config


def _query(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _journal_count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        return int(_query(db, "SELECT COUNT(*) FROM journal")[0][0])
    except sqlite3.OperationalError:  # schema not created yet by the starting daemon
        return 0


def _wait_journal(
    db: Path, target: int, proc: subprocess.Popen[bytes], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while _journal_count(db) < target:
        assert proc.poll() is None, "the daemon died on its own"
        assert time.monotonic() < deadline, f"journal never reached {target} events"


def test_kill_9_at_random_points_loses_no_accepted_event_and_fills_nothing_twice(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state" / "tickflow.db"
    config = _config(tmp_path, db)
    rng = random.Random(SEED)
    recovered = 0
    for _ in range(KILLS):
        before = _journal_count(db)
        with start(["run", "--config", str(config)], cwd=tmp_path) as proc:
            try:
                record = wait_for_log(proc, "recovered state from " + str(db))
                # Work found in flight: stored runs resumed or restarted, and symbols whose run
                # had not stored any progress yet (recovery triggers those again).
                recovered += (
                    record["runs_resumed"] + record["runs_restarted"] + record["symbols_waiting"]
                )
                # A kill point: somewhere between a few and a few hundred accepted events in.
                _wait_journal(db, before + rng.randint(5, 400), proc)
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
    assert recovered > 0, "no kill ever landed with work in flight: the test proves nothing"

    # A last clean run: recover, take a few more events, stop with SIGTERM and drain.
    before = _journal_count(db)
    with start(["run", "--config", str(config)], cwd=tmp_path) as proc:
        try:
            wait_for_log(proc, "recovered state from " + str(db))
            _wait_journal(db, before + 200, proc)
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            assert proc.stderr is not None
            assert code == 0, proc.stderr.read().decode()[-4000:]
        finally:
            if proc.poll() is None:
                proc.kill()

    # Nothing is left in flight, and nothing left waiting.
    assert _query(db, "SELECT COUNT(*) FROM runs WHERE state IN ('pending', 'running')") == [(0,)]
    assert _query(db, "SELECT COUNT(*) FROM symbols WHERE phase = 'data_ready'") == [(0,)]
    # No run was completed twice for one trigger.
    assert _query(
        db,
        "SELECT workflow, symbol, tick_ts, COUNT(*) FROM runs WHERE state = 'completed' "
        "GROUP BY workflow, symbol, tick_ts HAVING COUNT(*) > 1",
    ) == []
    # Every accepted event produced its runs: the latest journaled tick of each symbol was
    # processed by the workflow its priority routes it to.
    latest = dict(_query(
        db,
        "SELECT symbol, MAX(json_extract(payload, '$.ts')) FROM journal "
        "WHERE type = 'DATA_READY' GROUP BY symbol",
    ))
    priority = dict(_query(db, "SELECT name, priority FROM symbols"))
    processed = {
        (wf, sym): ts
        for wf, sym, ts in _query(
            db, "SELECT workflow, symbol, MAX(tick_ts) FROM runs WHERE state = 'completed' "
            "GROUP BY workflow, symbol",
        )
    }
    assert len(latest) == 20
    for symbol, ts in latest.items():
        workflow = "high_freq_trading" if priority[symbol] == 0 else "trend_trading"
        assert processed.get((workflow, symbol)) == ts, (symbol, workflow, ts)
    # The books add up: each client order id filled at most once (primary key), every fill has
    # its order, the account saw exactly these fills, and positions are the sum of the fills.
    fills = _query(db, "SELECT COUNT(*), COUNT(DISTINCT client_order_id) FROM fills")[0]
    assert fills[0] == fills[1] > 0
    assert _query(
        db, "SELECT COUNT(*) FROM fills WHERE client_order_id NOT IN (SELECT client_order_id "
        "FROM orders)"
    ) == [(0,)]
    assert _query(db, "SELECT fill_count FROM account") == [(fills[0],)]
    for symbol, qty, from_fills in _query(
        db,
        "SELECT p.symbol, p.qty, COALESCE((SELECT SUM(CASE f.side WHEN 'BUY' THEN f.qty "
        "ELSE -f.qty END) FROM fills f WHERE f.symbol = p.symbol), 0) FROM positions p",
    ):
        assert abs(qty - from_fills) < 1e-6, (symbol, qty, from_fills)
