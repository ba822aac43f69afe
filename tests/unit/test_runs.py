"""Runs through the whole engine: conflation, follow-ups, re-prioritisation, shedding, DAGs,
the symbol table, the sweep and operator actions.

Every test drives a real :class:`~engine.service.daemon.Engine` session on a fresh event loop with a
:class:`~engine.core.clock.FakeClock`. Steps are the gated actions of :mod:`tests.unit.run_actions`:
a test decides when each one finishes, and waits for conditions with a bounded number of loop
turns -- never a sleep with a duration, never a wall-clock assertion.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from engine.config import loads_config
from engine.core.clock import FakeClock
from engine.core.coordinator import Coordinator
from engine.core.events import DataReady, HighPriorityArrived, Tick
from engine.core.fsm import RunState, StepState
from engine.core.runs import Run
from engine.core.symbols import Phase, SymbolRow, SymbolStatus
from engine.service.daemon import Engine
from tests.unit import run_actions as ra

WALL_OFFSET = 1_700_000_000.0
START = 1000.0  # FakeClock's default start


# -- config -----------------------------------------------------------------------------------


def engine_toml(
    *, agents: int = 2, capacity: int = 64, default_priority: int = 2, symbols: str = ""
) -> str:
    return f"""
{symbols}

[engine]
agents = {agents}
heap_capacity = {capacity}
default_symbol_priority = {default_priority}
sweep_interval_s = 3600
drain_timeout_s = 0
seed = 7

[source]
kind = "none"
"""


def hft_toml() -> str:
    """Priority-0 workflow for priority-0 symbols; its step is gated and never preempted."""
    return """
[workflows.hft]
priority = 0
max_concurrent = 3
route = { min_priority = 0, max_priority = 0 }

[[workflows.hft.steps]]
name = "signal"
action = "tests.unit.run_actions:gated"
preemptible = false
"""


def trend_toml(action: str = "gated", on_busy: str = "follow_up") -> str:
    return f"""
[workflows.trend]
priority = 2
max_concurrent = 5
on_busy = "{on_busy}"
route = {{ min_priority = 1 }}

[[workflows.trend.steps]]
name = "work"
action = "tests.unit.run_actions:{action}"
timeout_ms = 60000
"""


def make_engine(*parts: str, **settings: int | str) -> Engine:
    config = loads_config(engine_toml(**settings) + "".join(parts))  # type: ignore[arg-type]
    return Engine(config, clock=FakeClock(), sources=[])


# -- harness ----------------------------------------------------------------------------------


def run_session(engine: Engine, body: Callable[[Engine], Awaitable[None]]) -> None:
    async def main() -> None:
        async with asyncio.timeout(10):  # a safety net only; nothing here waits on time
            async with engine.session():
                await body(engine)

    asyncio.run(main())


async def wait_until(predicate: Callable[[], bool], what: str, turns: int = 500) -> None:
    """Yield to the loop until ``predicate()`` holds, at most ``turns`` times."""
    for _ in range(turns):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not reached within {turns} loop turns: {what}")


async def settle(turns: int = 30) -> None:
    """Let the loop run a fixed number of turns (to show that something did *not* happen)."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def idle(engine: Engine) -> None:
    async with asyncio.timeout(2):
        await engine.wait_idle()


def coord(engine: Engine) -> Coordinator:
    assert engine.coordinator is not None
    return engine.coordinator


def clock(engine: Engine) -> FakeClock:
    c = engine.clock
    assert isinstance(c, FakeClock)
    return c


def tick(engine: Engine, symbol: str, price: float, ts: float = 1.0, **kw: int) -> None:
    engine.submit_nowait(DataReady(symbol=symbol, ts=ts, price=price, **kw))


def state(run: Run) -> RunState:
    """``run.state``, read through a call so a type checker does not keep an earlier narrowing
    (the engine changes it behind the test's back)."""
    return run.state


def follow_up_of(run: Run) -> Tick | None:
    return run.follow_up  # through a call, like state()


def runs_of(engine: Engine, workflow: str) -> dict[str, int]:
    return engine.statistics().counters.runs[workflow]


def outcome(
    completed: int = 0, failed: int = 0, cancelled: int = 0, shed: int = 0
) -> dict[str, int]:
    return {"completed": completed, "failed": failed, "cancelled": cancelled, "shed": shed}


def record_finished(engine: Engine) -> list[Run]:
    """Every run that ends from now on, in order (chained in front of the engine's observer)."""
    c = coord(engine)
    inner = c.on_run_finished
    finished: list[Run] = []

    def observe(run: Run) -> None:
        finished.append(run)
        if inner is not None:
            inner(run)

    c.on_run_finished = observe
    return finished


def out(step: str, symbol: str, run_id: int, price: float) -> dict[str, object]:
    """What a run_actions step returns."""
    return {"step": step, "symbol": symbol, "run_id": run_id, "price": price}


BLOCKER = '[[symbols]]\nname = "BLK"\npriority = 0\n'


async def block_pool(engine: Engine) -> None:
    """Occupy the (single) agent with BLK's priority-0, non-preemptible hft step."""
    tick(engine, "BLK", 50.0)
    await wait_until(lambda: ra.started("hft.signal.BLK") == 1, "blocker running")


# -- conflation -------------------------------------------------------------------------------


def test_pending_run_conflates_to_the_latest_tick() -> None:
    engine = make_engine(hft_toml(), trend_toml(), agents=1, symbols=BLOCKER)

    async def body(engine: Engine) -> None:
        c = coord(engine)
        await block_pool(engine)
        for i, price in enumerate((101.0, 102.0, 103.0)):
            tick(engine, "AAA", price, ts=10.0 + i)
        run = c.pending_run("trend", "AAA")
        assert run is not None
        assert run.state is RunState.PENDING
        assert run.tick == Tick("AAA", 12.0, 103.0)
        assert c.active_run("trend", "AAA") is None
        assert len(c.runs) == 2  # the blocker and one trend run
        assert len(engine.queue) == 1
        stats = engine.statistics()
        assert stats.counters.events_conflated == 2
        assert stats.counters.events_received == {"DATA_READY": 4}
        assert engine.counters.workflows["trend"].triggered == 3

        ra.release_all()
        await idle(engine)
        seen = ra.calls(step="work", symbol="AAA")
        assert [(c_.run_id, c_.tick) for c_ in seen] == [(run.id, Tick("AAA", 12.0, 103.0))]
        assert state(run) is RunState.COMPLETED
        assert runs_of(engine, "trend") == outcome(completed=1)

    run_session(engine, body)


def test_ticks_during_a_run_queue_exactly_one_follow_up() -> None:
    engine = make_engine(trend_toml(), agents=2)
    key = "trend.work.AAA"

    async def body(engine: Engine) -> None:
        c = coord(engine)
        tick(engine, "AAA", 101.0, ts=1.0)
        await wait_until(lambda: ra.started(key) == 1, "first run started")
        first = c.active_run("trend", "AAA")
        assert first is not None
        assert first.state is RunState.RUNNING
        for i, price in enumerate((102.0, 103.0, 104.0)):
            tick(engine, "AAA", price, ts=2.0 + i)
        assert c.pending_run("trend", "AAA") is None
        assert c.active_run("trend", "AAA") is first
        assert first.follow_up == Tick("AAA", 4.0, 104.0)
        assert list(c.runs) == [first.id]
        # The first follow-up tick is not conflation; each one replacing it is.
        assert engine.statistics().counters.events_conflated == 2
        await settle()
        assert ra.started(key) == 1  # runs of one (workflow, symbol) never overlap

        ra.release(key)
        await wait_until(lambda: not c.runs, "the follow-up run finished")
        seen = ra.calls(step="work", symbol="AAA")
        assert [(x.run_id, x.tick.price) for x in seen] == [
            (first.id, 101.0),
            (first.id + 1, 104.0),
        ]
        assert state(first) is RunState.COMPLETED
        assert runs_of(engine, "trend") == outcome(completed=2)
        assert engine.counters.workflows["trend"].triggered == 4

    run_session(engine, body)


def test_wait_idle_covers_the_follow_up_run() -> None:
    """``wait_idle`` must not return while a follow-up run is still to run.

    BUG: ``Coordinator._end_run`` calls ``on_run_finished`` (which sets the engine idle once
    ``coordinator.runs`` is empty) *before* it starts the follow-up run, so the engine reports
    idle with the follow-up pending -- and a shutdown drain would cancel it at once.
    """
    engine = make_engine(trend_toml(), agents=2)
    key = "trend.work.AAA"

    async def body(engine: Engine) -> None:
        c = coord(engine)
        tick(engine, "AAA", 101.0)
        await wait_until(lambda: ra.started(key) == 1, "first run started")
        tick(engine, "AAA", 102.0)
        ra.release(key)
        await idle(engine)
        assert list(c.runs) == []
        assert [x.tick.price for x in ra.calls(step="work")] == [101.0, 102.0]
        assert runs_of(engine, "trend") == outcome(completed=2)

    run_session(engine, body)


def test_on_busy_skip_drops_ticks_during_a_run() -> None:
    engine = make_engine(trend_toml(on_busy="skip"), agents=2)
    key = "trend.work.AAA"

    async def body(engine: Engine) -> None:
        c = coord(engine)
        tick(engine, "AAA", 101.0)
        await wait_until(lambda: ra.started(key) == 1, "run started")
        active = c.active_run("trend", "AAA")
        assert active is not None
        tick(engine, "AAA", 102.0)
        tick(engine, "AAA", 103.0)
        assert active.follow_up is None
        assert c.pending_run("trend", "AAA") is None
        wc = engine.counters.workflows["trend"]
        assert (wc.triggered, wc.skipped, wc.conflated) == (3, 2, 0)
        assert engine.statistics().counters.events_conflated == 2  # skipped counts as conflated

        ra.release(key)
        await idle(engine)
        assert [x.tick.price for x in ra.calls(step="work")] == [101.0]
        assert runs_of(engine, "trend") == outcome(completed=1)
        sym = engine.symbols.get("AAA")
        assert sym is not None
        assert (sym.phase, sym.status) == (Phase.IDLE, SymbolStatus.COMPLETED)
        assert sym.last_tick == Tick("AAA", 1.0, 103.0)

    run_session(engine, body)


# -- re-prioritisation ------------------------------------------------------------------------


def test_high_priority_arrived_rekeys_queued_steps_at_once() -> None:
    engine = make_engine(hft_toml(), trend_toml(), agents=1, symbols=BLOCKER)

    async def body(engine: Engine) -> None:
        c = coord(engine)
        await block_pool(engine)
        for name in ("AAA", "BBB", "CCC"):
            tick(engine, name, 100.0)
        ccc = c.pending_run("trend", "CCC")
        assert ccc is not None
        assert ccc.priority == 2
        assert engine.queue.depth_by_priority() == {2: 3}

        engine.submit_nowait(HighPriorityArrived(symbol="CCC", priority=0))
        # At once: no loop turn in between.
        sym = engine.symbols.get("CCC")
        assert sym is not None
        assert sym.priority == 0
        assert ccc.priority == 0
        assert engine.queue.depth_by_priority() == {0: 1, 2: 2}
        lane = engine.queue.lanes["trend"]
        handle = ccc.steps[0].handle
        assert handle is not None
        assert lane.heap.key(handle)[0] == 0
        assert lane.heap.peek() is ccc.steps[0]
        assert engine.statistics().counters.events_received == {
            "DATA_READY": 4,
            "HIGH_PRIORITY_ARRIVED": 1,
        }

        ra.release_all()
        await idle(engine)
        assert [x.symbol for x in ra.calls(step="work")] == ["CCC", "AAA", "BBB"]

    run_session(engine, body)


def test_reprioritised_symbol_uses_the_new_route() -> None:
    engine = make_engine(hft_toml(), trend_toml(), agents=2)

    async def body(engine: Engine) -> None:
        c = coord(engine)
        tick(engine, "AAA", 101.0)
        await wait_until(lambda: ra.started("trend.work.AAA") == 1, "trend run started")
        trend_run = c.active_run("trend", "AAA")
        assert trend_run is not None

        engine.submit_nowait(HighPriorityArrived(symbol="AAA", priority=0))
        assert trend_run.priority == 0  # the run in flight is lifted too
        tick(engine, "AAA", 102.0)
        assert trend_run.follow_up is None  # trend no longer routes AAA
        hft_run = c.pending_run("hft", "AAA")
        assert hft_run is not None
        assert hft_run.tick.price == 102.0
        assert hft_run.priority == 0
        wcs = engine.counters.workflows
        assert (wcs["trend"].triggered, wcs["hft"].triggered) == (1, 1)

        ra.release_all()
        await idle(engine)
        assert [(x.workflow, x.tick.price) for x in ra.calls(symbol="AAA")] == [
            ("trend", 101.0),
            ("hft", 102.0),
        ]
        sym = engine.symbols.get("AAA")
        assert sym is not None
        assert (sym.phase, sym.status) == (Phase.IDLE, SymbolStatus.COMPLETED)

    run_session(engine, body)


def test_follow_up_tick_moves_to_the_new_route_at_once() -> None:
    """A tick queued as a follow-up is processed by the symbol's new route when the run ends.

    BUG: ``Coordinator._end_run`` silently drops the follow-up when its workflow no longer
    routes the symbol (here: raised from priority 2 to 0). Nothing else triggers the new route,
    so the symbol -- now the most urgent kind -- is left ``data_ready`` + ``pending`` with no
    run and its tick waits for the next periodic sweep (``sweep_interval_s``, 5 s by default).
    """
    engine = make_engine(hft_toml(), trend_toml(), agents=2)

    async def body(engine: Engine) -> None:
        c = coord(engine)
        tick(engine, "AAA", 101.0)
        await wait_until(lambda: ra.started("trend.work.AAA") == 1, "trend run started")
        trend_run = c.active_run("trend", "AAA")
        assert trend_run is not None
        tick(engine, "AAA", 102.0)  # queued as trend's follow-up
        assert trend_run.follow_up == Tick("AAA", 1.0, 102.0)
        engine.submit_nowait(HighPriorityArrived(symbol="AAA", priority=0))

        ra.release_all()
        await wait_until(lambda: trend_run.state.terminal, "trend run ended")
        # No sweep: the event-driven half alone must carry the tick to the new route.
        await wait_until(
            lambda: bool(ra.calls(step="signal", symbol="AAA")), "tick 102 processed by hft"
        )
        await idle(engine)
        assert [(x.workflow, x.tick.price) for x in ra.calls(symbol="AAA")] == [
            ("trend", 101.0),
            ("hft", 102.0),
        ]
        assert runs_of(engine, "trend") == outcome(completed=1)
        assert runs_of(engine, "hft") == outcome(completed=1)
        sym = engine.symbols.get("AAA")
        assert sym is not None
        assert (sym.phase, sym.status) == (Phase.IDLE, SymbolStatus.COMPLETED)

    run_session(engine, body)


def test_data_ready_with_a_priority_reprioritises() -> None:
    seeds = '[[symbols]]\nname = "SYM"\npriority = 2\n'
    engine = make_engine(hft_toml(), trend_toml("quick"), agents=2, symbols=seeds)

    async def body(engine: Engine) -> None:
        c = coord(engine)
        tick(engine, "SYM", 101.0, priority=0)
        sym = engine.symbols.get("SYM")
        assert sym is not None
        assert sym.priority == 0
        assert c.pending_run("hft", "SYM") is not None
        assert c.pending_run("trend", "SYM") is None

        tick(engine, "NEW", 55.0, priority=1)  # auto-registered with the priority it carries
        new = engine.symbols.get("NEW")
        assert new is not None
        assert new.priority == 1
        assert c.pending_run("trend", "NEW") is not None

        engine.submit_nowait(HighPriorityArrived(symbol="GHOST", priority=3))
        ghost = engine.symbols.get("GHOST")
        assert ghost is not None
        assert (ghost.priority, ghost.phase, ghost.active_runs) == (3, Phase.IDLE, 0)

        ra.release_all()
        await idle(engine)
        assert sorted((x.workflow, x.symbol) for x in ra.calls()) == [
            ("hft", "SYM"),
            ("trend", "NEW"),
        ]
        assert len(engine.symbols) == 3

    run_session(engine, body)


# -- shedding ---------------------------------------------------------------------------------


def test_flood_sheds_low_priority_keeps_priority_zero_and_sweep_retriggers() -> None:
    engine = make_engine(hft_toml(), trend_toml(), agents=1, capacity=4, symbols=BLOCKER)

    async def body(engine: Engine) -> None:
        c = coord(engine)
        await block_pool(engine)
        finished = record_finished(engine)
        lows = [f"L{i}" for i in range(5)]
        for i, name in enumerate(lows):
            tick(engine, name, 10.0 + i)
        # L4 came last into a full queue of equals: the newcomer itself is the worst.
        assert [r.symbol.name for r in finished] == ["L4"]
        assert c.pending_run("trend", "L4") is None
        for name in ("H0", "H1"):
            tick(engine, name, 200.0, priority=0)
        # Each priority-0 arrival sheds the newest low-priority entry.
        assert [r.symbol.name for r in finished] == ["L4", "L3", "L2"]
        for run in finished:
            assert run.workflow.name == "trend"
            assert run.state is RunState.CANCELLED
            assert run.outcome == "shed"
            assert run.error == "shed: ready queue full"
            assert run.steps[0].state is StepState.CANCELLED
            assert run.steps[0].handle is None
        assert len(engine.queue) == 4
        assert engine.queue.depth_by_priority() == {0: 2, 2: 2}
        for name in ("H0", "H1"):
            assert c.pending_run("hft", name) is not None
        for name in ("L0", "L1"):
            assert c.pending_run("trend", name) is not None
        stats = engine.statistics()
        assert stats.counters.events_shed == 3
        assert stats.counters.runs["trend"] == outcome(shed=3)
        for name in ("L2", "L3", "L4"):
            sym = engine.symbols.get(name)
            assert sym is not None
            assert (sym.phase, sym.status, sym.active_runs) == (
                Phase.DATA_READY,
                SymbolStatus.PENDING,
                0,
            )
        assert sorted(s.name for s in engine.symbols.waiting()) == ["L2", "L3", "L4"]

        ra.release_all()
        await idle(engine)
        assert [x.symbol for x in ra.calls()] == ["BLK", "H0", "H1", "L0", "L1"]

        assert engine.sweep() == 3  # capacity is free again: the shed symbols run now
        await idle(engine)
        assert [(x.symbol, x.tick.price) for x in ra.calls()[5:]] == [
            ("L2", 12.0),
            ("L3", 13.0),
            ("L4", 14.0),
        ]
        assert engine.symbols.waiting() == []
        assert all(s.status is SymbolStatus.COMPLETED for s in engine.symbols)
        stats = engine.statistics()
        assert stats.counters.events_shed == 3
        assert stats.counters.runs["trend"] == outcome(completed=5, shed=3)
        assert stats.counters.runs["hft"] == outcome(completed=3)

    run_session(engine, body)


FAN = """
[workflows.urgent]
priority = 0
max_concurrent = 1
route = { min_priority = 0, max_priority = 0 }

[[workflows.urgent.steps]]
name = "go"
action = "tests.unit.run_actions:gated"

[workflows.fan]
priority = 1
max_concurrent = 3
route = { min_priority = 1 }

[[workflows.fan.steps]]
name = "a"
action = "tests.unit.run_actions:gated"
preemptible = false

[[workflows.fan.steps]]
name = "b"
action = "tests.unit.run_actions:quick"
depends_on = ["a"]

[[workflows.fan.steps]]
name = "c"
action = "tests.unit.run_actions:quick"
depends_on = ["a"]
"""


def test_shedding_a_fan_out_step_ends_the_run_cleanly() -> None:
    """When a finished step's first dependent is shed, the run ends ``shed`` and its other
    dependents must not be queued any more.

    BUG: ``Coordinator.step_succeeded`` keeps looping over ``step.spec.dependents`` after an
    ``_enqueue`` shed the run: the next dependent (already CANCELLED by ``_end_run``) is pushed
    again, shed again, and ``_shed`` calls ``advance(CANCELLED)`` on a cancelled step --
    ``IllegalTransition`` escapes the agent and tears the whole engine session down. (Had the
    queue had room, the cancelled step would have been dispatched and failed RUNNING instead.)
    """
    engine = make_engine(FAN, agents=1, capacity=1)

    async def body(engine: Engine) -> None:
        c = coord(engine)
        tick(engine, "F", 10.0, priority=1)
        await wait_until(lambda: ra.started("fan.a.F") == 1, "a running")
        fan_run = c.active_run("fan", "F")
        assert fan_run is not None
        tick(engine, "U", 20.0, priority=0)  # fills the queue; a is not preemptible
        assert len(engine.queue) == 1

        ra.release("fan.a.F")
        await wait_until(lambda: fan_run.state.terminal, "fan run ended")
        assert fan_run.outcome == "shed"
        assert [s.state for s in fan_run.steps] == [
            StepState.COMPLETED,
            StepState.CANCELLED,
            StepState.CANCELLED,
        ]
        assert engine.statistics().counters.events_shed == 1
        # The urgent step was kept: still queued, or already taken by the freed agent.
        assert len(engine.queue) == 1 or ra.started("urgent.go.U") == 1

        ra.release_all()
        await idle(engine)
        assert [x.key for x in ra.calls()] == ["fan.a.F", "urgent.go.U"]
        assert runs_of(engine, "urgent") == outcome(completed=1)
        assert runs_of(engine, "fan") == outcome(shed=1)

    run_session(engine, body)


CHAIN = """
[workflows.urgent]
priority = 0
max_concurrent = 1
route = { min_priority = 0, max_priority = 0 }

[[workflows.urgent.steps]]
name = "go"
action = "tests.unit.run_actions:gated"

[workflows.chain]
priority = 1
max_concurrent = 3
route = { min_priority = 1 }

[[workflows.chain.steps]]
name = "a"
action = "tests.unit.run_actions:gated"
preemptible = false

[[workflows.chain.steps]]
name = "b"
action = "tests.unit.run_actions:quick"
depends_on = ["a"]
"""


def test_shed_mid_run_drops_the_follow_up_and_leaves_the_symbol_to_the_sweep() -> None:
    engine = make_engine(CHAIN, agents=1, capacity=1)

    async def body(engine: Engine) -> None:
        c = coord(engine)
        tick(engine, "C", 10.0, priority=1)
        await wait_until(lambda: ra.started("chain.a.C") == 1, "a running")
        chain_run = c.active_run("chain", "C")
        assert chain_run is not None
        tick(engine, "C", 11.0, ts=2.0)  # a follow-up for the running run
        assert chain_run.follow_up is not None
        assert chain_run.follow_up.price == 11.0
        tick(engine, "U", 20.0, priority=0)  # fills the queue; a is not preemptible

        ra.release("chain.a.C")
        await wait_until(lambda: chain_run.state.terminal, "chain run ended")
        assert (chain_run.outcome, chain_run.error) == ("shed", "shed: ready queue full")
        assert [s.state for s in chain_run.steps] == [StepState.COMPLETED, StepState.CANCELLED]
        # The follow-up is not started into the overload; the sweep takes the symbol later.
        assert follow_up_of(chain_run) is None
        assert c.pending_run("chain", "C") is None
        assert c.active_run("chain", "C") is None
        sym = engine.symbols.get("C")
        assert sym is not None
        assert (sym.phase, sym.status, sym.active_runs) == (
            Phase.DATA_READY,
            SymbolStatus.PENDING,
            0,
        )
        assert [s.name for s in engine.symbols.waiting()] == ["C"]
        assert engine.statistics().counters.events_shed == 1

        ra.release_all()
        await idle(engine)
        assert [x.key for x in ra.calls()] == ["chain.a.C", "urgent.go.U"]
        assert engine.sweep() == 1
        await idle(engine)
        assert [(x.step, x.tick.price) for x in ra.calls(symbol="C")[1:]] == [
            ("a", 11.0),
            ("b", 11.0),
        ]
        assert runs_of(engine, "chain") == outcome(completed=1, shed=1)
        assert (sym.phase, sym.status) == (Phase.IDLE, SymbolStatus.COMPLETED)

    run_session(engine, body)


# -- DAG --------------------------------------------------------------------------------------

DAG = """
[workflows.dag]
priority = 1
max_concurrent = 4

[[workflows.dag.steps]]
name = "a"
action = "tests.unit.run_actions:gated"

[[workflows.dag.steps]]
name = "b"
action = "tests.unit.run_actions:gated"
depends_on = ["a"]

[[workflows.dag.steps]]
name = "c"
action = "tests.unit.run_actions:gated"
depends_on = ["a"]

[[workflows.dag.steps]]
name = "d"
action = "tests.unit.run_actions:gated"
depends_on = ["b", "c"]
"""


def test_fan_out_fan_in_dag() -> None:
    engine = make_engine(DAG, agents=3)

    async def body(engine: Engine) -> None:
        c = coord(engine)
        tick(engine, "X", 101.0, ts=1.0)
        await wait_until(lambda: ra.started("dag.a.X") == 1, "a running")
        run = c.active_run("dag", "X")
        assert run is not None
        steps = {s.name: s for s in run.steps}
        tick(engine, "X", 102.0, ts=2.0)  # arrives mid-run: a follow-up, not this run's input

        ra.release("dag.a.X")
        await wait_until(
            lambda: ra.started("dag.b.X") == 1 and ra.started("dag.c.X") == 1, "b and c running"
        )
        # Both started before either finished: they run in parallel.
        assert sorted(ra.blocked()) == ["dag.b.X", "dag.c.X"]
        assert run.running == 2
        assert engine.statistics().dispatcher.busy == 2
        assert (steps["d"].state, steps["d"].waiting, steps["d"].handle) == (
            StepState.PENDING,
            2,
            None,
        )

        ra.release("dag.b.X")
        await wait_until(lambda: steps["b"].state is StepState.COMPLETED, "b done")
        await settle()
        assert steps["d"].waiting == 1
        assert steps["d"].handle is None
        assert ra.started("dag.d.X") == 0  # fan-in waits for c too

        ra.release("dag.c.X", "dag.d.X")
        await wait_until(lambda: run.state is RunState.COMPLETED, "run completed")
        mine = [x for x in ra.calls() if x.run_id == run.id]
        assert [x.step for x in mine[:1]] == ["a"]
        assert sorted(x.step for x in mine[1:3]) == ["b", "c"]
        assert mine[3].step == "d"
        assert all(x.tick == Tick("X", 1.0, 101.0) for x in mine)
        o = {name: out(name, "X", run.id, 101.0) for name in "abcd"}
        inputs = {x.step: x.inputs for x in mine}
        assert inputs["a"] == {}
        assert inputs["b"] == {"a": o["a"]}
        assert inputs["c"] == {"a": o["a"]}
        assert inputs["d"] == {"a": o["a"], "b": o["b"], "c": o["c"]}
        assert run.outputs == o
        assert all(s.state is StepState.COMPLETED for s in run.steps)
        assert all(s.attempts == 1 for s in run.steps)
        assert (run.outcome, run.error, run.completed, run.running) == ("completed", None, 4, 0)

        await wait_until(lambda: not c.runs, "follow-up run finished")
        follow = [x for x in ra.calls() if x.run_id != run.id]
        assert len(follow) == 4
        assert all(x.tick == Tick("X", 2.0, 102.0) for x in follow)
        assert runs_of(engine, "dag") == outcome(completed=2)

    run_session(engine, body)


# -- symbol table and run state ---------------------------------------------------------------


def test_symbol_lifecycle_and_completed_run_state() -> None:
    engine = make_engine(trend_toml(), agents=2, default_priority=3)
    key = "trend.work.NEW"

    async def body(engine: Engine) -> None:
        c = coord(engine)
        assert "NEW" not in engine.symbols
        tick(engine, "NEW", 101.0, ts=5.0)
        sym = engine.symbols.get("NEW")
        assert sym is not None
        assert sym.priority == 3  # auto-registered with the default priority
        assert (sym.phase, sym.status, sym.active_runs) == (
            Phase.DATA_READY,
            SymbolStatus.PENDING,
            1,
        )
        assert sym.last_tick == Tick("NEW", 5.0, 101.0)
        assert sym.last_processed is None
        run = c.pending_run("trend", "NEW")
        assert run is not None

        await wait_until(lambda: ra.started(key) == 1, "run started")
        assert (sym.phase, sym.status) == (Phase.DATA_READY, SymbolStatus.PROCESSING)
        assert run.state is RunState.RUNNING
        assert run.steps[0].state is StepState.RUNNING

        clock(engine).advance(2.5)
        ra.release(key)
        await idle(engine)
        assert sym.row() == SymbolRow(
            id=1,
            name="NEW",
            phase="idle",
            status="completed",
            priority=3,
            last_processed=WALL_OFFSET + START + 2.5,
            last_error=None,
            last_price=101.0,
            last_ts=5.0,
        )
        assert sym.active_runs == 0
        assert state(run) is RunState.COMPLETED
        assert (run.outcome, run.error) == ("completed", None)
        assert (run.started_at, run.finished_at) == (START, START + 2.5)
        step = run.steps[0]
        assert step.state is StepState.COMPLETED
        assert (step.attempts, step.started_at, step.finished_at) == (1, START, START + 2.5)
        assert step.output == out("work", "NEW", run.id, 101.0)
        stats = engine.statistics()
        assert stats.counters.runs["trend"] == outcome(completed=1)
        latency = stats.counters.run_latency["trend"]
        assert (latency["count"], latency["max_s"], latency["mean_s"]) == (1, 2.5, 2.5)
        assert stats.counters.steps["trend.work"]["completed"] == 1
        assert stats.counters.runs_in_flight == 0
        assert c.runs == {}

    run_session(engine, body)


# -- sweep ------------------------------------------------------------------------------------


def test_sweep_picks_up_symbols_left_data_ready() -> None:
    engine = make_engine(trend_toml(), agents=2)
    old = engine.symbols.register("OLD", 2)
    engine.symbols.mark_data_ready(old, Tick("OLD", 1.0, 10.0))
    assert engine.sweep() == 0  # not running yet: nothing to trigger with

    async def body(engine: Engine) -> None:
        c = coord(engine)
        # The session start swept OLD up.
        run = c.pending_run("trend", "OLD")
        assert run is not None
        assert run.tick == Tick("OLD", 1.0, 10.0)
        assert engine.sweep() == 0  # it has a run now

        late = engine.symbols.register("LATE", 1)
        engine.symbols.mark_data_ready(late, Tick("LATE", 2.0, 20.0))
        assert [s.name for s in engine.symbols.waiting()] == ["LATE"]
        engine.symbols.register("NO_TICK", 1)  # never had data: not swept
        assert engine.sweep() == 1
        assert engine.sweep() == 0
        late_run = c.pending_run("trend", "LATE")
        assert late_run is not None
        assert late_run.tick == Tick("LATE", 2.0, 20.0)

        ra.release_all()
        await idle(engine)
        assert sorted((x.symbol, x.tick.price) for x in ra.calls()) == [
            ("LATE", 20.0),
            ("OLD", 10.0),
        ]
        assert engine.symbols.waiting() == []
        assert engine.sweep() == 0

    run_session(engine, body)


# -- operator actions -------------------------------------------------------------------------

TWO = """
[workflows.alpha]
priority = 1
max_concurrent = 2

[[workflows.alpha.steps]]
name = "a"
action = "tests.unit.run_actions:quick"

[workflows.beta]
priority = 1
max_concurrent = 2

[[workflows.beta.steps]]
name = "b"
action = "tests.unit.run_actions:quick"
"""


def test_pause_stops_one_workflow_and_resume_restarts_it() -> None:
    engine = make_engine(TWO, agents=2)

    async def body(engine: Engine) -> None:
        c = coord(engine)
        engine.pause("alpha")
        assert engine.statistics().paused == ("alpha",)
        tick(engine, "X", 1.0)
        await wait_until(lambda: runs_of(engine, "beta")["completed"] == 1, "beta ran")
        tick(engine, "X", 2.0)  # beta runs again; alpha's pending run takes the newer tick
        await wait_until(lambda: runs_of(engine, "beta")["completed"] == 2, "beta ran again")
        await settle()
        assert ra.calls(step="a") == []
        alpha_run = c.pending_run("alpha", "X")
        assert alpha_run is not None
        assert alpha_run.state is RunState.PENDING
        assert alpha_run.tick.price == 2.0
        assert engine.queue.statistics().depth_by_workflow == {"alpha": 1, "beta": 0}

        engine.resume("alpha")
        assert engine.statistics().paused == ()
        await idle(engine)
        assert [(x.run_id, x.tick.price) for x in ra.calls(step="a")] == [(alpha_run.id, 2.0)]
        assert [x.tick.price for x in ra.calls(step="b")] == [1.0, 2.0]
        assert runs_of(engine, "alpha") == outcome(completed=1)

    run_session(engine, body)


def test_cancel_a_pending_run() -> None:
    engine = make_engine(hft_toml(), trend_toml(), agents=1, symbols=BLOCKER)

    async def body(engine: Engine) -> None:
        c = coord(engine)
        await block_pool(engine)
        tick(engine, "AAA", 101.0)
        run = c.pending_run("trend", "AAA")
        assert run is not None
        assert len(engine.queue) == 1

        assert engine.cancel_run(run.id) is True
        assert run.state is RunState.CANCELLED
        assert (run.outcome, run.error) == ("cancelled", "cancelled by operator")
        assert run.steps[0].state is StepState.CANCELLED
        assert run.steps[0].handle is None
        assert len(engine.queue) == 0
        assert c.pending_run("trend", "AAA") is None
        assert run.id not in c.runs
        assert engine.cancel_run(run.id) is False  # already over
        assert engine.cancel_run(999) is False  # never existed
        assert runs_of(engine, "trend") == outcome(cancelled=1)
        # An operator's cancel is recorded on the symbol, and the sweep must not undo it
        # (unlike a shed or a shutdown cancel, which leave the symbol pending).
        sym = engine.symbols.get("AAA")
        assert sym is not None
        assert (sym.phase, sym.status, sym.active_runs) == (
            Phase.IDLE,
            SymbolStatus.FAILED,
            0,
        )
        assert sym.last_error == "trend: cancelled by operator"
        assert engine.sweep() == 0

        ra.release_all()
        await idle(engine)
        assert [x.symbol for x in ra.calls()] == ["BLK"]  # the cancelled step never ran

    run_session(engine, body)


def test_cancel_a_running_run() -> None:
    engine = make_engine(trend_toml(), agents=1)
    key = "trend.work.AAA"

    async def body(engine: Engine) -> None:
        c = coord(engine)
        tick(engine, "AAA", 101.0)
        await wait_until(lambda: ra.started(key) == 1, "run started")
        run = c.active_run("trend", "AAA")
        assert run is not None
        step = run.steps[0]

        assert engine.cancel_run(run.id) is True
        assert engine.cancel_run(run.id) is False  # already being cancelled
        # The run ends once the interrupt has reached its running step.
        await wait_until(lambda: run.state is RunState.CANCELLED, "run cancelled")
        assert (run.outcome, run.error) == ("cancelled", "cancelled by operator")
        await wait_until(lambda: step.state is StepState.CANCELLED, "step interrupted")
        assert ra.blocked() == []  # the action was cancelled at its await
        assert step.error == "cancelled"
        assert step.output is None
        await wait_until(lambda: engine.statistics().dispatcher.busy == 0, "agent free")
        assert engine.queue.lanes["trend"].running == 0
        stats = engine.statistics()
        assert stats.counters.runs["trend"] == outcome(cancelled=1)
        assert stats.counters.steps["trend.work"]["cancelled"] == 1
        assert stats.counters.steps["trend.work"]["completed"] == 0
        assert c.active_run("trend", "AAA") is None

        # The agent is back in service: a new tick runs to completion.
        ra.release(key)
        tick(engine, "AAA", 102.0)
        await idle(engine)
        assert [x.tick.price for x in ra.calls(step="work")] == [101.0, 102.0]
        assert runs_of(engine, "trend") == outcome(completed=1, cancelled=1)

    run_session(engine, body)


def test_operator_actions_on_an_unknown_workflow_raise_key_error() -> None:
    engine = make_engine(TWO)
    with pytest.raises(KeyError, match="unknown workflow 'nope'"):
        engine.pause("nope")
    with pytest.raises(KeyError, match="unknown workflow 'nope'"):
        engine.resume("nope")
    assert engine.cancel_run(1) is False  # not running: nothing to cancel
    assert engine.statistics().paused == ()


def test_cancel_waits_for_a_running_order_step_and_keeps_runs_from_overlapping() -> None:
    toml = trend_toml().replace('name = "work"', 'name = "work"\npreemptible = false', 1)
    engine = make_engine(toml, agents=2)
    key = "trend.work.AAA"

    async def body(engine: Engine) -> None:
        c = coord(engine)
        tick(engine, "AAA", 101.0)
        await wait_until(lambda: ra.started(key) == 1, "run started")
        run = c.active_run("trend", "AAA")
        assert run is not None
        assert not run.steps[0].spec.preemptible

        assert engine.cancel_run(run.id) is True
        # A non-preemptible step (an order) is never cut half-way: the run keeps its slot.
        assert run.state is RunState.RUNNING
        assert c.active_run("trend", "AAA") is run
        tick(engine, "AAA", 102.0)  # must not start a second, overlapping run
        assert c.pending_run("trend", "AAA") is None
        assert ra.started(key) == 1

        ra.release(key)
        await idle(engine)
        assert run.state is RunState.CANCELLED
        assert run.steps[0].state is StepState.COMPLETED  # the order step finished its work
        # The newer tick ran afterwards, strictly after the cancelled run.
        assert [x.tick.price for x in ra.calls(step="work")] == [101.0, 102.0]
        assert runs_of(engine, "trend") == outcome(completed=1, cancelled=1)

    run_session(engine, body)


def test_a_run_cancelled_between_handover_and_agent_wakeup_is_skipped_cleanly() -> None:
    """The dispatch pass hands a step to an idle agent; the agent only runs a loop turn later.
    A cancel landing in between must leave the agent, the lane count and the engine intact."""
    engine = make_engine(trend_toml(action="quick"), agents=1)

    async def body(engine: Engine) -> None:
        c = coord(engine)
        loop = asyncio.get_running_loop()
        tick(engine, "AAA", 101.0)
        run = c.pending_run("trend", "AAA")
        assert run is not None
        # Queued after the dispatch pass this submit scheduled, before the agent wakes.
        loop.call_soon(engine.cancel_run, run.id)
        await idle(engine)
        assert run.state is RunState.CANCELLED
        assert ra.calls() == []  # the handed step never ran
        assert engine.queue.lanes["trend"].running == 0
        tick(engine, "AAA", 102.0)  # the agent and the lane are still in service
        await idle(engine)
        assert [x.tick.price for x in ra.calls()] == [102.0]

    run_session(engine, body)


TWO_ROOTS = """
[workflows.hi]
priority = 0
max_concurrent = 1
route = { max_priority = 0 }

[[workflows.hi.steps]]
name = "go"
action = "tests.unit.run_actions:gated"
preemptible = false

[workflows.lo]
priority = 2
max_concurrent = 4
route = { min_priority = 1 }

[[workflows.lo.steps]]
name = "a"
action = "tests.unit.run_actions:quick"

[[workflows.lo.steps]]
name = "b"
action = "tests.unit.run_actions:quick"
"""


def test_a_run_shed_while_its_first_root_is_queued_queues_no_other_root() -> None:
    engine = make_engine(TWO_ROOTS, agents=1, capacity=1)

    async def body(engine: Engine) -> None:
        c = coord(engine)
        tick(engine, "X", 1.0, priority=0)
        await wait_until(lambda: ra.started("hi.go.X") == 1, "hi running")
        tick(engine, "Y", 1.0, priority=0)  # fills the queue
        tick(engine, "Z", 1.0, priority=2)  # its first root is shed at once: the run ends
        assert c.pending_run("lo", "Z") is None
        assert len(engine.queue) == 1
        assert runs_of(engine, "lo") == outcome(shed=1)
        sym = engine.symbols.get("Z")
        assert sym is not None
        assert sym.active_runs == 0
        ra.release_all()
        await idle(engine)

    run_session(engine, body)
