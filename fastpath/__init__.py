"""fastpath: tickflow's hot paths, compiled with Cython, each with a pure-Python twin."""

from ._stats import HeapFullError, HeapStatistics
from .heap import IMPLEMENTATION, PriorityHeap
from .latency import LATENCY_IMPLEMENTATION, LatencyHistogram

__all__ = [
    "IMPLEMENTATION",
    "LATENCY_IMPLEMENTATION",
    "HeapFullError",
    "HeapStatistics",
    "LatencyHistogram",
    "PriorityHeap",
]
