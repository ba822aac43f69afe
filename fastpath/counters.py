"""Chooses the hot path's counters: compiled unless missing or disabled.

The same rule as :mod:`fastpath.heap`; the compiled module types its histogram fields as the
compiled :class:`fastpath.latency.LatencyHistogram`, so it is used only together with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._choose import choose
from .latency import LATENCY_IMPLEMENTATION

__all__ = [
    "COUNTERS_IMPLEMENTATION",
    "StepCounters",
    "WorkflowCounters",
]

_impl, COUNTERS_IMPLEMENTATION = choose("_counters_c", "_counters_py", LATENCY_IMPLEMENTATION)

if TYPE_CHECKING:  # the twin's types; the same names at run time, from the chosen module
    from ._counters_py import (
        StepCounters,
        WorkflowCounters,
    )
else:
    globals().update({n: getattr(_impl, n) for n in __all__ if not n.endswith("IMPLEMENTATION")})
