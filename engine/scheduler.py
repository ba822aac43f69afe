"""The ready queue: one fastpath heap lane per workflow under one global order.

It lives in :mod:`fastpath.runs` (compiled, with a pure-Python twin) next to the runs whose
steps it orders; that module's docstring states the ordering and shedding rules.
"""

from __future__ import annotations

from fastpath.runs import Lane, ReadyQueue

from .stats import QueueStatistics

__all__ = ["Lane", "QueueStatistics", "ReadyQueue"]
