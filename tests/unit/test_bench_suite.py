"""The benchmark suite's own logic in-process, at the smoke size, on the heap part (a second):
a failing benchmark is reported without losing the others, and the report's HTML and charts
agree with report.json. The whole command runs in tests/integration/test_bench_cli.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from benchmarks import suite
from benchmarks.charts import cdf_points


def _missing_input(size: suite.Size, log: suite.Log) -> dict[str, Any]:
    # A real failure a benchmark can meet: its input file is not there.
    Path("/nonexistent/bench-input.csv").read_bytes()
    return {}


def test_a_failing_part_is_reported_and_the_others_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(suite.PARTS, "broken", _missing_input)
    out = tmp_path / "report"
    code = suite.main(["--size", "smoke", "--report", str(out), "--parts", "heap", "broken"])
    assert code == 1
    err = capsys.readouterr().err
    assert "tickflow bench: the broken benchmark failed: FileNotFoundError" in err
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["broken"]["error"].startswith("FileNotFoundError")
    assert [s["size"] for s in report["heap"]["sizes"]] == [1_000, 10_000]
    assert report["charts"] == ["heap_ratios.png"]
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "The broken benchmark failed" in html
    assert '<img src="heap_ratios.png"' in html


def test_a_rerun_replaces_only_an_earlier_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    lines: list[str] = []
    suite.run_suite("smoke", out, lines.append, parts=("heap",))
    first = orjson.loads((out / "report.json").read_bytes())
    assert set(first) == {"meta", "heap", "charts"}
    assert any(line.startswith("note: smoke size") for line in lines)
    # An earlier report may be replaced; the argument check says so for anything else.
    assert suite.parse_args(["--report", str(out)]).report == out
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.txt").write_text("keep")
    with pytest.raises(SystemExit):
        suite.parse_args(["--report", str(tmp_path / "other")])
    assert suite.failed_parts(first) == {}


def test_cdf_points_follow_the_buckets() -> None:
    xs, ys = cdf_points({"buckets": {"300": 1, "100": 3}})
    assert ys == [0.75, 1.0]
    assert xs[0] < xs[1]
    assert cdf_points({"buckets": {}}) == ([], [])
