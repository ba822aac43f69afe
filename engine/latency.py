"""Latency histograms: the engine's name for the fastpath recorder (compiled or its twin)."""

from fastpath.latency import BUCKETS, LatencyHistogram, bucket_edge_seconds

__all__ = ["BUCKETS", "LatencyHistogram", "bucket_edge_seconds"]
