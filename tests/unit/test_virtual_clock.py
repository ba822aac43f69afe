"""VirtualClock and VirtualTimeLoop: timers, sleeps and timeouts in virtual time, no waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from engine.core.clock import VirtualClock, VirtualTimeLoop


def _run(clock: VirtualClock, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    loop = clock.new_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def test_sleeps_jump_in_time_order_without_waiting() -> None:
    clock = VirtualClock(origin=1_700_000_000.0)
    order: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        order.append((name, clock.now()))

    async def main() -> None:
        await asyncio.gather(sleeper("hour", 3600), sleeper("half", 0.5), sleeper("us", 1e-6))

    _run(clock, main)  # an hour of virtual time: a real wait would hit pytest's timeout
    assert order == [("us", 1e-6), ("half", 0.5), ("hour", 3600.0)]
    assert clock.wall() == 1_700_000_000.0 + 3600.0


def test_timeouts_and_call_later_follow_virtual_time() -> None:
    clock = VirtualClock()
    fired: list[float] = []

    async def main() -> str:
        clock.call_later(2.5, lambda: fired.append(clock.now()))
        try:
            async with asyncio.timeout(10):
                await asyncio.sleep(1000)
        except TimeoutError:
            return f"timed out at {clock.now():g}"
        return "no timeout"

    assert _run(clock, main) == "timed out at 10"
    assert fired == [2.5]


def test_charge_delays_timers_like_a_blocked_loop() -> None:
    clock = VirtualClock()
    seen: list[float] = []

    async def main() -> None:
        clock.call_later(0.001, lambda: seen.append(clock.now()))
        clock.charge(0.005)  # an inline step held the loop for 5 ms
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    _run(clock, main)
    assert seen == [0.005]  # fired late, when the loop got its turn


def test_idle_until_and_advance() -> None:
    clock = VirtualClock()
    loop = clock.new_loop()
    try:
        assert loop.idle_until(5.0)
        handle = loop.call_at(3.0, lambda: None)
        assert not loop.idle_until(5.0)
        assert loop.idle_until(2.0)
        handle.cancel()
        loop.call_soon(lambda: None)
        assert not loop.idle_until(0.1)
    finally:
        loop.close()
    clock.advance_to(4.0)
    clock.advance_to(1.0)  # never backwards
    assert clock.now() == 4.0


def test_timers_need_the_clock_loop() -> None:
    with pytest.raises(RuntimeError, match="new_loop"):
        VirtualClock().call_later(1.0, lambda: None)


def test_loop_is_an_asyncio_loop() -> None:
    clock = VirtualClock()
    loop = clock.new_loop()
    try:
        assert isinstance(loop, VirtualTimeLoop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert loop.time() == clock.now() == 0.0
    finally:
        loop.close()
