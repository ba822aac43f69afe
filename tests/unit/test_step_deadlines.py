"""Step timeouts under the dispatcher's one deadline timer (engine.core.dispatcher).

A suspended step times out at its start + ``timeout_ms``. One timer, armed at the earliest
deadline of the agents' suspended steps, watches them all (a timer per step cost a third of a
suspending step's dispatch), so these cases pin what that must still get right: a shorter
deadline arriving after a longer one re-arms the timer earlier; a deadline whose step ended
early times nothing out; a step started later on the same agent keeps its own deadline; and
every deadline due at one instant fires. Fake clock throughout; waits are bounded loop turns.
"""

from __future__ import annotations

from . import dispatch_actions as acts
from .engine_harness import make_engine, run_async, settle, wait_for
from .test_dispatch import config, dispatcher, started, step, submit, workflow


def _cancelled(symbol: str) -> bool:
    return ("cancel", symbol, "work", 1) in acts.ended()


def test_a_shorter_deadline_after_a_longer_one_times_out_on_time() -> None:
    engine, clock = make_engine(
        config(
            2,
            workflow("slow", priority=1, route=(1, 1), steps=[step(timeout_ms=1000)]),
            workflow("quick", priority=1, route=(2, 2), steps=[step(timeout_ms=100)]),
        )
    )

    async def main() -> None:
        async with engine.session():
            submit(engine, "SLOW", 1)
            await started("SLOW")  # the timer is armed for SLOW, 1 s away
            submit(engine, "QUICK", 2)
            await started("QUICK")  # 100 ms away: earlier, so the timer moves
            clock.advance(0.099)
            await settle()
            assert acts.ended() == []
            clock.advance(0.002)
            await wait_for(lambda: _cancelled("QUICK"), "QUICK to time out")
            assert not _cancelled("SLOW")
            assert dispatcher(engine).timeouts == 1
            clock.advance(0.900)  # past SLOW's deadline too (started at the same instant)
            await wait_for(lambda: _cancelled("SLOW"), "SLOW to time out")
            assert dispatcher(engine).timeouts == 2

    run_async(main)


def test_a_deadline_whose_step_ended_times_out_nothing_later() -> None:
    engine, clock = make_engine(
        config(1, workflow("quick", priority=1, route=(2, 2), steps=[step(timeout_ms=100)]))
    )

    async def main() -> None:
        async with engine.session():
            submit(engine, "A", 2)
            await started("A")  # deadline t0 + 100 ms; the timer is armed for it
            clock.advance(0.060)
            acts.release("A")
            await wait_for(lambda: ("finish", "A", "work", 1) in acts.ended(), "A to finish")
            submit(engine, "B", 2)
            await started("B")  # same agent, deadline t0 + 160 ms
            clock.advance(0.050)  # t0 + 110 ms: A's old deadline has passed, B's has not
            await settle()
            assert not _cancelled("B")
            assert dispatcher(engine).timeouts == 0
            clock.advance(0.051)  # t0 + 161 ms: now B's
            await wait_for(lambda: _cancelled("B"), "B to time out")
            assert dispatcher(engine).timeouts == 1

    run_async(main)


def test_deadlines_due_at_one_instant_all_fire() -> None:
    engine, clock = make_engine(
        config(3, workflow("quick", priority=1, route=(2, 2), steps=[step(timeout_ms=100)]))
    )

    async def main() -> None:
        async with engine.session():
            for symbol in ("X", "Y", "Z"):
                submit(engine, symbol, 2)
            for symbol in ("X", "Y", "Z"):
                await started(symbol)
            clock.advance(0.101)
            await wait_for(
                lambda: all(_cancelled(s) for s in ("X", "Y", "Z")), "all three to time out"
            )
            assert dispatcher(engine).timeouts == 3

    run_async(main)
