"""Run ids derived from the event that made the run (``Coordinator.id_for``): what a cluster
node replaying a partition after a takeover needs to re-derive the previous owner's run ids,
and so its client order ids."""

from __future__ import annotations

from engine.core.events import DataReady
from engine.core.runs import WorkflowDef
from engine.service.daemon import Engine
from tests.unit import run_actions as ra

from .engine_harness import make_engine, run_async, wait_for

CONFIG = """
[[symbols]]
name = "S"
priority = 1

[workflows.wf]
priority = 1
max_concurrent = 1
[[workflows.wf.steps]]
name = "a"
action = "tests.unit.run_actions:gated"
params = { gate = "a" }
"""

BASE = 1 << 40  # far above the counter's ids


def id_for(wf: WorkflowDef, seq: int) -> int:
    return BASE + seq


def apply(engine: Engine, seq: int | None, price: float) -> None:
    coordinator = engine.coordinator
    assert coordinator is not None
    coordinator.event_seq = seq
    try:
        engine.submit_nowait(DataReady(symbol="S", ts=float(price), price=price))
    finally:
        coordinator.event_seq = None


def test_a_run_and_its_follow_up_take_the_ids_of_their_own_events() -> None:
    engine, _ = make_engine(CONFIG)

    async def main() -> None:
        async with engine.session():
            coordinator = engine.coordinator
            assert coordinator is not None
            coordinator.id_for = id_for
            apply(engine, 7, 10.0)  # starts run BASE+7
            await wait_for(lambda: ra.started("a") == 1, "the first run")
            apply(engine, 8, 11.0)  # makes the follow-up: its id is event 8's ...
            apply(engine, 9, 12.0)  # ... whatever conflates into it (latest tick wins)
            apply(engine, None, 13.0)
            ra.release("a")
            await wait_for(lambda: len(ra.calls()) == 2, "the follow-up")
            await engine.wait_idle()

    run_async(main)
    assert [(c.run_id, c.tick.price) for c in ra.calls()] == [(BASE + 7, 10.0), (BASE + 8, 13.0)]


def test_without_an_event_seq_the_counter_gives_the_id() -> None:
    engine, _ = make_engine(CONFIG)

    async def main() -> None:
        async with engine.session():
            coordinator = engine.coordinator
            assert coordinator is not None
            coordinator.id_for = id_for
            ra.release("a")
            apply(engine, None, 10.0)
            await engine.wait_idle()
            apply(engine, 3, 11.0)
            await engine.wait_idle()

    run_async(main)
    assert [c.run_id for c in ra.calls()] == [1, BASE + 3]
