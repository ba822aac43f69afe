"""Chooses the latency histogram: compiled unless missing or disabled (see fastpath.heap)."""

from __future__ import annotations

from .heap import NO_EXTENSIONS

__all__ = ["BUCKETS", "LATENCY_IMPLEMENTATION", "LatencyHistogram", "bucket_edge_seconds"]

if NO_EXTENSIONS:
    from ._latency_py import BUCKETS, LatencyHistogram, bucket_edge_seconds

    LATENCY_IMPLEMENTATION = "python"
else:
    try:
        from ._latency import (  # type: ignore[assignment]
            BUCKETS,
            LatencyHistogram,
            bucket_edge_seconds,
        )

        LATENCY_IMPLEMENTATION = "cython"
    except ImportError:  # not built
        from ._latency_py import BUCKETS, LatencyHistogram, bucket_edge_seconds

        LATENCY_IMPLEMENTATION = "python"
