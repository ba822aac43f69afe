# cython: language_level=3
"""Typed layout of engine/core/runlog.py, compiled in place (see that file)."""

cimport cython

from engine.core.records cimport FinishedRuns
from engine.core.runs cimport Run


cdef class RunLog:
    cdef public object wake
    cdef public list ended
    cdef public dict marked
    cdef public FinishedRuns finished

    cpdef mark(self, Run run)
    @cython.locals(ended=list)
    cpdef add_ended(self, Run run)
    @cython.locals(finished=FinishedRuns)
    cpdef add_completed(self, Run run, double offset)
    cpdef forget(self, Run run)
    @cython.locals(taken=list, run=Run)
    cpdef list take_changed(self)
    cpdef FinishedRuns take_finished(self)
