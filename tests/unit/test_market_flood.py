"""The market-data flood benchmark at its smallest size: its feed model, its scenarios through
engine_load's table, and the whole two-design run in real subprocesses.

No speed is asserted anywhere (figures are for ``python -m benchmarks.market_flood``): only that
the harness measures what it says -- finite staleness quantiles for both designs, decisions,
a peak RSS of each design's own process -- and refuses sizes that measure nothing.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import engine_load, market_flood, market_workload
from benchmarks.charts import cdf_points
from benchmarks.market_flood import FloodSettings
from benchmarks.market_workload import Feed, TickStream

ROOT = Path(__file__).resolve().parents[2]
TINY = engine_load.Settings(warmup_s=0.02, duration_s=0.1, in_flight=32, seed=3)


def _seqs(spans: list[range]) -> list[int]:
    return [seq for span in spans for seq in span]


def test_feed_reads_at_most_a_batch_per_turn_in_arrival_order() -> None:
    feed = Feed(rate=1000.0, start=0.0, capacity=10_000, batch=100)
    assert _seqs(feed.read(0.25)) == list(range(0, 100))  # 250 arrived
    assert _seqs(feed.read(0.25)) == list(range(100, 200))
    assert (feed.arrived, feed.taken, feed.buffered, feed.dropped) == (250, 200, 50, 0)
    # 50 more arrive: the 100 buffered fit one batch, across the two arrivals.
    assert _seqs(feed.read(0.3)) == list(range(200, 300))
    assert feed.buffered == 0
    assert feed.read(0.3) == []


def test_feed_drops_what_arrives_while_the_buffer_is_full() -> None:
    feed = Feed(rate=1000.0, start=0.0, capacity=100, batch=30)
    # 1000 arrived, 100 fit: the first 100 are kept, the rest dropped.
    assert _seqs(feed.read(1.0)) == list(range(0, 30))
    assert feed.dropped == 900
    # 50 arrive into 70 buffered: 30 fit, 20 dropped.
    assert _seqs(feed.read(1.05)) == list(range(30, 60))
    assert feed.dropped == 920
    rest: list[int] = []
    while feed.buffered:
        rest += _seqs(feed.read(1.05))
    # What was kept: ticks 60..99, then the first 30 of the second arrival (1000..1029).
    assert rest == list(range(60, 100)) + list(range(1000, 1030))
    assert feed.taken + feed.buffered + feed.dropped == feed.arrived


def test_tick_stream_is_the_same_for_the_same_seed() -> None:
    a, b, c = TickStream(7, length=500), TickStream(7, length=500), TickStream(8, length=500)
    assert (a.index, a.price) == (b.index, b.price)
    assert a.index != c.index
    assert len(a.names) == market_workload.SYMBOLS == 2000
    assert all(p > 0 for p in a.price)


@pytest.mark.parametrize("design", market_flood.DESIGNS)
def test_the_flood_scenario_runs_through_the_engine_load_table(design: str) -> None:
    assert "market_flood" in engine_load.SCENARIOS
    assert "market_saturation" in engine_load.SCENARIOS
    sat = engine_load.run_scenario("market_saturation", design, TINY)
    assert sat["decisions_per_s"] > 0
    result = engine_load.run_scenario("market_flood", design, TINY, 5 * sat["decisions_per_s"])
    staleness = result["staleness"]
    assert staleness["samples"] > 0
    assert 0 < staleness["p50_us"] <= staleness["p99_us"] < math.inf
    assert result["decisions_per_s"] > 0
    assert result["taken_per_s"] > 0
    if design == "baseline":
        assert result["conflated"] == 0  # the baseline has no conflation to speak of
    xs, ys = cdf_points(staleness)
    assert ys[-1] == pytest.approx(1.0)
    assert xs == sorted(xs)


def test_bad_sizes_and_designs_are_refused_with_the_knob_named() -> None:
    for bad, knob in ((FloodSettings(duration_s=0.0), "duration_s"),
                      (FloodSettings(factor=math.nan), "factor"),
                      (FloodSettings(saturation_s=math.inf), "saturation_s"),
                      (FloodSettings(warmup_s=-1.0), "warmup_s")):
        with pytest.raises(ValueError, match=knob):
            bad.check()
    with pytest.raises(ValueError, match="rounds"):
        FloodSettings(rounds=0).check()
    with pytest.raises(ValueError, match="unknown design 'baseline-job'"):
        market_workload.make_subject("baseline-job")
    with pytest.raises(ValueError, match="rate > 0"):
        engine_load.run_scenario("market_flood", "tickflow", TINY, 0.0)


@pytest.mark.slow
def test_smallest_run_gives_finite_staleness_for_both_designs_in_own_processes() -> None:
    lines: list[str] = []
    data = market_flood.run(
        FloodSettings(duration_s=0.3, warmup_s=0.05, saturation_s=0.15), log=lines.append)
    summary = data["summary"]
    assert set(summary) == {"tickflow", "baseline"}
    rate = data["rounds"][0]["rate"]
    assert rate == pytest.approx(5 * max(
        data["rounds"][0]["saturation"][d]["decisions_per_s"] for d in market_flood.DESIGNS))
    for design, s in summary.items():
        st = s["staleness"]
        assert st["samples"] > 0, design
        assert 0 < st["p50_us"] <= st["p99_us"] < math.inf, design
        assert s["decisions_per_s"] > 0, design
        assert s["offered_per_s"] == pytest.approx(rate)
        # Each design's own process: the RSS of a Python running the engine, not zero.
        assert s["peak_rss_mib"] > 20, design
    assert summary["tickflow"]["conflated"] > 0  # 5x overload on 2,000 symbols conflates
    assert len(lines) == 4  # two saturations, two floods
    table = market_flood.format_table(data)
    assert "staleness p99 (ms)" in table


def test_the_command_refuses_a_bad_duration() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.market_flood", "--duration", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2
    assert "--duration: must be a finite number > 0, got 0" in proc.stderr
