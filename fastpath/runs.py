"""Chooses the runs-and-queue implementation: compiled unless missing or disabled.

The same rule as :mod:`fastpath.heap` (``TICKFLOW_NO_EXTENSIONS``). The compiled module is
``_runs_py.py`` cythonized with typed fields (``_runs_c.pxd``); it is used only together with
the compiled heap, symbols and counters, so a half-built tree falls back to the pure-Python
twins as a whole.
"""

from __future__ import annotations

from .counters import COUNTERS_IMPLEMENTATION
from .heap import IMPLEMENTATION as HEAP_IMPLEMENTATION
from .heap import NO_EXTENSIONS
from .symbols import SYMBOLS_IMPLEMENTATION

__all__ = [
    "RUNS_IMPLEMENTATION",
    "Lane",
    "ReadyQueue",
    "Run",
    "StepContext",
    "StepDef",
    "StepRun",
    "WorkflowDef",
]

if NO_EXTENSIONS or "python" in (
    HEAP_IMPLEMENTATION, SYMBOLS_IMPLEMENTATION, COUNTERS_IMPLEMENTATION
):
    from ._runs_py import Lane, ReadyQueue, Run, StepContext, StepDef, StepRun, WorkflowDef

    RUNS_IMPLEMENTATION = "python"
else:
    try:
        from ._runs_c import (  # type: ignore[assignment]
            Lane,
            ReadyQueue,
            Run,
            StepContext,
            StepDef,
            StepRun,
            WorkflowDef,
        )

        RUNS_IMPLEMENTATION = "cython"
    except ImportError:  # not built
        from ._runs_py import Lane, ReadyQueue, Run, StepContext, StepDef, StepRun, WorkflowDef

        RUNS_IMPLEMENTATION = "python"
