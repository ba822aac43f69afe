# cython: language_level=3
"""C-level layout of the latency histogram (see _latency.pyx)."""


cdef class LatencyHistogram:
    cdef long long _counts[1024]
    cdef public long long count
    cdef public double total
    cdef public double max
    cdef public double min

    cpdef void record(self, double seconds)
