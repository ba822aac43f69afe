"""Start and resume a coroutine: the pure-Python twin of ``fastpath._coro`` (same API and
results)."""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any

__all__ = ["Resume", "start"]


def start(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``coro`` to its first suspension: ``(True, yielded)``, or ``(False, returned)``
    when it finished without suspending. Its exceptions propagate."""
    try:
        return True, coro.send(None)
    except StopIteration as stop:
        return False, stop.value


class Resume:
    """The rest of ``coro``, which already ran up to its first suspension (``yielded``): await
    it, then read :attr:`result`, what the coroutine returned.

    The same protocol as ``yield from``: values and exceptions -- a preemption's or timeout's
    CancelledError included -- are passed through to the coroutine until it returns.
    """

    __slots__ = ("coro", "first", "result")

    def __init__(self, coro: Any, yielded: Any) -> None:
        self.coro = coro
        self.first = yielded
        self.result: Any = None

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self.coro, self.first
        self.first = None
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
                    self.result = stop.value
                    return stop.value
            else:
                try:
                    yielded = coro.send(value)
                except StopIteration as stop:
                    self.result = stop.value
                    return stop.value
