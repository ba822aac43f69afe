"""`tickflow run`, `tickflow validate` as real subprocesses."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.integration.daemon import TICKFLOW, start, wait_for_log

pytestmark = pytest.mark.slow


def test_run_with_duration_writes_a_summary_with_both_workflows(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    # From an unrelated working directory: the default config ships inside the package.
    proc = subprocess.run(
        [*TICKFLOW, "run", "--duration", "5", "--summary", str(summary), "--metrics-port", "0"],
        cwd=tmp_path, capture_output=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    data = orjson.loads(summary.read_bytes())
    runs = data["runs"]
    assert runs["high_freq_trading"]["completed"] > 0
    assert runs["trend_trading"]["completed"] > 0
    assert runs["high_freq_trading"]["failed"] == 0
    assert data["events"]["received"]["DATA_READY"] > 0
    for wf in ("high_freq_trading", "trend_trading"):
        latency = data["latency"]["run"][wf]
        assert latency["count"] == runs[wf]["completed"]
        assert 0 < latency["p50_s"] <= latency["p99_s"] <= latency["p999_s"] <= latency["max_s"]
        assert data["latency"]["dispatch_wait"][wf]["count"] > 0
    assert data["orders"]["submitted"] == data["orders"]["fills"]
    assert set(data["pnl"]) == {"cash", "realized", "unrealized", "fees", "equity"}
    assert data["steps"]["high_freq_trading.execute_order"]["completed"] == (
        runs["high_freq_trading"]["completed"]
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_and_still_writes_the_summary(tmp_path: Path, sig: int) -> None:
    summary = tmp_path / "summary.json"
    with start(["run", "--summary", str(summary), "--metrics-port", "0"], cwd=tmp_path) as proc:
        try:
            wait_for_log(proc, "tickflow starting")
            proc.send_signal(sig)
            wait_for_log(proc, "tickflow stopped")
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    data = orjson.loads(summary.read_bytes())
    assert data["runs_in_flight"] == 0


def test_run_refuses_a_broken_config_naming_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        "[workflows.w]\npriority = 0\nmax_concurrent = 0\n"
        '[[workflows.w.steps]]\nname = "a"\naction = "strategies.hft:collect_data"\n'
    )
    proc = subprocess.run([*TICKFLOW, "run", "--config", str(bad), "--duration", "1"],
                          cwd=tmp_path, capture_output=True, timeout=60)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert str(bad) in err
    assert "$.workflows.w.max_concurrent" in err


def test_validate_prints_a_summary_or_the_error(tmp_path: Path) -> None:
    ok = subprocess.run([*TICKFLOW, "validate"], cwd=tmp_path, capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stderr.decode()
    out = ok.stdout.decode()
    assert "high_freq_trading" in out
    assert "trend_trading" in out
    assert "execute_order" in out
    bad = tmp_path / "cycle.toml"
    bad.write_text(
        "[workflows.w]\npriority = 0\nmax_concurrent = 1\n"
        '[[workflows.w.steps]]\nname = "a"\naction = "strategies.hft:collect_data"\n'
        'depends_on = ["b"]\n'
        '[[workflows.w.steps]]\nname = "b"\naction = "strategies.hft:collect_data"\n'
        'depends_on = ["a"]\n'
    )
    proc = subprocess.run([*TICKFLOW, "validate", str(bad)], cwd=tmp_path,
                          capture_output=True, timeout=60)
    assert proc.returncode == 1
    assert "dependency cycle" in proc.stderr.decode()


def test_version_and_help() -> None:
    out = subprocess.run([*TICKFLOW, "--version"], capture_output=True, check=True, timeout=60)
    assert out.stdout.decode().startswith("tickflow ")
    out = subprocess.run([*TICKFLOW, "--help"], capture_output=True, check=True, timeout=60)
    for command in ("run", "validate"):
        assert command in out.stdout.decode()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"definitely not a database" * 200, "not a tickflow database or corrupted"),
        (b"SQLite format 3\x00" + b"\x00" * 90 + b"\xff" * 4000, "not a tickflow database"),
    ],
)
def test_run_refuses_a_corrupted_database_and_leaves_it_untouched(
    tmp_path: Path, content: bytes, message: str
) -> None:
    db = tmp_path / "state" / "tickflow.db"
    db.parent.mkdir()
    db.write_bytes(content)
    proc = subprocess.run(
        [*TICKFLOW, "run", "--duration", "5", "--metrics-port", "0"],
        cwd=tmp_path, capture_output=True, timeout=60,
    )
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "tickflow failed" in err
    assert str(Path("state") / "tickflow.db") in err
    assert message in err
    assert db.read_bytes() == content
