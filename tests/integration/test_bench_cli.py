"""`tickflow bench` as a user runs it: a real subprocess, the smoke size (seconds), the report.

What is checked is the report, never a speed: index.html references every PNG written (and
nothing else), each PNG decodes to a real chart (not blank), report.json holds every part, and
bad arguments are refused with a clear message before anything runs or is overwritten.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import orjson
import pytest
from matplotlib import image

from tests.integration.daemon import TICKFLOW

ROOT = Path(__file__).resolve().parents[2]
PARTS = {"engine", "market_flood", "heap", "storage", "intake"}


def _bench(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TICKFLOW, "--log-format", "text", "bench", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("bench")
    # A relative --report is the caller's directory, not the checkout's the suite runs in.
    proc = _bench("--smoke", "--report", "out/report", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "report:" in proc.stdout
    return cwd / "out" / "report"


@pytest.mark.slow
def test_index_references_every_png_and_each_is_a_real_chart(smoke_report: Path) -> None:
    html = (smoke_report / "index.html").read_text(encoding="utf-8")
    referenced = set(re.findall(r'<img src="([^"]+)"', html))
    written = {p.name for p in smoke_report.glob("*.png")}
    assert referenced == written
    assert {"latency_paced.png", "latency_flood.png", "throughput_rounds.png",
            "heap_ratios.png", "storage.png", "market_flood.png"} <= written
    for name in sorted(written):
        pixels = image.imread(smoke_report / name)
        height, width = pixels.shape[:2]
        assert height >= 300, name
        assert width >= 500, name
        rgb = np.asarray(pixels)[..., :3]
        # A chart has axes, text and data in several colours, not one flat fill.
        assert float(rgb.std()) > 0.02, name
        colours = np.unique((rgb.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
        assert len(colours) > 20, name
    for heading in ("Engine: tickflow vs the baseline pool", "Market-data flood", "Heap",
                    "Storage on vs off", "Network intake"):
        assert heading in html


@pytest.mark.slow
def test_report_json_holds_every_part(smoke_report: Path) -> None:
    report = orjson.loads((smoke_report / "report.json").read_bytes())
    assert PARTS | {"meta", "charts"} <= set(report)
    assert set(report["charts"]) == {p.name for p in smoke_report.glob("*.png")}
    meta = report["meta"]
    assert meta["size"] == "smoke"
    assert set(meta["part_wall_s"]) == PARTS
    assert {"loadavg_start", "loadavg_end", "wall_s", "git", "engine_implementation"} <= set(meta)
    engine = report["engine"]
    assert {"summary", "ratios", "targets", "rounds", "meta"} <= set(engine)
    assert engine["summary"]["paced"]["tickflow"]["dispatch"]["buckets"]  # the CDFs' source
    for design in ("tickflow", "baseline"):
        st = report["market_flood"]["summary"][design]["staleness"]
        assert 0 < st["p50_us"] <= st["p99_us"] < math.inf
    assert [s["size"] for s in report["heap"]["sizes"]] == [1_000, 10_000]
    assert {"paired_ratios", "rounds_runs_per_s"} <= set(report["storage"])
    assert len(report["intake"]["results"]) == 4


@pytest.mark.slow
def test_a_second_run_replaces_the_earlier_report(smoke_report: Path) -> None:
    before = orjson.loads((smoke_report / "report.json").read_bytes())["meta"]["started_utc"]
    stray = smoke_report / "old-chart.png"
    stray.write_bytes(b"left over from an earlier report")
    proc = _bench("--smoke", "--report", str(smoke_report), cwd=smoke_report.parent)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert not stray.exists()
    report = orjson.loads((smoke_report / "report.json").read_bytes())
    assert report["meta"]["started_utc"] >= before
    # No staging directory is left beside it.
    assert [p.name for p in smoke_report.parent.iterdir()] == [smoke_report.name]


def test_quick_and_smoke_together_are_refused(tmp_path: Path) -> None:
    proc = _bench("--quick", "--smoke", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "not allowed with argument" in proc.stderr


def test_a_source_without_benchmarks_is_refused_with_what_to_do(tmp_path: Path) -> None:
    proc = _bench("--smoke", "--source", str(tmp_path), cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "has no benchmarks/suite.py" in proc.stderr
    assert "source checkout" in proc.stderr


def test_a_report_path_that_is_a_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    proc = _bench("--smoke", "--report", str(target), cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "exists and is not a directory" in proc.stderr
    assert target.read_text() == "mine"


def test_a_directory_holding_something_else_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "docs"
    target.mkdir()
    (target / "keep.md").write_text("mine")
    proc = _bench("--smoke", "--report", str(target), cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert "non-empty directory without a report.json" in proc.stderr
    assert (target / "keep.md").read_text() == "mine"
    assert [p.name for p in target.iterdir()] == ["keep.md"]
