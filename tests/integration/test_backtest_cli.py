"""`tickflow backtest` as a user runs it: real subprocesses, the digest, the report, DBN input."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import orjson
import pytest

from benchmarks.bench_backtest import write_ticks
from engine.service.cli import DEFAULT_CONFIG
from tests.integration.daemon import TICKFLOW

pytestmark = pytest.mark.slow

DIGEST = re.compile(r"^digest: (sha256:[0-9a-f]{64})$", re.MULTILINE)


def _backtest(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TICKFLOW, "--log-level", "error", "backtest", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
        env=None if env is None else {**os.environ, **env},
    )


@pytest.fixture(scope="module")
def ticks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bt")
    return write_ticks(root / "ticks.csv", 3000, rate_hz=300.0, seed=11)


def test_three_runs_one_digest_and_a_param_changes_it(ticks: Path, tmp_path: Path) -> None:
    digests = []
    # The third run on the pure-Python twins of the compiled cores: the same numbers.
    for env in (None, None, {"TICKFLOW_NO_EXTENSIONS": "1"}):
        proc = _backtest(str(ticks), cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        match = DIGEST.search(proc.stdout)
        assert match, proc.stdout
        digests.append(match.group(1))
    assert len(set(digests)) == 1
    assert "fills:" in proc.stdout
    assert "P&L:" in proc.stdout
    # The same data with one strategy param changed trades differently.
    text = DEFAULT_CONFIG.read_text()
    marker = 'depends_on = ["collect_data"]\ntimeout_ms = 50.0\n'
    assert marker in text
    changed = tmp_path / "changed.toml"
    changed.write_text(text.replace(marker, marker + "params = { z_entry = 1.0 }\n"))
    proc = _backtest(str(ticks), "--config", str(changed), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    match = DIGEST.search(proc.stdout)
    assert match
    assert match.group(1) != digests[0]


def test_report_html_references_every_png_and_charts_show_data(
    ticks: Path, tmp_path: Path
) -> None:
    from PIL import Image

    report = tmp_path / "report"
    proc = _backtest(str(ticks), "--report", str(report), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = orjson.loads(proc.stdout)
    on_disk = orjson.loads((report / "summary.json").read_bytes())
    assert on_disk == summary
    figures = summary["figures"]
    for key in ("pnl", "sharpe", "max_drawdown", "hit_rate", "turnover", "fills", "fees", "runs"):
        assert key in figures
    assert figures["fills"] > 0
    assert figures["runs"] > 0
    assert summary["digest"].startswith("sha256:")
    costs = summary["step_cost_us"]
    assert set(costs) == {
        "high_freq_trading.collect_data", "high_freq_trading.calculate_signal",
        "high_freq_trading.execute_order", "trend_trading.collect_trend_data",
        "trend_trading.calculate_trend",
    }
    assert all(us > 0 for us in costs.values())
    page = (report / "index.html").read_text()
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert len(pngs) == 4
    referenced = sorted(set(re.findall(r'<img src="([^"]+)"', page)))
    assert referenced == pngs
    for name in pngs:
        with Image.open(report / name) as img:
            assert img.format == "PNG"
            width, height = img.size
            assert width >= 400
            assert height >= 200
            colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is not None
            assert len(colours) > 16, f"{name} is nearly flat"
            # Not all background: a real share of the pixels are drawn.
            background = max(colours)[0]
            assert background < 0.97 * width * height, f"{name} is nearly empty"
    assert summary["digest"] in page
    assert page.count("<tr><td>") == min(figures["fills"], 1000)  # the trades table


def test_dbn_zst_backtest(tmp_path: Path) -> None:
    dbn = pytest.importorskip("databento_dbn")
    t0 = 1_700_000_000_000_000_000
    metadata = dbn.Metadata(
        dataset="XNAS.ITCH", start=t0, stype_in=dbn.SType.RAW_SYMBOL,
        stype_out=dbn.SType.INSTRUMENT_ID, schema=dbn.Schema.MBP_1, symbols=[],
    )
    records = []
    price = 100.0
    for i in range(400):
        price *= 1.0 + (0.001 if (i * 7919) % 11 < 5 else -0.001)
        px = round(price * 1e9)
        records.append(dbn.MBP1Msg(
            publisher_id=1, instrument_id=7 + i % 2, ts_event=t0 + i * 10_000_000, price=px,
            size=5, action=dbn.Action.TRADE, side=dbn.Side.BID, depth=0,
            ts_recv=t0 + i * 10_000_000 + 1,
            levels=dbn.BidAskPair(bid_px=px - 10**7, ask_px=px + 10**7, bid_sz=1, ask_sz=1),
        ))
    path = tmp_path / "ticks.dbn.zst"
    with path.open("wb") as out:
        transcoder = dbn.Transcoder(out, dbn.Encoding.DBN, dbn.Compression.ZSTD)
        transcoder.write(bytes(metadata) + b"".join(bytes(r) for r in records))
        transcoder.flush()
    runs = []
    for _ in range(2):
        proc = _backtest(str(path), "--json", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        runs.append(orjson.loads(proc.stdout))
    summary = runs[0]
    assert summary["events"]["received"] == {"DATA_READY": 400}
    assert summary["data"] == "dbn:ticks.dbn.zst"
    assert runs[0]["digest"] == runs[1]["digest"]


def test_bad_input_is_a_clear_error(ticks: Path, tmp_path: Path) -> None:
    proc = _backtest(str(tmp_path / "missing.csv"), cwd=tmp_path)
    assert proc.returncode == 1
    assert "missing.csv" in proc.stderr
    proc = _backtest(str(ticks), "--latency", "inline=fast", cwd=tmp_path)
    assert proc.returncode == 1
    assert "not a duration" in proc.stderr
    proc = _backtest(str(ticks), "--latency", "nope.step=1ms", cwd=tmp_path)
    assert proc.returncode == 1
    assert "no step 'nope.step'" in proc.stderr
    junk = tmp_path / "junk.dbn"
    junk.write_bytes(b"not dbn at all")
    proc = _backtest(str(junk), cwd=tmp_path)
    assert proc.returncode == 1
    assert "DBN" in proc.stderr
    dbn = pytest.importorskip("databento_dbn")
    t0 = 1_700_000_000_000_000_000
    metadata = dbn.Metadata(
        dataset="XNAS.ITCH", start=t0, stype_in=dbn.SType.RAW_SYMBOL,
        stype_out=dbn.SType.INSTRUMENT_ID, schema=dbn.Schema.TRADES, symbols=[],
    )
    trades = b"".join(
        bytes(dbn.TradeMsg(
            publisher_id=1, instrument_id=7, ts_event=t0 + i, price=(100 + i) * 10**9, size=1,
            action=dbn.Action.TRADE, side=dbn.Side.ASK, depth=0, ts_recv=t0 + i,
        ))
        for i in range(20)
    )
    cut = tmp_path / "cut.dbn"
    cut.write_bytes((bytes(metadata) + trades)[:-7])
    proc = _backtest(str(cut), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout
    assert "truncated" in proc.stderr
    assert "Traceback" not in proc.stderr
    header_only = tmp_path / "bad.csv"
    header_only.write_text("sym,time\nA,1\n")
    proc = _backtest(str(header_only), cwd=tmp_path)
    assert proc.returncode == 1
    assert "lacks column" in proc.stderr


def test_benchmark_runs_at_toy_size(capsys: pytest.CaptureFixture[str]) -> None:
    """Keeps benchmarks/bench_backtest.py from rotting; its figures are for the README."""
    from benchmarks import bench_backtest

    assert bench_backtest.main(["--ticks", "3000", "--replay-ticks", "500"]) == 0
    out = capsys.readouterr().out
    for name in ("backtest, default workflows", "backtest, no workflow", "replay --speed 0"):
        assert name in out
    assert "0 runs" in out  # the unrouted run routes nothing
