# cython: language_level=3
"""Typed layout of engine/core/ready.py, compiled in place (see that file)."""

cimport cython

from engine.core.runs cimport Lane, Run, StepRun, WorkflowDef


cdef class ReadyQueue:
    cdef public long capacity
    cdef long _lane_capacity
    cdef public dict lanes
    cdef public list _lane_list
    cdef long long _seq
    cdef public long _size
    cdef public long shed

    cpdef Lane add_lane(self, object name, int max_concurrent)
    @cython.locals(run=Run)
    cpdef object push(self, StepRun step)
    cpdef object requeue_front(self, StepRun step)
    @cython.locals(victim=StepRun, worst_lane=Lane, lane=Lane, wf=WorkflowDef)
    cdef object _push(self, StepRun step, object priority, double deadline)
    @cython.locals(best=Lane, lane=Lane)
    cpdef Lane best_lane(self)
    @cython.locals(step=StepRun)
    cpdef StepRun pop_from(self, Lane lane)
    cpdef remove(self, StepRun step)
    cpdef rekey(self, StepRun step, object old_priority, object new_priority)
    @cython.locals(worst=Lane, lane=Lane)
    cdef Lane _worst_lane(self)
