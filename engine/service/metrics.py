"""Prometheus metrics, built at scrape time from the counters the engine already keeps.

The hot path never touches prometheus-client: the engine counts into plain ints, ``Counter`` s
and :class:`~fastpath.latency.LatencyHistogram` s (:mod:`engine.core.stats`), and
:class:`EngineCollector` turns them into metric families when ``/metrics`` is scraped. A
scrape runs on the engine's event loop (the HTTP server lives there too), so it reads a
consistent state without locks.

Conventions: every name starts with ``tickflow_``, values are in base units (seconds), counters
end in ``_total``, and labels only take values from bounded sets fixed by the config (workflow,
step, priority, outcome, reason, side, type) -- never a symbol or a run id. Every series exists
(at 0) from the first scrape, so ``rate()`` and alert rules see it before the first event.

Histogram buckets: the ``le`` bounds are edges of the :class:`LatencyHistogram` buckets
(``2**(k/16)`` ns), so every cumulative count is exact, not interpolated. They run from
~10.2 µs to ~12.1 s, four per octave (a factor of 1.19) up to ~1.1 ms -- enough to read the p99
of sub-millisecond dispatch to within ~19 % before interpolation -- and two per octave (a
factor of 1.41) above. ``_sum`` and ``_count`` are exact.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, GCCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from engine import __version__
from engine.core.events import EVENT_KINDS
from engine.core.stats import RUN_OUTCOMES, STEP_OUTCOMES
from engine.intake import REJECT_REASONS
from engine.service.reload import RELOAD_OUTCOMES
from engine.storage.writer import BATCH_BOUNDS
from fastpath.latency import LatencyHistogram, bucket_edge_seconds

if TYPE_CHECKING:
    from engine.service.daemon import Engine
    from engine.service.loopmon import LoopMonitor
    from engine.storage.writer import StorageWriter

__all__ = [
    "BUCKET_BOUNDS",
    "BUCKET_EDGES",
    "EVENT_TYPES",
    "ORDER_OUTCOMES",
    "ORDER_SIDES",
    "EngineCollector",
    "build_registry",
]


def _edges() -> tuple[int, ...]:
    # 10 µs is 2**(212.6/16) ns, 1 ms 2**(318.9/16), 10 s 2**(531.5/16).
    fine = range(213, 322, 4)  # ~10.2 µs .. ~1.08 ms, 4 per octave
    coarse = range(fine[-1] + 8, 538, 8)  # .. ~12.1 s, 2 per octave
    return (*fine, *coarse)


BUCKET_EDGES: Final[tuple[int, ...]] = _edges()
"""The histogram bounds as :class:`LatencyHistogram` bucket-edge indices."""

BUCKET_BOUNDS: Final[tuple[float, ...]] = tuple(bucket_edge_seconds(e) for e in BUCKET_EDGES)
"""The histogram ``le`` bounds in seconds (exact bucket edges)."""

_LE: Final[tuple[str, ...]] = tuple(repr(b) for b in BUCKET_BOUNDS)

EVENT_TYPES: Final[tuple[str, ...]] = tuple(EVENT_KINDS)
ORDER_SIDES: Final[tuple[str, ...]] = ("buy", "sell", "none")
ORDER_OUTCOMES: Final[tuple[str, ...]] = ("filled", "rejected", "skipped", "error")
OTHER: Final = "other"  # a value outside a bounded set is folded into this one


def _bounded(value: str, allowed: Iterable[str]) -> str:
    return value if value in allowed else OTHER


def _histogram_buckets(hist: LatencyHistogram) -> list[tuple[str, float]]:
    counts = hist.cumulative_counts(BUCKET_EDGES)
    buckets: list[tuple[str, float]] = [(le, float(c)) for le, c in zip(_LE, counts, strict=True)]
    buckets.append(("+Inf", float(hist.count)))
    return buckets


class EngineCollector(Collector):
    """A prometheus-client collector reading one :class:`~engine.service.daemon.Engine` at
    scrape time."""

    def __init__(self, engine: Engine, loop_monitor: LoopMonitor | None = None) -> None:
        self.engine = engine
        self.loop_monitor = loop_monitor

    def queue_priorities(self) -> range:
        """Every priority a step can queue at: ``min(workflow, symbol)`` is at most the
        largest workflow priority, so ``0..max`` bounds the label set."""
        top = max((wf.priority for wf in self.engine.config.workflows.values()), default=0)
        return range(top + 1)

    def _intake(self) -> Iterator[Metric]:
        intake = getattr(self.engine, "intake", None)
        yield from _intake_families(intake.statistics() if intake is not None else None)

    def _storage(self) -> Iterator[Metric]:
        persistence = getattr(self.engine, "persistence", None)
        yield from _storage_families(persistence.writer if persistence is not None else None)

    def collect(self) -> Iterator[Metric]:
        engine = self.engine
        counters = engine.counters
        workflows = counters.workflows

        info = GaugeMetricFamily(
            "tickflow_build_info", "Build information (always 1).",
            labels=["version", "implementation"],
        )
        info.add_metric([__version__, _implementation()], 1.0)
        yield info

        received = CounterMetricFamily(
            "tickflow_events_received", "Events accepted by the engine, by type.", labels=["type"]
        )
        for kind in EVENT_TYPES:
            received.add_metric([kind], float(counters.received.get(kind, 0)))
        yield received

        rejected_counts: dict[str, int] = dict.fromkeys((*REJECT_REASONS, OTHER), 0)
        for reason, n in counters.rejected.items():
            rejected_counts[_bounded(reason, REJECT_REASONS)] += n
        for source in engine.sources:
            for reason, n in source.statistics().rejected.items():
                rejected_counts[_bounded(reason, REJECT_REASONS)] += n
        rejected = CounterMetricFamily(
            "tickflow_events_rejected",
            "Events refused before they were journaled or applied (decoding and validation, a "
            "replay's bad rows, a new symbol past engine.max_symbols), by reason.",
            labels=["reason"],
        )
        for reason, n in rejected_counts.items():
            rejected.add_metric([reason], float(n))
        yield rejected

        conflated = CounterMetricFamily(
            "tickflow_events_conflated",
            "Ticks folded into a pending run or follow-up (the latest tick wins), by workflow.",
            labels=["workflow"],
        )
        skipped = CounterMetricFamily(
            "tickflow_events_skipped",
            "Ticks dropped while a run was busy (on_busy = skip), by workflow.",
            labels=["workflow"],
        )
        shed = CounterMetricFamily(
            "tickflow_events_shed",
            "Runs shed because the ready queue was full, by workflow.",
            labels=["workflow"],
        )
        triggered = CounterMetricFamily(
            "tickflow_runs_triggered", "Runs created, by workflow.", labels=["workflow"]
        )
        preemptions = CounterMetricFamily(
            "tickflow_preemptions",
            "Running steps preempted by more urgent work, by the preempted step's workflow.",
            labels=["workflow"],
        )
        runs = CounterMetricFamily(
            "tickflow_runs", "Finished runs, by workflow and outcome.",
            labels=["workflow", "outcome"],
        )
        steps = CounterMetricFamily(
            "tickflow_steps", "Step attempts that ended, by workflow, step and outcome.",
            labels=["workflow", "step", "outcome"],
        )
        retries = CounterMetricFamily(
            "tickflow_step_retries", "Failed step attempts that were retried.",
            labels=["workflow", "step"],
        )
        timeouts = CounterMetricFamily(
            "tickflow_step_timeouts", "Step attempts that overran timeout_ms.",
            labels=["workflow", "step"],
        )
        dispatch_wait = HistogramMetricFamily(
            "tickflow_dispatch_wait_seconds",
            "Time a ready step waited in the queue before an agent took it.",
            labels=["workflow"],
        )
        run_latency = HistogramMetricFamily(
            "tickflow_run_latency_seconds",
            "Trigger to completion of a run (completed runs), by workflow.",
            labels=["workflow"],
        )
        step_duration = HistogramMetricFamily(
            "tickflow_step_duration_seconds", "Time a step attempt spent in its action.",
            labels=["workflow", "step"],
        )
        for wf_name, wf in workflows.items():
            conflated.add_metric([wf_name], float(wf.conflated))
            skipped.add_metric([wf_name], float(wf.skipped))
            shed.add_metric([wf_name], float(wf.shed))
            triggered.add_metric([wf_name], float(wf.triggered))
            preemptions.add_metric([wf_name], float(wf.preemptions))
            for outcome in RUN_OUTCOMES:
                runs.add_metric([wf_name, outcome], float(wf.runs.get(outcome, 0)))
            dispatch_wait.add_metric(
                [wf_name], _histogram_buckets(wf.dispatch_wait), wf.dispatch_wait.total
            )
            run_latency.add_metric(
                [wf_name], _histogram_buckets(wf.run_latency), wf.run_latency.total
            )
            for step_name, sc in wf.steps.items():
                labels = [wf_name, step_name]
                for outcome in STEP_OUTCOMES:
                    steps.add_metric([*labels, outcome], float(sc.outcomes.get(outcome, 0)))
                retries.add_metric(labels, float(sc.retries))
                timeouts.add_metric(labels, float(sc.timeouts))
                step_duration.add_metric(labels, _histogram_buckets(sc.duration), sc.duration.total)
        yield from (conflated, skipped, shed, triggered, preemptions, runs, steps, retries)
        yield from (timeouts, dispatch_wait, run_latency, step_duration)

        preemption_latency = HistogramMetricFamily(
            "tickflow_preemption_latency_seconds",
            "From deciding to preempt until the urgent step starts on the freed agent.",
        )
        hist = counters.preemption_latency
        preemption_latency.add_metric([], _histogram_buckets(hist), hist.total)
        yield preemption_latency

        order_counts: dict[tuple[str, str], int] = {
            (side, outcome): 0 for side in (*ORDER_SIDES, OTHER) for outcome in ORDER_OUTCOMES
        }
        for key, n in engine.orders.items():
            side, _, outcome = key.partition(":")
            side = _bounded(side.lower(), ORDER_SIDES)
            outcome = _bounded(outcome, ORDER_OUTCOMES)
            order_counts[(side, outcome)] = order_counts.get((side, outcome), 0) + n
        orders = CounterMetricFamily(
            "tickflow_orders", "Results of order-sending steps, by side and outcome.",
            labels=["side", "outcome"],
        )
        for (side, outcome), n in order_counts.items():
            orders.add_metric([side, outcome], float(n))
        yield orders

        # Operations: SIGHUP / POST /reload outcomes (engine/service/reload.py).
        reloads = CounterMetricFamily(
            "tickflow_config_reloads", "Config reloads, by outcome (success, invalid, error).",
            labels=["outcome"],
        )
        reloader = engine.reloader
        for outcome in RELOAD_OUTCOMES:
            n = reloader.counts[outcome] if reloader is not None else 0
            reloads.add_metric([outcome], float(n))
        yield reloads

        yield from self._gauges()

    def _gauges(self) -> Iterator[Metric]:
        engine = self.engine
        queue = engine.queue.statistics()
        depth = GaugeMetricFamily(
            "tickflow_queue_depth", "Steps waiting in the ready queue, by priority.",
            labels=["priority"],
        )
        by_priority = dict.fromkeys(self.queue_priorities(), 0)
        for priority, n in queue.depth_by_priority.items():
            by_priority[priority] = by_priority.get(priority, 0) + n
        for priority, n in sorted(by_priority.items()):
            depth.add_metric([str(priority)], float(n))
        yield depth
        yield GaugeMetricFamily(
            "tickflow_queue_capacity", "Capacity of the ready queue (engine.heap_capacity).",
            value=float(queue.capacity),
        )
        running = GaugeMetricFamily(
            "tickflow_running_steps", "Steps running now, by workflow.", labels=["workflow"]
        )
        for wf_name in engine.counters.workflows:
            running.add_metric([wf_name], float(queue.running_by_workflow.get(wf_name, 0)))
        yield running

        dispatcher = engine.dispatcher
        agents = dispatcher.statistics().agents if dispatcher else engine.config.engine.agents
        busy = dispatcher.busy if dispatcher else 0
        yield GaugeMetricFamily("tickflow_agents", "Agents in the pool.", value=float(agents))
        yield GaugeMetricFamily(
            "tickflow_agents_busy", "Agents running a step now.", value=float(busy)
        )
        coordinator = engine.coordinator
        yield GaugeMetricFamily(
            "tickflow_runs_in_flight", "Runs created and not finished.",
            value=float(coordinator.in_flight() if coordinator else 0),
        )
        yield GaugeMetricFamily(
            "tickflow_symbols", "Symbols known to the engine.", value=float(len(engine.symbols))
        )

        yield from self._intake()
        yield from self._storage()

        monitor = self.loop_monitor
        yield GaugeMetricFamily(
            "tickflow_event_loop_lag_seconds",
            "How late the latest periodic wake-up of the event loop ran.",
            value=monitor.lag if monitor else 0.0,
        )
        yield GaugeMetricFamily(
            "tickflow_event_loop_lag_max_seconds",
            "The largest event-loop lag of the monitor's recent wake-ups (~5 s window).",
            value=monitor.max_recent if monitor else 0.0,
        )


def _implementation() -> str:
    try:
        import fastpath
    except ImportError:  # pragma: no cover - fastpath ships with tickflow
        return "unknown"
    return str(getattr(fastpath, "IMPLEMENTATION", "unknown"))


def _intake_families(stats: Any) -> Iterator[Metric]:
    # All zero when no intake is configured: series exist from the start.
    get = (lambda name: getattr(stats, name)) if stats is not None else (lambda name: 0)
    yield GaugeMetricFamily(
        "tickflow_intake_connections_open", "Network intake connections open now.",
        value=get("connections_active"),
    )
    conns = CounterMetricFamily(
        "tickflow_intake_connections", "Network intake connections by how they went.",
        labels=["outcome"],
    )
    for outcome, attr in (
        ("accepted", "connections_accepted"),
        ("refused", "connections_refused"),
        ("idle_closed", "idle_closed"),
        ("unauthorized", "unauthorized"),
    ):
        conns.add_metric([outcome], get(attr))
    yield conns
    yield CounterMetricFamily(
        "tickflow_intake_lines", "Lines read by the network intake.", value=get("lines")
    )
    yield CounterMetricFamily(
        "tickflow_intake_acked", "Events acknowledged as accepted by the network intake.",
        value=get("acked"),
    )
    yield CounterMetricFamily(
        "tickflow_intake_backpressure_waits",
        "Times the network intake stopped reading a client to wait (storage or the client).",
        value=get("backpressure_waits"),
    )


_BATCH_LE: Final[tuple[str, ...]] = tuple(f"{float(b)!r}" for b in BATCH_BOUNDS)


def _storage_families(writer: StorageWriter | None) -> Iterator[Metric]:
    """The storage writer's statistics (docs/storage.md); all zero when storage is off, so
    the series exist from the start either way."""
    stats = writer.statistics() if writer is not None else None

    def get(name: str) -> float:
        return 0.0 if stats is None else float(getattr(stats, name))

    yield CounterMetricFamily(
        "tickflow_storage_commits", "Commits the storage writer made.", value=get("commits")
    )
    yield CounterMetricFamily(
        "tickflow_storage_records",
        "Changes committed: journal records, symbol and run records, orders.",
        value=get("records"),
    )
    duration = HistogramMetricFamily(
        "tickflow_storage_commit_duration_seconds",
        "Time a commit took, from handing its statement to SQLite to its result.",
    )
    batch = HistogramMetricFamily(
        "tickflow_storage_commit_records", "Changes committed per commit."
    )
    if writer is not None:
        hist = writer.commit_duration
        duration.add_metric([], _histogram_buckets(hist), hist.total)
        cumulative = list(itertools.accumulate(writer.batch_counts))
        batch.add_metric(
            [], [*zip(_BATCH_LE, map(float, cumulative[:-1]), strict=True),
                 ("+Inf", float(cumulative[-1]))],
            get("records"),
        )
    else:
        duration.add_metric([], _histogram_buckets(LatencyHistogram()), 0.0)
        batch.add_metric([], [*((le, 0.0) for le in _BATCH_LE), ("+Inf", 0.0)], 0.0)
    yield duration
    yield batch
    yield GaugeMetricFamily(
        "tickflow_storage_backlog", "Changes waiting for the storage writer's next commit.",
        value=get("backlog"),
    )
    yield GaugeMetricFamily(
        "tickflow_storage_backlog_max",
        "The backlog bound (storage.backlog_max) past which intake waits.",
        value=get("backlog_max"),
    )
    yield CounterMetricFamily(
        "tickflow_storage_backpressure_waits",
        "Times intake waited because the storage backlog was at its bound.",
        value=get("backpressure_waits"),
    )
    yield CounterMetricFamily(
        "tickflow_storage_pruned", "Rows and blocks deleted by retention.", value=get("pruned")
    )
    errors = CounterMetricFamily(
        "tickflow_storage_errors",
        "Storage writes that failed, by operation (a failed commit stops the writer).",
        labels=["operation"],
    )
    errors.add_metric(["commit"], get("commit_errors"))
    errors.add_metric(["prune"], get("prune_errors"))
    yield errors


def build_registry(
    engine: Engine, loop_monitor: LoopMonitor | None = None, *, process: bool = True
) -> CollectorRegistry:
    """A fresh registry (never the global one) with the engine's collector, plus the standard
    process and GC collectors when ``process`` is true."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine, loop_monitor))
    if process:
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)
    return registry
