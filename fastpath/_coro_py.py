"""Start a coroutine: the pure-Python twin of ``fastpath._coro`` (same API and results)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

__all__ = ["start"]


def start(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``coro`` to its first suspension: ``(True, yielded)``, or ``(False, returned)``
    when it finished without suspending. Its exceptions propagate."""
    try:
        return True, coro.send(None)
    except StopIteration as stop:
        return False, stop.value
