"""``Engine.attach_ingest``: input goes to the attached ingest (a cluster node publishes it),
and only ``apply_nowait`` applies; tickets and acceptance come from the ingest."""

from __future__ import annotations

import asyncio

from engine.core.events import DataReady, Event

from .engine_harness import TWO_STEP_CONFIG, make_engine, run_async


class Recorder:
    """An ingest that keeps what it is given and accepts it when the test says so."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.accepted = asyncio.Event()
        self.capacity_waits = 0

    def submit_nowait(self, event: Event) -> int | None:
        self.events.append(event)
        return len(self.events)

    async def wait_capacity(self) -> None:
        self.capacity_waits += 1

    async def wait_accepted(self, ticket: int | None) -> None:
        await self.accepted.wait()


def test_input_goes_to_the_attached_ingest_and_apply_applies() -> None:
    engine, _ = make_engine(TWO_STEP_CONFIG)
    ingest = Recorder()
    engine.attach_ingest(ingest)
    tick = DataReady(symbol="S", ts=1.0, price=10.0)

    async def main() -> None:
        async with engine.session():
            assert await engine.submit(tick) == 1
            assert engine.submit_nowait(tick) == 2
            assert ingest.capacity_waits == 1
            assert engine.statistics().counters.events_received == {}  # nothing applied
            waiting = asyncio.ensure_future(engine.wait_accepted(2))
            await asyncio.sleep(0)
            assert not waiting.done()  # accepted is the ingest's word, not the engine's
            ingest.accepted.set()
            await waiting
            engine.apply_nowait(tick)  # the owner applies
            await engine.wait_idle()

    run_async(main)
    assert ingest.events == [tick, tick]
    assert engine.statistics().counters.events_received == {"DATA_READY": 1}
