"""Chooses how a step's coroutine is started: compiled unless missing or disabled."""

from __future__ import annotations

from .heap import NO_EXTENSIONS

__all__ = ["CORO_IMPLEMENTATION", "start"]

if NO_EXTENSIONS:
    from ._coro_py import start

    CORO_IMPLEMENTATION = "python"
else:
    try:
        from ._coro import start

        CORO_IMPLEMENTATION = "cython"
    except ImportError:  # not built
        from ._coro_py import start

        CORO_IMPLEMENTATION = "python"
