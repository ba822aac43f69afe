"""Pure-Python twin of ``fastpath._latency``: log-bucketed latency histograms, O(1) per sample.

Sixteen buckets per power of two of nanoseconds give ~4.4% resolution from 1 ns to hours,
in a fixed few kilobytes per histogram whatever the sample count -- a daemon that runs for
months must not keep every sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import accumulate

__all__ = ["BUCKETS", "LatencyHistogram", "bucket_edge_seconds"]

_SUB = 16
_BUCKETS = 64 * _SUB
BUCKETS = _BUCKETS


def bucket_edge_seconds(edge: int) -> float:
    """The lower edge, in seconds, of bucket ``edge`` (= the upper edge of bucket ``edge - 1``).

    Bucket ``k`` holds samples of ``2**(k/16)`` ns up to (not including) ``2**((k+1)/16)`` ns.
    """
    if not 0 < edge <= _BUCKETS:
        raise ValueError(f"bucket edge must be in 1..{_BUCKETS}, got {edge}")
    return float(2.0 ** (edge / _SUB) / 1e9)


class LatencyHistogram:
    __slots__ = ("_counts", "count", "max", "min", "total")

    def __init__(self) -> None:
        self._counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.min = math.inf

    def record(self, seconds: float) -> None:
        ns = seconds * 1e9
        if ns < 1.0 or ns != ns:  # NaN too, as the compiled twin
            idx = 0
        else:
            at = math.log2(ns) * _SUB
            idx = _BUCKETS - 1 if at >= _BUCKETS else int(at)
        self._counts[idx] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds
        if seconds < self.min:
            self.min = seconds

    def quantile(self, q: float) -> float:
        """The upper edge of the bucket holding the q-th sample (0 when empty), capped at max."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self.count == 0:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for idx, c in enumerate(self._counts):
            seen += c
            if seen >= rank:
                upper: float = 2.0 ** ((idx + 1) / _SUB) / 1e9
                return min(upper, self.max)
        return self.max

    def summary(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "mean_s": self.total / self.count if self.count else 0.0,
            "p50_s": self.quantile(0.5),
            "p99_s": self.quantile(0.99),
            "p999_s": self.quantile(0.999),
            "max_s": self.max,
        }

    def cumulative_counts(self, edges: Sequence[int]) -> list[int]:
        """Samples below each of ``edges`` (bucket-edge indices, ascending), for exporters.

        ``edges[i]`` stands for :func:`bucket_edge_seconds` ``(edges[i])``; the count is exact
        for that bound (a sample exactly on an edge counts in the bucket above it). Samples in
        the last, open-ended bucket are never below an edge: read them from :attr:`count`.
        Called at scrape time, never on the hot path: one pass over the buckets.
        """
        running = list(accumulate(self._counts))
        out: list[int] = []
        for edge in edges:
            if not 0 < edge <= _BUCKETS:
                raise ValueError(f"bucket edge must be in 1..{_BUCKETS}, got {edge}")
            out.append(running[edge - 1])
        return out

    def bucket_counts(self) -> list[int]:
        """A copy of the per-bucket sample counts (see :func:`bucket_edge_seconds`)."""
        return list(self._counts)

    def add_buckets(
        self, counts: dict[int, int], count: int, total: float, max_s: float, min_s: float
    ) -> None:
        """Add samples recorded elsewhere (pooled rounds): bucket counts plus their totals."""
        for idx, n in counts.items():
            if not 0 <= idx < _BUCKETS or n < 0:
                raise ValueError(f"bad bucket {idx}: {n}")
            self._counts[idx] += n
        self.count += count
        self.total += total
        self.max = max(self.max, max_s)
        self.min = min(self.min, min_s)

    def merge(self, other: LatencyHistogram) -> None:
        """Add every sample of ``other`` (same bucket layout, so exact)."""
        counts = dict(enumerate(other.bucket_counts()))
        self.add_buckets(counts, other.count, other.total, other.max, other.min)
