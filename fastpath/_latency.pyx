# cython: language_level=3
"""Compiled latency histogram; the pure-Python twin is ``fastpath._latency_py``.

The engine records seven latencies per run on its hot path; here a sample is a log2, an index
and four C updates, with no Python objects touched. Same buckets, API and results as the twin.
"""

from libc.math cimport ceil, log2, pow

cdef int SUB = 16
cdef int NBUCKETS = 64 * 16
BUCKETS = NBUCKETS


def bucket_edge_seconds(int edge):
    """The lower edge, in seconds, of bucket ``edge`` (= the upper edge of bucket ``edge - 1``)."""
    if not 0 < edge <= NBUCKETS:
        raise ValueError(f"bucket edge must be in 1..{NBUCKETS}, got {edge}")
    return pow(2.0, edge / <double>SUB) / 1e9


cdef class LatencyHistogram:
    # fields and record(): _latency.pxd, so the engine's compiled modules record in C

    def __cinit__(self):
        cdef int i
        for i in range(NBUCKETS):
            self._counts[i] = 0
        self.count = 0
        self.total = 0.0
        self.max = 0.0
        self.min = float("inf")

    cpdef void record(self, double seconds):
        cdef double ns = seconds * 1e9
        cdef double at
        cdef int idx
        if ns < 1.0 or ns != ns:
            idx = 0
        else:
            # Compared as a double first: +inf (or anything past the last bucket) must not be
            # converted to an int, which is undefined and indexed outside the counts.
            at = log2(ns) * SUB
            idx = NBUCKETS - 1 if at >= NBUCKETS else <int>at
        self._counts[idx] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds
        if seconds < self.min:
            self.min = seconds

    def quantile(self, double q):
        """The upper edge of the bucket holding the q-th sample (0 when empty), capped at max."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        if self.count == 0:
            return 0.0
        cdef long long rank = <long long>ceil(q * self.count)
        if rank < 1:
            rank = 1
        cdef long long seen = 0
        cdef int idx
        cdef double upper
        for idx in range(NBUCKETS):
            seen += self._counts[idx]
            if seen >= rank:
                upper = pow(2.0, (idx + 1) / <double>SUB) / 1e9
                return upper if upper < self.max else self.max
        return self.max

    def summary(self):
        return {
            "count": self.count,
            "mean_s": self.total / self.count if self.count else 0.0,
            "p50_s": self.quantile(0.5),
            "p99_s": self.quantile(0.99),
            "p999_s": self.quantile(0.999),
            "max_s": self.max,
        }

    def cumulative_counts(self, edges):
        """Samples below each of ``edges`` (bucket-edge indices, ascending), for exporters."""
        cdef long long running = 0
        cdef int done = 0
        cdef int edge
        out = []
        for edge in edges:
            if not 0 < edge <= NBUCKETS:
                raise ValueError(f"bucket edge must be in 1..{NBUCKETS}, got {edge}")
            if edge < done:
                running = 0
                done = 0
            while done < edge:
                running += self._counts[done]
                done += 1
            out.append(running)
        return out

    def bucket_counts(self):
        """A copy of the per-bucket sample counts (bucket ``k`` as in ``bucket_edge_seconds``)."""
        return [self._counts[i] for i in range(NBUCKETS)]

    def add_buckets(self, counts, long long count, double total, double max_s, double min_s):
        """Add samples recorded elsewhere (pooled rounds): bucket counts plus their totals."""
        for idx, n in counts.items():
            if not 0 <= idx < NBUCKETS or n < 0:
                raise ValueError(f"bad bucket {idx}: {n}")
        for idx, n in counts.items():
            self._counts[idx] += n
        self.count += count
        self.total += total
        if max_s > self.max:
            self.max = max_s
        if min_s < self.min:
            self.min = min_s

    def merge(self, LatencyHistogram other):
        """Add every sample of ``other`` (same bucket layout, so exact)."""
        cdef int i
        for i in range(NBUCKETS):
            self._counts[i] += other._counts[i]
        self.count += other.count
        self.total += other.total
        if other.max > self.max:
            self.max = other.max
        if other.min < self.min:
            self.min = other.min
