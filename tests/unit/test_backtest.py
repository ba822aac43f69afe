"""The backtest engine in-process: determinism, virtual time for every timer, the latency model."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import msgspec
import pytest

from benchmarks.bench_backtest import write_ticks
from engine.config import Config, loads_config
from engine.config.loader import load_config
from engine.service.backtest import (
    Backtest,
    BacktestError,
    BacktestResult,
    LatencyModel,
    open_data,
    parse_duration,
    parse_latency,
)
from engine.service.cli import DEFAULT_CONFIG
from tests.unit import backtest_actions, gates

T0 = 1_700_000_000.0


def _run(config: Config, data: Path, **kwargs: object) -> BacktestResult:
    return Backtest(config, open_data(data), **kwargs).run()  # type: ignore[arg-type]


def test_same_data_same_fills_twice(tmp_path: Path) -> None:
    data = write_ticks(tmp_path / "t.csv", 4000, rate_hz=400.0, seed=3)
    config = load_config(DEFAULT_CONFIG)
    first, second = _run(config, data), _run(config, data)
    assert first.fills, "the default strategies should trade on a random walk"
    assert first.fills == second.fills
    assert first.positions == second.positions
    assert first.pnl == second.pnl
    assert first.digest == second.digest
    assert first.drained
    assert first.events["received"] == {"DATA_READY": 4000}
    # Fills are stamped with the data's own time, never the machine's.
    assert all(0.0 <= f.t <= first.virtual_seconds for f in first.fills)


def test_order_rate_limit_counts_virtual_seconds(tmp_path: Path) -> None:
    # Dense ticks on hot symbols: the HFT strategy wants to trade far more than once a second.
    data = write_ticks(tmp_path / "t.csv", 6000, symbols=2, hot=2, rate_hz=1000.0, seed=5)
    base = load_config(DEFAULT_CONFIG)
    config = msgspec.structs.replace(
        base, risk=msgspec.structs.replace(base.risk, max_orders_per_sec=1.0)
    )
    result = _run(config, data)
    assert result.fills
    by_symbol: dict[str, list[float]] = {}
    for fill in result.fills:
        by_symbol.setdefault(fill.symbol, []).append(fill.t)
    for times in by_symbol.values():
        # At most one order per symbol in any sliding virtual second.
        assert all(b - a > 1.0 - 1e-9 for a, b in itertools.pairwise(times))
    unlimited = _run(base, data)
    assert len(unlimited.fills) > len(result.fills)


CONFIG_TIMERS = """
[engine]
default_symbol_priority = 1

[workflows.timers]
priority = 1
max_concurrent = 4

[[workflows.timers.steps]]
name = "sleep"
action = "tests.unit.backtest_actions:async_sleeper"
timeout_ms = 100.0
retry = { count = 1, backoff_base_ms = 50.0, jitter = 0.0 }
params = { seconds = 3600.0 }
"""


def test_timeouts_and_retry_backoff_fire_in_virtual_time(tmp_path: Path) -> None:
    data = tmp_path / "one.csv"
    data.write_text(f"symbol,ts,price\nAAA,{T0},10.0\n")
    result = _run(loads_config(CONFIG_TIMERS), data, latency=LatencyModel(async_s=0.0))
    assert result.runs["timers"] == {"failed": 1}
    starts = [t for name, _, t in backtest_actions.calls() if name == "sleep"]
    # Attempt 1 at the tick, times out at +100 ms, retried after the 50 ms back-off.
    assert [round(t - T0, 6) for t in starts] == [0.0, 0.15]
    assert math.isclose(result.virtual_seconds, 0.25, abs_tol=1e-9)


CONFIG_THREADS = """
[engine]
default_symbol_priority = 1

[workflows.diamond]
priority = 1
max_concurrent = 4

[[workflows.diamond.steps]]
name = "head"
action = "tests.unit.backtest_actions:inline_probe"

[[workflows.diamond.steps]]
name = "left"
action = "tests.unit.backtest_actions:thread_probe"
depends_on = ["head"]
preemptible = false

[[workflows.diamond.steps]]
name = "right"
action = "tests.unit.backtest_actions:thread_probe"
depends_on = ["head"]
preemptible = false

[[workflows.diamond.steps]]
name = "flaky"
action = "tests.unit.backtest_actions:flaky"
depends_on = ["left", "right"]
retry = { count = 2, backoff_base_ms = 10.0 }
"""


def test_thread_steps_run_in_a_deterministic_order(tmp_path: Path) -> None:
    data = write_ticks(tmp_path / "t.csv", 300, symbols=6, hot=0, rate_hz=2000.0, seed=9)
    config = loads_config(CONFIG_THREADS)
    first = _run(config, data)
    calls = list(backtest_actions.calls())
    gates.BOARD.log.clear()
    second = _run(config, data)
    assert calls == backtest_actions.calls()
    assert first.runs == second.runs
    assert first.runs["diamond"].get("completed", 0) > 0
    assert any(name == "thread" for name, _, _ in calls)
    # Retry jitter comes from the engine's seeded generator: the same back-offs each time.
    flaky_times = [t for name, _, t in calls if name == "flaky"]
    assert len(flaky_times) >= 2


CONFIG_INLINE = """
[engine]
default_symbol_priority = 1

[workflows.solo]
priority = 1
max_concurrent = 1

[[workflows.solo.steps]]
name = "probe"
action = "tests.unit.backtest_actions:inline_probe"
"""


def test_inline_latency_holds_the_loop_and_conflates(tmp_path: Path) -> None:
    # One symbol, a tick every 100 µs; each run takes 1 ms of virtual time.
    rows = "".join(f"AAA,{T0 + i * 1e-4:.6f},{10 + i % 7}\n" for i in range(1000))
    data = tmp_path / "dense.csv"
    data.write_text("symbol,ts,price\n" + rows)
    config = loads_config(CONFIG_INLINE)
    slow = _run(config, data, latency=parse_latency(["inline=1ms"]))
    fast = _run(config, data, latency=parse_latency(["solo.probe=1us"]))
    runs_slow = slow.runs["solo"]["completed"]
    assert slow.events["conflated"] > 0
    assert runs_slow < 1000
    # A run per ~1 ms over ~0.1 s of data (+ the follow-up after the last tick).
    assert 90 <= runs_slow <= 110
    assert fast.runs["solo"]["completed"] > 900
    starts = [t for _, _, t in backtest_actions.calls()[:5]]
    assert math.isclose(starts[1] - starts[0], 1e-3, abs_tol=1e-6)  # epoch floats: ~0.2 µs


def test_latency_specs() -> None:
    assert parse_duration("20us") == pytest.approx(20e-6)
    assert parse_duration("1.5ms") == pytest.approx(1.5e-3)
    assert parse_duration("2") == 2.0
    model = parse_latency(["inline=5us", "thread=2ms", "wf.step=1ms"])
    assert model.inline_s == pytest.approx(5e-6)
    assert model.thread_s == pytest.approx(2e-3)
    assert model.steps == {"wf.step": pytest.approx(1e-3)}
    for bad in ("inline", "inline=fast", "=1ms", "gpu=1ms", "inline=-1ms"):
        with pytest.raises(BacktestError):
            parse_latency([bad])
    with pytest.raises(BacktestError, match="no step"):
        parse_latency(["nope.step=1ms"], {})


def test_unknown_format_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BacktestError, match="format"):
        open_data(tmp_path / "x.csv", "parquet")


CONFIG_PREEMPT = """
[engine]
agents = 1

[[symbols]]
name = "LOW"
priority = 5

[[symbols]]
name = "HOT"
priority = 0

[workflows.slow]
priority = 5
route = { min_priority = 5 }
max_concurrent = 1

[[workflows.slow.steps]]
name = "sleep"
action = "tests.unit.backtest_actions:async_sleeper"
timeout_ms = 5000.0
params = { seconds = 1.0 }

[workflows.urgent]
priority = 0
route = { max_priority = 0 }
max_concurrent = 1

[[workflows.urgent.steps]]
name = "probe"
action = "tests.unit.backtest_actions:inline_probe"
"""


def test_preemption_happens_at_the_virtual_instant(tmp_path: Path) -> None:
    data = tmp_path / "two.csv"
    data.write_text(f"symbol,ts,price\nLOW,{T0},10.0\nHOT,{T0 + 0.1},20.0\n")
    result = _run(loads_config(CONFIG_PREEMPT), data, latency=parse_latency(["async=0"]))
    assert result.runs == {"slow": {"completed": 1}, "urgent": {"completed": 1}}
    calls = [(name, round(t - T0, 6)) for name, _, t in backtest_actions.calls()]
    # The slow step started at 0, the urgent tick took its agent at 0.1, and the slow step
    # started over once the urgent one (20 µs inline) was done.
    assert calls == [("sleep", 0.0), ("inline", 0.1), ("sleep", 0.10002)]
    assert math.isclose(result.virtual_seconds, 1.10002, abs_tol=1e-6)  # epoch float ts


def test_long_idle_gaps_are_crossed_in_one_step(tmp_path: Path) -> None:
    # Two sessions ten days apart: the sweep (every 5 s) and the loop monitor (every 0.25 s)
    # would otherwise wake ~3.6 million times in the gap.
    day = 86_400.0
    rows = [f"AAA,{T0 + i * 0.01:.2f},{10 + i % 3}" for i in range(50)]
    rows += [f"AAA,{T0 + 10 * day + i * 0.01:.2f},{10 + i % 3}" for i in range(50)]
    data = tmp_path / "gap.csv"
    data.write_text("symbol,ts,price\n" + "\n".join(rows) + "\n")
    backtest = Backtest(loads_config(CONFIG_INLINE), open_data(data))
    sweeps = 0
    sweep = backtest.engine.sweep

    def counting() -> int:
        nonlocal sweeps
        sweeps += 1
        return sweep()

    backtest.engine.sweep = counting  # type: ignore[method-assign]
    result = backtest.run()
    assert result.runs["solo"]["completed"] == 100
    assert result.virtual_seconds > 10 * day
    assert sweeps < 10
