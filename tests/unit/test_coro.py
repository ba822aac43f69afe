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
