"""The engine benchmark's workloads: the config tickflow runs, the same jobs for the baseline
pool, and the event mixes both are fed (:mod:`benchmarks.engine_load` runs them)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.core.events import DataReady

from . import bench_actions
from .baseline import JobSpec

__all__ = [
    "ACTIONS",
    "AGENTS",
    "BULK",
    "HOT",
    "HOT_SHARE",
    "HOT_SYMBOLS",
    "UNIVERSE",
    "Workload",
    "baseline_specs",
    "engine_toml",
    "events",
    "mixed_events",
]

AGENTS = 5
HOT, BULK = "hot", "bulk"
ACTIONS = "benchmarks.bench_actions"
HOT_SHARE = 5  # one symbol in five is priority 0 in the throughput and paced mixes
UNIVERSE = 4096  # symbols in the throughput and paced mixes
HOT_SYMBOLS = 256  # priority-0 symbols in flood and preempt



@dataclass(frozen=True)
class Workload:
    """What the steps do. ``step``: the :mod:`benchmarks.bench_actions` function every step
    runs; ``bulk_sleep_s`` > 0: priority-2 steps sleep that long instead; ``probe``: the first
    priority-0 step is :func:`benchmarks.bench_actions.probe`."""

    step: str = "noop"
    bulk_sleep_s: float = 0.0
    probe: bool = False


def engine_toml(w: Workload = Workload()) -> str:
    """Tickflow's config: the default config's two workflow shapes, with three steps each."""
    step = f"{ACTIONS}:{w.step}"
    first = f"{ACTIONS}:probe" if w.probe else step
    bulk = f"{ACTIONS}:sleep" if w.bulk_sleep_s > 0 else step
    params = f"params = {{ sleep_s = {w.bulk_sleep_s!r} }}" if w.bulk_sleep_s > 0 else ""
    return f"""
[engine]
agents = {AGENTS}
heap_capacity = 65536
sweep_interval_s = 3600.0
drain_timeout_s = 0.0
# The flood scenario names a new symbol per bulk event: no cap within any run's length.
max_symbols = 100000000

[source]
kind = "none"

[workflows.{HOT}]
priority = 0
route = {{ max_priority = 0 }}
max_concurrent = 3
on_busy = "follow_up"

[[workflows.{HOT}.steps]]
name = "collect"
action = "{first}"
timeout_ms = 100.0
retry = {{ count = 2 }}

[[workflows.{HOT}.steps]]
name = "signal"
action = "{step}"
depends_on = ["collect"]
timeout_ms = 50.0

[[workflows.{HOT}.steps]]
name = "execute"
action = "{step}"
depends_on = ["signal"]
timeout_ms = 200.0
preemptible = false

[workflows.{BULK}]
priority = 2
route = {{ min_priority = 1 }}
max_concurrent = {AGENTS}
on_busy = "follow_up"

[[workflows.{BULK}.steps]]
name = "collect"
action = "{bulk}"
timeout_ms = 1000.0
retry = {{ count = 1 }}
{params}

[[workflows.{BULK}.steps]]
name = "compute"
action = "{bulk}"
depends_on = ["collect"]
timeout_ms = 1000.0
{params}

[[workflows.{BULK}.steps]]
name = "publish"
action = "{bulk}"
depends_on = ["compute"]
timeout_ms = 1000.0
{params}
"""


def baseline_specs(w: Workload) -> list[JobSpec]:
    """The same two workflows for the baseline pool, with the same step functions."""
    step = getattr(bench_actions, w.step)
    first = bench_actions.probe if w.probe else step
    bulk = bench_actions.sleep if w.bulk_sleep_s > 0 else step
    return [
        JobSpec(HOT, (first, step, step), max_priority=0),
        JobSpec(BULK, (bulk, bulk, bulk), min_priority=1, params={"sleep_s": w.bulk_sleep_s}),
    ]


def events(prefix: str, count: int, priority: int) -> list[DataReady]:
    return [
        DataReady(symbol=f"{prefix}{i}", ts=1.7e9, price=100.0, volume=1.0, priority=priority)
        for i in range(count)
    ]


def mixed_events(count: int = UNIVERSE) -> list[DataReady]:
    """One event per symbol of the universe; every ``HOT_SHARE``-th symbol is priority 0."""
    return [
        DataReady(
            symbol=f"S{i}", ts=1.7e9, price=100.0, volume=1.0,
            priority=0 if i % HOT_SHARE == 0 else 2,
        )
        for i in range(count)
    ]
