"""``fastpath.coro.start``: both builds run a coroutine to its first suspension alike."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Generator
from types import ModuleType
from typing import Any

import pytest


async def returns(value: Any) -> Any:
    return value


@types.coroutine
def _suspend(token: str) -> Generator[str, Any, Any]:
    return (yield token)


async def suspends_once() -> str:
    got = await _suspend("first")
    return f"resumed with {got}"


async def fails() -> None:
    raise ValueError("bad step")


async def fails_after_suspending() -> None:
    await _suspend("first")
    raise KeyError("later")


def test_a_coroutine_that_returns_at_once(coro_module: ModuleType) -> None:
    assert coro_module.start(returns(7)) == (False, 7)
    assert coro_module.start(returns(None)) == (False, None)


def test_a_coroutine_that_suspends_can_be_resumed(coro_module: ModuleType) -> None:
    coro = suspends_once()
    assert coro_module.start(coro) == (True, "first")
    with pytest.raises(StopIteration) as stop:
        coro.send("x")
    assert stop.value.value == "resumed with x"


def test_exceptions_propagate(coro_module: ModuleType) -> None:
    with pytest.raises(ValueError, match="bad step"):
        coro_module.start(fails())
    coro = fails_after_suspending()
    assert coro_module.start(coro) == (True, "first")
    with pytest.raises(KeyError, match="later"):
        coro.send(None)


def test_a_cancelled_error_raised_at_once_propagates(coro_module: ModuleType) -> None:
    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        coro_module.start(cancelled())


def test_the_chooser_picks_a_build() -> None:
    from fastpath import coro
    from fastpath.heap import NO_EXTENSIONS

    assert ("python" if NO_EXTENSIONS else "cython") == coro.CORO_IMPLEMENTATION


# -- resume: the rest of a coroutine already started ------------------------------------------


async def suspends_twice() -> str:
    a = await _suspend("first")
    b = await _suspend("second")
    return f"{a}+{b}"


async def _await_resumed(coro_module: ModuleType, coro: Any, yielded: Any) -> Any:
    resumed = coro_module.Resume(coro, yielded)
    await resumed
    return resumed.result


def test_resume_hands_out_the_first_suspension_then_drives_the_coroutine(
    coro_module: ModuleType,
) -> None:
    coro = suspends_twice()
    suspended, yielded = coro_module.start(coro)
    assert (suspended, yielded) == (True, "first")
    outer = _await_resumed(coro_module, coro, yielded)
    # The awaiting coroutine's first step re-yields the suspension that already happened.
    assert outer.send(None) == "first"
    assert outer.send("a") == "second"
    with pytest.raises(StopIteration) as stop:
        outer.send("b")
    assert stop.value.value == "a+b"


def test_resume_returns_none_and_falsy_values(coro_module: ModuleType) -> None:
    for value in (None, 0, ""):
        async def once(v: Any = value) -> Any:
            await _suspend("x")
            return v

        coro = once()
        outer = _await_resumed(coro_module, coro, coro_module.start(coro)[1])
        assert outer.send(None) == "x"
        with pytest.raises(StopIteration) as stop:
            outer.send(None)
        assert stop.value.value == value


def test_resume_passes_a_thrown_exception_to_the_coroutine(coro_module: ModuleType) -> None:
    async def catches() -> str:
        try:
            await _suspend("waiting")
        except asyncio.CancelledError:
            return "cancelled and handled"
        return "not reached"

    coro = catches()
    outer = _await_resumed(coro_module, coro, coro_module.start(coro)[1])
    assert outer.send(None) == "waiting"
    with pytest.raises(StopIteration) as stop:
        outer.throw(asyncio.CancelledError())
    assert stop.value.value == "cancelled and handled"


def test_resume_propagates_what_the_coroutine_raises(coro_module: ModuleType) -> None:
    coro = fails_after_suspending()
    outer = _await_resumed(coro_module, coro, coro_module.start(coro)[1])
    assert outer.send(None) == "first"
    with pytest.raises(KeyError, match="later"):
        outer.send(None)
    # Thrown and not caught: the same exception comes back out.
    coro = suspends_once()
    outer = _await_resumed(coro_module, coro, coro_module.start(coro)[1])
    outer.send(None)
    with pytest.raises(asyncio.CancelledError):
        outer.throw(asyncio.CancelledError())


def test_closing_the_awaiter_closes_the_coroutine(coro_module: ModuleType) -> None:
    closed: list[bool] = []

    async def records_close() -> None:
        try:
            await _suspend("waiting")
        finally:
            closed.append(True)

    coro = records_close()
    outer = _await_resumed(coro_module, coro, coro_module.start(coro)[1])
    outer.send(None)
    outer.close()
    assert closed == [True]
    assert coro.cr_frame is None  # finished: closed, not left suspended


def test_resume_under_a_real_event_loop(coro_module: ModuleType) -> None:
    async def step() -> int:
        await asyncio.sleep(0)
        await asyncio.sleep(0.001)
        return 42

    async def agent() -> int:
        coro = step()
        suspended, yielded = coro_module.start(coro)
        assert suspended
        resumed = coro_module.Resume(coro, yielded)
        await resumed
        return int(resumed.result)

    assert asyncio.run(agent()) == 42
