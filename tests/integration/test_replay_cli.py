"""`tickflow replay FILE`: an embedded engine fed from a recorded file, progress and summary."""

from __future__ import annotations

import io
import sqlite3
import subprocess
from pathlib import Path

import orjson
import pytest

from engine.service.replay_cmd import Progress
from tests.integration.daemon import TICKFLOW

pytestmark = pytest.mark.slow

CSV = """symbol,ts,price,volume
AAA,1700000000.0,100.0,5
BBB,1700000000.1,50.0,1
AAA,1700000000.2,abc,1
CCC,1700000000.3,20.0,1
DDD,1700000000.4,,1
"""


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TICKFLOW, "--log-level", "error", "replay", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )


def test_csv_summary_and_progress(tmp_path: Path) -> None:
    ticks = tmp_path / "ticks.csv"
    ticks.write_text(CSV)
    proc = _run(str(ticks), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = orjson.loads(proc.stdout)
    events = summary["events"]
    assert events["received"] == {"DATA_READY": 3}
    assert events["rejected"] == {"bad_field": 1, "missing_field": 1}
    # Default config: AAA..DDD are new symbols at default priority 2 -> trend_trading only.
    assert summary["runs"]["trend_trading"] == {"completed": 3}
    assert summary["runs"]["high_freq_trading"] == {}
    assert summary["runs_in_flight"] == 0
    assert summary["orders"]["submitted"] == summary["orders"]["fills"]
    # Not a TTY, JSON logs: progress lines are JSON objects too, the last one complete.
    last = orjson.loads(proc.stderr.strip().splitlines()[-1])
    assert last["msg"].startswith("replay 5/5 lines (100.0%)"), proc.stderr
    assert (last["done"], last["total"]) == (5, 5)
    assert "\r" not in proc.stderr


def test_jsonl_text_summary_with_db(tmp_path: Path) -> None:
    ticks = tmp_path / "ticks.jsonl"
    lines = [
        {"type": "HIGH_PRIORITY_ARRIVED", "symbol": "HOT", "priority": 0},
        {"symbol": "HOT", "ts": 1700000000.0, "price": 10.0, "bid": 9.99, "ask": 10.01},
        {"symbol": "COLD", "ts": 1700000000.5, "price": 20.0},
        "garbage",
    ]
    ticks.write_bytes(
        b"\n".join(orjson.dumps(x) if not isinstance(x, str) else x.encode() for x in lines)
        + b"\n"
    )
    db = tmp_path / "replay.db"
    proc = _run(str(ticks), "--db", str(db), "--speed", "100", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "events: 3 accepted (DATA_READY 2, HIGH_PRIORITY_ARRIVED 1)" in out, out
    assert "rejected: malformed_json 1" in out, out
    assert "high_freq_trading: completed 1" in out, out
    assert "trend_trading: completed 1" in out, out
    assert "orders:" in out
    assert "replay 4/4 lines" in proc.stderr
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        states = dict(conn.execute("SELECT state, COUNT(*) FROM runs GROUP BY state"))
    finally:
        conn.close()
    assert states == {"completed": 2}


def test_missing_file_and_bad_header_fail_cleanly(tmp_path: Path) -> None:
    proc = _run(str(tmp_path / "nope.csv"), cwd=tmp_path)
    assert proc.returncode == 1
    assert "nope.csv" in proc.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("sym,when\nA,1\n")
    proc = _run(str(bad), cwd=tmp_path)
    assert proc.returncode == 1
    assert "lacks column" in proc.stderr


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_line_on_a_terminal_is_rewritten_in_place() -> None:
    stream = _Tty()
    progress = Progress(200, stream)
    progress.started -= 2.0  # 2 s elapsed
    progress.show(50)
    progress.show(200, final=True)
    text = stream.getvalue()
    assert text.startswith("\r\x1b[K")
    assert "[######------------------] 50/200 lines ( 25.0%)" in text
    assert "ETA 00:0" in text
    assert text.endswith("\n")
    assert text.count("\n") == 1
    plain = io.StringIO()
    Progress(10, plain).show(5)
    assert plain.getvalue().startswith("replay 5/10 lines")
    assert plain.getvalue().endswith("\n")
