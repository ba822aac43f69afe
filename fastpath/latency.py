"""Chooses the latency histogram: compiled unless missing or disabled (see fastpath.heap)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._choose import choose

__all__ = [
    "BUCKETS",
    "LATENCY_IMPLEMENTATION",
    "LatencyHistogram",
    "bucket_edge_seconds",
]

_impl, LATENCY_IMPLEMENTATION = choose("_latency", "_latency_py")

if TYPE_CHECKING:  # the twin's types; the same names at run time, from the chosen module
    from ._latency_py import (
        BUCKETS,
        LatencyHistogram,
        bucket_edge_seconds,
    )
else:
    globals().update({n: getattr(_impl, n) for n in __all__ if not n.endswith("IMPLEMENTATION")})
