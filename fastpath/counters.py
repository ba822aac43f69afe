"""Chooses the hot path's counters: compiled unless missing or disabled.

The same rule as :mod:`fastpath.heap`; the compiled module types its histogram fields as the
compiled :class:`fastpath.latency.LatencyHistogram`, so it is used only together with it.
"""

from __future__ import annotations

from .heap import NO_EXTENSIONS
from .latency import LATENCY_IMPLEMENTATION

__all__ = ["COUNTERS_IMPLEMENTATION", "StepCounters", "WorkflowCounters"]

if NO_EXTENSIONS or LATENCY_IMPLEMENTATION != "cython":
    from ._counters_py import StepCounters, WorkflowCounters

    COUNTERS_IMPLEMENTATION = "python"
else:
    try:
        from ._counters_c import StepCounters, WorkflowCounters  # type: ignore[assignment]

        COUNTERS_IMPLEMENTATION = "cython"
    except ImportError:  # not built
        from ._counters_py import StepCounters, WorkflowCounters

        COUNTERS_IMPLEMENTATION = "python"
