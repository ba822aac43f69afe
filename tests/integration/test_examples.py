"""examples/meanrev: a user strategy package beside its config, validated and run by the real
``tickflow`` command from an unrelated working directory, with nothing on ``PYTHONPATH`` but
tickflow itself."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import orjson
import pytest

import engine
from tests.integration.daemon import TICKFLOW

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "meanrev"
DIAMOND = ("snapshot", "fair_value", "volatility", "decide")


def clean_env() -> dict[str, str]:
    """The environment without any path to the example: only tickflow's own source root (an
    installed tickflow needs none; a source checkout run without installing needs its root)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    root = Path(engine.__file__).resolve().parents[1]
    # The example's folder is not a package root: `meanrev_strategies` is importable only
    # through the config's [strategies] paths.
    env["PYTHONPATH"] = str(root)
    return env


def tickflow(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*TICKFLOW, *args], cwd=cwd, env=clean_env(), capture_output=True,
                          timeout=timeout)


def test_the_example_validates_from_another_directory(tmp_path: Path) -> None:
    proc = tickflow(["validate", str(EXAMPLE / "tickflow.toml")], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    out = proc.stdout.decode()
    for name in ("high_freq_trading", "trend_trading", "meanrev", *DIAMOND):
        assert name in out
    assert "meanrev_strategies.steps:decide" in out


def test_a_copy_with_broken_params_is_refused_with_file_and_key(tmp_path: Path) -> None:
    copy = tmp_path / "meanrev"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__", "state"))
    config = copy / "tickflow.toml"
    text = config.read_text()
    broken = text.replace("params = { z_entry = 2.0, threshold = 0.5 }",
                          "params = { z_entry = -1, threshold = 0.5 }")
    assert broken != text
    config.write_text(broken)
    proc = tickflow(["validate", str(config)], cwd=tmp_path)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert f"{config}: at $.workflows.high_freq_trading.steps[1].params.z_entry: " in err
    assert "> 0.0, got -1" in err

    config.write_text(text.replace("entry_z = 2.0, exit_z", "entry_zz = 2.0, exit_z"))
    proc = tickflow(["validate", str(config)], cwd=tmp_path)
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "at $.workflows.meanrev.steps[3].params.entry_zz: unknown param" in err
    assert "did you mean `entry_z`?" in err


def test_the_example_runs_its_diamond_for_ten_seconds(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    proc = tickflow(
        ["run", "--config", str(EXAMPLE / "tickflow.toml"), "--duration", "10",
         "--summary", str(summary), "--metrics-port", "0"],
        cwd=tmp_path, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    data = orjson.loads(summary.read_bytes())
    runs = data["runs"]["meanrev"]
    assert runs["completed"] > 0
    assert runs["failed"] == 0
    # Every completed run went through all four steps of the diamond.
    for step in DIAMOND:
        assert data["steps"][f"meanrev.{step}"]["completed"] == runs["completed"], step
    assert data["runs"]["high_freq_trading"]["completed"] > 0
    assert data["orders"]["submitted"] == data["orders"]["fills"]
    # The run wrote its state under the working directory, not beside the example.
    assert (tmp_path / "state" / "meanrev.db").exists()
