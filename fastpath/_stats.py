"""Snapshot types shared by the compiled and the pure-Python fastpath."""

from __future__ import annotations

from typing import NamedTuple

from fastpath.errors import TickflowError

__all__ = ["HeapFullError", "HeapStatistics"]


class HeapFullError(TickflowError, OverflowError):
    """``push`` on a heap that already holds ``capacity`` entries."""


class HeapStatistics(NamedTuple):
    """A frozen snapshot of a heap's counters (cheap to build, safe to hand to exporters)."""

    size: int
    capacity: int
    pushes: int
    pops: int
    updates: int
    removes: int
