"""End-to-end load benchmark: tickflow against the baseline pool, same workloads, one run.

``python -m benchmarks.engine_load`` runs every scenario for every design, ``--rounds`` times,
alternating which design goes first from round to round; it writes ``.benchmarks/engine.json``
and prints the table of :mod:`benchmarks.engine_report`. Rates are medians over the rounds;
latency quantiles pool the samples of all rounds (histograms merged bucket by bucket). Every
figure compared comes from this one process, so a noisy neighbour shifts both designs; absolute
numbers are for reading, never for asserting. Each design runs in a fresh uvloop event loop.

Designs (all on uvloop, 5 workers/agents, the same step functions from
:mod:`benchmarks.bench_actions`):

* ``tickflow``: :class:`engine.service.daemon.Engine` with every feature on -- two workflows
  routed by symbol priority (``hot``: priority 0, max_concurrent 3, last step non-preemptible;
  ``bulk``: priority 2, max_concurrent 5), a timeout on every step, retries configured, conflation,
  preemption, per-step latency histograms.
* ``baseline``: :class:`benchmarks.baseline.BaselinePool` in ``"step"`` mode -- one queue
  operation per step, like tickflow (see that module for why this is the fair one).
* ``baseline-job``: the same pool running whole jobs per queue operation -- the naive design's
  best case, shown for throughput and for the urgent wait behind 50 ms steps.

Both designs are timed with ``time.perf_counter``: the baseline directly, tickflow through its
default clock (``LoopClock.now`` is ``perf_counter``; uvloop's ``loop.time()`` is libuv's
millisecond clock and would read every latency here as 0 or 1 ms).

Scenarios:

``throughput``
    A producer coroutine submits ``DATA_READY`` events as fast as the design takes them, keeping
    at most ``--in-flight`` runs in flight (so neither design piles up memory), for a fixed
    time; every step is :func:`~benchmarks.bench_actions.noop`. Symbols come from a universe of
    4096 (one in five priority 0), far more than the runs in flight, so conflation is on but
    never triggers and every event is one 3-step run in both designs: runs/s compare like for
    like (the conflated count is reported to prove it).
``throughput_yield``
    The same with :func:`~benchmarks.bench_actions.yield_once` steps, which suspend once like
    any real I/O step: a baseline worker can then no longer run step after step without
    giving the loop back.
``paced``
    The ``throughput`` mix offered at half the baseline's saturation rate, measured earlier in
    this run; dispatch latency (step ready -> step start) over every step. A design that
    cannot keep up is held at 4x ``--in-flight`` runs in flight (``achieved`` < ``offered``).
``paced_common``
    The same at half of tickflow's saturation rate: a rate both designs sustain.
``flood``
    Priority-2 steps each ``await asyncio.sleep(0.005)``. A backlog of them is queued first,
    then every 1-3 ms ten priority-2 events and one priority-0 event arrive in the same loop
    turn (the 10x flood). Dispatch latency of the priority-0 steps, and the time from the
    priority-0 event's arrival to its first step running (measured by the step itself).
``preempt``
    Priority-2 steps each sleep 50 ms and a backlog keeps every agent busy with them; every
    1-3 ms a priority-0 event arrives. Tickflow: preemption latency (urgent step ready ->
    running on a taken-over agent) from its own histogram. The baseline cannot preempt: its
    urgent arrival -> first step wait is the comparison.
``market_saturation``, ``market_flood``
    2,000 symbols ticking at 5x saturation: see :mod:`benchmarks.market_flood`, whose command
    runs them, each design in its own process (``run_all`` leaves them out).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson
import uvloop

from engine.config import loads_config
from engine.core.events import DataReady
from engine.service.daemon import Engine
from fastpath.latency import LatencyHistogram

from . import bench_actions, engine_report
from .baseline import BaselinePool, Mode
from .workloads import (
    AGENTS,
    BULK,
    HOT,
    HOT_SYMBOLS,
    Workload,
    baseline_specs,
    engine_toml,
    mixed_events,
)

__all__ = [
    "DESIGNS",
    "OWN_PROCESS",
    "SCENARIOS",
    "BaselineSubject",
    "Settings",
    "Subject",
    "TickflowSubject",
    "Workload",
    "baseline_specs",
    "engine_toml",
    "hist_from_record",
    "hist_record",
    "main",
    "make_subject",
    "mixed_events",
    "run_all",
    "run_drain",
    "run_scenario",
]

DEFAULT_JSON = Path(".benchmarks/engine.json")
DESIGNS = ("tickflow", "baseline", "baseline-job")


# -- histograms -----------------------------------------------------------------------------


def merged(hists: Sequence[LatencyHistogram]) -> LatencyHistogram:
    """One histogram holding the samples of ``hists`` (same bucket layout, so exact)."""
    out = LatencyHistogram()
    for h in hists:
        out.merge(h)
    return out


def hist_record(h: LatencyHistogram) -> dict[str, Any]:
    """p50/p99/p99.9/max in microseconds and the sample count, plus the non-empty buckets so
    rounds can be pooled (:func:`hist_from_record`)."""
    return {
        "p50_us": h.quantile(0.5) * 1e6,
        "p99_us": h.quantile(0.99) * 1e6,
        "p999_us": h.quantile(0.999) * 1e6,
        "max_us": h.max * 1e6,
        "samples": h.count,
        "buckets": {str(i): c for i, c in enumerate(h.bucket_counts()) if c},
        "total_s": h.total,
    }


def hist_from_record(records: Sequence[dict[str, Any]]) -> LatencyHistogram:
    out = LatencyHistogram()
    for r in records:
        out.add_buckets(
            {int(i): c for i, c in r["buckets"].items()},
            r["samples"], r["total_s"], r["max_us"] / 1e6, float("inf"),  # min not kept
        )
    return out


# -- the designs behind one interface -------------------------------------------------------


class Subject(Protocol):
    """What a scenario needs of a design. ``submit`` is the design's own bound method, so the
    producer pays no extra call layer."""

    name: str
    submit: Callable[[DataReady], object]

    async def __aenter__(self) -> Subject: ...
    async def __aexit__(self, *exc: object) -> None: ...
    def in_flight(self) -> int: ...
    async def wait_idle(self) -> None: ...
    def completed(self) -> int: ...
    def steps_done(self) -> int: ...
    def reset_statistics(self) -> None: ...
    def dispatch_wait(self, workflow: str) -> LatencyHistogram: ...
    def preemption_latency(self) -> LatencyHistogram | None: ...
    def extras(self) -> dict[str, int]: ...


class TickflowSubject:
    """Tickflow on a :class:`Workload`, or on a config given as TOML text (which must define
    the ``hot`` and ``bulk`` workflows the scenarios read)."""

    def __init__(self, workload: Workload | str) -> None:
        self.name = "tickflow"
        toml = workload if isinstance(workload, str) else engine_toml(workload)
        self.config = loads_config(toml)
        self.engine: Engine | None = None
        self._session: Any = None
        self.submit: Callable[[DataReady], object] = self._not_running

    @staticmethod
    def _not_running(event: DataReady) -> None:
        raise RuntimeError("the engine is not running")

    async def __aenter__(self) -> TickflowSubject:
        self.engine = Engine(self.config, sources=[])
        self._session = self.engine.session()
        await self._session.__aenter__()
        self.submit = self.engine.submit_nowait
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.submit = self._not_running
        await self._session.__aexit__(None, None, None)

    def _engine(self) -> Engine:
        assert self.engine is not None
        return self.engine

    def in_flight(self) -> int:
        coordinator = self._engine().coordinator
        assert coordinator is not None
        return len(coordinator.runs)

    async def wait_idle(self) -> None:
        await self._engine().wait_idle()

    def completed(self) -> int:
        return sum(w.runs["completed"] for w in self._engine().counters.workflows.values())

    def steps_done(self) -> int:
        return sum(
            s.outcomes["completed"]
            for w in self._engine().counters.workflows.values()
            for s in w.steps.values()
        )

    def reset_statistics(self) -> None:
        # Drop the warm-up's samples. The engine looks its histograms up on every record, so
        # fresh ones take effect at once.
        counters = self._engine().counters
        for w in counters.workflows.values():
            w.dispatch_wait = LatencyHistogram()
            w.run_latency = LatencyHistogram()
        counters.preemption_latency = LatencyHistogram()

    def dispatch_wait(self, workflow: str) -> LatencyHistogram:
        return self._engine().counters.workflows[workflow].dispatch_wait

    def preemption_latency(self) -> LatencyHistogram | None:
        return self._engine().counters.preemption_latency

    def extras(self) -> dict[str, int]:
        c = self._engine().statistics().counters
        return {
            "conflated": c.events_conflated,
            "shed": c.events_shed,
            "preemptions": c.preemptions,
            "timeouts": c.timeouts,
        }


class BaselineSubject:
    def __init__(self, workload: Workload, mode: Mode = "step") -> None:
        self.name = "baseline" if mode == "step" else f"baseline-{mode}"
        self.pool = BaselinePool(baseline_specs(workload), workers=AGENTS, mode=mode)
        self.submit: Callable[[DataReady], object] = self.pool.submit

    async def __aenter__(self) -> BaselineSubject:
        self.pool.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pool.stop()

    def in_flight(self) -> int:
        return self.pool.in_flight

    async def wait_idle(self) -> None:
        await self.pool.wait_idle()

    def completed(self) -> int:
        return self.pool.completed()

    def steps_done(self) -> int:
        return self.pool.steps_done

    def reset_statistics(self) -> None:
        self.pool.reset_statistics()

    def dispatch_wait(self, workflow: str) -> LatencyHistogram:
        return self.pool.specs[workflow].dispatch_wait

    def preemption_latency(self) -> LatencyHistogram | None:
        return None

    def extras(self) -> dict[str, int]:
        return {"conflated": 0, "shed": 0, "preemptions": 0, "timeouts": 0}


def make_subject(design: str, workload: Workload) -> Subject:
    if design == "tickflow":
        return TickflowSubject(workload)
    if design == "baseline":
        return BaselineSubject(workload, "step")
    if design == "baseline-job":
        return BaselineSubject(workload, "job")
    raise ValueError(f"unknown design {design!r}; expected one of {DESIGNS}")


# -- scenarios ------------------------------------------------------------------------------


@dataclass
class Settings:
    """Sizes and durations; the defaults keep the whole run near a minute and a half."""

    warmup_s: float = 0.25
    duration_s: float = 1.0
    in_flight: int = 512
    rounds: int = 4
    flood_factor: int = 10
    flood_backlog: int = 1000
    flood_sleep_s: float = 0.005
    preempt_sleep_s: float = 0.050
    urgent_gap_s: tuple[float, float] = (0.001, 0.003)
    seed: int = 1


class _Window:
    """Warm-up, then the measured window: resets the subject's statistics when it opens."""

    def __init__(self, subject: Subject, s: Settings) -> None:
        self.subject = subject
        self.duration = s.duration_s
        self.opens = time.perf_counter() + s.warmup_s
        self.start = 0.0
        self.end = 0.0
        self.completed = 0
        self.steps = 0

    def done(self, now: float) -> bool:
        """Call once per producer iteration; True once the window has closed."""
        if self.start == 0.0:
            if now >= self.opens:
                self.subject.reset_statistics()
                bench_actions.PROBE.reset()
                self.completed = self.subject.completed()
                self.steps = self.subject.steps_done()
                self.start, self.end = now, now + self.duration
            return False
        return now >= self.end


async def throughput(subject: Subject, s: Settings) -> dict[str, Any]:
    """Saturation: keep ``s.in_flight`` runs in flight; count what completes in the window."""
    evs = mixed_events()
    n = len(evs)
    submit, in_flight, cap = subject.submit, subject.in_flight, s.in_flight
    clock = time.perf_counter
    window = _Window(subject, s)
    i = 0
    while not window.done(clock()):
        for _ in range(cap - in_flight()):
            submit(evs[i])
            i += 1
            if i == n:
                i = 0
        await asyncio.sleep(0)
    elapsed = clock() - window.start
    wait = merged([subject.dispatch_wait(HOT), subject.dispatch_wait(BULK)])
    return {
        "runs_per_s": (subject.completed() - window.completed) / elapsed,
        "steps_per_s": (subject.steps_done() - window.steps) / elapsed,
        "dispatch": hist_record(wait),
        **subject.extras(),
    }


async def paced(subject: Subject, s: Settings, rate: float) -> dict[str, Any]:
    """Offer ``rate`` events/s of the mixed universe; dispatch latency over every step."""
    evs = mixed_events()
    n = len(evs)
    submit, in_flight, cap = subject.submit, subject.in_flight, s.in_flight * 4
    clock = time.perf_counter
    window = _Window(subject, s)
    start = clock()
    i = offered = submitted = submitted_at_start = 0
    opened = False
    while True:
        now = clock()
        if window.done(now):
            break
        if window.start and not opened:
            opened, submitted_at_start = True, submitted
        due = int((now - start) * rate) - offered
        if due > 0:
            offered += due
            # Never beyond the cap: a design that cannot keep up shows as achieved < offered
            # instead of growing its queue without bound.
            for _ in range(min(due, cap - in_flight())):
                submit(evs[i])
                submitted += 1
                i += 1
                if i == n:
                    i = 0
        await asyncio.sleep(0)
    elapsed = clock() - window.start
    wait = merged([subject.dispatch_wait(HOT), subject.dispatch_wait(BULK)])
    return {
        "offered_per_s": rate,
        "achieved_per_s": (submitted - submitted_at_start) / elapsed,
        "dispatch": hist_record(wait),
        **subject.extras(),
    }


async def _urgent_under_load(
    subject: Subject, s: Settings, backlog: int, per_urgent: int
) -> dict[str, Any]:
    """Queue ``backlog`` priority-2 events, then every ``s.urgent_gap_s`` submit ``per_urgent``
    priority-2 events and one priority-0 event, in that order, in the same loop turn.

    The priority-0 event is stamped with ``perf_counter`` in ``ts`` and its workflow starts
    with :func:`benchmarks.bench_actions.probe`, which records arrival -> first step running.
    Priority-2 symbols are never reused, so nothing conflates in either design; the 256
    priority-0 symbols come round every ~0.5 s, long after their previous run has finished."""
    rng = random.Random(s.seed)
    submit, clock = subject.submit, time.perf_counter
    b = h = 0

    def bulk_event() -> DataReady:
        nonlocal b
        b += 1
        return DataReady(symbol=f"B{b}", ts=1.7e9, price=100.0, volume=1.0, priority=2)

    for _ in range(backlog):
        submit(bulk_event())
    await asyncio.sleep(s.urgent_gap_s[1])
    window = _Window(subject, s)
    lo, hi = s.urgent_gap_s
    while not window.done(clock()):
        for _ in range(per_urgent):
            submit(bulk_event())
        submit(DataReady(symbol=f"H{h % HOT_SYMBOLS}", ts=clock(), price=100.0, volume=1.0,
                         priority=0))
        h += 1
        await asyncio.sleep(rng.uniform(lo, hi))
    pre = subject.preemption_latency()
    return {
        "urgent": hist_record(bench_actions.PROBE.hist),
        "hot_dispatch": hist_record(subject.dispatch_wait(HOT)),
        "preemption": None if pre is None else hist_record(pre),
        "in_flight_at_end": subject.in_flight(),
        **subject.extras(),
    }


async def flood(subject: Subject, s: Settings) -> dict[str, Any]:
    return await _urgent_under_load(subject, s, s.flood_backlog, s.flood_factor)


async def preempt(subject: Subject, s: Settings) -> dict[str, Any]:
    # Enough 50 ms steps queued to keep every agent busy for the whole run and then some.
    steps_needed = AGENTS * (s.warmup_s + s.duration_s + 1.0) / s.preempt_sleep_s
    return await _urgent_under_load(subject, s, max(AGENTS * 2, int(steps_needed)), 0)


Scenario = Callable[..., Coroutine[Any, Any, dict[str, Any]]]


def _market(name: str) -> Scenario:
    """A scenario of :mod:`benchmarks.market_flood` (2,000 symbols, 5x overload), imported
    lazily because that module builds on this one (see :data:`OWN_PROCESS`)."""

    async def scenario(subject: Subject, s: Settings, *args: Any) -> dict[str, Any]:
        from . import market_flood

        result: dict[str, Any] = await getattr(market_flood, name)(subject, s, *args)
        return result

    return scenario


SCENARIOS: dict[str, Scenario] = {
    "throughput": throughput,
    "throughput_yield": throughput,
    "paced": paced,
    "paced_common": paced,
    "flood": flood,
    "preempt": preempt,
    "market_saturation": _market("saturation"),
    "market_flood": _market("flood"),
}
# Run by `python -m benchmarks.market_flood` (and tickflow bench), a fresh process per design
# so that peak RSS is the design's own; run_all plays every other scenario.
OWN_PROCESS = frozenset({"market_saturation", "market_flood"})


def workload_for(scenario: str, s: Settings) -> Workload:
    if scenario == "throughput_yield":
        return Workload(step="yield_once")
    if scenario == "flood":
        return Workload(bulk_sleep_s=s.flood_sleep_s, probe=True)
    if scenario == "preempt":
        return Workload(bulk_sleep_s=s.preempt_sleep_s, probe=True)
    return Workload()


def run_scenario(scenario: str, design: str, s: Settings, *args: Any) -> dict[str, Any]:
    """Run one scenario for one design in a fresh uvloop loop; ``args``: the paced rate."""
    if scenario.startswith("market_"):
        from .market_flood import make_subject as market_subject

        subject = market_subject(design)
    else:
        subject = make_subject(design, workload_for(scenario, s))
    fn = SCENARIOS[scenario]

    async def body() -> dict[str, Any]:
        async with subject:
            return await fn(subject, s, *args)

    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(body())
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    # Noise gauges. On a shared machine the OS takes the CPU away in ~4 ms slices: a CPU share
    # well under 1.0 in a CPU-bound scenario, or many involuntary context switches, mean the
    # latency tails of this run are the host's as much as the design's.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["cpu_share"] = cpu / wall
    result["involuntary_switches"] = after.ru_nivcsw - before.ru_nivcsw
    return result


async def drain(design: str, batch: int) -> int:
    """Submit ``batch`` events for distinct symbols (one in five priority 0) at once and wait
    until every run has completed; returns the runs completed."""
    subject = make_subject(design, Workload())
    evs = mixed_events(batch)
    async with subject:
        for event in evs:
            subject.submit(event)
        async with asyncio.timeout(60):
            await subject.wait_idle()
        return subject.completed()


def run_drain(design: str, batch: int) -> int:
    """:func:`drain` in a fresh uvloop loop (the unit of ``benchmarks/test_bench_engine.py``)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(drain(design, batch))


# -- the whole run --------------------------------------------------------------------------


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Rates and counts: the median over the rounds. Latency histograms: pooled."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r[key] for r in runs]
        if isinstance(first, dict) and "buckets" in first:
            # The pooled buckets stay: tickflow bench draws its latency CDFs from them.
            out[key] = hist_record(hist_from_record(values))
        elif isinstance(first, dict):
            out[key] = _aggregate(values)
        elif isinstance(first, int | float) and not isinstance(first, bool):
            out[key] = float(statistics.median(values))
        else:
            out[key] = first
    return out


def _strip_buckets(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_buckets(v) for k, v in node.items() if k not in ("buckets", "total_s")}
    if isinstance(node, list):
        return [_strip_buckets(v) for v in node]
    return node


def _alternate(designs: Sequence[str], round_index: int) -> list[str]:
    return list(designs) if round_index % 2 == 0 else list(reversed(designs))


def _git() -> dict[str, Any]:
    """The code measured: HEAD and the engine files changed on top of it (read-only git)."""

    def out(*cmd: str) -> str:
        try:
            return subprocess.run(
                ["git", *cmd], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except OSError:
            return ""

    changed = out("status", "--porcelain", "--", "engine", "fastpath")
    return {"head": out("rev-parse", "--short", "HEAD").strip(),
            "changed": [line[3:] for line in changed.splitlines() if line.strip()]}


def run_all(s: Settings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``s.rounds`` rounds of every scenario, the designs' order alternating every round.

    Each round measures saturation first and paces its ``paced`` runs at half the baseline's
    saturation *of that round* (and ``paced_common`` at half tickflow's): on a shared machine
    the speed drifts from minute to minute, and a rate measured earlier could be off by 2x."""
    started = time.perf_counter()
    rounds: dict[str, dict[str, list[dict[str, Any]]]] = {}
    rates: dict[str, list[float]] = {"paced": [], "paced_common": []}

    def play(r: int, scenario: str, designs: Sequence[str], *args: Any) -> None:
        for design in _alternate(designs, r):
            result = run_scenario(scenario, design, s, *args)
            rounds.setdefault(scenario, {}).setdefault(design, []).append(result)
            note = f"{result['runs_per_s']:>10,.0f} runs/s" if "runs_per_s" in result else ""
            log(f"  round {r + 1}  {scenario:<17} {design:<13}{note}")

    for r in range(s.rounds):
        play(r, "throughput", DESIGNS)
        play(r, "throughput_yield", DESIGNS)
        sat = {d: rounds["throughput"][d][-1]["runs_per_s"] for d in ("baseline", "tickflow")}
        rates["paced"].append(sat["baseline"] / 2)
        rates["paced_common"].append(min(sat.values()) / 2)
        play(r, "paced", ("tickflow", "baseline"), rates["paced"][-1])
        play(r, "paced_common", ("tickflow", "baseline"), rates["paced_common"][-1])
        play(r, "flood", ("tickflow", "baseline"))
        play(r, "preempt", DESIGNS)
    saturation = {
        d: float(statistics.median(x["runs_per_s"] for x in rounds["throughput"][d]))
        for d in ("baseline", "tickflow")
    }
    summary = {sc: {d: _aggregate(rs) for d, rs in by.items()} for sc, by in rounds.items()}
    per_round = [
        {sc: {d: rs[i] for d, rs in by.items()} for sc, by in rounds.items()}
        for i in range(s.rounds)
    ]
    data: dict[str, Any] = {
        "meta": {
            "python": sys.version.split()[0],
            "uvloop": getattr(uvloop, "__version__", "?"),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "loadavg_at_end": os.getloadavg()[0],
            "git": _git(),
            "settings": {k: v for k, v in vars(s).items()},
            "baseline_saturation_runs_per_s": saturation["baseline"],
            "tickflow_saturation_runs_per_s": saturation["tickflow"],
            "paced_rates_per_s": rates["paced"],
            "paced_common_rates_per_s": rates["paced_common"],
            "wall_s": time.perf_counter() - started,
        },
        "summary": summary,
    }
    data["ratios"] = engine_report.ratios(summary)
    data["round_ratios"] = [engine_report.ratios(r) for r in per_round]
    data["targets"] = engine_report.targets(data["ratios"], data["round_ratios"])
    data["rounds"] = _strip_buckets(rounds)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.engine_load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d = Settings()
    parser.add_argument("--rounds", type=int, default=d.rounds, help="runs per design and "
                        "scenario, alternating the order (default %(default)s)")
    parser.add_argument("--duration", type=float, default=d.duration_s,
                        help="measured seconds per run (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=d.warmup_s,
                        help="warm-up seconds per run (default %(default)s)")
    parser.add_argument("--in-flight", type=int, default=d.in_flight,
                        help="runs in flight at saturation (default %(default)s)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON,
                        help="where to write the results (default %(default)s)")
    args = parser.parse_args(argv)
    settings = Settings(rounds=args.rounds, duration_s=args.duration, warmup_s=args.warmup,
                        in_flight=args.in_flight)
    data = run_all(settings, log=lambda line: print(line, file=sys.stderr, flush=True))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    print(engine_report.format_table(data))
    print(f"\nwritten to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
