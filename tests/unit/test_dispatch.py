"""The dispatcher and its agents, driven through a real Engine on a fake clock.

Every step action comes from :mod:`tests.unit.dispatch_actions`: gated actions wait until the
test releases them, and every attempt is logged as it starts and ends, so the tests assert
exact start orders, exact counts, and which step was cancelled. Time only moves when a test
calls ``FakeClock.advance``, which fires step timeouts and retry backoffs deterministically;
waiting for the engine means yielding a bounded number of loop turns, never sleeping.

Naming: each test uses its own symbols; a symbol's priority routes it to one workflow (the
routes below never overlap), and a run's priority is ``min(workflow.priority, symbol
priority)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from engine.core.coordinator import Coordinator
from engine.core.dispatcher import Dispatcher, Interrupt
from engine.core.fsm import RunState, StepState
from engine.core.runs import Run, StepRun
from engine.core.symbols import SymbolStatus
from engine.service.daemon import Engine

from . import dispatch_actions as acts
from .engine_harness import data_ready, make_engine, run_async, settle, wait_for

ACTIONS = "tests.unit.dispatch_actions"
LONG_MS = 60_000  # a timeout no test reaches by advancing the fake clock


# -- config builders --------------------------------------------------------------------------


def step(
    name: str = "work",
    action: str = "gated",
    *,
    timeout_ms: float = LONG_MS,
    preemptible: bool = True,
    retry: str | None = None,
    depends_on: Sequence[str] = (),
) -> str:
    """One step as a TOML inline table."""
    parts = [
        f'name = "{name}"',
        f'action = "{ACTIONS}:{action}"',
        f"timeout_ms = {timeout_ms}",
        f"preemptible = {'true' if preemptible else 'false'}",
    ]
    if depends_on:
        parts.append("depends_on = [" + ", ".join(f'"{d}"' for d in depends_on) + "]")
    if retry is not None:
        parts.append(f"retry = {{ {retry} }}")
    return "{ " + ", ".join(parts) + " }"


def workflow(
    name: str,
    *,
    priority: int,
    route: tuple[int, int | None],
    max_concurrent: int = 10,
    deadline_ms: float = 1000.0,
    steps: Sequence[str] = (),
) -> str:
    low, high = route
    route_text = f"min_priority = {low}" + (f", max_priority = {high}" if high is not None else "")
    step_lines = ",\n    ".join(steps or [step()])
    return (
        f"[workflows.{name}]\n"
        f"priority = {priority}\n"
        f"max_concurrent = {max_concurrent}\n"
        f"deadline_ms = {deadline_ms}\n"
        f"route = {{ {route_text} }}\n"
        f"steps = [\n    {step_lines}\n]\n"
    )


def config(agents: int, *workflows: str) -> str:
    # drain_timeout_s = 0: leaving a session never waits (in real time) for gated steps.
    header = f'[engine]\nagents = {agents}\ndrain_timeout_s = 0.0\n\n[source]\nkind = "none"\n'
    return header + "\n" + "\n".join(workflows)


# A non-preemptible, gated step at priority 9 (symbols of priority 9): keeps an agent busy
# without ever being a preemption victim.
BLOCKER = workflow("blocker", priority=9, route=(9, 9), steps=[step(preemptible=False)])


# -- helpers ----------------------------------------------------------------------------------


def submit(engine: Engine, symbol: str, priority: int) -> None:
    engine.submit_nowait(data_ready(symbol, priority))


async def started(symbol: str, attempt: int = 1, step_name: str = "work") -> None:
    try:
        await wait_for(
            lambda: (symbol, step_name, attempt) in acts.starts(),
            f"{symbol}.{step_name} attempt {attempt} to start",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; started so far: {acts.starts()}") from None


async def finished(n: int) -> None:
    """Wait until exactly ``n`` attempts have finished (normally)."""
    await wait_for(
        lambda: sum(1 for e in acts.ended() if e[0] == "finish") == n, f"{n} finished steps"
    )


async def running_exactly(n: int) -> None:
    await wait_for(lambda: acts.running() == n, f"{n} steps running")


async def idle(engine: Engine) -> None:
    async with asyncio.timeout(2.0):  # a bound, not a wait: the engine gets idle within turns
        await engine.wait_idle()


def coordinator(engine: Engine) -> Coordinator:
    assert engine.coordinator is not None
    return engine.coordinator


def dispatcher(engine: Engine) -> Dispatcher:
    assert engine.dispatcher is not None
    return engine.dispatcher


def live_run(engine: Engine, workflow_name: str, symbol: str) -> Run:
    c = coordinator(engine)
    run = c.active_run(workflow_name, symbol) or c.pending_run(workflow_name, symbol)
    assert run is not None, f"no live {workflow_name} run for {symbol}"
    return run


def agent_running(engine: Engine) -> dict[int, str | None]:
    """Agent index -> symbol of the step it holds (None when idle)."""
    return {
        a.index: (a.step.run.symbol.name if a.step is not None else None)
        for a in dispatcher(engine).agents
    }


def state_of(obj: StepRun | Run) -> StepState | RunState:
    """The current state (a call, so the type checker does not keep an earlier narrowing)."""
    return obj.state


def step_outcomes(engine: Engine, key: str) -> dict[str, int]:
    return {k: v for k, v in engine.statistics().counters.steps[key].items() if v}


def run_outcomes(engine: Engine, workflow_name: str) -> dict[str, int]:
    return {k: v for k, v in engine.statistics().counters.runs[workflow_name].items() if v}


# -- 1. priority order ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["across_workflows", "within_one_workflow"])
def test_queued_steps_start_in_priority_order(layout: str) -> None:
    if layout == "across_workflows":
        # Declared (and so scanned) lowest priority first, to catch "first eligible lane".
        workflows = [
            workflow("w2", priority=2, route=(2, 2)),
            workflow("w0", priority=0, route=(0, 0)),
            workflow("w1", priority=1, route=(1, 1)),
        ]
    else:
        workflows = [workflow("any", priority=8, route=(0, 8))]
    engine, _ = make_engine(config(1, BLOCKER, *workflows))

    async def main() -> None:
        async with engine.session():
            submit(engine, "BLK", 9)
            await started("BLK")
            # Arrival order 2, 0, 1; same fake instant, so same deadline: only priority sorts.
            for symbol, priority in (("P2", 2), ("P0", 0), ("P1", 1)):
                submit(engine, symbol, priority)
                await settle()
            assert acts.starts() == [("BLK", "work", 1)]
            assert engine.statistics().queue.depth_by_priority == {0: 1, 1: 1, 2: 1}
            assert dispatcher(engine).preemptions == 0  # the blocker is not preemptible

            # One agent: each queued step starts only when the one before it finishes.
            for previous, nxt in (("BLK", "P0"), ("P0", "P1"), ("P1", "P2")):
                acts.release(previous)
                await started(nxt)
                await settle()
                assert acts.running() == 1
            acts.release("P2")
            await idle(engine)
        assert [s for s, _, _ in acts.starts()] == ["BLK", "P0", "P1", "P2"]
        assert acts.ended() == [("finish", s, "work", 1) for s in ("BLK", "P0", "P1", "P2")]

    run_async(main)


# -- 2. deadline, then FIFO, within a priority ------------------------------------------------


def instant_workflow(name: str, priority: int, *, route: int, deadline_ms: float) -> str:
    return workflow(
        name,
        priority=priority,
        route=(route, route),
        deadline_ms=deadline_ms,
        steps=[step(action="instant")],
    )


def test_within_a_priority_earlier_deadline_first_then_arrival_order() -> None:
    engine, clock = make_engine(
        config(
            1,
            BLOCKER,
            instant_workflow("slow", 1, route=3, deadline_ms=5000),
            instant_workflow("mid", 1, route=4, deadline_ms=1000),
            instant_workflow("fast", 1, route=5, deadline_ms=100),
            instant_workflow("fast2", 1, route=6, deadline_ms=100),
            # Lower priority with the earliest deadline of all: priority still comes first.
            instant_workflow("lax", 2, route=7, deadline_ms=1),
        )
    )

    async def main() -> None:
        async with engine.session():
            submit(engine, "BLK", 9)
            await started("BLK")
            t0 = clock.now()
            submit(engine, "Z1", 7)  # lax:  (2, t0 + 0.001)
            submit(engine, "A1", 3)  # slow: (1, t0 + 5)
            submit(engine, "B1", 4)  # mid:  (1, t0 + 1)
            await settle()
            clock.advance(2.0)
            submit(engine, "C1", 5)  # fast:  (1, t0 + 2.1)  \
            submit(engine, "C2", 5)  # fast:  (1, t0 + 2.1)   | same deadline:
            submit(engine, "D1", 6)  # fast2: (1, t0 + 2.1)   | arrival order,
            submit(engine, "C3", 5)  # fast:  (1, t0 + 2.1)  /  across lanes too
            await settle()
            assert acts.starts() == [("BLK", "work", 1)]
            assert len(engine.queue) == 7
            lanes = {"Z1": "lax", "A1": "slow", "B1": "mid", "C1": "fast", "C2": "fast"}
            lanes |= {"D1": "fast2", "C3": "fast"}
            runs = {symbol: live_run(engine, wf, symbol) for symbol, wf in lanes.items()}
            keys = {symbol: (run.priority, run.deadline) for symbol, run in runs.items()}
            t1 = t0 + 2.0  # when the C and D events arrived
            assert keys == {
                "Z1": (2, t0 + 0.001),
                "A1": (1, t0 + 5.0),
                "B1": (1, t0 + 1.0),
                "C1": (1, t1 + 0.1),
                "C2": (1, t1 + 0.1),
                "D1": (1, t1 + 0.1),  # the very same deadline: arrival order decides
                "C3": (1, t1 + 0.1),
            }

            acts.release("BLK")
            await idle(engine)
        order = [s for s, _, _ in acts.starts()]
        assert order == ["BLK", "B1", "C1", "C2", "D1", "C3", "A1", "Z1"]

    run_async(main)


# -- 3. per-workflow max_concurrent -----------------------------------------------------------


def test_max_concurrent_bounds_a_workflow_without_blocking_others() -> None:
    engine, _ = make_engine(
        config(
            3,
            workflow("A", priority=0, route=(0, 0), max_concurrent=1),
            workflow("B", priority=2, route=(1, None), max_concurrent=5),
        )
    )

    async def main() -> None:
        async with engine.session():
            # A's work is more urgent and arrives first; only one A step may run at a time.
            for symbol in ("A1", "A2", "A3"):
                submit(engine, symbol, 0)
            for symbol in ("B1", "B2"):
                submit(engine, symbol, 2)
            await wait_for(lambda: len(acts.starts()) == 3, "three steps to start")
            await settle()
            assert [s for s, _, _ in acts.starts()] == ["A1", "B1", "B2"]
            stats = engine.statistics()
            assert stats.queue.running_by_workflow == {"A": 1, "B": 2}
            assert stats.queue.depth_by_workflow == {"A": 2, "B": 0}
            # A's queued head is at its limit: it must not preempt B's running steps either.
            assert stats.dispatcher.preemptions == 0

            # A free agent does not go to A while A is at its limit...
            acts.release("B1")
            await wait_for(lambda: ("finish", "B1", "work", 1) in acts.ended(), "B1 to finish")
            await settle()
            assert [s for s, _, _ in acts.starts()] == ["A1", "B1", "B2"]
            assert dispatcher(engine).busy == 2
            # ...but B work queued behind A's head still gets it.
            submit(engine, "B3", 2)
            await started("B3")
            assert [s for s, _, _ in acts.starts()] == ["A1", "B1", "B2", "B3"]

            # A2 starts exactly when A1 finishes, A3 exactly when A2 finishes.
            acts.release("A1")
            await started("A2")
            await settle()
            assert "A3" not in [s for s, _, _ in acts.starts()]
            acts.release("A2")
            await started("A3")
            for symbol in ("A3", "B2", "B3"):
                acts.release(symbol)
            await idle(engine)

        log = [(r.kind, r.symbol) for r in acts.log() if r.workflow == "A"]
        assert log == [
            ("start", "A1"),
            ("finish", "A1"),
            ("start", "A2"),
            ("finish", "A2"),
            ("start", "A3"),
            ("finish", "A3"),
        ]
        assert acts.peak_running("A") == 1
        assert acts.peak_running("B") == 2
        assert run_outcomes(engine, "A") == {"completed": 3}
        assert run_outcomes(engine, "B") == {"completed": 3}

    run_async(main)


# -- 4. the global agent bound ----------------------------------------------------------------


def test_never_more_steps_running_than_agents() -> None:
    agents = 3
    engine, _ = make_engine(
        config(
            agents,
            workflow("W1", priority=1, route=(1, 1)),
            workflow("W2", priority=1, route=(2, None)),
        )
    )
    symbols = [f"S{i}" for i in range(10)]

    async def main() -> None:
        async with engine.session():
            for i, symbol in enumerate(symbols):
                submit(engine, symbol, 1 + i % 2)
            await wait_for(lambda: len(acts.starts()) == agents, "the pool to fill")
            await settle()
            assert [s for s, _, _ in acts.starts()] == symbols[:agents]
            stats = engine.statistics()
            assert stats.dispatcher.busy == agents
            assert stats.queue.size == len(symbols) - agents

            # Each finished step frees exactly one agent for exactly one queued step, FIFO.
            for n, symbol in enumerate(symbols):
                acts.release(symbol)
                await finished(n + 1)
                await settle()
                expected = min(len(symbols), agents + n + 1)
                assert [s for s, _, _ in acts.starts()] == symbols[:expected]
                assert acts.running() == min(agents, len(symbols) - n - 1)
                assert dispatcher(engine).busy == acts.running()
            await idle(engine)

        assert acts.peak_running() == agents
        stats = engine.statistics()
        assert stats.dispatcher.dispatched == len(symbols)
        assert stats.dispatcher.busy == 0
        assert stats.dispatcher.preemptions == 0
        assert run_outcomes(engine, "W1") == {"completed": 5}
        assert run_outcomes(engine, "W2") == {"completed": 5}

    run_async(main)


def test_agent_bound_holds_when_every_running_step_finishes_at_once() -> None:
    agents = 4
    engine, _ = make_engine(config(agents, workflow("W", priority=1, route=(0, None))))
    symbols = [f"S{i}" for i in range(25)]

    async def main() -> None:
        async with engine.session():
            for symbol in symbols:
                submit(engine, symbol, 1)
            done = 0
            while done < len(symbols):
                # Release every running step in one go: the freed agents refill from the
                # queue, and still no more than `agents` steps run at once.
                expected = min(agents, len(symbols) - done)
                await running_exactly(expected)
                await settle()
                assert acts.running() == expected
                assert dispatcher(engine).busy == expected
                assert len(engine.queue) == len(symbols) - done - expected
                for symbol, _, _ in acts.starts()[done : done + expected]:
                    acts.release(symbol)
                done += expected
            await idle(engine)
        assert acts.peak_running() == agents
        assert [s for s, _, _ in acts.starts()] == symbols
        assert engine.statistics().dispatcher.dispatched == len(symbols)
        assert run_outcomes(engine, "W") == {"completed": len(symbols)}

    run_async(main)


# -- 5. preemption ----------------------------------------------------------------------------

PREEMPTION_WORKFLOWS = (
    workflow("hft", priority=0, route=(0, 0)),
    workflow("trend", priority=2, route=(1, 2)),
    # Same level as trend (priority 2) with a much earlier deadline: a step queued here would
    # come before a preempted trend step, were that not put back at the head of its level.
    workflow("trend_fast", priority=2, route=(3, None), deadline_ms=10),
)


def test_preemption_takes_the_lowest_priority_latest_started_step() -> None:
    engine, clock = make_engine(config(3, *PREEMPTION_WORKFLOWS))

    async def main() -> None:
        async with engine.session():
            # Start order OLD (p2), NEW (p2), MID (p1), at distinct instants.
            submit(engine, "OLD", 2)
            await started("OLD")
            clock.advance(0.001)
            submit(engine, "NEW", 2)
            await started("NEW")
            clock.advance(0.001)
            submit(engine, "MID", 1)
            await started("MID")
            # Queued at the same level, with an earlier deadline than any trend run.
            submit(engine, "FAST", 3)
            await settle()
            assert acts.starts() == [("OLD", "work", 1), ("NEW", "work", 1), ("MID", "work", 1)]
            assert dispatcher(engine).preemptions == 0  # equal priority never preempts
            victim_run = live_run(engine, "trend", "NEW")
            victim = victim_run.steps[0]
            holders = agent_running(engine)
            victim_agent = next(i for i, s in holders.items() if s == "NEW")

            d = dispatcher(engine)
            passes_before = d.passes
            acts.set_probe(lambda: d.passes)
            submit(engine, "URG", 0)
            # Every agent is busy: the preemption is decided in the intake's own call, not
            # by a dispatch pass a loop turn later.
            assert d.preemptions == 1
            clock.advance(0.005)  # the urgent step was ready 5 ms before its agent wakes
            await started("URG")

            # The urgent step started with no dispatch pass at all...
            urgent_start = next(r for r in acts.log() if r.kind == "start" and r.symbol == "URG")
            assert urgent_start.probe == passes_before
            # ...on the agent of the largest-priority-number, latest-started preemptible step.
            assert acts.ended() == [("cancel", "NEW", "work", 1)]
            assert agent_running(engine) == {**holders, victim_agent: "URG"}
            stats = engine.statistics()
            assert stats.dispatcher.preemptions == 1
            assert stats.counters.preemptions == 1
            assert step_outcomes(engine, "trend.work") == {"preempted": 1}
            latency = stats.counters.preemption_latency
            assert latency["count"] == 1
            assert latency["max_s"] == pytest.approx(0.005)
            # Preemption is not an attempt: back in the queue, not failed, nothing counted.
            assert victim.state is StepState.PENDING
            assert victim.attempts == 0
            assert victim.preemptions == 1
            assert victim.handle is not None
            assert victim_run.state is RunState.RUNNING
            assert stats.counters.retries == 0
            assert stats.counters.timeouts == 0
            assert stats.queue.size == 2  # NEW (back) and FAST

            # When an agent frees up, the preempted step goes first: head of its level,
            # ahead of FAST's earlier deadline; the same attempt number as before.
            acts.release("URG")
            await started("NEW", attempt=1)
            await settle()
            assert acts.starts()[-1] == ("NEW", "work", 1)
            assert acts.starts().count(("NEW", "work", 1)) == 2
            assert "FAST" not in [s for s, _, _ in acts.starts()]
            acts.release("NEW")
            await started("FAST")
            for symbol in ("OLD", "MID", "FAST"):
                acts.release(symbol)
            await idle(engine)

        assert [s for s, _, _ in acts.starts()] == ["OLD", "NEW", "MID", "URG", "NEW", "FAST"]
        assert state_of(victim) is StepState.COMPLETED
        assert victim.attempts == 1
        assert victim.preemptions == 1
        assert state_of(victim_run) is RunState.COMPLETED
        stats = engine.statistics()
        assert stats.dispatcher.preemptions == 1
        assert stats.dispatcher.dispatched == 6  # the re-run of NEW is a second dispatch
        assert step_outcomes(engine, "trend.work") == {"completed": 3, "preempted": 1}
        assert run_outcomes(engine, "trend") == {"completed": 3}
        assert run_outcomes(engine, "hft") == {"completed": 1}
        assert run_outcomes(engine, "trend_fast") == {"completed": 1}

    run_async(main)


def test_preemption_ties_go_to_the_step_started_last_even_at_the_same_instant() -> None:
    """Three priority-2 steps start at one fake-clock instant (equal start times); the one
    started last must be the victim. Agent 2 is reused for the last start so that the latest
    step does not sit on the agent that happens to be scanned first."""
    engine, _ = make_engine(config(3, *PREEMPTION_WORKFLOWS))

    async def main() -> None:
        async with engine.session():
            for symbol in ("T1", "T2", "T3"):
                submit(engine, symbol, 2)
                await started(symbol)
            # Free T1's agent and start T4 on it: start order is now T2, T3, T4.
            acts.release("T1")
            await wait_for(lambda: ("finish", "T1", "work", 1) in acts.ended(), "T1 to finish")
            submit(engine, "T4", 2)
            await started("T4")
            holders = agent_running(engine)
            submit(engine, "URG", 0)
            await started("URG")
            victims = [e for e in acts.ended() if e[0] == "cancel"]
            assert victims == [("cancel", "T4", "work", 1)], (
                f"agents held {holders}; expected the last-started T4 to be preempted"
            )
            for symbol in ("T2", "T3", "T4", "URG"):
                acts.release(symbol)
            await idle(engine)

    run_async(main)


# -- 6. non-preemptible steps -----------------------------------------------------------------


def test_non_preemptible_step_is_never_preempted_even_as_the_only_candidate() -> None:
    engine, _ = make_engine(
        config(
            1,
            workflow("hft", priority=0, route=(0, 0)),
            workflow("orders", priority=2, route=(1, None), steps=[step(preemptible=False)]),
        )
    )

    async def main() -> None:
        async with engine.session():
            submit(engine, "ORD", 2)
            await started("ORD")
            submit(engine, "URG", 0)
            await settle()
            # The urgent step waits for the agent instead of cutting the order half-way.
            assert acts.starts() == [("ORD", "work", 1)]
            assert acts.ended() == []
            assert agent_running(engine) == {0: "ORD"}
            stats = engine.statistics()
            assert stats.dispatcher.preemptions == 0
            assert stats.queue.depth_by_priority == {0: 1}
            acts.release("ORD")
            await started("URG")
            acts.release("URG")
            await idle(engine)
        assert acts.ended() == [("finish", "ORD", "work", 1), ("finish", "URG", "work", 1)]
        assert engine.statistics().dispatcher.preemptions == 0
        assert step_outcomes(engine, "orders.work") == {"completed": 1}

    run_async(main)


def test_preemption_passes_over_a_non_preemptible_step_with_a_larger_priority_number() -> None:
    engine, clock = make_engine(
        config(
            2,
            workflow("hft", priority=0, route=(0, 0)),
            workflow("trend", priority=2, route=(1, 2)),
            workflow("orders", priority=3, route=(3, None), steps=[step(preemptible=False)]),
        )
    )

    async def main() -> None:
        async with engine.session():
            submit(engine, "MID", 1)  # trend at priority 1: preemptible
            await started("MID")
            clock.advance(0.001)
            submit(engine, "ORD", 3)  # orders at priority 3, started last: not preemptible
            await started("ORD")
            submit(engine, "URG", 0)
            await started("URG")
            assert acts.ended() == [("cancel", "MID", "work", 1)]
            assert sorted(s for s in agent_running(engine).values() if s) == ["ORD", "URG"]
            assert engine.statistics().dispatcher.preemptions == 1
            for symbol in ("ORD", "URG"):
                acts.release(symbol)
            await wait_for(lambda: acts.starts().count(("MID", "work", 1)) == 2, "MID re-run")
            acts.release("MID")
            await idle(engine)
        assert ("cancel", "ORD", "work", 1) not in acts.ended()
        assert step_outcomes(engine, "orders.work") == {"completed": 1}
        assert step_outcomes(engine, "trend.work") == {"completed": 1, "preempted": 1}

    run_async(main)


# -- 7. timeouts and retries ------------------------------------------------------------------

NO_JITTER_RETRY = "count = 2, backoff_base_ms = 10, backoff_factor = 2, jitter = 0.0"


def test_timeout_retries_with_backoff_then_fails_the_run_only() -> None:
    engine, clock = make_engine(
        config(
            2,
            workflow(
                "flaky",
                priority=1,
                route=(1, 1),
                steps=[step("hang", timeout_ms=100, retry=NO_JITTER_RETRY)],
            ),
            workflow("steady", priority=1, route=(2, None)),
        )
    )

    async def main() -> None:
        async with engine.session():
            submit(engine, "OK", 2)
            submit(engine, "HANG", 1)
            await started("OK")
            await started("HANG", step_name="hang")
            run = live_run(engine, "flaky", "HANG")
            hang = run.steps[0]
            d = dispatcher(engine)

            async def attempt_times_out(attempt: int) -> None:
                clock.advance(0.090)  # not yet
                await settle()
                assert d.timeouts == attempt - 1
                assert acts.ended("HANG") == [
                    ("cancel", "HANG", "hang", n) for n in range(1, attempt)
                ]
                clock.advance(0.020)  # past timeout_ms
                await wait_for(
                    lambda: ("cancel", "HANG", "hang", attempt) in acts.ended(),
                    f"attempt {attempt} to time out",
                )
                await settle()
                assert d.timeouts == attempt

            async def backoff_then_retry(attempt: int, delay: float) -> None:
                # Backing off: not queued, not running, one timer pending for the retry.
                assert hang.state is StepState.PENDING
                assert hang.handle is None
                assert len(engine.queue) == 0
                assert d.busy == 1  # only OK's step
                assert clock.next_deadline() == pytest.approx(clock.now() + delay)
                clock.advance(delay / 2)
                await settle()
                assert len(engine.queue) == 0
                assert acts.starts("HANG") == [("HANG", "hang", n) for n in range(1, attempt)]
                clock.advance(delay)  # now past the backoff delay
                await started("HANG", attempt, step_name="hang")

            await attempt_times_out(1)
            await backoff_then_retry(2, 0.010)
            await attempt_times_out(2)
            await backoff_then_retry(3, 0.020)  # exponential: base * factor
            await attempt_times_out(3)

            # Retries exhausted: the step and its run failed, the symbol is marked failed.
            assert state_of(hang) is StepState.FAILED
            assert hang.attempts == 3
            assert run.state is RunState.FAILED
            assert run.outcome == "failed"
            label = f"flaky[{run.id}].hang"
            assert run.error == f"hang: StepTimeout: {label} timed out after 0.100000s"
            symbol = engine.symbols.get("HANG")
            assert symbol is not None
            assert symbol.status is SymbolStatus.FAILED
            assert symbol.last_error == f"flaky: {run.error}"
            assert len(engine.queue) == 0
            assert clock.pending() == 1  # only OK's step timeout timer remains

            # The other run was untouched all along and completes normally.
            assert acts.ended("OK") == []
            acts.release("OK")
            await idle(engine)

        assert acts.starts("HANG") == [("HANG", "hang", n) for n in (1, 2, 3)]
        assert acts.ended("OK") == [("finish", "OK", "work", 1)]
        ok = engine.symbols.get("OK")
        assert ok is not None
        assert ok.status is SymbolStatus.COMPLETED
        assert ok.last_error is None
        stats = engine.statistics()
        assert stats.dispatcher.timeouts == 3
        assert stats.counters.timeouts == 3
        assert stats.counters.retries == 2
        assert stats.dispatcher.preemptions == 0
        assert step_outcomes(engine, "flaky.hang") == {"timeout": 3, "retried": 2, "failed": 1}
        assert run_outcomes(engine, "flaky") == {"failed": 1}
        assert run_outcomes(engine, "steady") == {"completed": 1}

    run_async(main)


# -- 8. actions that raise --------------------------------------------------------------------


@pytest.mark.parametrize("action", ["boom", "boom_inline"])
def test_raising_step_is_retried_then_fails_and_the_agent_survives(action: str) -> None:
    engine, clock = make_engine(
        config(
            1,
            workflow(
                "fragile",
                priority=1,
                route=(1, 1),
                steps=[
                    step("explode", action, retry="count = 1, backoff_base_ms = 10, jitter = 0.0"),
                    step("after", "instant", depends_on=["explode"]),
                ],
            ),
            workflow("steady", priority=1, route=(2, None), steps=[step(action="instant")]),
        )
    )

    async def main() -> None:
        async with engine.session():
            d = dispatcher(engine)
            agent = d.agents[0]
            submit(engine, "X", 1)
            await started("X", step_name="explode")
            run = live_run(engine, "fragile", "X")
            await settle()
            explode, after = run.steps
            assert explode.state is StepState.PENDING  # backing off
            assert explode.attempts == 1
            assert explode.error == "RuntimeError: boom X attempt 1"
            assert len(engine.queue) == 0
            clock.advance(0.005)
            await settle()
            assert acts.starts("X") == [("X", "explode", 1)]
            clock.advance(0.010)
            await started("X", 2, step_name="explode")
            await settle()

            assert acts.starts("X") == [("X", "explode", 1), ("X", "explode", 2)]
            assert state_of(explode) is StepState.FAILED
            assert explode.attempts == 2
            assert after.state is StepState.CANCELLED  # never ran
            assert run.state is RunState.FAILED
            symbol = engine.symbols.get("X")
            assert symbol is not None
            assert symbol.status is SymbolStatus.FAILED
            assert symbol.last_error == "fragile: explode: RuntimeError: boom X attempt 2"

            # The one agent is alive and takes the next step.
            assert agent.task is not None
            assert not agent.task.done()
            submit(engine, "Y", 2)
            await idle(engine)
            assert not agent.task.done()

        assert acts.starts() == [("X", "explode", 1), ("X", "explode", 2), ("Y", "work", 1)]
        assert acts.ended("Y") == [("finish", "Y", "work", 1)]
        stats = engine.statistics()
        assert stats.counters.retries == 1
        assert stats.counters.timeouts == 0
        assert stats.dispatcher.timeouts == 0
        assert step_outcomes(engine, "fragile.explode") == {"retried": 1, "failed": 1}
        assert step_outcomes(engine, "fragile.after") == {}
        assert run_outcomes(engine, "fragile") == {"failed": 1}
        assert run_outcomes(engine, "steady") == {"completed": 1}

    run_async(main)


# -- wait_idle (every test above leans on it) ------------------------------------------------


def test_wait_idle_waits_for_a_follow_up_run() -> None:
    """A DATA_READY for a symbol whose run is in progress queues a follow-up run, started when
    the current run ends. The engine is not idle until that follow-up has finished too."""
    engine, _ = make_engine(config(1, workflow("trend", priority=2, route=(0, None))))

    async def main() -> None:
        async with engine.session():
            submit(engine, "SYM", 2)
            await started("SYM")
            submit(engine, "SYM", 2)  # becomes the running run's follow-up
            await settle()
            assert live_run(engine, "trend", "SYM").follow_up is not None
            acts.release("SYM")  # the gate stays open: the follow-up passes straight through
            await idle(engine)
            live = {rid: r.state.value for rid, r in coordinator(engine).runs.items()}
            assert live == {}, "wait_idle() returned with a run still in flight"
            assert acts.starts() == [("SYM", "work", 1), ("SYM", "work", 1)]
        assert run_outcomes(engine, "trend") == {"completed": 2}

    run_async(main)


# -- 9. shutdown ------------------------------------------------------------------------------


def _collect_loop_errors() -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    return errors


def test_shutdown_cancels_and_records_running_and_queued_steps() -> None:
    engine, _ = make_engine(config(1, workflow("trend", priority=2, route=(0, None))))

    async def main() -> None:
        errors = _collect_loop_errors()
        async with engine.session():
            submit(engine, "RUN", 2)
            await started("RUN")
            submit(engine, "WAIT", 2)  # queued behind it: one agent
            await settle()
            running = live_run(engine, "trend", "RUN")
            queued = live_run(engine, "trend", "WAIT")
            agents = [a.task for a in dispatcher(engine).agents]
        # The session exited cleanly (no exception) with the step still gated.
        assert errors == []
        assert not engine.running
        assert all(t is not None and t.done() for t in agents)
        assert acts.starts() == [("RUN", "work", 1)]
        assert acts.ended() == [("cancel", "RUN", "work", 1)]
        assert running.state is RunState.CANCELLED
        assert running.outcome == "cancelled"
        assert running.error == "shutdown: drain deadline passed"
        assert running.steps[0].state is StepState.CANCELLED
        assert running.steps[0].error == "shutdown"
        assert running.steps[0].finished_at is not None
        assert queued.state is RunState.CANCELLED
        assert queued.steps[0].state is StepState.CANCELLED
        assert coordinator(engine).runs == {}
        assert len(engine.queue) == 0
        assert run_outcomes(engine, "trend") == {"cancelled": 2}
        assert step_outcomes(engine, "trend.work") == {"cancelled": 1}
        for name in ("RUN", "WAIT"):  # left for the state-driven sweep after a restart
            symbol = engine.symbols.get(name)
            assert symbol is not None
            assert symbol.status is SymbolStatus.PENDING

    run_async(main)


def test_shutdown_with_a_preemption_in_flight_records_both_steps() -> None:
    """The session ends in the same turn a preemption was decided: the victim and the urgent
    step reserved for its agent are both cancelled and recorded."""
    engine, _ = make_engine(config(1, *PREEMPTION_WORKFLOWS))

    async def main() -> None:
        errors = _collect_loop_errors()
        async with engine.session():
            submit(engine, "LOW", 2)
            await started("LOW")
            low = live_run(engine, "trend", "LOW")
            submit(engine, "URG", 0)
            await wait_for(lambda: dispatcher(engine).preemptions == 1, "the preemption")
            agent = dispatcher(engine).agents[0]
            assert agent.interrupt is Interrupt.PREEMPT
            urgent = live_run(engine, "hft", "URG")
            assert agent.reserved is urgent.steps[0]
        assert errors == []
        assert acts.starts() == [("LOW", "work", 1)]
        assert acts.ended() == [("cancel", "LOW", "work", 1)]
        assert low.state is RunState.CANCELLED
        assert urgent.state is RunState.CANCELLED
        assert urgent.steps[0].state is StepState.CANCELLED
        assert coordinator(engine).runs == {}
        assert engine.statistics().queue.running_by_workflow == {
            "hft": 0,
            "trend": 0,
            "trend_fast": 0,
        }

    run_async(main)


@pytest.mark.parametrize("agents", [1, 2])
def test_shutdown_leaves_no_live_run_behind_a_queued_follow_up(agents: int) -> None:
    """A second DATA_READY for a symbol whose run is in progress queues a follow-up run. At
    shutdown, cancelling the running run must not leave that follow-up behind as a live,
    never-recorded run (nor hand it to an agent that is being cancelled)."""
    engine, _ = make_engine(config(agents, workflow("trend", priority=2, route=(0, None))))

    async def main() -> None:
        errors = _collect_loop_errors()
        async with engine.session():
            submit(engine, "SYM", 2)
            await started("SYM")
            submit(engine, "SYM", 2)  # run in progress: becomes its follow-up
            await settle()
            first = live_run(engine, "trend", "SYM")
            assert first.follow_up is not None
        assert errors == [], [e.get("message") for e in errors]
        assert acts.starts() == [("SYM", "work", 1)]
        assert first.state is RunState.CANCELLED
        leftover = {rid: (r.state.value, r.outcome) for rid, r in coordinator(engine).runs.items()}
        assert leftover == {}
        assert len(engine.queue) == 0
        assert engine.statistics().queue.running_by_workflow == {"trend": 0}
        symbol = engine.symbols.get("SYM")  # its newest tick is left for the sweep
        assert symbol is not None
        assert symbol.status is SymbolStatus.PENDING

    run_async(main)


@pytest.mark.parametrize("agents", [1, 2])
def test_an_event_arriving_during_shutdown_never_reaches_a_cancelled_agent(agents: int) -> None:
    """An event submitted after the drain deadline, while the session is tearing down (the
    agents already cancelled), is either refused or kept for the sweep -- it must not start a
    run that no agent will ever take (nor be handed to an agent whose task is cancelled)."""
    engine, _ = make_engine(config(agents, workflow("trend", priority=2, route=(0, None))))
    outcome: list[str] = []

    async def late() -> None:
        await asyncio.sleep(0)  # one turn into the teardown: the agents are being cancelled
        try:
            submit(engine, "LATE", 2)
        except RuntimeError:
            outcome.append("refused")
        else:
            outcome.append("accepted")

    async def main() -> None:
        errors = _collect_loop_errors()
        async with engine.session():
            submit(engine, "SYM", 2)
            await started("SYM")
            teardown_task = asyncio.get_running_loop().create_task(late())
        await teardown_task
        await settle()
        assert len(outcome) == 1
        assert errors == [], [e.get("message") for e in errors]
        leftover = {rid: (r.state.value, r.outcome) for rid, r in coordinator(engine).runs.items()}
        assert leftover == {}
        assert len(engine.queue) == 0
        assert engine.statistics().queue.running_by_workflow == {"trend": 0}
        assert acts.starts() == [("SYM", "work", 1)]
        if outcome == ["accepted"]:  # then the tick is kept for the sweep after a restart
            symbol = engine.symbols.get("LATE")
            assert symbol is not None
            assert symbol.status is SymbolStatus.PENDING
            assert symbol.last_tick is not None

    run_async(main)


# -- 5b. preemption decided in the intake's call ------------------------------------------------


def test_a_step_made_ready_by_a_finishing_step_is_taken_by_its_agent_not_by_preemption() -> None:
    """All agents busy, so a newly ready urgent step preempts at once (see the test above) --
    but not one made ready by a step that just ended: its agent takes it itself in the same
    turn, and a preemption would throw away a running step for nothing."""
    engine, _ = make_engine(
        config(
            2,
            workflow(
                "hft",
                priority=0,
                route=(0, 0),
                steps=[step("first"), step("second", depends_on=["first"])],
            ),
            workflow("trend", priority=2, route=(1, 2)),
        )
    )

    async def main() -> None:
        async with engine.session():
            submit(engine, "LOW", 2)
            await started("LOW")
            submit(engine, "HOT", 0)
            await started("HOT", step_name="first")
            d = dispatcher(engine)
            assert d.preemptions == 0  # an agent was idle: the pass handed HOT to it
            acts.release("HOT", "first")
            await started("HOT", step_name="second")
            assert d.preemptions == 0
            assert acts.ended() == [("finish", "HOT", "first", 1)]  # LOW still runs
            assert acts.running() == 2
            acts.release("HOT", "second")
            acts.release("LOW")
            await idle(engine)
        assert engine.statistics().dispatcher.preemptions == 0
        assert run_outcomes(engine, "hft") == {"completed": 1}
        assert run_outcomes(engine, "trend") == {"completed": 1}

    run_async(main)


def test_urgent_steps_arriving_in_one_call_preempt_one_victim_each_at_once() -> None:
    """Two urgent events submitted back to back while three low-priority steps run: each
    takes over an agent before the loop turns (no pass), the latest-started victims first, and
    the third low-priority step keeps running."""
    engine, clock = make_engine(config(3, *PREEMPTION_WORKFLOWS))

    async def main() -> None:
        async with engine.session():
            for symbol in ("L1", "L2", "L3"):
                submit(engine, symbol, 2)
                await started(symbol)
                clock.advance(0.001)
            d = dispatcher(engine)
            passes = d.passes
            submit(engine, "U1", 0)
            submit(engine, "U2", 0)
            assert d.preemptions == 2
            assert d.passes == passes
            await started("U1")
            await started("U2")
            cancelled = sorted(acts.ended())
            assert cancelled == [("cancel", "L2", "work", 1), ("cancel", "L3", "work", 1)]
            assert engine.statistics().counters.preemptions == 2
            for symbol in ("U1", "U2", "L1"):
                acts.release(symbol)
            await started("L3")
            await started("L2")
            acts.release("L2")
            acts.release("L3")
            await idle(engine)
        assert run_outcomes(engine, "trend") == {"completed": 3}
        assert run_outcomes(engine, "hft") == {"completed": 2}

    run_async(main)


def test_no_preemption_of_a_step_already_due_to_resume() -> None:
    """The only running step's wait has just ended (its gate set, its agent due to run this
    turn) when an urgent event arrives: nothing is preempted; the step finishes and its agent
    takes the urgent step next, as the dispatch pass a turn later always let it."""
    engine, _ = make_engine(config(1, *PREEMPTION_WORKFLOWS))

    async def main() -> None:
        async with engine.session():
            submit(engine, "LOW", 2)
            await started("LOW")
            acts.release("LOW")
            submit(engine, "URG", 0)
            d = dispatcher(engine)
            assert d.preemptions == 0
            await started("URG")
            assert acts.ended() == [("finish", "LOW", "work", 1)]
            acts.release("URG")
            await idle(engine)
        assert engine.statistics().dispatcher.preemptions == 0
        assert run_outcomes(engine, "trend") == {"completed": 1}
        assert run_outcomes(engine, "hft") == {"completed": 1}

    run_async(main)
