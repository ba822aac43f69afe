"""Awaiting the rest of a coroutine that already ran up to its first suspension.

Kept out of the compiled dispatcher on purpose: :func:`types.coroutine` turns this generator
into an awaitable only when it is a Python generator function.
"""

from __future__ import annotations

import types
from collections.abc import Generator
from typing import Any

__all__ = ["resume"]


@types.coroutine
def resume(coro: Any, yielded: Any) -> Generator[Any, Any, Any]:
    """Await the rest of ``coro``, which already ran up to its first suspension (``yielded``).

    The same protocol as ``yield from``: values and exceptions -- a preemption's or timeout's
    CancelledError included -- are passed through to the coroutine until it returns.
    """
    while True:
        try:
            value = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(value)
            except StopIteration as stop:
                return stop.value
