"""How a step runs: the execution kind decided once at load instead of per step.

The compiled workflow definitions themselves (:class:`StepDef`, :class:`WorkflowDef`) live in
:mod:`engine.core.runs` beside the runs that point at them (their typed layouts cimport each
other); :mod:`engine.config.compile` builds them from the config structs.
"""

from __future__ import annotations

import enum

__all__ = ["ExecKind"]


class ExecKind(enum.Enum):
    INLINE = "inline"  # a cheap plain function, called on the loop; cannot be interrupted
    ASYNC = "async"  # awaited on the loop; preemption and timeouts cancel it at an await
    THREAD = "thread"  # run in the thread pool; a timeout abandons the result, never the thread
