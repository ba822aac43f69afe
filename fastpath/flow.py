"""Chooses the engine's per-step path: compiled unless missing or disabled.

Compiled only together with the compiled runs and symbols modules (:mod:`fastpath.runs`,
:mod:`fastpath.symbols`), whose extension types it reads field by field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._choose import choose
from .runs import RUNS_IMPLEMENTATION
from .symbols import SYMBOLS_IMPLEMENTATION

__all__ = [
    "FLOW_IMPLEMENTATION",
    "STREAK_SECONDS",
    "STREAK_STEPS",
    "Agent",
    "CoordinatorCore",
    "DispatcherCore",
]

_impl, FLOW_IMPLEMENTATION = choose(
    "_flow_c", "_flow_py", RUNS_IMPLEMENTATION, SYMBOLS_IMPLEMENTATION
)

if TYPE_CHECKING:  # the twin's types; the same names at run time, from the chosen module
    from ._flow_py import (
        STREAK_SECONDS,
        STREAK_STEPS,
        Agent,
        CoordinatorCore,
        DispatcherCore,
    )
else:
    globals().update({n: getattr(_impl, n) for n in __all__ if not n.endswith("IMPLEMENTATION")})
