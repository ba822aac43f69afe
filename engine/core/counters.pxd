# cython: language_level=3
"""Typed layout of engine/core/counters.py, compiled in place (see that file)."""

from fastpath._latency cimport LatencyHistogram


cdef class StepCounters:
    cdef public object outcomes
    cdef public long long retries
    cdef public long long timeouts
    cdef public LatencyHistogram duration


cdef class WorkflowCounters:
    cdef public long long triggered
    cdef public long long conflated
    cdef public long long skipped
    cdef public long long shed
    cdef public long long preemptions
    cdef public object runs
    cdef public LatencyHistogram dispatch_wait
    cdef public LatencyHistogram run_latency
    cdef public dict steps
