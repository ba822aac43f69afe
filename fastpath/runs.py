"""Chooses the runs-and-queue implementation: compiled unless missing or disabled.

The same rule as :mod:`fastpath.heap` (``TICKFLOW_NO_EXTENSIONS``). The compiled module is
``_runs_py.py`` cythonized with typed fields (``_runs_c.pxd``); it is used only together with
the compiled heap, symbols and counters, so a half-built tree falls back to the pure-Python
twins as a whole.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._choose import choose
from .counters import COUNTERS_IMPLEMENTATION
from .heap import IMPLEMENTATION as HEAP_IMPLEMENTATION
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

_impl, RUNS_IMPLEMENTATION = choose(
    "_runs_c", "_runs_py", HEAP_IMPLEMENTATION, SYMBOLS_IMPLEMENTATION, COUNTERS_IMPLEMENTATION
)

if TYPE_CHECKING:  # the twin's types; the same names at run time, from the chosen module
    from ._runs_py import (
        Lane,
        ReadyQueue,
        Run,
        StepContext,
        StepDef,
        StepRun,
        WorkflowDef,
    )
else:
    globals().update({n: getattr(_impl, n) for n in __all__ if not n.endswith("IMPLEMENTATION")})
