"""An inline step that returns after its timeout is kept, not failed (its work is done)."""

from __future__ import annotations

import asyncio

from engine.config import loads_config
from engine.core.clock import FakeClock
from engine.core.events import DataReady
from engine.core.strategy import StepContext, cheap
from engine.service.daemon import Engine

CLOCK = FakeClock()


@cheap
def slow_inline(ctx: StepContext) -> str:
    CLOCK.advance(0.5)  # "takes" 500 ms against a 100 ms timeout, without sleeping
    return "done"


TOML = """
[workflows.w]
priority = 0
max_concurrent = 1

[[workflows.w.steps]]
name = "s"
action = "tests.unit.test_inline_overrun:slow_inline"
timeout_ms = 100
"""


def test_an_inline_step_over_its_timeout_keeps_its_result_and_is_counted() -> None:
    engine = Engine(loads_config(TOML), clock=CLOCK, sources=[])

    async def scenario() -> None:
        async with engine.session():
            engine.submit_nowait(DataReady(symbol="A", ts=1.0, price=1.0))
            async with asyncio.timeout(10):
                await engine.wait_idle()

    asyncio.run(scenario())
    stats = engine.statistics()
    assert stats.counters.runs["w"]["completed"] == 1
    assert stats.counters.steps["w.s"]["timeout"] == 0
    assert engine.dispatcher is not None
    assert engine.dispatcher.overruns == 1
