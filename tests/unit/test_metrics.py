"""Prometheus metrics: the collector, the loop monitor and the HTTP endpoint, in-process.

The engine is driven on a :class:`~engine.core.clock.FakeClock` with the gated actions of
:mod:`tests.unit.dispatch_actions`; every check scrapes the engine's own registry with
``generate_latest`` and parses the text back with prometheus-client's parser, so the test
reads exactly what Prometheus would. Waiting is bounded in loop turns, never slept.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from engine.core.events import HighPriorityArrived
from engine.core.stats import RUN_OUTCOMES
from engine.core.strategy import StepContext, sends_orders
from engine.intake import REJECT_REASONS
from engine.service.daemon import Engine
from engine.service.http import MetricsBindError
from engine.service.loopmon import LoopMonitor
from engine.service.metrics import BUCKET_BOUNDS, BUCKET_EDGES, ORDER_OUTCOMES, ORDER_SIDES
from fastpath.latency import LatencyHistogram, bucket_edge_seconds

from . import dispatch_actions as acts
from .engine_harness import data_ready, make_engine, run_async, settle, wait_for

ACTIONS = "tests.unit.dispatch_actions"
Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


@dataclass(frozen=True)
class Order:
    status: str
    side: str | None


@sends_orders
async def place_order(ctx: StepContext) -> Order:
    """An order step: buys when the symbol's name starts with B, else is rejected."""
    if ctx.symbol.startswith("B"):
        return Order("filled", "BUY")
    return Order("rejected", "SELL")


# Three workflows on disjoint routes: "urgent" (symbol priority 0), "slow" (priority 1..4,
# gated work then an order), "flaky" (priority 5+, always fails, one retry, short timeout).
CONFIG = f"""
[engine]
agents = 1
heap_capacity = 64

[workflows.urgent]
priority = 0
route = {{ max_priority = 0 }}
max_concurrent = 1
[[workflows.urgent.steps]]
name = "work"
action = "{ACTIONS}:gated"

[workflows.slow]
priority = 1
route = {{ min_priority = 1, max_priority = 4 }}
max_concurrent = 1
[[workflows.slow.steps]]
name = "work"
action = "{ACTIONS}:gated"
timeout_ms = 60000
[[workflows.slow.steps]]
name = "order"
action = "tests.unit.test_metrics:place_order"
depends_on = ["work"]
preemptible = false

[workflows.flaky]
priority = 5
route = {{ min_priority = 5 }}
max_concurrent = 1
[[workflows.flaky.steps]]
name = "hang"
action = "{ACTIONS}:gated"
timeout_ms = 100
retry = {{ count = 1, backoff_base_ms = 10, jitter = 0 }}
"""

WORKFLOW_STEPS = {"urgent": ("work",), "slow": ("work", "order"), "flaky": ("hang",)}

COUNTERS_BY_WORKFLOW = (
    "tickflow_events_conflated_total",
    "tickflow_events_shed_total",
    "tickflow_preemptions_total",
)
COUNTERS_BY_STEP = ("tickflow_step_retries_total", "tickflow_step_timeouts_total")
HISTOGRAMS = {
    "tickflow_dispatch_wait_seconds": ("workflow",),
    "tickflow_run_latency_seconds": ("workflow",),
    "tickflow_step_duration_seconds": ("workflow", "step"),
    "tickflow_preemption_latency_seconds": (),
}


def scrape(engine: Engine) -> Samples:
    text = generate_latest(engine.metrics_registry).decode()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def series(samples: Samples, name: str) -> dict[Labels, float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def tickflow(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items() if k[0].startswith("tickflow_")}


# -- bucket bounds ------------------------------------------------------------------------------


def test_bucket_bounds_are_latency_histogram_edges_from_10us_to_10s() -> None:
    assert list(BUCKET_EDGES) == sorted(set(BUCKET_EDGES))
    assert tuple(bucket_edge_seconds(e) for e in BUCKET_EDGES) == BUCKET_BOUNDS
    assert BUCKET_BOUNDS[0] <= 10.5e-6
    assert BUCKET_BOUNDS[-1] >= 10.0
    # Dense below a millisecond: consecutive bounds at most 20 % apart there.
    sub_ms = [b for b in BUCKET_BOUNDS if b <= 1e-3]
    assert len(sub_ms) >= 20
    assert all(b / a < 1.2 for a, b in itertools.pairwise(sub_ms))
    assert all(b / a < 1.42 for a, b in itertools.pairwise(BUCKET_BOUNDS))


def test_cumulative_counts_are_exact_at_bucket_edges() -> None:
    rng = random.Random(5)
    hist = LatencyHistogram()
    samples = [10 ** rng.uniform(-7, 1.5) for _ in range(5000)]
    for s in samples:
        hist.record(s)
    counts = hist.cumulative_counts(BUCKET_EDGES)
    for bound, count in zip(BUCKET_BOUNDS, counts, strict=True):
        assert count == sum(1 for s in samples if s < bound)
    assert counts == sorted(counts)
    assert hist.cumulative_counts([1024]) == [hist.count]
    with pytest.raises(ValueError, match="bucket edge"):
        hist.cumulative_counts([0])


# -- pre-initialisation and families -------------------------------------------------------------


def test_every_series_exists_at_zero_before_any_event() -> None:
    engine, _ = make_engine(CONFIG)

    async def main() -> None:
        async with engine.session():
            samples = scrape(engine)
        info = series(samples, "tickflow_build_info")
        assert len(info) == 1
        assert next(iter(info.values())) == 1
        (labels,) = info
        assert dict(labels)["implementation"] in {"cython", "python"}
        assert value(samples, "tickflow_agents") == 1
        assert value(samples, "tickflow_queue_capacity") == 64
        fixed = {"tickflow_build_info", "tickflow_agents", "tickflow_queue_capacity"}
        nonzero = {k: v for k, v in tickflow(samples).items() if v != 0 and k[0] not in fixed}
        # Only the loop-lag gauges may already hold a measurement.
        assert {k[0] for k in nonzero} <= {
            "tickflow_event_loop_lag_seconds", "tickflow_event_loop_lag_max_seconds"
        }

        assert {dict(k)["type"] for k in series(samples, "tickflow_events_received_total")} == {
            "DATA_READY", "HIGH_PRIORITY_ARRIVED"
        }
        reasons = {dict(k)["reason"] for k in series(samples, "tickflow_events_rejected_total")}
        assert set(REJECT_REASONS) <= reasons
        priorities = {dict(k)["priority"] for k in series(samples, "tickflow_queue_depth")}
        assert priorities == {str(p) for p in range(6)}  # 0 .. the largest workflow priority
        for name in (*COUNTERS_BY_WORKFLOW, "tickflow_running_steps"):
            assert {dict(k)["workflow"] for k in series(samples, name)} == set(WORKFLOW_STEPS)
        steps = {(wf, s) for wf, names in WORKFLOW_STEPS.items() for s in names}
        for name in COUNTERS_BY_STEP:
            assert {(dict(k)["workflow"], dict(k)["step"]) for k in series(samples, name)} == steps
        assert {tuple(sorted(dict(k).items())) for k in series(samples, "tickflow_runs_total")} == {
            (("outcome", o), ("workflow", wf)) for o in RUN_OUTCOMES for wf in WORKFLOW_STEPS
        }
        assert {
            (dict(k)["side"], dict(k)["outcome"]) for k in series(samples, "tickflow_orders_total")
        } >= {(s, o) for s in ORDER_SIDES for o in ORDER_OUTCOMES}
        for name, label_names in HISTOGRAMS.items():
            counts = series(samples, f"{name}_count")
            expected = 1 if not label_names else len(
                steps if label_names == ("workflow", "step") else WORKFLOW_STEPS
            )
            assert len(counts) == expected, name
            buckets = series(samples, f"{name}_bucket")
            assert len(buckets) == expected * (len(BUCKET_BOUNDS) + 1)
        for name in ("tickflow_event_loop_lag_seconds", "tickflow_agents_busy"):
            assert (name, ()) in samples

    run_async(main)


# -- every metric moves when its event happens -----------------------------------------------------


def test_every_metric_moves_when_its_event_happens() -> None:
    engine, clock = make_engine(CONFIG)

    async def main() -> None:
        async with engine.session():
            before = scrape(engine)
            d = engine.dispatcher
            assert d is not None

            # A slow run takes the only agent; two more ticks for it in one turn conflate.
            engine.submit_nowait(data_ready("BUY1", priority=1))
            await wait_for(lambda: acts.running("slow") == 1, "slow work started")
            s = scrape(engine)
            assert value(s, "tickflow_agents_busy") == 1
            assert value(s, "tickflow_running_steps", workflow="slow") == 1
            assert value(s, "tickflow_events_received_total", type="DATA_READY") == 1
            assert value(s, "tickflow_dispatch_wait_seconds_count", workflow="slow") == 1
            engine.submit_nowait(data_ready("BUY2", priority=1))
            engine.submit_nowait(data_ready("BUY2", priority=1))
            await settle()
            s = scrape(engine)
            assert value(s, "tickflow_events_conflated_total", workflow="slow") == 1
            assert value(s, "tickflow_queue_depth", priority="1") == 1

            # An urgent symbol preempts the running slow step.
            engine.submit_nowait(HighPriorityArrived(symbol="URG", priority=0))
            engine.submit_nowait(data_ready("URG"))
            await wait_for(lambda: acts.running("urgent") == 1, "urgent work started")
            s = scrape(engine)
            assert value(s, "tickflow_preemptions_total", workflow="slow") == 1
            assert value(s, "tickflow_preemption_latency_seconds_count") == 1
            assert value(s, "tickflow_events_received_total", type="HIGH_PRIORITY_ARRIVED") == 1
            clock.advance(0.002)
            acts.release("URG")
            await wait_for(lambda: acts.running("urgent") == 0, "urgent done")

            # The slow runs finish (work then order): step durations, run latency, orders.
            clock.advance(0.003)
            acts.release("BUY1")
            acts.release("BUY2")
            await wait_for(lambda: engine.coordinator is not None and
                           engine.coordinator.in_flight() == 0, "slow runs done")
            s = scrape(engine)
            assert value(s, "tickflow_runs_total", workflow="urgent", outcome="completed") == 1
            assert value(s, "tickflow_runs_total", workflow="slow", outcome="completed") == 2
            assert value(s, "tickflow_run_latency_seconds_count", workflow="slow") == 2
            assert value(s, "tickflow_run_latency_seconds_sum", workflow="slow") > 0
            assert value(
                s, "tickflow_step_duration_seconds_count", workflow="slow", step="work"
            ) == 2  # attempts that completed (BUY1's preempted attempt is not a duration)
            assert value(s, "tickflow_orders_total", side="buy", outcome="filled") == 2
            assert value(s, "tickflow_agents_busy") == 0
            assert value(s, "tickflow_queue_depth", priority="1") == 0

            # A flaky run: times out, is retried once, times out again and fails.
            engine.submit_nowait(data_ready("FLK", priority=5))
            await wait_for(lambda: acts.running("flaky") == 1, "flaky attempt 1")
            clock.advance(0.2)
            await wait_for(lambda: acts.running("flaky") == 0, "attempt 1 timed out")
            clock.advance(0.05)  # the backoff
            await wait_for(lambda: acts.running("flaky") == 1, "flaky attempt 2")
            clock.advance(0.2)
            await wait_for(lambda: engine.coordinator is not None and
                           engine.coordinator.in_flight() == 0, "flaky failed")
            s = scrape(engine)
            assert value(s, "tickflow_step_timeouts_total", workflow="flaky", step="hang") == 2
            assert value(s, "tickflow_step_retries_total", workflow="flaky", step="hang") == 1
            assert value(s, "tickflow_runs_total", workflow="flaky", outcome="failed") == 1
            assert value(
                s, "tickflow_steps_total", workflow="flaky", step="hang", outcome="timeout"
            ) == 2

            engine.reject("malformed_json")
            s = scrape(engine)
            assert value(s, "tickflow_events_rejected_total", reason="malformed_json") == 1

            # Nothing moved backwards, and the labelled series are the same set as at start.
            assert set(tickflow(s)) == set(tickflow(before))
            for key, v in tickflow(before).items():
                if key[0].endswith(("_total", "_count", "_sum", "_bucket")):
                    assert s[key] >= v, key

    run_async(main)


def test_shedding_counts_per_workflow() -> None:
    engine, _ = make_engine(CONFIG.replace("heap_capacity = 64", "heap_capacity = 1"))

    async def main() -> None:
        async with engine.session():
            for name in ("S1", "S2", "S3"):  # one loop turn: the queue holds one of them
                engine.submit_nowait(data_ready(name, priority=1))
            await settle()
            s = scrape(engine)
            assert value(s, "tickflow_events_shed_total", workflow="slow") == 2
            assert value(s, "tickflow_runs_total", workflow="slow", outcome="shed") == 2
            acts.release("S1")
            acts.release("S2")
            acts.release("S3")
            engine.stop()

    run_async(main)


def test_label_cardinality_stays_bounded_over_500_symbols() -> None:
    engine, _clock = make_engine(
        CONFIG.replace("agents = 1", "agents = 4").replace(":gated", ":instant")
    )

    async def main() -> None:
        async with engine.session():
            before = scrape(engine)
            for i in range(500):
                engine.submit_nowait(data_ready(f"SYM{i:03d}", priority=i % 7))
                if i % 50 == 0:
                    await settle()
            await wait_for(lambda: engine.coordinator is not None and
                           engine.coordinator.in_flight() == 0, "all runs done", turns=20_000)
            after = scrape(engine)
        assert value(after, "tickflow_events_received_total", type="DATA_READY") == 500
        completed = sum(series(after, "tickflow_runs_total").values())
        assert completed > 0
        assert set(tickflow(after)) == set(tickflow(before))
        assert not any("SYM" in v for _, labels in after for _, v in labels)

    run_async(main)


def test_histogram_buckets_are_cumulative_and_inf_equals_count() -> None:
    engine, clock = make_engine(CONFIG.replace(":gated", ":instant"))

    async def main() -> None:
        async with engine.session():
            for i in range(30):
                engine.submit_nowait(data_ready(f"H{i}", priority=1 + (i % 6)))
                clock.advance(0.0001 * i)
                await settle(5)
            await wait_for(lambda: engine.coordinator is not None and
                           engine.coordinator.in_flight() == 0, "runs done", turns=5000)
            s = scrape(engine)
        for name in HISTOGRAMS:
            buckets = series(s, f"{name}_bucket")
            by_labels: dict[Labels, list[tuple[float, float]]] = {}
            for labels, v in buckets.items():
                d = dict(labels)
                le = float(d.pop("le"))
                by_labels.setdefault(tuple(sorted(d.items())), []).append((le, v))
            for labels, points in by_labels.items():
                points.sort()
                assert [le for le, _ in points[:-1]] == list(BUCKET_BOUNDS)
                assert math.isinf(points[-1][0])
                values = [v for _, v in points]
                assert values == sorted(values), (name, labels)
                assert values[-1] == value(s, f"{name}_count", **dict(labels))
        assert value(s, "tickflow_run_latency_seconds_count", workflow="slow") > 0

    run_async(main)


# -- loop monitor ---------------------------------------------------------------------------------


def hold_the_loop(seconds: float) -> None:
    """Block the event loop: this *is* the lag being measured, not a wait for a condition."""
    time.sleep(seconds)


def test_loop_monitor_measures_a_blocked_loop() -> None:
    monitor = LoopMonitor(interval=0.005)

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(monitor.run())
        try:
            await wait_for(lambda: monitor.samples >= 1, "first wake-up", turns=100_000)
            hold_the_loop(0.05)
            await wait_for(lambda: monitor.lag >= 0.03, "lag measured", turns=100_000)
            assert monitor.max_recent >= 0.03
            assert monitor.alive()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        assert not monitor.alive()

    run_async(main)


def test_loop_lag_is_exported() -> None:
    engine, _ = make_engine(CONFIG)
    engine.loop_monitor.record(0.042)
    s = scrape(engine)
    assert value(s, "tickflow_event_loop_lag_seconds") == pytest.approx(0.042)
    assert value(s, "tickflow_event_loop_lag_max_seconds") == pytest.approx(0.042)


# -- HTTP endpoint --------------------------------------------------------------------------------


def test_http_endpoint_serves_metrics_health_and_readiness() -> None:
    engine, _ = make_engine(CONFIG + "\n[metrics]\nport = 0\n")
    assert engine.serve_metrics is False  # a test engine (fake clock) does not serve by default
    engine.serve_metrics = True

    async def main() -> None:
        async with engine.session(), aiohttp.ClientSession() as http:
            port = engine.metrics_port
            assert port is not None
            assert port > 0
            base = f"http://127.0.0.1:{port}"
            async with http.get(f"{base}/metrics") as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                text = await resp.text()
            names = {f.name for f in text_string_to_metric_families(text)}
            assert {"tickflow_events_received", "tickflow_dispatch_wait_seconds"} <= names
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200, await resp.text()
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200
            engine.stop()  # draining: not ready, still alive
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 503
                assert (await resp.json())["status"] == "draining"
            async with http.get(f"{base}/healthz") as resp:
                assert resp.status == 200
        assert engine.metrics_port is None

    run_async(main)


def test_a_taken_port_is_a_clear_error() -> None:
    first, _ = make_engine(CONFIG + "\n[metrics]\nport = 0\n")
    first.serve_metrics = True

    async def main() -> None:
        async with first.session():
            port = first.metrics_port
            second, _ = make_engine(CONFIG + f"\n[metrics]\nport = {port}\n")
            second.serve_metrics = True
            with pytest.raises(MetricsBindError, match=f"127.0.0.1:{port}"):
                async with second.session():
                    pass

    run_async(main)
