"""Chooses the engine's per-step path: compiled unless missing or disabled.

Compiled only together with the compiled runs and symbols modules (:mod:`fastpath.runs`,
:mod:`fastpath.symbols`), whose extension types it reads field by field.
"""

from __future__ import annotations

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

if RUNS_IMPLEMENTATION != "cython" or SYMBOLS_IMPLEMENTATION != "cython":
    from ._flow_py import STREAK_SECONDS, STREAK_STEPS, Agent, CoordinatorCore, DispatcherCore

    FLOW_IMPLEMENTATION = "python"
else:
    try:
        from ._flow_c import (  # type: ignore[assignment]
            STREAK_SECONDS,
            STREAK_STEPS,
            Agent,
            CoordinatorCore,
            DispatcherCore,
        )

        FLOW_IMPLEMENTATION = "cython"
    except ImportError:  # not built
        from ._flow_py import STREAK_SECONDS, STREAK_STEPS, Agent, CoordinatorCore, DispatcherCore

        FLOW_IMPLEMENTATION = "python"
