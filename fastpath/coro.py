"""Chooses how a step's coroutine is started and resumed: compiled unless missing or
disabled."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._choose import choose

__all__ = [
    "CORO_IMPLEMENTATION",
    "Resume",
    "start",
]

_impl, CORO_IMPLEMENTATION = choose("_coro", "_coro_py")

if TYPE_CHECKING:  # the twin's types; the same names at run time, from the chosen module
    from ._coro_py import (
        Resume,
        start,
    )
else:
    globals().update({n: getattr(_impl, n) for n in __all__ if not n.endswith("IMPLEMENTATION")})
