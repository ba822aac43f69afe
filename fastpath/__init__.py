"""fastpath: tickflow's hot paths, compiled with Cython, each with a pure-Python twin."""

from ._stats import HeapFullError, HeapStatistics
from .heap import IMPLEMENTATION, PriorityHeap

__all__ = ["IMPLEMENTATION", "HeapFullError", "HeapStatistics", "PriorityHeap"]
