"""The engine benchmark harness and its baseline still work, at a toy size.

Nothing here asserts a timing: these tests only keep ``benchmarks/`` from rotting (an engine API
change that breaks the harness fails here, in the ordinary test run, rather than on the day
someone wants figures). The harness's own numbers are for ``python -m benchmarks.engine_load``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvloop

from benchmarks import bench_actions, engine_load, engine_report
from benchmarks.baseline import BaselinePool, JobSpec, Mode
from engine.config import loads_config
from engine.core.events import DataReady

TOY = engine_load.Settings(
    warmup_s=0.01,
    duration_s=0.03,
    in_flight=16,
    rounds=1,
    flood_backlog=20,
    flood_factor=2,
    preempt_sleep_s=0.01,
    urgent_gap_s=(0.001, 0.002),
)


def _event(symbol: str, priority: int | None) -> DataReady:
    return DataReady(symbol=symbol, ts=1.0, price=1.0, priority=priority)


def _run(coro: object) -> object:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["step", "job"])
def test_baseline_runs_every_step_of_every_job(mode: Mode) -> None:
    calls: list[tuple[str, int]] = []

    def step(n: int) -> Callable[[Any], Awaitable[None]]:
        async def action(job: bench_actions.HasParams) -> None:
            calls.append((job.tick.symbol, n))  # type: ignore[attr-defined]

        return action

    spec = JobSpec("only", (step(0), step(1), step(2)))

    async def main() -> BaselinePool:
        async with BaselinePool([spec], workers=2, mode=mode) as pool:
            for i in range(10):
                pool.submit(_event(f"S{i}", 1))
            async with asyncio.timeout(5):
                await pool.wait_idle()
            return pool

    pool = _run(main())
    assert isinstance(pool, BaselinePool)
    assert pool.completed() == 10
    assert pool.steps_done == 30
    assert pool.in_flight == 0
    assert spec.dispatch_wait.count == 30
    assert spec.run_latency.count == 10
    for i in range(10):  # each job's steps ran in order
        assert [n for s, n in calls if s == f"S{i}"] == [0, 1, 2]


def test_baseline_takes_the_most_urgent_job_first_and_routes_by_priority() -> None:
    order: list[str] = []

    async def record(job: bench_actions.HasParams) -> None:
        order.append(job.tick.symbol)  # type: ignore[attr-defined]

    hot = JobSpec("hot", (record,), max_priority=0)
    cold = JobSpec("cold", (record,), min_priority=1)

    async def main() -> None:
        async with BaselinePool([hot, cold], workers=1, default_priority=2) as pool:
            pool.submit(_event("late-cold", None))  # unknown symbol: default priority 2
            pool.submit(_event("urgent", 0))  # same loop turn, queued after it
            async with asyncio.timeout(5):
                await pool.wait_idle()

    _run(main())
    assert order == ["urgent", "late-cold"]
    assert hot.completed == 1
    assert cold.completed == 1


def test_baseline_rejects_unknown_mode_and_submit_before_start() -> None:
    with pytest.raises(ValueError, match="mode"):
        BaselinePool([], mode="chain")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="not running"):
        BaselinePool([]).submit(_event("S", 0))


@pytest.mark.parametrize("design", engine_load.DESIGNS)
def test_drain_completes_every_run(design: str) -> None:
    assert engine_load.run_drain(design, 25) == 25


def test_tickflow_config_of_every_workload_loads() -> None:
    for scenario in engine_load.SCENARIOS:
        workload = engine_load.workload_for(scenario, TOY)
        config = loads_config(engine_load.engine_toml(workload))
        assert set(config.workflows) == {engine_load.HOT, engine_load.BULK}
        specs = engine_load.baseline_specs(workload)
        assert [len(s.steps) for s in specs] == [3, 3]


def test_full_load_run_at_toy_size_writes_a_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "engine.json"
    assert engine_load.main(
        ["--rounds", "1", "--duration", "0.03", "--warmup", "0.01", "--in-flight", "16",
         "--json", str(out)]
    ) == 0
    data = orjson.loads(out.read_bytes())
    summary = data["summary"]
    assert set(summary) == set(engine_load.SCENARIOS) - engine_load.OWN_PROCESS
    for design in engine_load.DESIGNS:
        assert summary["throughput"][design]["runs_per_s"] > 0
        assert summary["throughput"][design]["conflated"] == 0
    assert summary["preempt"]["baseline"]["preemption"] is None
    assert summary["flood"]["tickflow"]["urgent"]["samples"] > 0
    assert set(data["targets"]) == set(engine_report.TARGETS)
    assert all(isinstance(t["met"], bool) for t in data["targets"].values())
    printed = capsys.readouterr().out
    assert "runs/s (no-op 3-step)" in printed
    assert "preemption p99" in printed

    assert engine_report.main([str(out)]) == 0
    assert "tickflow" in capsys.readouterr().out
    assert engine_report.main([str(out), "--json"]) == 0
    assert set(orjson.loads(capsys.readouterr().out)) == {"meta", "summary", "ratios", "targets"}


def test_storage_benchmark_at_toy_size_pairs_each_round() -> None:
    """Every figure of ``bench_storage`` is made, and the paired ratios are the rounds' own
    on/off ratios (what the README reports), bracketing their median."""
    from benchmarks import bench_storage

    result = bench_storage.run(rounds=2, runs=300, records=2_000, duration_s=0.2)
    assert result["writer"]["records_per_s"] > 0
    assert result["writer"]["commits"] >= 1
    for name in ("drain", "steady"):
        rounds = result["rounds_runs_per_s"][name]
        assert len(rounds["off"]) == len(rounds["on"]) == 2
        ratios = sorted(a / b for a, b in zip(rounds["on"], rounds["off"], strict=True))
        assert result["paired_ratios"][name] == {
            "median": (ratios[0] + ratios[1]) / 2, "min": ratios[0], "max": ratios[1],
        }
    assert result["steady_runs_per_s"]["commits_while_saturated"] >= 1
